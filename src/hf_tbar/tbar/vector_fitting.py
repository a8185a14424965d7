"""Fitting TBAR's task vectors: fine-tune a copy of the vision tower on a small set, keep the weight difference.

:class:`VectorFitting` is a mixin of :class:`~hf_tbar.BackdoorUnlearner` (it uses its ``model``, ``config``,
``task`` and ``classifier``). Each vector records in its metadata what it was fitted on and the loss per step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from torch.utils.data import TensorDataset
from transformers import PreTrainedModel

from ..attacks.base import Trigger
from ..data.images import ImageSet, TensorImages, as_image_set
from ..data.pixels import validate_labels, validate_pixels
from ..errors import DataError
from ..memory import release_memory
from ..metrics import loss_did_not_fall
from ..models import family_of
from ..models.working_copy import grad_flags_kept, working_copy
from ..reporting.negation_adapter import low_rank_of
from ..task_vector import TaskVector
from ..training.backdoor import classification_loss, vision_parameters
from ..training.loop import run_training
from .caption_fitting import CaptionVectorFitting
from .unlearning_set import make_unlearning_set

logger = logging.getLogger(__name__)

Images = torch.Tensor | ImageSet | Dataset
#: ``objective(copy) -> (module to train, loss(module, batch))``.
Objective = Callable[[PreTrainedModel], tuple[torch.nn.Module, Callable]]


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Turn on activation (gradient) checkpointing, non-reentrant so frozen inputs (LoRA) still work."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class VectorFitting(CaptionVectorFitting):
    """The trigger, target-class and repair vectors of TBAR (mixin of ``BackdoorUnlearner``); with captioned
    clean images, the contrastive route of :class:`~hf_tbar.tbar.caption_fitting.CaptionVectorFitting`."""

    def _finetune_vector(
        self, dataset: TensorDataset, desc: str, objective: Objective | None = None
    ) -> TaskVector:
        """Fine-tune a copy of the vision tower on ``dataset``; return the weight difference.

        ``objective(copy) -> (module, loss)`` says what is trained and how; the default is the zero-shot
        head's cross-entropy on ``(pixels, labels)`` rows.

        The vector's metadata holds ``losses`` (per optimizer step); a warning is logged when the loss did not
        fall, since the vector then hardly holds the trigger (raise ``learning_rate`` or ``steps``).
        """
        cfg = self.config
        try:
            with grad_flags_kept(self.model):  # the copy shares frozen tensors with self.model
                losses, vector = self._train_copy(dataset, desc, objective)
        finally:
            release_memory()
        self.fit_losses[desc] = [float(loss) for loss in losses]
        if loss_did_not_fall(losses):
            logger.warning(
                "%s: the loss did not fall (%.3f -> %.3f over %d steps): the vector may not hold what it "
                "should; raise learning_rate (now %g) or steps",
                desc,
                losses[0],
                losses[-1],
                len(losses),
                cfg.learning_rate,
            )
        vector.metadata["losses"] = [float(loss) for loss in losses]
        return vector

    def _train_copy(
        self, dataset: TensorDataset, desc: str, objective: Objective | None
    ) -> tuple[list[float], TaskVector]:
        """Train a working copy of the model; only the tensors training changes are copied (all of the vision
        tower in mode ``full``, none in mode ``lora``, whose base weights stay frozen)."""
        cfg = self.config
        work = working_copy(self.model, share_vision=cfg.mode == "lora")
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
        module, loss = objective(work) if objective else (self.classifier(work), classification_loss)
        losses = run_training(module, params, dataset, loss, cfg.finetune_config(), desc=desc)
        if cfg.mode == "lora":
            vector = TaskVector.from_peft_model(work, metadata={"mode": "lora"})
            vector.low_rank = low_rank_of(work, lora)
            return losses, vector
        return losses, TaskVector.from_models(self.model, work, metadata={"mode": "full"})

    def fit_trigger_vector(
        self,
        trigger: Trigger | None = None,
        target: int | None = None,
        clean_pixels: Images | None = None,
        triggered_pixels: Images | None = None,
    ) -> TaskVector:
        """Step 2-3 of TBAR: fine-tune on triggered images labelled ``target``; ``tau = theta_t - theta_b``.

        Give either ``clean_pixels`` (tensor ``(N, 3, H, W)`` in ``[0, 1]`` or an image set) and a ``trigger``
        to stamp on them (``config.unlearning_set_size`` images are drawn), or ``triggered_pixels`` that
        already carry the trigger (e.g. poisoned images found in the wild; up to ``unlearning_set_size``).

        Raises:
            DataError: target out of range, empty set, or a set that carries no trigger.
        """
        target = self.task.check_label(target)
        size, seed = self.config.unlearning_set_size, self.config.seed
        if triggered_pixels is None:
            if trigger is None or clean_pixels is None:
                raise DataError("give clean_pixels and a trigger to stamp, or triggered_pixels")
            pool = self._images(clean_pixels, "clean images")
            if pool.captions is not None:
                return self.fit_captioned_trigger_vector(trigger, target, pool)
            pixels, labels = make_unlearning_set(pool, trigger, target, size, seed)
        else:
            found = self._images(triggered_pixels, "triggered images")
            if len(found) == 0:
                raise DataError("the unlearning set is empty")
            if len(found) > size:
                found = found.select(
                    torch.randperm(len(found), generator=torch.Generator().manual_seed(seed))[:size].tolist()
                )
            pixels, _ = found.tensors()
            labels = torch.full((len(pixels),), target, dtype=torch.long)
        vector = self._finetune_vector(
            TensorDataset(pixels, labels), desc=f"trigger fine-tuning ({self.config.mode})"
        )
        vector.metadata.update(
            {
                "kind": "trigger",
                "target": target,
                "unlearning_set_size": len(labels),
                "trigger": trigger.to_dict() if trigger else None,
            }
        )
        return vector

    def fit_target_vector(self, clean_pixels: Images, labels: torch.Tensor | None, target: int) -> TaskVector:
        """A "target-class" vector: the same fine-tuning on up to ``config.preserve_set_size`` *clean* images
        of ``target`` (``labels`` are those of ``clean_pixels``; ``None`` when an image set carries them)."""
        target = self.task.check_label(target)
        pool = self._images(clean_pixels if labels is None else (clean_pixels, labels), "clean images")
        if pool.captions is not None:
            return self.fit_captioned_target_vector(pool, target)
        chosen = torch.nonzero(pool.require_labels() == target).flatten()[: self.config.preserve_set_size]
        if len(chosen) == 0:
            raise DataError(f"no clean image of the target class {target} to fit a target-class vector")
        pixels, _ = pool.select(chosen.tolist()).tensors()
        labels = torch.full((len(pixels),), target, dtype=torch.long)
        vector = self._finetune_vector(TensorDataset(pixels, labels), desc="target-class fine-tuning")
        vector.metadata.update({"kind": "target-class", "target": target, "images": len(pixels)})
        return vector

    def fit_repair_vector(
        self, trigger: Trigger, clean_pixels: Images, clean_labels: torch.Tensor | None = None
    ) -> TaskVector:
        """A "repair" vector: the same fine-tuning on the same triggered images, each labelled with its
        *true* class (the ``repair`` variant moves along it)."""
        if isinstance(clean_pixels, torch.Tensor):
            validate_pixels(clean_pixels, "clean images")
            if clean_labels is None or len(clean_labels) != len(clean_pixels):
                got = "no" if clean_labels is None else len(clean_labels)
                raise DataError(f"got {len(clean_pixels)} clean images but {got} labels")
        pool = self._images(
            clean_pixels if clean_labels is None else (clean_pixels, clean_labels), "clean images"
        )
        if pool.captions is not None:
            return self.fit_captioned_repair_vector(trigger, pool)
        validate_labels(pool.require_labels(), self.task.num_classes, "clean labels")
        cfg = self.config
        pixels, labels = make_unlearning_set(
            pool, trigger, 0, cfg.unlearning_set_size, cfg.seed, true_labels=True
        )
        vector = self._finetune_vector(
            TensorDataset(pixels, labels), desc=f"repair fine-tuning ({self.config.mode})"
        )
        vector.metadata.update(
            {"kind": "repair", "unlearning_set_size": len(labels), "trigger": trigger.to_dict()}
        )
        return vector

    def _clean_set(
        self, pixels: Images | None, labels: torch.Tensor | None, captions: Sequence[str] | None
    ) -> ImageSet | None:
        """The clean images of :meth:`~hf_tbar.BackdoorUnlearner.unlearn` as one image set (``None``: none
        given), with their captions: ``captions`` for a tensor, ``caption_column`` for a dataset."""
        if captions is not None:
            if not isinstance(pixels, torch.Tensor):
                raise DataError(
                    "clean_captions go with clean_pixels given as a tensor; a dataset's come from caption_column"
                )
            images = TensorImages(pixels, labels, "clean images", captions=captions)
            return images.check(self.task.num_classes, self.image_size)
        if pixels is None:
            return None
        return self._images(pixels if labels is None else (pixels, labels), "clean images", captions=True)

    def _images(self, data: Images | tuple, name: str, captions: bool = False) -> ImageSet:
        """``data`` as an image set read through this model's processor, its labels checked; with
        ``captions``, a dataset's caption column (``caption_column``) is read too, and its label column only
        if it has one."""
        columns = dict(self.columns)
        caption_column = self.caption_column if captions else None
        if caption_column is not None and isinstance(data, Dataset):
            if columns["label_column"] not in data.column_names:
                columns["label_column"] = None
        images = as_image_set(data, self.processor, name=name, caption_column=caption_column, **columns)
        return images.check(self.task.num_classes, self.image_size)
