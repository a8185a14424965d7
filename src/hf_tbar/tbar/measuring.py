"""Measuring: evaluating a model, selecting the scale and detecting, as functions over a zero-shot classifier
and an image set. Every pass streams its images batch by batch."""

from __future__ import annotations

import copy
import logging

import torch

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.images import ImageSet
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict, detect
from ..errors import DataError
from ..evaluation import EvalResult
from ..scale_search import (
    Counts,
    ScaleSearchConfig,
    ScaleSelection,
    format_sweep,
    search_scale,
    search_scale_by_parts,
)
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier
from .validation import ValidationSet

logger = logging.getLogger(__name__)


def classifier_over(classifier: ZeroShotClassifier, model: torch.nn.Module) -> ZeroShotClassifier:
    """A classifier with ``classifier``'s text head and pixel normalisation over another ``model`` (a copy or a
    sanitized model), on the same device."""
    mean, std = classifier.mean.flatten(), classifier.std.flatten()
    return ZeroShotClassifier(model, classifier.head, mean, std).to(classifier.head.device)


def validation_set(
    images: ImageSet,
    num_classes: int,
    search: ScaleSearchConfig | None = None,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> ValidationSet:
    """The :class:`~hf_tbar.tbar.validation.ValidationSet` of a search: split into a screen and the rest under
    the ``"halving"`` strategy (seeded by ``seed``), one part under ``"full"``."""
    search = search or ScaleSearchConfig()
    screen = (search.screen_fraction, search.min_screen_images) if search.strategy == "halving" else None
    return ValidationSet(images, num_classes, screen, image_size, seed)


def select_scale(
    classifier: ZeroShotClassifier,
    vector: TaskVector,
    images: ImageSet | ValidationSet,
    trigger: Trigger | None,
    target: int,
    classnames: tuple[str, ...] | list[str],
    search: ScaleSearchConfig | None = None,
    triggered: ImageSet | None = None,
) -> ScaleSelection:
    """Step 5 of TBAR: the scale ``alpha`` of ``theta_b - alpha * vector`` with the lowest validation ASR subject
    to the accuracy constraints of ``search``.

    ``classifier`` is over the backdoored model, which is never modified: one working copy is re-weighted in
    place per candidate scale (from the backdoored tensors the vector touches) and the text head is reused.
    ``images`` are the validation images, or their :class:`~hf_tbar.tbar.validation.ValidationSet` when the
    backdoored model's clean predictions were already taken (the task check): the images are decoded, and
    ``trigger`` stamped on them, once for the whole search when they fit in memory (``triggered``: images found
    carrying the trigger, measured as they are). The strategy of ``search`` decides which candidates see which
    images (:mod:`hf_tbar.scale_search`); the selection's ``cost`` counts the images forwarded.

    Raises:
        DataError: the validation images hold no image outside the target class (no ASR can be measured).
        NoFeasibleScaleError: no scale keeps the constraints.
    """
    search = search or ScaleSearchConfig()
    if not isinstance(images, ValidationSet):
        images = validation_set(images, len(classnames), search)
    images.arm(trigger, target, triggered, classnames[target])
    model = classifier.model
    work = copy.deepcopy(model)
    scored = classifier_over(classifier, work)
    # No second copy of the weights the vector touches is kept (a model's worth of memory at ViT-L/14).
    base = {k: v for k, v in model.state_dict().items() if k in vector}

    def reweigh(scale: float) -> None:
        state = work.state_dict()
        with torch.no_grad():
            for name, tensor in base.items():
                state[name].copy_(tensor)
        vector.apply_to(work, -scale, in_place=True)

    start = images.forwarded
    baseline = images.baseline_counts(classifier)
    if images.screened:

        def evaluate_part(scale: float, part: int) -> Counts:
            reweigh(scale)
            return images.counts(scored, part)

        selection = search_scale_by_parts(evaluate_part, baseline, search)
    else:

        def evaluate(scale: float):
            if scale == 0.0:
                counts = baseline
            else:
                reweigh(scale)
                counts = images.counts(scored, 0)
            return counts.measurement(scale)

        selection = search_scale(evaluate, search)
        selection.cost = (images.forwarded - start) / (
            selection.best.clean_count + selection.best.triggered_count
        )
    logger.info(
        "selected scale %.3f (%s search, %d scales, cost %.2f full-validation evaluations; validation CA %.1f%%, "
        "ASR %.1f%%); the sweep:\n%s",
        selection.scale,
        selection.strategy,
        selection.evaluations,
        selection.cost,
        100 * selection.best.clean_accuracy,
        100 * selection.best.attack_success_rate,
        format_sweep(selection.sweep),
    )
    return selection


def verify_removal(
    classifier: ZeroShotClassifier,
    sanitized: torch.nn.Module,
    images: ImageSet | ValidationSet,
    trigger: Trigger | None,
    target: int,
    num_classes: int,
    triggered: ImageSet | None = None,
) -> tuple[EvalResult, EvalResult]:
    """The backdoored model (``classifier``'s) and ``sanitized`` on the test ``images``, decoded and stamped once
    for both when they fit in memory (or the search's own :class:`~hf_tbar.tbar.validation.ValidationSet`,
    whose backdoored clean predictions are reused, when the test images are the validation images).

    Returns:
        ``(before, after)``: CA, ASR (``trigger`` stamped, or ``triggered`` images found), target-class and
        per-class accuracy.
    """
    if not isinstance(images, ValidationSet):
        images = ValidationSet(images, num_classes)
        images.baseline(classifier)
    if images.target is None:
        images.arm(trigger, target, triggered)
    before = images.result(classifier, backdoored=True)
    return before, images.result(classifier_over(classifier, sanitized))


def detect_backdoor(
    classifier: ZeroShotClassifier,
    processor,
    task: TaskSpec,
    pool: ImageSet,
    config: DetectionConfig,
    decree: DecreeConfig | None = None,
) -> ScanVerdict:
    """Judge ``classifier``'s model with the detectors of ``config`` on up to ``config.detection_images`` images
    of ``pool`` (a seeded random subset; only those are decoded, with their labels when the images carry them).

    Raises:
        DataError: fewer than two clean images.
    """
    if len(pool) < 2:
        raise DataError(f"detection needs at least 2 clean images, got {len(pool)}")
    generator = torch.Generator().manual_seed(config.detection_seed)
    order = torch.randperm(len(pool), generator=generator)[: config.detection_images]
    chosen, labels = pool.select(order.tolist()).tensors()
    return detect(classifier.model, processor, classifier, task, chosen, labels, config, decree)
