"""The stages of an unlearning run around the model: its arguments checked before any work (which trigger,
which images, which variant, which target), the detection settings and the verdict taken from the detectors,
the stopwatch that times each stage, the verification before and after, and the result assembled with its
warnings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.images import ImageSet
from ..data.task_data import resolve_target
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict
from ..errors import ConfigError, DataError
from ..evaluation import EvalResult, ensure_solves_task
from ..results import NoBackdoorDetectedError, UnlearningResult, run_warnings
from ..scale_search import ScaleSearchConfig, ScaleSelection
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier
from .config import TBARConfig
from .fitter import FitLog
from .measuring import verify_removal
from .unlearning_set import FoundSplit
from .validation import ValidationSet

logger = logging.getLogger(__name__)

#: Pass as ``trigger`` to :meth:`~hf_tbar.BackdoorUnlearner.unlearn` when the trigger is unknown (detected).
AUTO_TRIGGER = "auto"
#: Variants that need a trigger to stamp on clean images (not possible with found poisoned images alone).
STAMPING_VARIANTS = ("repair", "repair-preserving")


def check_request(
    trigger: Trigger | ScanVerdict | str | None,
    target: int | str | None,
    clean: ImageSet | None,
    poisoned: object | None,
    variant: str,
) -> None:
    """Refuse a run whose arguments cannot work, before the model is judged or any image fine-tuned.

    Raises:
        ConfigError: no trigger and no poisoned images, a stamping variant without a trigger, an unknown
            trigger string, or a known trigger without a target.
        DataError: a trigger to stamp or to invert with no clean images.
    """
    if trigger is None:
        if poisoned is None:
            raise ConfigError("give a trigger, trigger='auto', or poisoned images found as they are")
        if variant in STAMPING_VARIANTS:
            raise ConfigError(
                f"variant {variant!r} stamps the trigger on clean images, which needs the trigger itself: with "
                "found poisoned images use 'plain' or 'target-preserving'"
            )
    elif isinstance(trigger, str) and trigger != AUTO_TRIGGER:
        raise ConfigError(f"trigger must be a Trigger object or {AUTO_TRIGGER!r}, got {trigger!r}")
    elif clean is None and not isinstance(trigger, ScanVerdict):
        raise DataError(
            "trigger='auto' needs clean images to invert a trigger from"
            if isinstance(trigger, str)
            else "a known trigger needs clean images to be stamped on (clean_pixels)"
        )
    if (isinstance(trigger, Trigger) or trigger is None) and target is None:
        raise ConfigError("target is required when the trigger is known")


def detection_settings(
    decree: DetectionConfig | DecreeConfig | None, seed: int
) -> tuple[DetectionConfig, DecreeConfig | None]:
    """The detectors to run and DECREE's settings, from ``unlearn``'s ``decree`` argument: a
    :class:`~hf_tbar.detection.DecreeConfig` alone means DECREE alone (as before the other detectors existed)."""
    if isinstance(decree, DecreeConfig):
        return DetectionConfig(detectors=["decree"], detection_seed=decree.seed), decree
    return decree or DetectionConfig(detection_seed=seed), None


def removal(
    trigger: Trigger | ScanVerdict | str | None,
    target: int | str | None,
    scan: Callable[[], ScanVerdict],
    force: bool,
    task: TaskSpec,
    image_size: tuple[int, int],
    timings: dict[str, float],
) -> tuple[ScanVerdict | None, Trigger | None, int]:
    """What a run removes, as ``(verdict, trigger, target)``: a known trigger or found images (``None``) as given,
    with no verdict; else the verdict (``trigger`` itself when it is one, the one ``scan()`` finds for
    ``"auto"``, timed as ``detection_s``), its winner's inverted trigger, and ``target`` (default: the class the
    winner points to) checked as :func:`checked_target` does.

    Raises:
        NoBackdoorDetectedError: no winner, or a model no detector flags (unless ``force``).
    """
    if trigger is None or isinstance(trigger, Trigger):
        return None, trigger, target
    verdict = trigger
    if not isinstance(trigger, ScanVerdict):
        with timed(timings, "detection_s"):
            verdict = scan()
    if verdict.winner is None or not (verdict.is_backdoored or force):
        raise NoBackdoorDetectedError(verdict)
    target = verdict.target if target is None else target
    return verdict, verdict.trigger, checked_target(task, image_size, verdict.trigger, target)


def check_task(
    solves: Callable[[], EvalResult], num_classes: int, force: bool, timings: dict[str, float]
) -> None:
    """Does the model solve the task at all? ``solves()`` (its metrics on the validation images) timed as
    ``task_check_s``, before any work; refused near chance unless ``force``.

    Raises:
        ModelAtChanceError: clean accuracy near chance (:func:`~hf_tbar.evaluation.ensure_solves_task`).
    """
    with timed(timings, "task_check_s"):
        metrics = solves()
    if not force:
        ensure_solves_task(metrics, num_classes)


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record in ``timings[key]`` the seconds the block took."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def checked_target(
    task: TaskSpec, image_size: tuple[int, int], trigger: Trigger | None, target: int | str
) -> int:
    """``target`` as a class index of ``task`` (an index or a class name); then ``trigger`` stamped on one blank
    image of ``image_size`` ``(height, width)``, so that a trigger that does not fit the input (a patch larger
    than the image, say) fails before any fine-tuning.

    Raises:
        DataError / ConfigError: an unknown target; whatever the trigger raises on an image of that size.
    """
    index = resolve_target(task, target)
    if trigger is not None:
        trigger(torch.zeros((1, 3, *image_size)))
    return index


def verify(
    classifier: ZeroShotClassifier,
    validation: ValidationSet,
    test: ImageSet | None,
    removed: tuple[Trigger | None, int],
    sanitized: torch.nn.Module,
    triggered: ImageSet | None,
) -> tuple[EvalResult, EvalResult]:
    """The ``(before, after)`` metrics of a run, logged: the backdoored model (``classifier``'s) and the
    ``sanitized`` one on the ``test`` images (default: the validation images, whose decoded, triggered copies
    the search's ``validation`` set already holds), with the ``(trigger, target)`` removed or the held-out
    ``triggered`` images found as they are (:func:`~hf_tbar.tbar.measuring.verify_removal`: decoded and stamped
    once for both models)."""
    trigger, target = removed
    if test is None:
        test = validation if triggered is None else validation.images
    before, after = verify_removal(
        classifier, sanitized, test, trigger, target, validation.num_classes, triggered
    )
    logger.info("before: %s | after: %s", before.summary(), after.summary())
    return before, after


def assemble_result(
    sanitized: torch.nn.Module,
    negated: TaskVector,
    selection: ScaleSelection,
    verified: tuple[EvalResult, EvalResult],
    removed: tuple[Trigger | None, int],
    config: TBARConfig,
    found: FoundSplit | None,
    detection: ScanVerdict | None,
    log: FitLog,
    timings: dict[str, float],
    search: ScaleSearchConfig | None,
) -> UnlearningResult:
    """The :class:`~hf_tbar.results.UnlearningResult` of a run: the sanitized model and its vector, the scale
    search, the ``(before, after)`` metrics, the ``(trigger, target)`` removed, the fine-tunings of ``log`` (loss
    curves, steps, clean images), the stage timings in seconds, and the warnings (logged) of
    :func:`~hf_tbar.results.run_warnings` for the bound ``max_scale`` of ``search`` (default: the default
    search's)."""
    size = len(found.finetune) if found is not None else int(negated.metadata["unlearning_set_size"])
    before, after = verified
    result = UnlearningResult(sanitized, negated, selection, before, after, *removed, config, size, timings)
    result.detection, result.losses = detection, log.losses
    result.finetune_steps, result.finetune_clean_images = log.steps, log.clean_images
    if found is not None:
        result.data["poisoned_images"] = found.sizes()
    result.warnings = run_warnings(result, (search or ScaleSearchConfig()).max_scale)
    for message in result.warnings:
        logger.warning("%s", message)
    return result
