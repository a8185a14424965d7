"""Several backdoors at once: one trigger vector per (trigger, target), their sum removed with per-vector
scales chosen jointly on validation data by a coordinate search.

``theta_clean = theta_b - sum_i alpha_i * tau_i``. The search (pure: it only calls ``evaluate``) first
gives every vector the same scale (the grid value that is best overall), then, for ``rounds`` passes, sets
each ``alpha_i`` in turn to the grid value that is best with the others fixed. "Best" is the lowest worst
validation ASR over the triggers (ties: the lower mean ASR, then the higher CA), subject to
``CA >= ca_threshold x`` the backdoored model's. Starting from a common scale keeps the accuracy budget from
being spent on the first vector alone (a greedy pass from zero drives one ASR down and leaves no room for
the others).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from .attacks.base import Trigger
from .errors import ConfigError
from .evaluation import EvalResult
from .metrics import ca_retention
from .scale_search import ScaleSearchConfig
from .task_vector import TaskVector
from .variants import VARIANTS

logger = logging.getLogger(__name__)

__all__ = ["MultiUnlearning", "MultiUnlearningResult", "coordinate_search", "check_pairs"]

#: ``scales -> (clean accuracy, ASR per trigger)`` on validation data.
Evaluate = Callable[[list[float]], tuple[float, list[float]]]


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
    evaluate: Evaluate, count: int, grid: Sequence[float], ca_floor: float, rounds: int = 2
) -> tuple[list[float], int]:
    """Per-vector scales chosen jointly (see the module docstring); returns them and the evaluations made.

    Args:
        evaluate: ``scales -> (CA, [ASR_i])`` on validation data.
        count: Number of vectors.
        grid: Candidate values of each scale (dimensionless, >= 0).
        ca_floor: Smallest acceptable validation CA (a share in [0, 1]).
        rounds: Passes over the vectors.
    """
    scales = [0.0] * count
    cache: dict[tuple[float, ...], tuple[float, list[float]]] = {}

    def score(candidate: list[float]) -> tuple[float, float, float] | None:
        key = tuple(candidate)
        if key not in cache:
            cache[key] = evaluate(list(candidate))
        ca, asrs = cache[key]
        if ca < ca_floor:
            return None
        return (max(asrs), sum(asrs) / len(asrs), -ca)

    best = score(scales)
    for value in grid:  # one common scale first
        candidate = [float(value)] * count
        current = score(candidate)
        if current is not None and (best is None or current < best):
            best, scales = current, candidate
    for _ in range(rounds):
        for i in range(count):
            for value in grid:
                candidate = [*scales[:i], float(value), *scales[i + 1 :]]
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


class MultiUnlearning:
    """``unlearn_many`` (mixin of :class:`~hf_tbar.BackdoorUnlearner`)."""

    def unlearn_many(
        self,
        pairs: Sequence[tuple[Trigger, int | str]],
        clean_pixels,
        validation,
        test=None,
        search: ScaleSearchConfig | None = None,
        grid: Sequence[float] | None = None,
        rounds: int = 2,
    ) -> MultiUnlearningResult:
        """Remove several backdoors: fit one vector per ``(trigger, target)`` pair (``config.variant`` of it, as
        :meth:`unlearn` does for one), then choose their
        scales jointly on ``validation`` (CA floor: ``search.ca_threshold`` x the backdoored CA) and verify
        on ``test`` (default: ``validation``) with every trigger.

        Args:
            pairs: ``(trigger, target)`` per backdoor; a target is a class index or name.
            clean_pixels, validation, test: As in :meth:`unlearn` (tensors with labels, or image sets).
            grid: Candidate scales of each vector (default: 0 to ``search.max_scale`` in 25 steps).
            rounds: Passes of the coordinate search.

        Raises:
            ConfigError: no pair, or the same trigger twice.
        """
        check_pairs(pairs)
        search = search or ScaleSearchConfig()
        grid = list(grid) if grid is not None else torch.linspace(0, search.max_scale, 25).tolist()
        triggers = [trigger for trigger, _ in pairs]
        targets = [self.resolve_target(target) for _, target in pairs]
        test = validation if test is None else test
        clean = self._images(clean_pixels, "clean images")
        variant = VARIANTS[self.config.variant]  # each backdoor's vector is the configured variant
        vectors = [
            variant(self.vector_fits(trigger, target, clean)) for trigger, target in zip(triggers, targets)
        ]
        before_val = self._evaluate_all(validation, triggers, targets, None)

        def evaluate(scales: list[float]) -> tuple[float, list[float]]:
            results = self._evaluate_all(validation, triggers, targets, self._combined(vectors, scales))
            return results[0].clean_accuracy, [r.attack_success_rate for r in results]

        floor = search.ca_threshold * before_val[0].clean_accuracy
        scales, evaluations = coordinate_search(evaluate, len(vectors), grid, floor, rounds)
        model = self._combined(vectors, scales)
        before = self._evaluate_all(test, triggers, targets, None)
        after = self._evaluate_all(test, triggers, targets, model)
        logger.info("several backdoors: scales %s after %d evaluations", scales, evaluations)
        return MultiUnlearningResult(model, triggers, targets, vectors, scales, before, after, evaluations)

    def _combined(self, vectors: list[TaskVector], scales: list[float]) -> PreTrainedModel:
        """``theta_b - sum_i scales[i] * vectors[i]`` as a new model."""
        total = sum((vector * scale for vector, scale in zip(vectors, scales)), start=0)
        return self.apply(total, 1.0)

    def _evaluate_all(self, images, triggers, targets, model) -> list[EvalResult]:
        pixels, labels = images if isinstance(images, tuple) else (images, None)
        return [
            self.evaluate(pixels, labels, trigger, target, model=model)
            for trigger, target in zip(triggers, targets)
        ]
