"""TBAR as registered defenses: ``tbar`` (known trigger) and ``tbar-decree`` (trigger reverse-engineered).

Both are thin wrappers of :meth:`hf_tbar.BackdoorUnlearner.unlearn`; ``tbar-decree`` calls it with
``trigger="auto"``: DECREE inverts a trigger from clean images and the target class is estimated from
where that trigger sends them, then the same TBAR runs with both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import TensorDataset
from transformers import CLIPModel

from ..attacks.base import Trigger
from ..config import TBARConfig
from ..data.images import ImageSet
from ..detection import DecreeConfig
from ..scale_search import ScaleSearchConfig
from ..task_vector import TaskVector
from ..unlearner import AUTO_TRIGGER, BackdoorUnlearner, Detection, NoBackdoorDetectedError
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

    @staticmethod
    def _tbar_for_run(run: Any) -> TBARConfig:
        steps = {"steps": run.steps} if run.steps else {}
        return TBARConfig(seed=run.seed, unlearning_set_size=run.set_size, variant=run.tbar_variant, **steps)

    @classmethod
    def for_run(cls, run: Any) -> TBARDefenseConfig:
        return cls(tbar=cls._tbar_for_run(run), clean_share=run.clean_share or 0.0)

    @classmethod
    def quick(cls) -> TBARDefenseConfig:
        return cls(
            tbar=TBARConfig(steps=2, batch_size=8, unlearning_set_size=12, learning_rate=1e-2),
            search=ScaleSearchConfig(ca_threshold=0.01, grid_points=3, bisection_steps=1),
        )


@dataclass
class TBARDecreeConfig(TBARDefenseConfig):
    """TBAR with a DECREE-inverted trigger and an estimated target (the attack is unknown)."""

    decree: DecreeConfig = field(
        default_factory=DecreeConfig, metadata={"help": "DECREE's inversion and detection settings."}
    )
    force: bool = field(
        default=False,
        metadata={
            "help": "Unlearn the inverted trigger even when DECREE does not flag the model (default: return "
            "the model unchanged, as a deployed pipeline would)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.decree, dict):
            self.decree = DecreeConfig(**self.decree)
        if not isinstance(self.decree, DecreeConfig):
            raise TypeError(f"decree must be a DecreeConfig, got {type(self.decree).__name__}")
        if not isinstance(self.force, bool):
            raise TypeError(f"force must be True or False, got {self.force!r}")

    @classmethod
    def for_run(cls, run: Any) -> TBARDecreeConfig:
        decree = DecreeConfig(seed=run.seed, **({"steps": run.decree_steps} if run.decree_steps else {}))
        return cls(tbar=cls._tbar_for_run(run), clean_share=run.clean_share or 0.0, decree=decree)

    @classmethod
    def quick(cls) -> TBARDecreeConfig:
        fast = TBARDefenseConfig.quick()
        return cls(tbar=fast.tbar, search=fast.search, decree=DecreeConfig(steps=3, batch_size=8), force=True)


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


class _AccountedUnlearner(BackdoorUnlearner):
    """A BackdoorUnlearner that counts what it consumes, and whose unlearning set may mix clean images
    (true labels, share ``clean_share``) with the triggered ones (target label)."""

    def __init__(
        self, *args, clean_share: float = 0.0, clean_labels: torch.Tensor | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.clean_share = clean_share
        self.clean_labels = clean_labels
        self.fine_tunings = 0
        self.clean_images = 0

    def _finetune_vector(self, dataset: TensorDataset, desc: str, objective=None) -> TaskVector:
        self.fine_tunings += 1
        return super()._finetune_vector(dataset, desc, objective)

    def fit_target_vector(self, clean_pixels: torch.Tensor, labels: torch.Tensor, target: int) -> TaskVector:
        vector = super().fit_target_vector(clean_pixels, labels, target)
        self.clean_images += int(vector.metadata.get("images", 0))
        return vector

    def fit_trigger_vector(
        self, trigger=None, target=None, clean_pixels=None, triggered_pixels=None
    ) -> TaskVector:
        captioned = isinstance(clean_pixels, ImageSet) and clean_pixels.captions is not None
        if self.clean_share == 0 or triggered_pixels is not None or captioned:  # no mixed set of captions
            return super().fit_trigger_vector(trigger, target, clean_pixels, triggered_pixels)
        target = self.task.check_label(target)
        pool_pixels, pool_labels = self._images(clean_pixels, "clean images").tensors()
        pixels, labels, num_clean = mixed_unlearning_set(
            pool_pixels,
            self.clean_labels if pool_labels is None else pool_labels,
            trigger,
            target,
            self.config.unlearning_set_size,
            self.clean_share,
            self.config.seed,
        )
        self.clean_images += num_clean
        vector = self._finetune_vector(
            TensorDataset(pixels, labels), desc=f"mixed trigger fine-tuning ({self.config.mode})"
        )
        vector.metadata.update(
            {
                "kind": "trigger",
                "target": target,
                "unlearning_set_size": len(labels) - num_clean,
                "clean_images": num_clean,
                "trigger": trigger.to_dict(),
            }
        )
        return vector


def _detection_stats(detection: Detection) -> dict:
    return {
        "decree_pl1": detection.decree.pl1,
        "decree_flagged": detection.decree.is_backdoored,
        "decree_steps": detection.decree.steps,
        "decree_images": detection.num_images,
        "estimated_target": detection.target.target,
        "target_flip_share": detection.target.flip_share,
    }


def run_tbar(
    model: CLIPModel,
    data: DefenseData,
    config: TBARDefenseConfig,
    trigger: Trigger | str,
    target: int | None,
) -> DefenseResult:
    """:meth:`BackdoorUnlearner.unlearn` on the defense's data, with its consumption accounted for.

    Args:
        trigger: The known trigger, or ``"auto"`` (DECREE, with ``config.decree`` and ``config.force``).
        target: The target class (``None`` with ``"auto"``: estimated).
    """
    unlearner = _AccountedUnlearner(
        model,
        data.processor,
        data.task,
        config.tbar,
        device=next(model.parameters()).device,
        clean_share=config.clean_share,
        clean_labels=data.clean_labels,
    )
    captions = data.clean_captions if config.use_captions else None
    auto = {}
    if isinstance(trigger, str):
        auto = {"decree": getattr(config, "decree", None), "force": getattr(config, "force", False)}
    try:
        result = unlearner.unlearn(
            trigger,
            target,
            clean_pixels=data.clean_pixels,
            validation=data.validation,
            clean_labels=data.clean_labels,
            clean_captions=captions,
            search=config.search,
            **auto,
        )
    except NoBackdoorDetectedError as err:
        logger.info("tbar-decree: %s; the model is returned unchanged", err)
        stats = _detection_stats(err.detection)
        return DefenseResult(model=model, clean_images_used=stats["decree_images"], details=stats)
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
    clean_images = unlearner.clean_images
    if result.detection is not None:
        details.update(_detection_stats(result.detection))
        clean_images += result.detection.num_images
    return DefenseResult(
        model=result.model,
        clean_images_used=clean_images,
        triggered_images_used=result.unlearning_set_size,
        finetune_steps=config.tbar.steps * unlearner.fine_tunings,
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
