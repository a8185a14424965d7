"""TBAR as registered defenses: ``tbar`` (known trigger) and ``tbar-decree`` (trigger reverse-engineered).

Both are thin wrappers of :meth:`hf_tbar.BackdoorUnlearner.unlearn`; ``tbar-decree`` calls it with
``trigger="auto"``: DECREE inverts a trigger from clean images and the target class is estimated from
where that trigger sends them, then the same TBAR runs with both.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import CLIPModel

from ..attacks.base import Trigger
from ..data.images import ImageSet
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict
from ..results import NoBackdoorDetectedError
from ..scale_search import ScaleSearchConfig
from ..tbar.config import TBARConfig
from ..tbar.objectives import ClassificationObjective, FitContext, FitRows
from ..tbar.stages import AUTO_TRIGGER
from ..tbar.unlearner import BackdoorUnlearner
from .base import DefenseConfig, DefenseData, DefenseResult, register_defense

logger = logging.getLogger(__name__)


@dataclass
class TBARDefenseConfig(DefenseConfig):
    """TBAR as a defense: trigger fine-tuning, scale search, and the make-up of the unlearning set."""

    tbar: TBARConfig = field(
        default_factory=TBARConfig,
        metadata={"help": "Trigger fine-tuning and variant (the BackdoorUnlearner's TBARConfig)."},
    )
    search: ScaleSearchConfig = field(
        default_factory=ScaleSearchConfig, metadata={"help": "Constraints of the validation scale search."}
    )
    use_captions: bool = field(
        default=True,
        metadata={
            "help": "With image-caption data (DefenseData.clean_captions), fit the vectors with CLIP's "
            "contrastive loss on the captions; False: the zero-shot head's cross-entropy on the labels."
        },
    )
    clean_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the unlearning set made of clean, correctly labelled images; the rest carry the "
            "trigger and the target label. The seed paper finds pure triggered data (0) best."
        },
    )
    force: bool = field(
        default=False,
        metadata={
            "help": "Go on with a model whose clean accuracy is near chance, and (tbar-decree, tbar-auto) with one "
            "no detector flags (default: refuse, or return the model unchanged, as a deployed pipeline would)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.tbar, dict):  # nested configs round-trip through YAML/JSON
            self.tbar = TBARConfig(**self.tbar)
        if isinstance(self.search, dict):
            self.search = ScaleSearchConfig(**self.search)
        if not isinstance(self.tbar, TBARConfig):
            raise TypeError(f"tbar must be a TBARConfig, got {type(self.tbar).__name__}")
        if not isinstance(self.search, ScaleSearchConfig):
            raise TypeError(f"search must be a ScaleSearchConfig, got {type(self.search).__name__}")
        if isinstance(self.clean_share, bool) or not 0.0 <= float(self.clean_share) < 1.0:
            raise ValueError(f"clean_share must be in [0, 1), got {self.clean_share!r}")
        if not isinstance(self.force, bool):
            raise TypeError(f"force must be True or False, got {self.force!r}")

    @staticmethod
    def _tbar_for_run(run: Any) -> TBARConfig:
        steps = {"steps": run.steps} if run.steps else {}
        return TBARConfig(seed=run.seed, unlearning_set_size=run.set_size, variant=run.tbar_variant, **steps)

    @classmethod
    def for_run(cls, run: Any) -> TBARDefenseConfig:
        force = getattr(run, "force", False)
        return cls(tbar=cls._tbar_for_run(run), clean_share=run.clean_share or 0.0, force=force)

    @classmethod
    def quick(cls) -> TBARDefenseConfig:
        return cls(
            tbar=TBARConfig(steps=2, batch_size=8, unlearning_set_size=12, learning_rate=1e-2),
            search=ScaleSearchConfig(
                ca_threshold=0.01, target_threshold=None, grid_points=3, bisection_steps=1
            ),
            force=True,  # the contract test's micro models are at chance
        )


@dataclass
class TBARDecreeConfig(TBARDefenseConfig):
    """TBAR with a reverse-engineered trigger and an estimated target (the attack is unknown): DECREE alone, as
    the seed paper does (``tbar-decree``), or every detector of :mod:`hf_tbar.detection` (``tbar-auto``)."""

    detection: DetectionConfig = field(
        default_factory=lambda: DetectionConfig(detectors=["decree"]),
        metadata={"help": "Which detectors run, on how many clean images, with which budget."},
    )
    decree: DecreeConfig = field(
        default_factory=DecreeConfig, metadata={"help": "DECREE's inversion and detection settings."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.decree, dict):
            self.decree = DecreeConfig(**self.decree)
        if isinstance(self.detection, dict):
            self.detection = DetectionConfig(**self.detection)
        if not isinstance(self.decree, DecreeConfig):
            raise TypeError(f"decree must be a DecreeConfig, got {type(self.decree).__name__}")
        if not isinstance(self.detection, DetectionConfig):
            raise TypeError(f"detection must be a DetectionConfig, got {type(self.detection).__name__}")

    @classmethod
    def for_run(cls, run: Any) -> TBARDecreeConfig:
        steps = {"detection_steps": run.decree_steps} if run.decree_steps else {}
        default = cls().detection
        detection = dataclasses.replace(default, detection_seed=run.seed, **steps)
        decree = DecreeConfig(seed=run.seed, **({"steps": run.decree_steps} if run.decree_steps else {}))
        return cls(
            tbar=cls._tbar_for_run(run),
            clean_share=run.clean_share or 0.0,
            detection=detection,
            decree=decree,
        )

    @classmethod
    def quick(cls) -> TBARDecreeConfig:
        fast = TBARDefenseConfig.quick()
        detection = dataclasses.replace(cls().detection, detection_steps=3, detection_images=16)
        return cls(
            tbar=fast.tbar,
            search=fast.search,
            detection=detection,
            decree=DecreeConfig(steps=3, batch_size=8),
            force=True,
        )


@dataclass
class TBARAutoConfig(TBARDecreeConfig):
    """TBAR with the trigger and target found by every registered detector (the combined verdict)."""

    detection: DetectionConfig = field(
        default_factory=DetectionConfig,
        metadata={"help": "Which detectors run (default: all), on how many clean images, with which budget."},
    )


def mixed_unlearning_set(
    clean_pixels: torch.Tensor,
    clean_labels: torch.Tensor,
    trigger: Trigger,
    target: int,
    size: int,
    clean_share: float,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """An unlearning set of ``size`` images (all of them if fewer): ``round(clean_share x size)`` clean
    images with their true labels, the others stamped with ``trigger`` and labelled ``target``.

    With ``clean_share=0`` it draws the same images as :func:`hf_tbar.make_unlearning_set`.

    Returns:
        ``(pixels, labels, number of clean images)``; the triggered images come first.

    Raises:
        ValueError: no triggered image would be left, or the trigger leaves the images unchanged.
    """
    count = min(int(size), len(clean_pixels))
    num_clean = round(clean_share * count)
    num_triggered = count - num_clean
    if num_triggered < 1:
        raise ValueError(f"clean_share {clean_share} leaves no triggered image in a set of {count}")
    order = torch.randperm(len(clean_pixels), generator=torch.Generator().manual_seed(seed))
    chosen, kept = order[:num_triggered], order[num_triggered:count]
    triggered = trigger(clean_pixels[chosen])
    if torch.equal(triggered, clean_pixels[chosen]):
        raise ValueError(f"the trigger {trigger.describe()} left every image unchanged")
    pixels = torch.cat([triggered, clean_pixels[kept]])
    labels = torch.cat([torch.full((num_triggered,), int(target), dtype=torch.long), clean_labels[kept]])
    return pixels, labels, num_clean


@dataclass(frozen=True)
class MixedClassificationObjective(ClassificationObjective):
    """The zero-shot head's cross-entropy on an unlearning set that mixes clean images (true labels, share
    ``clean_share``) with the triggered ones (target label); see :func:`mixed_unlearning_set`.

    Attributes:
        clean_share: Share of clean images in the unlearning set, in ``[0, 1)``.
        clean_labels: Labels of the clean images when their image set carries none.
    """

    clean_share: float
    clean_labels: torch.Tensor | None = None

    def trigger_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger, target: int) -> FitRows:
        pool_pixels, pool_labels = pool.tensors()
        cfg = context.config
        pixels, labels, num_clean = mixed_unlearning_set(
            pool_pixels,
            self.clean_labels if pool_labels is None else pool_labels,
            trigger,
            target,
            cfg.unlearning_set_size,
            self.clean_share,
            cfg.seed,
        )
        return self.triggered_rows(context, pixels, labels, trigger, target, num_clean, desc="mixed trigger")


def _detection_stats(detection: ScanVerdict) -> dict:
    winner = detection.winner
    stats = {
        "flagged": detection.is_backdoored,
        "detector": None if winner is None else winner.detector,
        "estimated_target": detection.target,
        "detection_images": max((f.num_images for f in detection.findings), default=0),
        "detection_s": sum(f.seconds for f in detection.findings),
    }
    for finding in detection.findings:
        stats[f"{finding.detector}_value"] = finding.value
        stats[f"{finding.detector}_flagged"] = finding.flagged
    return stats


def run_tbar(
    model: CLIPModel,
    data: DefenseData,
    config: TBARDefenseConfig,
    trigger: Trigger | str,
    target: int | None,
) -> DefenseResult:
    """:meth:`BackdoorUnlearner.unlearn` on the defense's data, with its consumption accounted for.

    Args:
        trigger: The known trigger, or ``"auto"`` (the detectors of ``config.detection``, DECREE's settings
            ``config.decree``, and ``config.force``).
        target: The target class (``None`` with ``"auto"``: estimated).
    """
    captions = data.clean_captions if config.use_captions else None
    mixed = config.clean_share != 0 and captions is None  # no mixed set of captions
    unlearner = BackdoorUnlearner(
        model,
        data.processor,
        data.task,
        config.tbar,
        device=next(model.parameters()).device,
        objective=MixedClassificationObjective(config.clean_share, data.clean_labels) if mixed else None,
    )
    auto = {"decree": config.detection} if isinstance(trigger, str) else {}
    try:
        result = unlearner.unlearn(
            trigger,
            target,
            clean_pixels=data.clean_pixels,
            validation=data.validation,
            clean_labels=data.clean_labels,
            clean_captions=captions,
            search=config.search,
            force=config.force,
            **auto,
        )
    except NoBackdoorDetectedError as err:
        logger.info("%s; the model is returned unchanged", err)
        stats = _detection_stats(err.detection)
        return DefenseResult(model=model, clean_images_used=stats["detection_images"], details=stats)
    details = {
        "scale": result.selection.scale,
        "scale_evaluations": result.selection.evaluations,
        "validation_clean_accuracy": result.selection.best.clean_accuracy,
        "validation_attack_success_rate": result.selection.best.attack_success_rate,
        "variant": config.tbar.variant,
        "mode": config.tbar.mode,
        "clean_share": config.clean_share,
        "objective": "contrastive" if captions is not None else "cross-entropy",
    }
    clean_images = result.finetune_clean_images
    if result.detection is not None:
        details.update(_detection_stats(result.detection))
        clean_images += details["detection_images"]
    return DefenseResult(
        model=result.model,
        clean_images_used=clean_images,
        triggered_images_used=result.unlearning_set_size,
        finetune_steps=sum(result.finetune_steps.values()),
        validation_images_used=len(data.validation[1]),
        vector=result.vector,
        details=details,
    )


@register_defense("tbar", TBARDefenseConfig, needs_trigger=True, needs_validation=True)
def tbar(model: CLIPModel, data: DefenseData, config: TBARDefenseConfig) -> DefenseResult:
    """TBAR with a known trigger: fine-tune on triggered images, negate the trigger vector at a validated scale."""
    return run_tbar(model, data, config, data.trigger, data.target)


@register_defense("tbar-decree", TBARDecreeConfig, needs_validation=True)
def tbar_decree(model: CLIPModel, data: DefenseData, config: TBARDecreeConfig) -> DefenseResult:
    """TBAR for an unknown attack: DECREE inverts a trigger and estimates the target, then TBAR unlearns it."""
    return run_tbar(model, data, config, AUTO_TRIGGER, None)


@register_defense("tbar-auto", TBARAutoConfig, needs_validation=True)
def tbar_auto(model: CLIPModel, data: DefenseData, config: TBARAutoConfig) -> DefenseResult:
    """TBAR for an unknown attack: every detector judges the model, the winner's trigger and class are unlearned."""
    return run_tbar(model, data, config, AUTO_TRIGGER, None)
