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
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..attacks.base import TRIGGERS
from ..config import TBARConfig
from ..defenses import (
    CleanCLIPConfig,
    CleanFinetuneConfig,
    DefenseData,
    DefenseResult,
    TBARDecreeConfig,
    TBARDefenseConfig,
    TSBDConfig,
    get_defense,
)
from ..detection import DecreeConfig
from ..embedded import EmbeddedScenario, embedded_scenario
from ..errors import ConfigError
from ..evaluation import EvalResult, evaluate_model
from ..scale_search import NoFeasibleScaleError
from ..tiny_clip import load_clip
from ..variants import VARIANTS

logger = logging.getLogger(__name__)

DEFAULT_ATTACKS = ["badnets", "blended", "wanet", "sig"]
DEFAULT_DEFENSES = ["tbar", "tbar-decree", "clean-finetune", "cleanclip", "tsbd"]


@dataclass
class BenchArguments:
    """What to compare, how often, and where to write the tables and the plot."""

    attacks: list[str] = field(
        default_factory=lambda: list(DEFAULT_ATTACKS),
        metadata={"help": "Attacks (embedded backdoored models)."},
    )
    defenses: list[str] = field(
        default_factory=lambda: list(DEFAULT_DEFENSES), metadata={"help": "Registered defenses to compare."}
    )
    seeds: int = field(
        default=3, metadata={"help": "Seeds per setting (0 .. seeds-1); tables give mean and std."}
    )
    target: int = field(default=0, metadata={"help": "The attacks' target class (the backdoors' recipe)."})
    set_sizes: list[int] = field(
        default_factory=lambda: [300],
        metadata={
            "help": "Ablation: images the defender gets (TBAR's unlearning set, the clean set of the others), "
            "e.g. 50 100 300 1000; capped at the train split."
        },
    )
    clean_shares: list[float] = field(
        default_factory=lambda: [0.0],
        metadata={
            "help": "Ablation: share of clean (true-label) images in TBAR's unlearning set, e.g. 0 0.25 0.5."
        },
    )
    scales: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Ablation: also score TBAR's vector negated at these fixed scales (scale sensitivity)."
        },
    )
    tbar_variant: str = field(
        default="plain", metadata={"help": "TBAR variant: plain (the seed paper) or another."}
    )
    steps: int | None = field(
        default=None,
        metadata={"help": "Override every defense's fine-tuning steps (quick runs); None: defaults."},
    )
    decree_steps: int | None = field(
        default=None, metadata={"help": "Override DECREE's maximum inversion steps; None: its default."}
    )
    output_dir: str = field(default="outputs/bench", metadata={"help": "Folder of the tables and the plot."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attacks) - set(TRIGGERS))
        if unknown or not self.attacks:
            raise ConfigError(f"unknown attack(s) {unknown}; available: {sorted(TRIGGERS)}")
        if not self.defenses:
            raise ConfigError("give at least one defense")
        for name in self.defenses:
            get_defense(name)  # names the unknown one
        for name, value, low in (
            ("seeds", self.seeds, 1),
            ("target", self.target, 0),
            ("threads", self.threads, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("steps", "decree_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive int or None, got {value!r}")
        if not self.set_sizes or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.set_sizes
        ):
            raise ConfigError(f"set_sizes must be positive ints, got {self.set_sizes!r}")
        if not self.clean_shares or any(not 0 <= s < 1 for s in self.clean_shares):
            raise ConfigError(f"clean_shares must lie in [0, 1), got {self.clean_shares!r}")
        if self.tbar_variant not in VARIANTS:
            raise ConfigError(f"unknown tbar_variant {self.tbar_variant!r}; available: {sorted(VARIANTS)}")
        if any(not (math.isfinite(s) and s >= 0) for s in self.scales):
            raise ConfigError(f"scales must be finite and >= 0, got {self.scales!r}")


@dataclass(frozen=True)
class BenchRun:
    """One defense run's settings, from which its config is built."""

    seed: int
    set_size: int
    clean_share: float
    steps: int | None
    decree_steps: int | None
    tbar_variant: str


def _tbar_config(run: BenchRun) -> TBARConfig:
    steps = {"steps": run.steps} if run.steps else {}
    return TBARConfig(seed=run.seed, unlearning_set_size=run.set_size, variant=run.tbar_variant, **steps)


def _decree_config(run: BenchRun) -> DecreeConfig:
    return DecreeConfig(seed=run.seed, **({"steps": run.decree_steps} if run.decree_steps else {}))


def _finetune_overrides(run: BenchRun) -> dict[str, int]:
    return {"seed": run.seed, **({"steps": run.steps} if run.steps else {})}


#: How the harness configures each defense for a run; a defense missing here runs with its defaults.
BENCH_CONFIGS: dict[str, Callable[[BenchRun], Any]] = {
    "tbar": lambda run: TBARDefenseConfig(tbar=_tbar_config(run), clean_share=run.clean_share),
    "tbar-decree": lambda run: TBARDecreeConfig(
        tbar=_tbar_config(run), clean_share=run.clean_share, decree=_decree_config(run)
    ),
    "clean-finetune": lambda run: CleanFinetuneConfig(**_finetune_overrides(run)),
    "cleanclip": lambda run: CleanCLIPConfig(**_finetune_overrides(run)),
    "tsbd": lambda run: TSBDConfig(**_finetune_overrides(run)),
}


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
        ca_retention=scored.clean_accuracy / before.clean_accuracy
        if scored and before.clean_accuracy
        else None,
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
    model, processor = load_clip(scenario.backdoored_path)
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
                        seed, len(labels), share or 0.0, args.steps, args.decree_steps, args.tbar_variant
                    )
                    builder = BENCH_CONFIGS.get(name)
                    config = builder(run) if builder else None
                    logger.info(
                        "%s: %s, seed %d, %d images, clean share %s", attack, name, seed, len(labels), share
                    )
                    try:
                        result = defense(model, data, config)
                    except NoFeasibleScaleError as err:
                        logger.warning("%s on %s: %s", name, attack, str(err).splitlines()[0])
                        rows.append(
                            _row(attack, name, run, share, None, before, None, status="no feasible scale")
                        )
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
