"""Several backdoors at once: one trigger vector per (trigger, target), their sum removed with per-vector
scales chosen jointly on validation data by a coordinate search.

``theta_clean = theta_b - sum_i alpha_i * tau_i``. The search (pure: it only calls ``evaluate``) first
gives every vector the same scale (the grid value that is best overall), then, for ``rounds`` passes, sets
each ``alpha_i`` in turn to the grid value that is best with the others fixed. "Best" is the lowest worst
validation ASR over the triggers (ties: the lower mean ASR, then the higher CA), subject to the constraints of
:class:`~hf_tbar.scale_search.ScaleSearchConfig`: ``CA >= ca_threshold x`` the backdoored model's and, per
trigger, target-class accuracy ``>= target_threshold x`` the backdoored model's, both on the upper Wilson bounds
as the single-backdoor search does. Starting from a common scale keeps the accuracy budget from being spent on
the first vector alone (a greedy pass from zero drives one ASR down and leaves no room for the others).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from ..attacks.base import Trigger
from ..data.images import ImageSet
from ..data.task_data import resolve_target
from ..errors import ConfigError
from ..evaluation import EvalResult, evaluate_classifier
from ..hub.gate import gate_failures
from ..metrics import ca_retention, loss_did_not_fall
from ..scale_search import NoFeasibleScaleError, ScaleSearchConfig, SweepPoint
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier
from .fitter import FitLog, VectorFitter
from .inputs import Images
from .measuring import classifier_over
from .variants import VARIANTS

logger = logging.getLogger(__name__)

__all__ = [
    "MultiUnlearningResult",
    "check_pairs",
    "constraints_hold",
    "coordinate_search",
    "remove_many",
    "unlearn_many",
]

#: ``scales -> (clean accuracy, ASR per trigger, whether the constraints hold)`` on validation data.
Evaluate = Callable[[list[float]], tuple[float, list[float], bool]]


def check_pairs(pairs: Sequence[tuple[Trigger, int | str]]) -> None:
    """Refuse an empty list and a trigger given twice (naming it).

    Raises:
        ConfigError: no pair, an entry that is not a ``(trigger, target)`` pair, or the same trigger twice.
    """
    if not pairs:
        raise ConfigError("give at least one (trigger, target) pair")
    seen: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], Trigger)):
            raise ConfigError(f"pair {index} is not a (trigger, target) pair: {pair!r}")
        key = json.dumps(pair[0].to_dict(), sort_keys=True)
        if key in seen:
            raise ConfigError(
                f"the same trigger is given twice (pairs {seen[key]} and {index}): {pair[0].describe()}"
            )
        seen[key] = index


def coordinate_search(
    evaluate: Evaluate, count: int, grid: Sequence[float], rounds: int = 2
) -> tuple[list[float], int]:
    """Per-vector scales chosen jointly (see the module docstring); returns them and the evaluations made.

    All zeros (the backdoored model) is never a candidate: when no other candidate meets the constraints, the
    scales it returns are all zero, which the caller reports as an error.

    Args:
        evaluate: ``scales -> (CA, [ASR_i], feasible)`` on validation data; ``feasible`` says whether the
            accuracy constraints hold for these scales.
        count: Number of vectors.
        grid: Candidate values of each scale (dimensionless, >= 0).
        rounds: Passes over the vectors.
    """
    scales = [0.0] * count
    cache: dict[tuple[float, ...], tuple[float, list[float], bool]] = {}

    def score(candidate: list[float]) -> tuple[float, float, float] | None:
        key = tuple(candidate)
        if key not in cache:
            cache[key] = evaluate(list(candidate))
        ca, asrs, feasible = cache[key]
        if not feasible:
            return None
        return (max(asrs), sum(asrs) / len(asrs), -ca)

    best = None  # all zeros is the backdoored model: never a result, as in the single-vector search
    for value in grid:  # one common scale first
        candidate = [float(value)] * count
        if not any(candidate):
            continue
        current = score(candidate)
        if current is not None and (best is None or current < best):
            best, scales = current, candidate
    for _ in range(rounds):
        for i in range(count):
            for value in grid:
                candidate = [*scales[:i], float(value), *scales[i + 1 :]]
                if not any(candidate):
                    continue
                current = score(candidate)
                if current is not None and (best is None or current < best):
                    best, scales = current, candidate
    return scales, len(cache)


@dataclass
class MultiUnlearningResult:
    """The sanitized model, one vector and scale per (trigger, target), and per-trigger metrics on test data.

    ``before[i]`` / ``after[i]`` are the evaluations with trigger ``i`` (CA is the same for every ``i``).
    """

    model: PreTrainedModel
    triggers: list[Trigger]
    targets: list[int]
    vectors: list[TaskVector]
    scales: list[float]
    before: list[EvalResult]
    after: list[EvalResult]
    evaluations: int
    warnings: list[str] = field(default_factory=list)

    @property
    def ca_retention(self) -> float | None:
        return ca_retention(self.after[0].clean_accuracy, self.before[0].clean_accuracy)

    @property
    def gate_failures(self) -> list[str]:
        """The publication gate (:func:`hf_tbar.hub.gate.gate_failures`) on each trigger's test metrics, each
        message prefixed with its trigger (empty when every backdoor passes)."""
        return [
            f"{trigger.name} -> class {target}: {message}"
            for trigger, target, before, after in zip(self.triggers, self.targets, self.before, self.after)
            for message in gate_failures(before, after)
        ]

    def table(self) -> str:
        """A markdown table: per trigger, ASR before and after, and the scale of its vector."""
        lines = ["| trigger | target | scale | ASR before | ASR after |", "|---|---|---|---|---|"]
        for i, trigger in enumerate(self.triggers):
            before, after = self.before[i].attack_success_rate, self.after[i].attack_success_rate
            lines.append(
                f"| {trigger.name} | {self.targets[i]} | {self.scales[i]:.2f} | {100 * before:.1f}% | "
                f"{100 * after:.1f}% |"
            )
        return "\n".join(lines)


def unlearn_many(
    fitter: VectorFitter,
    classifier: ZeroShotClassifier,
    pairs: Sequence[tuple[Trigger, int | str]],
    clean_pixels: Images,
    validation: Images | tuple,
    test: Images | tuple | None = None,
    search: ScaleSearchConfig | None = None,
    grid: Sequence[float] | None = None,
    rounds: int = 2,
) -> MultiUnlearningResult:
    """Remove several backdoors: fit one vector per ``(trigger, target)`` pair with ``fitter`` (its
    ``config.variant``, as a single run does), then choose their scales jointly on ``validation`` (the constraints
    of ``search``: CA and each target class's accuracy) and verify on ``test`` (default: ``validation``) with
    every trigger; ``classifier`` is over the backdoored model.

    Args:
        pairs: ``(trigger, target)`` per backdoor; a target is a class index or name.
        grid: Candidate scales of each vector (default: 0 to ``search.max_scale`` in 25 steps).
        rounds: Passes of the coordinate search.

    Raises:
        ConfigError: no pair, or the same trigger twice.
        NoFeasibleScaleError: no candidate but all-zero scales keeps the constraints.
    """
    check_pairs(pairs)
    search = search or ScaleSearchConfig()
    grid = list(grid) if grid is not None else torch.linspace(0, search.max_scale, 25).tolist()
    clean = fitter.images.read(clean_pixels, "clean images")
    variant = VARIANTS[fitter.context.config.variant]  # each backdoor's vector is the configured variant
    targets = [resolve_target(fitter.context.task, target) for _, target in pairs]
    fitted, losses = [], {}
    for (trigger, _), target in zip(pairs, targets):
        log = FitLog()
        fitted.append((trigger, target, variant(fitter.fits(trigger, target, clean, log=log))))
        losses.update({f"{trigger.name}: {label}": curve for label, curve in log.losses.items()})
    validation = fitter.images.read(validation, "evaluation images")
    test = validation if test is None else fitter.images.read(test, "evaluation images")
    return remove_many(classifier, fitted, validation, test, search, grid, rounds, losses)


def remove_many(
    classifier: ZeroShotClassifier,
    fitted: list[tuple[Trigger, int, TaskVector]],
    validation: ImageSet,
    test: ImageSet,
    search: ScaleSearchConfig,
    grid: Sequence[float],
    rounds: int,
    losses: dict[str, list[float]],
) -> MultiUnlearningResult:
    """Choose the scales of the ``fitted`` ``(trigger, target, vector)`` jointly on ``validation`` (the
    constraints of ``search``: CA and each target class's accuracy) and verify on ``test`` with every trigger.

    ``classifier`` is over the backdoored model (never modified); ``losses`` are the fine-tunings' loss curves,
    named in the warnings when one did not fall.

    Raises:
        NoFeasibleScaleError: no candidate but all-zero scales keeps the constraints.
    """
    triggers = [trigger for trigger, _, _ in fitted]
    targets = [target for _, target, _ in fitted]
    vectors = [vector for _, _, vector in fitted]

    def combined(scales: list[float]) -> PreTrainedModel:
        """``theta_b - sum_i scales[i] * vectors[i]`` as a new model."""
        total = sum((vector * scale for vector, scale in zip(vectors, scales)), start=0)
        return total.apply_to(classifier.model, -1.0)

    def evaluate_all(images: ImageSet, model: PreTrainedModel | None) -> list[EvalResult]:
        scored = classifier if model is None else classifier_over(classifier, model)
        return [evaluate_classifier(scored, images, None, t, c) for t, c in zip(triggers, targets)]

    baseline = evaluate_all(validation, None)

    def evaluate(scales: list[float]) -> tuple[float, list[float], bool]:
        results = evaluate_all(validation, combined(scales))
        return (
            results[0].clean_accuracy,
            [r.attack_success_rate for r in results],
            constraints_hold(results, baseline, search),
        )

    scales, evaluations = coordinate_search(evaluate, len(vectors), grid, rounds)
    if not any(scales):
        raise NoFeasibleScaleError(
            f"no scales keep the accuracy constraints for the {len(vectors)} backdoors together "
            f"(CA >= {search.ca_threshold:.2f} x {100 * baseline[0].clean_accuracy:.1f}%"
            + (
                ""
                if search.target_threshold is None
                else f", target-class accuracy >= {search.target_threshold:.2f} x each"
            )
            + f"; {evaluations} candidates evaluated): lower the thresholds or give more validation images",
            [],
        )
    model = combined(scales)
    before = evaluate_all(test, None)
    after = evaluate_all(test, model)
    logger.info("several backdoors: scales %s after %d evaluations", scales, evaluations)
    result = MultiUnlearningResult(model, triggers, targets, vectors, scales, before, after, evaluations)
    result.warnings = [
        f"{label}: the loss did not fall ({curve[0]:.3f} -> {curve[-1]:.3f}): raise learning_rate or steps"
        for label, curve in losses.items()
        if loss_did_not_fall(curve)
    ]
    result.warnings += [
        f"the scale {scale:.2f} of {trigger.name}'s vector is the search's bound (max_scale "
        f"{search.max_scale}): the vector may be too weak"
        for trigger, scale in zip(triggers, scales)
        if scale >= max(grid) * (1 - 1e-6)
    ]
    result.warnings += result.gate_failures
    for message in result.warnings:
        logger.warning("%s", message)
    return result


def constraints_hold(
    results: list[EvalResult], baseline: list[EvalResult], search: ScaleSearchConfig
) -> bool:
    """Whether CA and every trigger's target-class accuracy keep their thresholds (upper Wilson bounds)."""
    point = SweepPoint(0.0, results[0].clean_accuracy, 0.0, clean_count=results[0].num_examples)
    ca = point.upper_bound(point.clean_accuracy, point.clean_count, search.confidence)
    if ca < search.ca_threshold * baseline[0].clean_accuracy:
        return False
    if search.target_threshold is None:
        return True
    for result, reference in zip(results, baseline):
        if reference.target_class_accuracy is None:
            continue
        kept = point.upper_bound(result.target_class_accuracy or 0.0, result.num_target, search.confidence)
        if kept < search.target_threshold * reference.target_class_accuracy:
            return False
    return True
