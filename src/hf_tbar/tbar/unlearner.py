"""BackdoorUnlearner: TBAR end to end on a transformers CLIPModel.

1. build an unlearning set (triggered images labelled with the attack's target, or poisoned images found),
2. fine-tune a copy of the vision tower on it (full or LoRA) -> trigger vector ``tau``,
3. optionally transform ``tau`` (the variants of :mod:`hf_tbar.tbar.variants`),
4. pick ``alpha`` on validation data, 5. return ``theta_b - alpha * tau``, verified on held-out data.

Images are tensors, :class:`~hf_tbar.data.ImageSet` objects or ``datasets.Dataset`` splits; the latter are
decoded batch by batch by the model's own processor, so no split is ever held in memory.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.images import ImageSet
from ..data.pixels import image_size_of
from ..data.task_data import resolve_target
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict
from ..errors import ConfigError, DataError, ModelLoadError
from ..evaluation import ensure_solves_task
from ..io import refuse_overlap
from ..models import ModelFamily, family_of
from ..models.loading import load_model
from ..reporting.publishing import Publishing
from ..results import NoBackdoorDetectedError, UnlearningResult, run_warnings
from ..scale_search import ScaleSearchConfig
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head
from .config import TBARConfig
from .measuring import Measuring
from .multi import MultiUnlearning
from .unlearning_set import make_unlearning_set, split_found_images
from .variants import VARIANTS, VectorFits
from .vector_fitting import Images, VectorFitting

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_TRIGGER",
    "BackdoorUnlearner",
    "ScanVerdict",
    "NoBackdoorDetectedError",
    "UnlearningResult",
    "make_unlearning_set",
]

#: Pass as ``trigger`` to :meth:`BackdoorUnlearner.unlearn` when the trigger is unknown (DECREE inverts one).
AUTO_TRIGGER = "auto"
#: Variants that need a trigger to stamp on clean images (not possible with found poisoned images alone).
_STAMPING_VARIANTS = ("repair", "repair-preserving")


class BackdoorUnlearner(VectorFitting, Measuring, Publishing, MultiUnlearning):
    """Remove a backdoor from a CLIP model by trigger-vector negation (TBAR).

    Args:
        model: A :class:`~transformers.CLIPModel`, or a local path / Hub id loaded with ``from_pretrained``.
        processor: The model's :class:`~transformers.CLIPProcessor` (loaded with the model when a path is given).
        task: Class names and prompt templates of the zero-shot task the backdoor targets.
        config: Trigger fine-tuning settings and variant.
        device: Where evaluation runs; fine-tuning goes through Accelerate's device placement.
        image_column / label_column: Columns read when images are given as a ``datasets.Dataset``.
        caption_column: Column of captions of a clean dataset (the vectors are then fitted contrastively).

    The input model is never modified: fine-tuning and negation work on copies.

    Example:
        ```python
        >>> unlearner = BackdoorUnlearner("path/to/backdoored-clip", task=task)
        >>> result = unlearner.unlearn(trigger=BadNets(), target=0, clean_pixels=x_clean,
        ...                            validation=(x_val, y_val), test=(x_test, y_test))
        >>> unlearner.save_pretrained("sanitized-clip", result)
        ```
    """

    def __init__(
        self,
        model: PreTrainedModel | str | os.PathLike,
        processor=None,
        task: TaskSpec | None = None,
        config: TBARConfig | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
        label_column: str = "label",
        caption_column: str | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            self.source = str(model)
            model, loaded_processor = load_model(model)
            processor = processor or loaded_processor
        try:
            self.family: ModelFamily = family_of(model)
        except TypeError:
            raise TypeError(
                f"BackdoorUnlearner needs a transformers CLIPModel or SiglipModel, got {type(model).__name__}"
            ) from None
        if not hasattr(self, "source"):
            self.source = getattr(model, "name_or_path", "") or "in-memory"
        if processor is None:
            raise ConfigError(
                "the model's processor is needed (pass processor=..., or a checkpoint path that includes one)"
            )
        if task is None:
            raise ConfigError(
                "the zero-shot task (class names and templates) is needed: pass task=TaskSpec(...)"
            )
        side = self.family.image_size(model)
        self.image_size = image_size_of(processor)
        if self.image_size != (side, side):
            raise ModelLoadError(
                f"the processor crops images to {self.image_size[0]}x{self.image_size[1]} px but the model "
                f"reads {side}x{side} px: pass the model's own processor"
            )
        # Under accelerate launch / torchrun each process evaluates on its own GPU.
        local_gpu = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device or (local_gpu if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.task = task
        self.config = config or TBARConfig()
        self.columns = {"image_column": image_column, "label_column": label_column}
        self.caption_column = caption_column  # read from the clean (unlearning) dataset only
        if self.config.checkpoint_dir is not None:  # training checkpoints must never land in the input model
            refuse_overlap(self.config.checkpoint_dir, [self.source])
        self.head = build_zero_shot_head(self.model, processor.tokenizer, task)
        self.fit_losses: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ building blocks
    def classifier(self, model: torch.nn.Module | None = None) -> ZeroShotClassifier:
        """Zero-shot classifier over ``model`` (default: the backdoored model) with the fixed text head."""
        return ZeroShotClassifier.from_processor(
            model if model is not None else self.model, self.head, self.processor
        ).to(self.device)

    def resolve_target(self, target: int | str) -> int:
        """The class index of ``target``: an index, or a class name of the task (``"banana"``)."""
        return resolve_target(self.task, target)

    def apply(self, vector: TaskVector, scale: float) -> PreTrainedModel:
        """``theta_b - scale * vector`` as a new model (the backdoored model is left untouched)."""
        return vector.apply_to(self.model, -scale)

    def vector_fits(
        self, trigger: Trigger | None, target: int, clean: ImageSet | None, found=None
    ) -> VectorFits:
        """The lazy fine-tunings a variant combines, for one ``(trigger, target)`` on ``clean`` images (or on
        ``found`` poisoned images); each is fitted at most once, when the variant asks for it."""

        def fit_trigger() -> TaskVector:
            if found is not None:
                return self.fit_trigger_vector(None, target, triggered_pixels=found.finetune)
            return self.fit_trigger_vector(trigger, target, clean_pixels=clean)

        def pool(what: str) -> ImageSet:
            if clean is not None and clean.captions is not None:  # the contrastive route reads captions
                return clean
            if clean is None or clean.labels is None:
                raise DataError(
                    f"variant {self.config.variant!r} needs labelled clean images (clean_labels) to {what}"
                )
            return clean

        return VectorFits(
            trigger=functools.cache(fit_trigger),
            target_class=functools.cache(
                lambda: self.fit_target_vector(pool("find target-class images"), None, target)
            ),
            repair=functools.cache(
                lambda: self.fit_repair_vector(trigger, pool("label the triggered images"))
            ),
        )

    # ------------------------------------------------------------------ end to end
    def unlearn(
        self,
        trigger: Trigger | ScanVerdict | str | None,
        target: int | str | None,
        clean_pixels: Images | None,
        validation: Images | tuple,
        test: Images | tuple | None = None,
        clean_labels: torch.Tensor | None = None,
        search: ScaleSearchConfig | None = None,
        decree: DetectionConfig | DecreeConfig | None = None,
        force: bool = False,
        poisoned: Images | None = None,
        clean_captions: Sequence[str] | None = None,
    ) -> UnlearningResult:
        """Run TBAR: fit the trigger vector, apply the variant, select the scale, verify.

        Args:
            trigger: The known trigger; ``"auto"`` when it is unknown (the detectors invert one from
                ``clean_pixels``, see :meth:`detect`); a :class:`~hf_tbar.detection.ScanVerdict` already found
                (its winning detector's trigger and class are unlearned); or ``None`` with ``poisoned`` images
                found as they are.
            target: The attack's target class, an index or a class name; with ``"auto"`` it may be ``None``.
            clean_pixels: Clean images to build the unlearning set from: ``[0, 1]`` pixels ``(N, 3, H, W)``
                (labels in ``clean_labels``), an image set, or a ``datasets.Dataset`` (decoded per batch).
            validation: Images used to select the scale: ``(pixels, labels)``, an image set or a dataset.
            test: Held-out images for the before/after verification (default: validation).
            clean_labels: Labels of ``clean_pixels`` when they are a tensor (variants need them).
            search: Scale-search constraints.
            decree: With ``trigger="auto"``: the detection settings (:class:`~hf_tbar.detection.DetectionConfig`:
                which detectors, how many images, their budget), or DECREE's settings alone (a
                :class:`~hf_tbar.detection.DecreeConfig`, as before the other detectors existed: DECREE alone).
            force: Go on past the checks that would stop the run: a model whose clean validation accuracy is
                near chance (:func:`~hf_tbar.evaluation.ensure_solves_task`), and, with ``trigger="auto"``, a
                model no detector flags (its inverted trigger is unlearned anyway).
            poisoned: Images already carrying the trigger (found in the wild), with ``trigger=None``: they are
                split (seeded) into the unlearning set and held-out parts whose share classified as the
                target is the ASR used to select and verify the scale.
            clean_captions: One caption per image of ``clean_pixels`` when they are a tensor (a dataset's come
                from ``caption_column``): the vectors are then fitted with CLIP's contrastive loss.

        Raises:
            ModelAtChanceError: the model's clean validation accuracy is near chance (unless ``force``): checked
                before any work.
            NoBackdoorDetectedError: ``trigger="auto"`` and no detector that counts flagged the model (unless
                ``force``).
            NoFeasibleScaleError: no scale keeps the accuracy constraints.
            DataError / ConfigError: unusable images, labels, target or variant (naming them).
        """
        timings: dict[str, float] = {}
        detection, found = None, None
        self.fit_losses = {}
        clean = self._clean_set(clean_pixels, clean_labels, clean_captions)
        # The arguments first (cheap, and a mistake there says more than a verdict on the model would)...
        if trigger is None:
            if poisoned is None:
                raise ConfigError("give a trigger, trigger='auto', or poisoned images found as they are")
            if self.config.variant in _STAMPING_VARIANTS:
                raise ConfigError(
                    f"variant {self.config.variant!r} stamps the trigger on clean images, which needs the "
                    "trigger itself: with found poisoned images use 'plain' or 'target-preserving'"
                )
        elif isinstance(trigger, str) and trigger != AUTO_TRIGGER:
            raise ConfigError(f"trigger must be a Trigger object or {AUTO_TRIGGER!r}, got {trigger!r}")
        elif clean is None and not isinstance(trigger, ScanVerdict):
            raise DataError(
                "trigger='auto' needs clean images to invert a trigger from"
                if isinstance(trigger, str)
                else "a known trigger needs clean images to be stamped on (clean_pixels)"
            )
        if isinstance(trigger, Trigger) or trigger is None:
            if target is None:
                raise ConfigError("target is required when the trigger is known")
            target = self.resolve_target(target)
            self._check_trigger_fits(trigger)
        # ... then whether the model solves the task at all, before any fine-tuning or detection.
        start = time.perf_counter()
        solves = self.evaluate(validation)  # clean accuracy only
        timings["task_check_s"] = time.perf_counter() - start
        if not force:
            ensure_solves_task(solves, self.task.num_classes)
        if trigger is None:
            found = split_found_images(self._images(poisoned, "poisoned images"), seed=self.config.seed)
        elif not isinstance(trigger, Trigger):  # "auto", or a verdict already found
            detection = trigger
            if isinstance(trigger, str):
                start = time.perf_counter()
                if isinstance(decree, DecreeConfig):  # DECREE alone, as before the other detectors
                    decree_only = DetectionConfig(detectors=["decree"], detection_seed=decree.seed)
                    detection = self.detect(clean, decree_only, decree)
                else:
                    detection = self.detect(clean, decree)
                timings["detection_s"] = time.perf_counter() - start
            if detection.winner is None or not (detection.is_backdoored or force):
                raise NoBackdoorDetectedError(detection)
            trigger = detection.trigger
            target = self.resolve_target(detection.target if target is None else target)
            self._check_trigger_fits(trigger)

        fits = self.vector_fits(trigger, target, clean, found)
        start = time.perf_counter()
        negated = VARIANTS[self.config.variant](fits)
        negated.metadata = {**negated.metadata, "variant": self.config.variant}
        timings["vector_fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        held_out = found.validation if found is not None else None
        selection = self.select_scale(negated, validation, None, trigger, target, search, triggered=held_out)
        timings["scale_search_s"] = time.perf_counter() - start
        sanitized = self.apply(negated, selection.scale)
        test_set = test if test is not None else validation
        verify = found.test if found is not None else None
        start = time.perf_counter()
        before = self.evaluate(test_set, None, trigger, target, triggered=verify)
        after = self.evaluate(test_set, None, trigger, target, model=sanitized, triggered=verify)
        timings["verification_s"] = time.perf_counter() - start
        logger.info("before: %s | after: %s", before.summary(), after.summary())
        result = UnlearningResult(
            model=sanitized,
            vector=negated,
            selection=selection,
            before=before,
            after=after,
            trigger=trigger,
            target=target,
            config=self.config,
            unlearning_set_size=len(found.finetune)
            if found is not None
            else int(negated.metadata["unlearning_set_size"]),
            timings=timings,
            detection=detection,
            losses=dict(self.fit_losses),
        )
        if found is not None:
            result.data["poisoned_images"] = found.sizes()
        result.warnings = run_warnings(result, (search or ScaleSearchConfig()).max_scale)
        for message in result.warnings:
            logger.warning("%s", message)
        return result

    def _check_trigger_fits(self, trigger: Trigger | None) -> None:
        """Stamp the trigger on one blank image of the model's size, so a trigger that does not fit the input
        (a patch larger than the image, say) fails before any fine-tuning."""
        if trigger is not None:
            trigger(torch.zeros((1, 3, *self.image_size)))
