"""Choosing the negation scale alpha: lowest ASR subject to clean-accuracy constraints.

Pure search logic over evaluation callables, independent of models. The walk over candidate scales is a
coarse grid (stopping once clean accuracy has failed the constraint twice in a row), then bisection between
the largest qualifying grid point and the next one, where the constraint boundary lies; this needs far fewer
evaluations than a fixed grid of the same resolution.

Two strategies share that walk (``ScaleSearchConfig.strategy``):

- ``"halving"`` (:func:`search_scale_by_parts`, the default): the walk scores every candidate on a small
  stratified *screen* of the validation images (part 0); candidates that are clearly infeasible, or whose ASR
  is clearly above the best qualifying one's, are dropped on the screen's confidence bounds; only the
  survivors, best first, are completed on the rest of the images (part 1), until one qualifies on the whole
  set (and at most ``finalists`` are completed). Evaluations are counted in images forwarded, so the cost is
  reported in *full-validation evaluation equivalents* (the screen of a candidate costs its share of one).
- ``"full"`` (:func:`search_scale`): every candidate of the walk on the whole validation set.

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
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from .errors import ConfigError, HfTbarError
from .metrics import wilson_interval

logger = logging.getLogger(__name__)


@dataclass
class SweepPoint:
    """Validation metrics of the model ``theta_b - scale * tau`` (shares in [0, 1]).

    The counts are the images each share was measured on (``None`` when the evaluation did not say): clean
    images for CA, triggered non-target images for ASR, clean target-class images for target-class accuracy.
    ``screened`` marks a candidate of the halving strategy measured on the screen only (never chosen; its
    ``feasible`` says whether it qualified there).
    """

    scale: float
    clean_accuracy: float
    attack_success_rate: float
    target_class_accuracy: float | None = None
    feasible: bool = False
    clean_count: int | None = None
    triggered_count: int | None = None
    target_count: int | None = None
    screened: bool = False

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
    strategy: Literal["halving", "full"] = field(
        default="halving",
        metadata={
            "help": "halving: score candidate scales on a stratified screen of the validation images and complete "
            "only the survivors on the rest; full: every candidate on every validation image."
        },
    )
    screen_fraction: float = field(
        default=0.125,
        metadata={
            "help": "Share of the validation images in the halving strategy's screen (stratified by class)."
        },
    )
    min_screen_images: int = field(
        default=64,
        metadata={
            "help": "Fewest clean images in the screen; a validation set under twice this is searched in full."
        },
    )
    screen_confidence: float = field(
        default=0.99,
        metadata={
            "help": "Two-sided level of the Wilson intervals the halving screen prunes with: a candidate is "
            "dropped there only when its few images show, at this level, that it fails the constraints or "
            "leaves more ASR than the best (a wrongly dropped candidate changes the choice; a kept one costs "
            "one completion at most)."
        },
    )
    finalists: int = field(
        default=2,
        metadata={
            "help": "Most candidates completed on the whole validation set once one qualifies there (halving): "
            "a runner-up on the screen that may tie with the leader is completed too, as the screen's few "
            "images cannot settle a tie on accuracy."
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
        if self.strategy not in ("halving", "full"):
            raise ConfigError(f"strategy must be 'halving' or 'full', got {self.strategy!r}")
        if not 0 < self.screen_fraction < 1:
            raise ConfigError(f"screen_fraction must be in (0, 1), got {self.screen_fraction}")
        if self.min_screen_images < 1:
            raise ConfigError(f"min_screen_images must be >= 1, got {self.min_screen_images}")
        if not 0 < self.screen_confidence < 1:
            raise ConfigError(f"screen_confidence must be in (0, 1), got {self.screen_confidence}")
        if self.finalists < 1:
            raise ConfigError(f"finalists must be >= 1, got {self.finalists}")


@dataclass
class ScaleSelection:
    """The chosen scale, its validation metrics, and every point evaluated (sorted by scale).

    ``cost`` is the work of the search in full-validation evaluation equivalents: images forwarded through the
    model (clean and triggered) divided by those of one evaluation of every validation image; reused
    predictions (the backdoored model's clean ones) cost nothing. ``strategy`` is the one that ran.
    """

    scale: float
    best: SweepPoint
    sweep: list[SweepPoint]
    baseline: SweepPoint
    config: ScaleSearchConfig
    cost: float | None = None
    strategy: str = "full"

    @property
    def evaluations(self) -> int:
        """Distinct scales evaluated, the backdoored model (scale 0) included."""
        return len(self.sweep)

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "best": asdict(self.best),
            "sweep": [asdict(p) for p in self.sweep],
            "baseline": asdict(self.baseline),
            "config": asdict(self.config),
            "evaluations": self.evaluations,
            "cost": self.cost,
            "strategy": self.strategy,
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
    clean images CA was measured on, and ``feasible`` reads ``screen`` / ``(no)`` for a candidate of the halving
    strategy judged on the screen only (qualified there / did not)."""
    rows = ["  scale      CA     ASR  target   n  feasible"]
    for p in sweep:
        tgt = "     -" if p.target_class_accuracy is None else f"{100 * p.target_class_accuracy:5.1f}%"
        count = "-" if p.clean_count is None else str(p.clean_count)
        feasible = ("screen" if p.feasible else "(no)") if p.screened else ("yes" if p.feasible else "no")
        rows.append(
            f"  {p.scale:5.3f}  {100 * p.clean_accuracy:5.1f}%  {100 * p.attack_success_rate:5.1f}%  {tgt}  "
            f"{count:>3}  {feasible}"
        )
    return "\n".join(rows)


#: What ``evaluate`` returns for one scale: ``(CA, ASR, target-class accuracy or None)``, optionally followed
#: by the image counts ``(clean, triggered, target-class)`` the three shares were measured on.
Measurement = tuple


@dataclass
class Counts:
    """What one evaluation of one scale counted on one part of the validation images; counts of disjoint parts
    add up (``a + b``).

    Attributes:
        clean: Clean images; ``clean_correct`` of them classified right.
        triggered: Triggered images the ASR is measured on; ``hits`` of them classified as the target.
        target: Clean images of the target class (``None``: no target-class accuracy); ``target_correct`` right.
        forwarded: Images actually passed through the model for this evaluation (reused predictions: 0).
    """

    clean: int
    clean_correct: int
    triggered: int
    hits: int
    target: int | None = None
    target_correct: int | None = None
    forwarded: int = 0

    def __add__(self, other: Counts) -> Counts:
        both = self.target is not None and other.target is not None
        return Counts(
            self.clean + other.clean,
            self.clean_correct + other.clean_correct,
            self.triggered + other.triggered,
            self.hits + other.hits,
            self.target + other.target if both else None,
            self.target_correct + other.target_correct if both else None,
            self.forwarded + other.forwarded,
        )

    def measurement(self, scale: float) -> Measurement:
        """What :func:`search_scale`'s ``evaluate`` returns for these counts: the three shares, then the counts."""
        p = self.point(scale)
        return (
            p.clean_accuracy, p.attack_success_rate, p.target_class_accuracy,
            p.clean_count, p.triggered_count, p.target_count,
        )  # fmt: skip

    def point(self, scale: float) -> SweepPoint:
        """The sweep point of these counts (shares in [0, 1]; a part without target-class images has target-class
        accuracy ``None`` and count 0, and the target constraint is not judged on it)."""
        if self.clean == 0 or self.triggered == 0:
            raise HfTbarError(f"scale {scale}: an evaluation counted {self.clean} clean and {self.triggered} "
                              "triggered images; both must be positive")  # fmt: skip
        target = None if not self.target else self.target_correct / self.target
        return SweepPoint(
            scale, self.clean_correct / self.clean, self.hits / self.triggered, target, False,
            self.clean, self.triggered, self.target,
        )  # fmt: skip


class _Constraints:
    """The accuracy constraints of ``config`` against the backdoored model's ``baseline`` point."""

    def __init__(self, baseline: SweepPoint, config: ScaleSearchConfig) -> None:
        self.baseline, self.config = baseline, config

    def __call__(self, p: SweepPoint) -> bool:
        config, baseline = self.config, self.baseline
        ca = p.upper_bound(p.clean_accuracy, p.clean_count, config.confidence)
        ok = ca >= config.ca_threshold * baseline.clean_accuracy
        if (
            config.target_threshold is not None
            and baseline.target_class_accuracy is not None
            and p.target_count != 0
        ):
            target = p.upper_bound(p.target_class_accuracy or 0.0, p.target_count, config.confidence)
            ok = ok and target >= config.target_threshold * baseline.target_class_accuracy
        return ok

    def refusal(self, sweep: list[SweepPoint]) -> NoFeasibleScaleError:
        config, baseline = self.config, self.baseline
        bounds = "" if config.confidence is None else f" (upper {100 * config.confidence:.0f}% Wilson bounds)"
        return NoFeasibleScaleError(
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


def _walk(point: Callable[[float], SweepPoint], config: ScaleSearchConfig, settle: bool = False) -> None:
    """The coarse grid, then bisection at the constraint boundary, over ``point(scale)`` (which judges
    feasibility and remembers what it evaluated).

    ``settle`` skips the bisection once a qualifying grid point has an ASR within ``asr_tolerance`` of 0: the
    points it would add lie above that scale, so they could only tie on ASR, and ties go to accuracy, which
    falls with the scale.
    """
    step = config.max_scale / (config.grid_points - 1)
    low, high, misses, lowest = 0.0, None, 0, math.inf
    for i in range(1, config.grid_points):
        p = point(i * step)
        if p.feasible:
            low, high, misses = p.scale, None, 0
            lowest = min(lowest, p.attack_success_rate)
        else:
            high = p.scale if high is None else high
            misses += 1
            if misses == 2:  # clean accuracy keeps failing: larger scales only get worse
                break
    if settle and lowest <= config.asr_tolerance:
        return
    if high is not None:  # bisect between the largest feasible point and the first infeasible point above it
        lo, hi = low, high
        for _ in range(config.bisection_steps):
            mid = (lo + hi) / 2
            if point(mid).feasible:
                lo = mid
            else:
                hi = mid


def _choose(feasible: list[SweepPoint], tolerance: float) -> SweepPoint:
    """Lowest ASR; points within ``tolerance`` of it are ties, won by the highest CA + target-class accuracy
    (then the smallest scale)."""
    lowest = min(p.attack_success_rate for p in feasible)
    ties = [p for p in feasible if p.attack_success_rate <= lowest + tolerance]
    return max(ties, key=lambda p: (p.clean_accuracy + (p.target_class_accuracy or 0.0), -p.scale))


def _ranked(points: list[SweepPoint], tolerance: float) -> list[SweepPoint]:
    """``points`` in the order :func:`_choose` prefers them."""
    left, order = list(points), []
    while left:
        order.append(_choose(left, tolerance))
        left.remove(order[-1])
    return order


def search_scale(
    evaluate: Callable[[float], Measurement], config: ScaleSearchConfig | None = None
) -> ScaleSelection:
    """Find the scale with the lowest ASR among those meeting the accuracy constraints, evaluating every
    candidate on the whole validation set (the ``"full"`` strategy).

    Args:
        evaluate: ``scale -> (clean_accuracy, attack_success_rate, target_class_accuracy or None)`` on
            validation data, optionally followed by the image counts ``(clean, triggered, target-class)`` the
            shares were measured on (they turn on the confidence bounds). Scale 0 is the backdoored model and
            sets the reference accuracies.
        config: Constraints and budget.

    Returns:
        The selection (``cost``: one equivalent per scale evaluated); points within ``asr_tolerance`` of the
        lowest ASR are ties, won by the highest clean + target-class accuracy.

    Raises:
        NoFeasibleScaleError: no positive scale qualifies (the message holds the sweep).
    """
    config = config or ScaleSearchConfig()
    cache: dict[float, SweepPoint] = {}
    constraints: _Constraints | None = None

    def point(scale: float) -> SweepPoint:
        scale = round(float(scale), 6)
        if scale not in cache:
            ca, asr, tacc, *counts = evaluate(scale)
            cache[scale] = SweepPoint(scale, ca, asr, tacc, False, *counts)
            if constraints is not None:
                cache[scale].feasible = constraints(cache[scale])
            logger.debug("scale %.4f: CA %.4f ASR %.4f target %s", scale, ca, asr, tacc)
        return cache[scale]

    baseline = point(0.0)
    baseline.feasible, constraints = True, _Constraints(baseline, config)
    _walk(point, config)
    sweep = sorted(cache.values(), key=lambda p: p.scale)
    feasible = [p for p in sweep if p.feasible and p.scale > 0]
    if not feasible:
        raise constraints.refusal(sweep)
    best = _choose(feasible, config.asr_tolerance)
    return ScaleSelection(best.scale, best, sweep, baseline, config, cost=float(len(sweep)), strategy="full")


def search_scale_by_parts(
    evaluate: Callable[[float, int], Counts], baseline: Counts, config: ScaleSearchConfig | None = None
) -> ScaleSelection:
    """The ``"halving"`` strategy: screen every candidate of the walk on part 0 of the validation images, then
    complete only the survivors on part 1.

    A screened candidate survives when it qualifies on the screen's confidence bounds (at ``screen_confidence``)
    and its ASR's lower Wilson bound is not above the best qualifying candidate's upper bound plus
    ``asr_tolerance`` (it may still be the best). Survivors are completed best first (then, while none qualifies on the whole set, the dominated
    ones); completion stops once one qualifies on the whole set and either ``finalists`` were completed or no
    candidate left could tie with it. When the best completed candidate still leaves more ASR than
    ``asr_tolerance`` and a larger candidate is known to fail, the boundary between them is bisected on every image
    (``bisection_steps`` completions), as the full search bisects. The choice is then made among completed candidates only, by the rule of
    :func:`search_scale`.

    Args:
        evaluate: ``(scale, part) -> Counts`` of ``theta_b - scale * tau`` on part 0 (the screen, stratified by
            class) or part 1 (every other validation image). Never called with scale 0.
        baseline: The backdoored model's counts: clean (and target-class) counts over the whole set give the
            reference accuracies; its triggered counts are only reported.
        config: Constraints and budget.

    Returns:
        The selection; its sweep holds every candidate with the counts it was judged on (the screen's for those
        not completed) and ``cost`` the images forwarded, in full-validation evaluation equivalents.

    Raises:
        NoFeasibleScaleError: no completed candidate qualifies on the whole set (the message holds the sweep).
    """
    config = config or ScaleSearchConfig()
    base = baseline.point(0.0)
    base.feasible = True
    constraints = _Constraints(base, config)
    # the screen prunes only what its few images show at the stricter screen_confidence
    screening = _Constraints(base, replace(config, confidence=config.screen_confidence))
    screens: dict[float, Counts] = {}
    points: dict[float, SweepPoint] = {0.0: base}
    forwarded = baseline.forwarded

    def screened(scale: float) -> SweepPoint:
        scale = round(float(scale), 6)
        if scale not in screens:
            screens[scale] = evaluate(scale, 0)
            points[scale] = screens[scale].point(scale)
            points[scale].feasible = screening(points[scale])
        return points[scale]

    _walk(screened, config, settle=True)
    forwarded += sum(c.forwarded for c in screens.values())
    tolerance = config.asr_tolerance

    def asr_bounds(p: SweepPoint) -> tuple[float, float]:
        hits = round(p.attack_success_rate * p.triggered_count)
        return wilson_interval(hits, p.triggered_count, config.screen_confidence)

    qualified = [points[s] for s in screens if points[s].feasible]
    survivors: list[SweepPoint] = []
    if qualified:
        best_upper = min(asr_bounds(p)[1] for p in qualified)
        survivors = [p for p in qualified if asr_bounds(p)[0] <= best_upper + tolerance]
    # when no survivor qualifies on the whole set, the dominated candidates follow, best first
    dominated = [p for p in qualified if p not in survivors]
    completed: dict[float, SweepPoint] = {}

    def complete(scale: float) -> SweepPoint:
        """``scale`` judged on every image (screened first when it is new; once only)."""
        nonlocal forwarded
        if scale in completed:
            return completed[scale]
        if scale not in screens:
            screens[scale] = evaluate(scale, 0)
            forwarded += screens[scale].forwarded
        rest = evaluate(scale, 1)
        forwarded += rest.forwarded
        completed[scale] = points[scale] = (screens[scale] + rest).point(scale)
        points[scale].feasible = constraints(points[scale])
        return points[scale]

    for candidate in _ranked(survivors, tolerance) + _ranked(dominated, tolerance):
        passed = [p for p in completed.values() if p.feasible]
        if passed:
            leader = _choose(passed, tolerance)
            if (
                len(completed) >= config.finalists
                or asr_bounds(candidate)[0] > leader.attack_success_rate + tolerance
            ):
                break
        complete(candidate.scale)
    feasible = [p for p in completed.values() if p.feasible]
    if feasible:
        # While the chosen scale still leaves ASR, the boundary above it decides: bisect on every image between it
        # and the nearest larger candidate known to fail (on every image, or clearly on the screen), as the full
        # search bisects.
        best = _choose(feasible, tolerance)
        above = [s for s, p in points.items() if s > best.scale and not p.feasible]
        if best.attack_success_rate > tolerance and above:
            lo, hi = best.scale, min(above)
            for _ in range(config.bisection_steps):
                mid = round((lo + hi) / 2, 6)
                if complete(mid).feasible:
                    lo = mid
                else:
                    hi = mid
            feasible = [p for p in completed.values() if p.feasible]
    for scale in screens.keys() - completed.keys():
        points[scale].screened = True  # judged on the screen only: never chosen
    sweep = sorted(points.values(), key=lambda p: p.scale)
    if not feasible:
        raise constraints.refusal(sweep)
    best = _choose(feasible, tolerance)
    full = best.clean_count + best.triggered_count
    logger.info(
        "scale search: %d candidates screened on %d of %d clean images, %d completed; cost %.2f full evaluations",
        len(screens), next(iter(screens.values())).clean, best.clean_count, len(completed), forwarded / full,
    )  # fmt: skip
    return ScaleSelection(best.scale, best, sweep, base, config, cost=forwarded / full, strategy="halving")
