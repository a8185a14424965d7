"""The comparison harness: attacks x defenses on the embedded data, with seeds and ablations.

For each attack the cached backdoored tiny CLIP is evaluated as is (``none``), then every defense is
run per seed and per unlearning-set size on a seeded draw of that many clean training images, and
the sanitized model is scored on the held-out test split: CA, ASR, CA retention, target-class
accuracy, and what the defense consumed. Ablations: the unlearning-set size (``set_sizes``), the
share of clean images in TBAR's unlearning set (``clean_shares``) and fixed negation scales applied to
TBAR's vector instead of the validated one (``scales``).

The backdoored model is the same for every seed (it is cached by recipe); the spread over seeds is
the defense's own (data draw and training randomness).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..defenses import DefenseData, DefenseResult, TBARDefenseConfig, get_defense
from ..errors import ModelAtChanceError
from ..evaluation import EvalResult, evaluate_model
from ..metrics import ca_retention
from ..models.loading import load_model
from ..scale_search import NoFeasibleScaleError
from ..scenarios.embedded import EmbeddedScenario, embedded_scenario
from .arguments import BenchArguments

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchRun:
    """One defense run's settings, from which its config is built (``config_class.for_run(run)``, see
    :class:`~hf_tbar.defenses.DefenseConfig`)."""

    seed: int
    set_size: int
    clean_share: float
    steps: int | None
    decree_steps: int | None
    tbar_variant: str
    force: bool = False


def _takes_clean_share(name: str) -> bool:
    return issubclass(get_defense(name).config_class, TBARDefenseConfig)


@dataclass
class BenchRow:
    """One scored model. Accuracies are shares in [0, 1]; ``None`` where not applicable."""

    attack: str
    defense: str
    seed: int | None
    set_size: int | None
    clean_share: float | None
    scale: float | None
    fixed_scale: bool
    clean_accuracy: float | None
    attack_success_rate: float | None
    target_class_accuracy: float | None
    ca_retention: float | None
    clean_images: int
    triggered_images: int
    validation_images: int
    finetune_steps: int
    wall_time_s: float
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_clean_subset(
    split: tuple[torch.Tensor, torch.Tensor], size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images of ``split`` (all if fewer), drawn without replacement with ``seed``."""
    pixels, labels = split
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
    return pixels[order], labels[order]


def _row(
    attack: str,
    name: str,
    run: BenchRun | None,
    clean_share: float | None,
    scored: EvalResult | None,
    before: EvalResult,
    result: DefenseResult | None,
    scale: float | None = None,
    fixed_scale: bool = False,
    status: str = "ok",
) -> BenchRow:
    consumed = result.to_dict() if result is not None else {}
    return BenchRow(
        attack=attack,
        defense=name,
        seed=run.seed if run else None,
        set_size=run.set_size if run else None,
        clean_share=clean_share,
        scale=scale,
        fixed_scale=fixed_scale,
        clean_accuracy=scored.clean_accuracy if scored else None,
        attack_success_rate=scored.attack_success_rate if scored else None,
        target_class_accuracy=scored.target_class_accuracy if scored else None,
        ca_retention=ca_retention(scored.clean_accuracy, before.clean_accuracy) if scored else None,
        clean_images=consumed.get("clean_images_used", 0),
        triggered_images=consumed.get("triggered_images_used", 0),
        validation_images=consumed.get("validation_images_used", 0),
        finetune_steps=consumed.get("finetune_steps", 0),
        wall_time_s=consumed.get("wall_time_s", 0.0),
        status=status,
    )


def benchmark_attack(
    attack: str,
    scenario: EmbeddedScenario,
    args: BenchArguments,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Every defense x set size x clean share x seed on one attack's backdoored model; rows in run order."""
    model, processor = load_model(scenario.backdoored_path)
    model.eval()

    def score(candidate) -> EvalResult:
        return evaluate_model(
            candidate, processor, scenario.task, *scenario.test, scenario.trigger, scenario.target
        )

    before = score(model)
    rows = [_row(attack, "none", None, None, before, before, None)]
    emit = on_row or (lambda row: None)
    emit(rows[0])
    for size in args.set_sizes:
        for seed in range(args.seeds):
            pixels, labels = draw_clean_subset(scenario.train, size, seed)
            for name in args.defenses:
                defense = get_defense(name)
                known = defense.needs_trigger
                data = DefenseData(
                    pixels,
                    labels,
                    scenario.task,
                    processor,
                    trigger=scenario.trigger if known else None,
                    target=scenario.target if known else None,
                    validation=scenario.validation,
                )
                for share in args.clean_shares if _takes_clean_share(name) else [None]:
                    run = BenchRun(
                        seed,
                        len(labels),
                        share or 0.0,
                        args.steps,
                        args.decree_steps,
                        args.tbar_variant,
                        args.force,
                    )
                    config = defense.config_class.for_run(run)
                    logger.info(
                        "%s: %s, seed %d, %d images, clean share %s", attack, name, seed, len(labels), share
                    )
                    try:
                        result = defense(model, data, config)
                    except (NoFeasibleScaleError, ModelAtChanceError) as err:
                        logger.warning("%s on %s: %s", name, attack, str(err).splitlines()[0])
                        status = (
                            "no feasible scale"
                            if isinstance(err, NoFeasibleScaleError)
                            else "model at chance"
                        )
                        rows.append(_row(attack, name, run, share, None, before, None, status=status))
                        emit(rows[-1])
                        continue
                    scale = result.details.get("scale")
                    rows.append(_row(attack, name, run, share, score(result.model), before, result, scale))
                    emit(rows[-1])
                    if result.vector is not None:
                        for fixed in args.scales:
                            negated = result.vector.apply_to(model, -fixed)
                            rows.append(
                                _row(attack, name, run, share, score(negated), before, result, fixed, True)
                            )
                            emit(rows[-1])
    return rows


def run_benchmark(
    args: BenchArguments,
    scenario_fn: Callable[..., EmbeddedScenario] = embedded_scenario,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """All attacks of ``args``; ``scenario_fn(attack, target=...)`` provides each backdoored model and data."""
    rows: list[BenchRow] = []
    for attack in args.attacks:
        rows += benchmark_attack(attack, scenario_fn(attack, target=args.target), args, on_row)
    return rows
