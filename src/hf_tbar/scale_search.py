"""Choosing the negation scale alpha: lowest ASR subject to clean-accuracy constraints.

Pure search logic over an ``evaluate(scale) -> metrics`` callable, independent of models. The search
walks a coarse grid (stopping once clean accuracy has failed the constraint twice in a row), then
bisects between the largest qualifying grid point and the next one, where the constraint boundary
lies; this needs far fewer evaluations than a fixed grid of the same resolution.

On a small validation set one image moves an accuracy by a point or more, so the accuracy constraints
compare confidence bounds, not point estimates: when ``evaluate`` reports how many images each share was
measured on, a scale is refused only when the upper Wilson bound of its accuracy
(:func:`hf_tbar.metrics.wilson_interval`, two-sided level ``confidence``) is below the threshold, i.e. when
the data show that it loses too much.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .errors import ConfigError, HfTbarError
from .metrics import wilson_interval

logger = logging.getLogger(__name__)


@dataclass
class SweepPoint:
    """Validation metrics of the model ``theta_b - scale * tau`` (shares in [0, 1]).

    The counts are the images each share was measured on (``None`` when the evaluation did not say): clean
    images for CA, triggered non-target images for ASR, clean target-class images for target-class accuracy.
    """

    scale: float
    clean_accuracy: float
    attack_success_rate: float
    target_class_accuracy: float | None = None
    feasible: bool = False
    clean_count: int | None = None
    triggered_count: int | None = None
    target_count: int | None = None

    def upper_bound(self, share: float | None, count: int | None, confidence: float | None) -> float | None:
        """The upper Wilson bound of ``share`` measured on ``count`` images (the share itself when the count
        is unknown or ``confidence`` is ``None``)."""
        if share is None or count is None or confidence is None:
            return share
        return wilson_interval(round(share * count), count, confidence)[1]


@dataclass
class ScaleSearchConfig:
    """Constraints and budget of the scale search."""

    ca_threshold: float = field(
        default=0.95,
        metadata={
            "help": "Keep CA >= ca_threshold x the backdoored model's CA (task-negation practice: 0.95)."
        },
    )
    target_threshold: float | None = field(
        default=0.8,
        metadata={
            "help": "Keep target-class accuracy >= target_threshold x the backdoored model's ('none': no "
            "target-class constraint). Negating a trigger vector also erases some of the target class itself; "
            "this keeps it."
        },
    )
    max_scale: float = field(default=3.0, metadata={"help": "Largest scale of the coarse grid."})
    grid_points: int = field(default=7, metadata={"help": "Points of the coarse grid, 0 included."})
    bisection_steps: int = field(default=4, metadata={"help": "Bisection steps at the constraint boundary."})
    asr_tolerance: float = field(
        default=0.01,
        metadata={
            "help": "Points whose ASR is within this of the lowest count as ties; ties go to the highest accuracy."
        },
    )
    confidence: float | None = field(
        default=0.9,
        metadata={
            "help": "Two-sided level of the Wilson intervals the accuracy constraints compare: a scale is refused "
            "only when the upper bound of its accuracy is below the threshold ('none': point estimates)."
        },
    )

    def __post_init__(self) -> None:
        if not 0 < self.ca_threshold <= 1:
            raise ConfigError(f"ca_threshold must be in (0, 1], got {self.ca_threshold}")
        if self.target_threshold is not None and not 0 < self.target_threshold <= 1:
            raise ConfigError(f"target_threshold must be in (0, 1] or None, got {self.target_threshold}")
        if not (math.isfinite(self.max_scale) and self.max_scale > 0):
            raise ConfigError(f"max_scale must be a positive finite number, got {self.max_scale}")
        if self.grid_points < 2:
            raise ConfigError(f"grid_points must be >= 2, got {self.grid_points}")
        if not 0 <= self.asr_tolerance < 1:
            raise ConfigError(f"asr_tolerance must be in [0, 1), got {self.asr_tolerance}")
        if self.bisection_steps < 0:
            raise ConfigError(f"bisection_steps must be >= 0, got {self.bisection_steps}")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1) or None, got {self.confidence}")


@dataclass
class ScaleSelection:
    """The chosen scale, its validation metrics, and every point evaluated (sorted by scale)."""

    scale: float
    best: SweepPoint
    sweep: list[SweepPoint]
    baseline: SweepPoint
    config: ScaleSearchConfig

    @property
    def evaluations(self) -> int:
        return len(self.sweep)

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "best": asdict(self.best),
            "sweep": [asdict(p) for p in self.sweep],
            "baseline": asdict(self.baseline),
            "config": asdict(self.config),
            "evaluations": self.evaluations,
        }


class NoFeasibleScaleError(HfTbarError, ValueError):
    """No positive scale met the accuracy constraints. The message is one line; ``details`` holds the whole
    sweep as a multi-line table (the CLI prints it above the error line)."""

    exit_code = 8

    def __init__(self, message: str, sweep: list[SweepPoint]) -> None:
        super().__init__(message)
        self.sweep = sweep
        self.details = format_sweep(sweep)


def format_sweep(sweep: list[SweepPoint]) -> str:
    """A plain-text table of a sweep, one row per scale (for logs and error messages); ``n`` is the number of
    clean images CA was measured on."""
    rows = ["  scale      CA     ASR  target   n  feasible"]
    for p in sweep:
        tgt = "     -" if p.target_class_accuracy is None else f"{100 * p.target_class_accuracy:5.1f}%"
        count = "-" if p.clean_count is None else str(p.clean_count)
        rows.append(
            f"  {p.scale:5.3f}  {100 * p.clean_accuracy:5.1f}%  {100 * p.attack_success_rate:5.1f}%  {tgt}  "
            f"{count:>3}  {'yes' if p.feasible else 'no'}"
        )
    return "\n".join(rows)


#: What ``evaluate`` returns for one scale: ``(CA, ASR, target-class accuracy or None)``, optionally followed
#: by the image counts ``(clean, triggered, target-class)`` the three shares were measured on.
Measurement = tuple


def search_scale(
    evaluate: Callable[[float], Measurement], config: ScaleSearchConfig | None = None
) -> ScaleSelection:
    """Find the scale with the lowest ASR among those meeting the accuracy constraints.

    Args:
        evaluate: ``scale -> (clean_accuracy, attack_success_rate, target_class_accuracy or None)`` on
            validation data, optionally followed by the image counts ``(clean, triggered, target-class)`` the
            shares were measured on (they turn on the confidence bounds). Scale 0 is the backdoored model and
            sets the reference accuracies.
        config: Constraints and budget.

    Returns:
        The selection; points within ``asr_tolerance`` of the lowest ASR are ties, won by the
        highest clean + target-class accuracy.

    Raises:
        NoFeasibleScaleError: no positive scale qualifies (the message holds the sweep).
    """
    config = config or ScaleSearchConfig()
    cache: dict[float, SweepPoint] = {}

    def point(scale: float) -> SweepPoint:
        scale = round(float(scale), 6)
        if scale not in cache:
            ca, asr, tacc, *counts = evaluate(scale)
            cache[scale] = SweepPoint(scale, ca, asr, tacc, False, *counts)
            if scale != 0.0:
                cache[scale].feasible = qualifies(cache[scale])
            logger.debug("scale %.4f: CA %.4f ASR %.4f target %s", scale, ca, asr, tacc)
        return cache[scale]

    baseline = point(0.0)
    baseline.feasible = True

    def qualifies(p: SweepPoint) -> bool:
        ca = p.upper_bound(p.clean_accuracy, p.clean_count, config.confidence)
        ok = ca >= config.ca_threshold * baseline.clean_accuracy
        if config.target_threshold is not None and baseline.target_class_accuracy is not None:
            target = p.upper_bound(p.target_class_accuracy or 0.0, p.target_count, config.confidence)
            ok = ok and target >= config.target_threshold * baseline.target_class_accuracy
        return ok

    step = config.max_scale / (config.grid_points - 1)
    low, misses = 0.0, 0
    for i in range(1, config.grid_points):
        p = point(i * step)
        if p.feasible:
            low, misses = p.scale, 0
        else:
            misses += 1
            if misses == 2:  # clean accuracy keeps failing: larger scales only get worse
                break
    # Bisect between the largest feasible point and the first infeasible point above it.
    above = [s for s, p in cache.items() if s > low and not p.feasible]
    if above:
        lo, hi = low, min(above)
        for _ in range(config.bisection_steps):
            mid = (lo + hi) / 2
            if point(mid).feasible:
                lo = mid
            else:
                hi = mid
    sweep = sorted(cache.values(), key=lambda p: p.scale)
    feasible = [p for p in sweep if p.feasible and p.scale > 0]
    if not feasible:
        bounds = "" if config.confidence is None else f" (upper {100 * config.confidence:.0f}% Wilson bounds)"
        raise NoFeasibleScaleError(
            f"no scale > 0 keeps the accuracy constraints{bounds}: "
            f"CA >= {config.ca_threshold:.2f} x {100 * baseline.clean_accuracy:.1f}%"
            + (
                f", target-class accuracy >= {config.target_threshold:.2f} x "
                f"{100 * baseline.target_class_accuracy:.1f}%"
                if config.target_threshold is not None and baseline.target_class_accuracy is not None
                else ""
            )
            + f" ({len(sweep)} scales evaluated, the sweep is above); lower --ca_threshold or --target_threshold "
            "('none' turns the target-class constraint off), or give more validation images",
            sweep,
        )
    lowest = min(p.attack_success_rate for p in feasible)
    ties = [p for p in feasible if p.attack_success_rate <= lowest + config.asr_tolerance]
    best = max(ties, key=lambda p: (p.clean_accuracy + (p.target_class_accuracy or 0.0), -p.scale))
    return ScaleSelection(scale=best.scale, best=best, sweep=sweep, baseline=baseline, config=config)
