"""Fitting TBAR's task vectors: fine-tune a copy of the vision tower on a small set, keep the weight difference.

:class:`VectorFitter` owns the fine-tuning (working copy, full or LoRA, optimizer, loss log); what is minimised
and on which rows is the :class:`~hf_tbar.tbar.objectives.FitObjective` passed to each call. Each vector records
in its metadata what it was fitted on and the loss per step; a :class:`FitLog` collects a run's fine-tunings.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel

from ..attacks.base import Trigger
from ..data.images import ImageSet
from ..errors import DataError
from ..memory import release_memory
from ..metrics import loss_did_not_fall
from ..models import family_of
from ..models.working_copy import grad_flags_kept, working_copy
from ..reporting.negation_adapter import low_rank_of
from ..task_vector import TaskVector
from ..training.backdoor import vision_parameters
from ..training.loop import run_training
from .contrastive import ContrastiveObjective
from .inputs import ImageReader, Images
from .objectives import ClassificationObjective, FitContext, FitObjective, FitRows
from .unlearning_set import FoundSplit
from .variants import VectorFits

logger = logging.getLogger(__name__)


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Turn on activation (gradient) checkpointing, non-reentrant so frozen inputs (LoRA) still work."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@dataclass
class FitLog:
    """The fine-tunings of one run: the loss per optimizer step of each (by its label), and the clean images
    they consumed (images used with their true class)."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    clean_images: int = 0

    @property
    def steps(self) -> dict[str, int]:
        """Optimizer steps per fine-tuning, by its label."""
        return {desc: len(curve) for desc, curve in self.losses.items()}


class VectorFitter:
    """The trigger, target-class and repair vectors of TBAR, each fitted with the objective it is given.

    Args:
        context: The backdoored model (never modified), its processor, head, task, settings and device.
        images: Reads the images the ``fit_*_vector`` methods are given.
        objective: Objective of the fine-tunings on images without captions (default: the zero-shot head's
            cross-entropy); captioned images use :class:`~hf_tbar.tbar.contrastive.ContrastiveObjective`.
    """

    def __init__(
        self, context: FitContext, images: ImageReader, objective: FitObjective | None = None
    ) -> None:
        self.context = context
        self.images = images
        self.objective = objective or ClassificationObjective()

    def objective_for(self, pool: ImageSet | None) -> FitObjective:
        """The contrastive objective for captioned images, else this fitter's ``objective``."""
        return ContrastiveObjective() if pool is not None and pool.captions is not None else self.objective

    def fit(self, rows: FitRows, log: FitLog | None = None) -> TaskVector:
        """Fine-tune a copy of the vision tower on ``rows``; return the weight difference ``theta_t - theta_b``.

        The vector's metadata holds ``losses`` (per optimizer step) then ``rows.metadata``; a warning is logged
        when the loss did not fall, since the vector then hardly holds what it should.
        """
        cfg = self.context.config
        try:
            with grad_flags_kept(self.context.model):  # the copy shares frozen tensors with the model
                losses, vector = self._train_copy(rows)
        finally:
            release_memory()
        curve = [float(loss) for loss in losses]
        if log is not None:
            log.losses[rows.desc] = curve
            log.clean_images += rows.clean_images
        if loss_did_not_fall(losses):
            logger.warning(
                "%s: the loss did not fall (%.3f -> %.3f over %d steps): the vector may not hold what it "
                "should; raise learning_rate (now %g) or steps",
                rows.desc,
                losses[0],
                losses[-1],
                len(losses),
                cfg.learning_rate,
            )
        vector.metadata["losses"] = curve
        vector.metadata.update(rows.metadata)
        return vector

    def _train_copy(self, rows: FitRows) -> tuple[list[float], TaskVector]:
        """Train a working copy of the model; only the tensors training changes are copied (all of the vision
        tower in mode ``full``, none in mode ``lora``, whose base weights stay frozen)."""
        cfg, model = self.context.config, self.context.model
        work = working_copy(model, share_vision=cfg.mode == "lora")
        if cfg.gradient_checkpointing:
            enable_checkpointing(work)
        if cfg.mode == "lora":
            for param in work.parameters():
                param.requires_grad_(False)
            pattern = family_of(work).lora_target_pattern(cfg.lora_target_modules)
            lora = LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=pattern
            )
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                work = get_peft_model(work, lora)
            params = [p for p in work.parameters() if p.requires_grad]
        else:
            params = vision_parameters(work)
        module, loss = rows.trainable(work)
        losses = run_training(module, params, rows.dataset, loss, cfg.finetune_config(), desc=rows.desc)
        if cfg.mode == "lora":
            vector = TaskVector.from_peft_model(work, metadata={"mode": "lora"})
            vector.low_rank = low_rank_of(work, lora)
            return losses, vector
        return losses, TaskVector.from_models(model, work, metadata={"mode": "full"})

    # ------------------------------------------------------------------ the vectors, from the user's images
    def fit_trigger_vector(
        self,
        trigger: Trigger | None = None,
        target: int | None = None,
        clean_pixels: Images | None = None,
        triggered_pixels: Images | None = None,
    ) -> TaskVector:
        """Step 2-3 of TBAR: fine-tune on triggered images labelled ``target``; ``tau = theta_t - theta_b``.

        Give either ``clean_pixels`` (tensor ``(N, 3, H, W)`` in ``[0, 1]``, an image set or a dataset) and a
        ``trigger`` to stamp on them (``config.unlearning_set_size`` images are drawn), or ``triggered_pixels``
        that already carry the trigger (e.g. poisoned images found in the wild; up to ``unlearning_set_size``).

        Raises:
            DataError: target out of range, empty set, or a set that carries no trigger.
        """
        target = self.context.task.check_label(target)
        if triggered_pixels is not None:
            return self.found_vector(self.images.read(triggered_pixels, "triggered images"), target)
        if trigger is None or clean_pixels is None:
            raise DataError("give clean_pixels and a trigger to stamp, or triggered_pixels")
        pool = self.images.read(clean_pixels, "clean images")
        return self.trigger_vector(self.objective_for(pool), pool, trigger, target)

    def fit_target_vector(self, clean_pixels: Images, labels: torch.Tensor | None, target: int) -> TaskVector:
        """A "target-class" vector from up to ``config.preserve_set_size`` *clean* images of ``target``
        (``labels`` are those of ``clean_pixels``; ``None`` when an image set carries them)."""
        target = self.context.task.check_label(target)
        pool = self.images.read(clean_pixels if labels is None else (clean_pixels, labels), "clean images")
        return self.target_vector(self.objective_for(pool), pool, target)

    def fit_repair_vector(
        self, trigger: Trigger, clean_pixels: Images, clean_labels: torch.Tensor | None = None
    ) -> TaskVector:
        """A "repair" vector: the triggered clean images, each pushed towards its true class (or caption)."""
        pool = self.images.read_pair(clean_pixels, clean_labels, "clean images")
        return self.repair_vector(self.objective_for(pool), pool, trigger)

    def fits(
        self,
        trigger: Trigger | None,
        target: int,
        clean: ImageSet | None,
        found: FoundSplit | None = None,
        log: FitLog | None = None,
    ) -> VectorFits:
        """The lazy fine-tunings a variant combines (:func:`lazy_fits`) with the objective ``clean`` calls for."""
        return lazy_fits(self, self.objective_for(clean), trigger, target, clean, found, log)

    # ------------------------------------------------------------------ the vectors, from image sets
    def trigger_vector(
        self,
        objective: FitObjective,
        pool: ImageSet,
        trigger: Trigger,
        target: int,
        log: FitLog | None = None,
    ) -> TaskVector:
        """Step 2-3 of TBAR: ``trigger`` stamped on ``config.unlearning_set_size`` images of ``pool``, pushed
        towards class ``target``; ``tau = theta_t - theta_b``."""
        return self.fit(objective.trigger_rows(self.context, pool, trigger, target), log)

    def found_vector(self, found: ImageSet, target: int, log: FitLog | None = None) -> TaskVector:
        """The trigger vector from images that already carry the trigger (found in the wild), labelled
        ``target`` (cross-entropy: found images carry no captions)."""
        return self.fit(ClassificationObjective().found_rows(self.context, found, target), log)

    def target_vector(
        self, objective: FitObjective, pool: ImageSet, target: int, log: FitLog | None = None
    ) -> TaskVector:
        """A "target-class" vector: the same fine-tuning on up to ``config.preserve_set_size`` *clean* images
        of ``target``."""
        return self.fit(objective.target_rows(self.context, pool, target), log)

    def repair_vector(
        self, objective: FitObjective, pool: ImageSet, trigger: Trigger, log: FitLog | None = None
    ) -> TaskVector:
        """A "repair" vector: the same fine-tuning on the same triggered images, each pushed towards its
        *true* class or own caption (the ``repair`` variant moves along it)."""
        return self.fit(objective.repair_rows(self.context, pool, trigger), log)


def lazy_fits(
    fitter: VectorFitter,
    objective: FitObjective,
    trigger: Trigger | None,
    target: int,
    clean: ImageSet | None,
    found: FoundSplit | None = None,
    log: FitLog | None = None,
) -> VectorFits:
    """The fine-tunings a variant combines, for one ``(trigger, target)`` on ``clean`` images (or on ``found``
    poisoned images); each runs at most once, when the variant asks for it.

    Raises (when asked for):
        DataError: a target-class or repair vector without labelled (or captioned) clean images.
    """

    def pool(what: str) -> ImageSet:
        if clean is None or (clean.captions is None and clean.labels is None):
            variant = fitter.context.config.variant
            raise DataError(f"variant {variant!r} needs labelled clean images (clean_labels) to {what}")
        return clean

    def trigger_vector() -> TaskVector:
        if found is not None:
            return fitter.found_vector(found.finetune, target, log)
        return fitter.trigger_vector(objective, clean, trigger, target, log)

    def target_vector() -> TaskVector:
        return fitter.target_vector(objective, pool("find target-class images"), target, log)

    def repair_vector() -> TaskVector:
        return fitter.repair_vector(objective, pool("label the triggered images"), trigger, log)

    return VectorFits(
        trigger=functools.cache(trigger_vector),
        target_class=functools.cache(target_vector),
        repair=functools.cache(repair_vector),
    )
