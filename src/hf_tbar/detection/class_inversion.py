"""Class-conditional trigger inversion on the zero-shot head (Neural Cleanse, Wang et al., S&P 2019, for CLIP).

For each class ``c`` of the user's task, find the *smallest* trigger that sends clean images of other classes to
``c``; a backdoored class needs a much smaller one than its peers, and the MAD anomaly index of the smallest
(:mod:`hf_tbar.detection.anomaly`, on log sizes) says how much smaller. The threshold is relative to the model's own classes, so
no reference model is needed. Two trigger families:

- ``patch``: a mask and a pattern, ``x' = (1 - m) x + m p``; the size is the mask's mean (share of the image);
  what BadNets-like patches give away.
- ``perturbation``: a universal additive perturbation, ``x' = clip(x + delta)``; the size is its RMS in pixel
  units; the shortcut full-image triggers (Blended, SIG, WaNet) leave, where no small patch exists.

Each class is optimised with Adam on ``cross-entropy(c) + lambda x size``; ``lambda`` grows while the trigger
succeeds (at least ``success`` of a batch sent to ``c``) and shrinks while it fails (DECREE's schedule,
:func:`~hf_tbar.detection.update_lambda`); the smallest successful trigger is kept. With more than
``max_classes`` classes, a short pre-screen of every class ranks them and only the first ``max_classes`` are
inverted fully.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attacks.base import Trigger
from ..errors import ConfigError
from ..zeroshot import ZeroShotClassifier
from .anomaly import MIN_CLASSES, anomaly_indices
from .decree import LambdaState, update_lambda
from .inverted import InvertedPerturbation, InvertedTrigger, logit_to_unit, unit_to_logit

logger = logging.getLogger(__name__)

__all__ = [
    "FAMILIES",
    "ClassInversion",
    "ClassInversionConfig",
    "ClassInversionResult",
    "invert_classes",
]

Family = Literal["patch", "perturbation"]
FAMILIES: tuple[str, ...] = get_args(Family)
_EPS = 1e-6


@dataclass
class ClassInversionConfig:
    """Settings of the per-class inversion (one family), and of the anomaly index that judges it."""

    family: Family = field(default="patch", metadata={"help": "Trigger family: 'patch' or 'perturbation'."})
    steps: int = field(default=100, metadata={"help": "Most optimisation steps per class."})
    batch_size: int = field(default=16, metadata={"help": "Clean images per step."})
    learning_rate: float = field(default=0.1, metadata={"help": "Adam learning rate."})
    success: float = field(
        default=0.9,
        metadata={"help": "Share of a batch sent to the class for the trigger to count as found."},
    )
    init_lambda: float = field(default=0.1, metadata={"help": "Initial weight of the size penalty."})
    lambda_multiplier: float = field(
        default=2.0, metadata={"help": "Factor lambda is multiplied/divided by."}
    )
    lambda_patience: int = field(
        default=5, metadata={"help": "Steps of success/failure before lambda moves."}
    )
    early_stop_patience: int = field(
        default=0,
        metadata={
            "help": "Stop a class after this many successful steps without a trigger smaller by min_improvement "
            "(0: off, the default; stopping early left clean classes' triggers large and the index meaningless "
            "on the embedded digits)."
        },
    )
    min_improvement: float = field(
        default=0.02,
        metadata={"help": "Relative shrink that counts as a smaller trigger for early stopping."},
    )
    max_classes: int = field(
        default=20, metadata={"help": "Classes inverted fully; more are pre-screened and the smallest kept."}
    )
    prescreen_steps: int = field(default=20, metadata={"help": "Steps per class of the pre-screen."})
    threshold: float = field(
        default=2.0,
        metadata={
            "help": "Flag when the smallest trigger's MAD anomaly index is above this (Neural Cleanse: 2)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation and the batch order."})

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name in ("steps", "batch_size", "lambda_patience", "prescreen_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if (
            isinstance(self.max_classes, bool)
            or not isinstance(self.max_classes, int)
            or self.max_classes < MIN_CLASSES
        ):
            raise ConfigError(f"max_classes must be an int >= {MIN_CLASSES}, got {self.max_classes!r}")
        if (
            isinstance(self.early_stop_patience, bool)
            or not isinstance(self.early_stop_patience, int)
            or (self.early_stop_patience < 0)
        ):
            raise ConfigError(f"early_stop_patience must be an int >= 0, got {self.early_stop_patience!r}")
        if not 0 <= self.min_improvement < 1:
            raise ConfigError(f"min_improvement must be in [0, 1), got {self.min_improvement}")
        if not 0 < self.success <= 1:
            raise ConfigError(f"success must be in (0, 1], got {self.success}")
        for name in ("learning_rate", "init_lambda", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        if self.lambda_multiplier <= 1:
            raise ConfigError(f"lambda_multiplier must be > 1, got {self.lambda_multiplier}")


class _Patch:
    """``x' = (1 - m) x + m p`` with mask and pattern logits; size = the mask's mean over the image."""

    def init(self, side: int, generator: torch.Generator) -> list[torch.Tensor]:
        mask = unit_to_logit(
            torch.full((side, side), 0.1) + 0.02 * torch.rand((side, side), generator=generator), _EPS
        )
        pattern = unit_to_logit(torch.rand((3, side, side), generator=generator), _EPS)
        return [mask, pattern]

    def stamp(self, params: list[torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        mask, pattern = logit_to_unit(params[0], _EPS), logit_to_unit(params[1], _EPS)
        return (1 - mask) * pixels + mask * pattern

    def size(self, params: list[torch.Tensor]) -> torch.Tensor:
        return logit_to_unit(params[0], _EPS).mean()

    def trigger(self, params: list[torch.Tensor], seed: int) -> Trigger:
        mask, pattern = logit_to_unit(params[0], _EPS), logit_to_unit(params[1], _EPS)
        return InvertedTrigger(
            mask=mask.detach().clamp(0, 1), pattern=pattern.detach().clamp(0, 1), seed=seed
        )


class _Perturbation:
    """``x' = clip(x + delta)``; size = RMS of ``delta`` in pixel units."""

    def init(self, side: int, generator: torch.Generator) -> list[torch.Tensor]:
        return [0.01 * torch.randn((3, side, side), generator=generator)]

    def stamp(self, params: list[torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        return (pixels + params[0].clamp(-1, 1)).clamp(0, 1)

    def size(self, params: list[torch.Tensor]) -> torch.Tensor:
        return params[0].clamp(-1, 1).pow(2).mean().add(1e-12).sqrt()

    def trigger(self, params: list[torch.Tensor], seed: int) -> Trigger:
        return InvertedPerturbation(delta=params[0].detach().clamp(-1, 1), seed=seed)


_FAMILY_IMPLEMENTATIONS: dict[str, Callable[[], object]] = {"patch": _Patch, "perturbation": _Perturbation}


@dataclass
class ClassInversion:
    """The smallest trigger found toward one class.

    Attributes:
        target: The class index.
        size: The trigger's size (patch: mask mean; perturbation: RMS); the last size when never successful.
        found: Whether any step reached the success share.
        success: The share of the batch sent to the class by the kept trigger.
        steps: Optimisation steps run.
        trigger: The kept trigger.
    """

    target: int
    size: float
    found: bool
    success: float
    steps: int
    trigger: Trigger


@dataclass
class ClassInversionResult:
    """Per-class inversions of one family and the anomaly index that judges them.

    Attributes:
        family: ``"patch"`` or ``"perturbation"``.
        classes: The inverted classes (all, or the pre-screen's first ``max_classes``).
        indices: The MAD anomaly index of each inverted class (``None`` with fewer than 3 classes).
        target: The class with the smallest trigger.
        index: Its anomaly index (``None`` with fewer than 3 classes).
        threshold: The flag threshold on the index.
        flagged: ``index > threshold``.
        note: Why no index could be computed, when that is the case.
        seconds: Wall time of the inversions.
    """

    family: str
    classes: list[ClassInversion]
    indices: list[float] | None
    target: int
    index: float | None
    threshold: float
    flagged: bool
    note: str | None
    seconds: float

    @property
    def trigger(self) -> Trigger:
        return next(c.trigger for c in self.classes if c.target == self.target)

    def sizes(self) -> dict[int, float]:
        return {c.target: c.size for c in self.classes}


def _invert_one(
    classifier: ZeroShotClassifier,
    pixels: torch.Tensor,
    labels: torch.Tensor | None,
    target: int,
    config: ClassInversionConfig,
    steps: int,
) -> ClassInversion:
    """Invert the smallest trigger of ``config.family`` toward ``target`` on ``pixels`` ``(N, 3, S, S)``."""
    family = _FAMILY_IMPLEMENTATIONS[config.family]()
    generator = torch.Generator().manual_seed(config.seed * 1009 + target)
    pool = torch.arange(len(pixels)) if labels is None else torch.nonzero(labels != target).flatten()
    if len(pool) == 0:
        pool = torch.arange(len(pixels))
    device = next(classifier.parameters()).device
    params = [p.to(device).requires_grad_(True) for p in family.init(pixels.shape[-1], generator)]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, betas=(0.5, 0.9))
    lam = LambdaState(config.init_lambda)
    batch_size = min(config.batch_size, len(pool))
    best: tuple[float, float, list[torch.Tensor]] | None = None
    stale, steps_run, size_value, share = 0, 0, float("nan"), 0.0
    anchor: float | None = None
    goal = torch.full((batch_size,), target, dtype=torch.long, device=device)
    for steps_run in range(1, steps + 1):  # noqa: B007 - the count is reported
        chosen = pool[torch.randperm(len(pool), generator=generator)[:batch_size]]
        logits = classifier(family.stamp(params, pixels[chosen].to(device)))
        size = family.size(params)
        loss = F.cross_entropy(logits, goal) + lam.value * size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        share = float((logits.argmax(-1) == target).float().mean())
        size_value = float(size.detach())
        succeeded = share >= config.success
        if succeeded and (best is None or size_value < best[0]):
            best = (size_value, share, [p.detach().clone() for p in params])
        if succeeded:  # patience counts successful steps since the size last shrank by min_improvement
            if anchor is None or size_value < anchor * (1 - config.min_improvement):
                anchor, stale = size_value, 0
            else:
                stale += 1
        lam = update_lambda(lam, succeeded, config.lambda_multiplier, config.lambda_patience)
        if config.early_stop_patience and best is not None and stale >= config.early_stop_patience:
            break
    if best is None:
        kept = [p.detach().clone() for p in params]
        return ClassInversion(target, size_value, False, share, steps_run, family.trigger(kept, config.seed))
    return ClassInversion(target, best[0], True, best[1], steps_run, family.trigger(best[2], config.seed))


def invert_classes(
    classifier: ZeroShotClassifier,
    pixels: torch.Tensor,
    labels: torch.Tensor | None = None,
    config: ClassInversionConfig | None = None,
) -> ClassInversionResult:
    """Invert the smallest trigger toward every class (or the pre-screen's first ``max_classes``) and judge the
    smallest with the MAD anomaly index.

    The model is left untouched: only the trigger parameters are optimised (the classifier's parameters are
    frozen for the duration and their flags restored).

    Args:
        classifier: The zero-shot classifier (the user's class names and templates) over the model.
        pixels: Clean ``[0, 1]`` images ``(N, 3, S, S)`` at the model's input size, ``N >= 2``.
        labels: Their classes ``(N,)`` when known: images of the class being inverted are left out of its
            batches (they are already sent there).
        config: Family, optimisation and threshold.

    Returns:
        The per-class inversions and the verdict; with fewer than 3 classes (inverted), no anomaly index is
        computed, ``flagged`` is ``False`` and ``note`` says why.
    """
    config = config or ClassInversionConfig()
    num_classes = int(classifier.head.shape[0])
    start = time.perf_counter()
    flags = [(p, p.requires_grad) for p in classifier.parameters()]
    training = classifier.training
    classifier.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        candidates = list(range(num_classes))
        if num_classes > config.max_classes:
            screened = [
                _invert_one(classifier, pixels, labels, c, config, config.prescreen_steps) for c in candidates
            ]
            ranked = sorted(screened, key=lambda inv: (not inv.found, inv.size))
            candidates = sorted(inv.target for inv in ranked[: config.max_classes])
            logger.info(
                "%s inversion: pre-screened %d classes, inverting %s", config.family, num_classes, candidates
            )
        inversions = []
        for target in tqdm(candidates, desc=f"{config.family} inversion", leave=False, disable=None):
            inversions.append(_invert_one(classifier, pixels, labels, target, config, config.steps))
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        classifier.train(training)
    sizes = [inv.size for inv in inversions]
    smallest = min(inversions, key=lambda inv: inv.size)
    indices, index, note = None, None, None
    if len(inversions) >= MIN_CLASSES:
        indices = anomaly_indices(sizes, log_scale=True)
        index = indices[inversions.index(smallest)]
    else:
        note = (
            f"only {len(inversions)} classes: an anomaly index needs at least {MIN_CLASSES}, so this detector "
            "cannot judge the model"
        )
    flagged = index is not None and index > config.threshold and smallest.found
    seconds = time.perf_counter() - start
    logger.info(
        "%s inversion: smallest trigger toward class %d (size %.4f), anomaly index %s -> %s (%.0f s)",
        config.family,
        smallest.target,
        smallest.size,
        "n/a" if index is None else f"{index:.2f}",
        "flagged" if flagged else "not flagged",
        seconds,
    )
    return ClassInversionResult(
        family=config.family,
        classes=inversions,
        indices=indices,
        target=smallest.target,
        index=index,
        threshold=config.threshold,
        flagged=flagged,
        note=note,
        seconds=seconds,
    )
