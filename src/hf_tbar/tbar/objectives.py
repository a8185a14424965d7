"""What a fine-tuning of TBAR minimises, and on which rows: the objective as a strategy object.

An objective turns an image set into the rows of one fine-tuning (:class:`FitRows`: the dataset, the label of
the run, its metadata, and how a working copy of the model is trained on it). The
:class:`~hf_tbar.tbar.fitter.VectorFitter` owns the fine-tuning itself (working copy, LoRA, optimizer, loss log)
and calls the objective it is given; everything an objective reads comes in through :class:`FitContext`.

- :class:`ClassificationObjective`: cross-entropy of the zero-shot head (image-classification setting);
- :class:`~hf_tbar.tbar.contrastive.ContrastiveObjective`: CLIP's contrastive loss on image-caption rows.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import TensorDataset
from transformers import PreTrainedModel

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.images import ImageSet
from ..data.pixels import validate_labels
from ..errors import DataError
from ..training.backdoor import classification_loss
from ..zeroshot import ZeroShotClassifier
from .config import TBARConfig
from .unlearning_set import make_unlearning_set

#: ``loss(module, batch) -> scalar`` for :func:`~hf_tbar.training.loop.run_training`.
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
#: ``trainable(working copy) -> (module trained, loss)``.
Trainable = Callable[[PreTrainedModel], tuple[torch.nn.Module, LossFn]]


@dataclass(frozen=True)
class FitContext:
    """What every fine-tuning reads: the backdoored model (never modified), its processor and zero-shot head
    ``(num_classes, embed_dim)``, the task, the settings and the device the evaluation runs on."""

    model: PreTrainedModel
    processor: Any
    head: torch.Tensor
    task: TaskSpec
    config: TBARConfig
    device: torch.device

    def classifier(self, model: torch.nn.Module | None = None) -> ZeroShotClassifier:
        """Zero-shot classifier over ``model`` (default: the backdoored model) with the fixed text head."""
        chosen = model if model is not None else self.model
        return ZeroShotClassifier.from_processor(chosen, self.head, self.processor).to(self.device)


@dataclass
class FitRows:
    """One fine-tuning: its rows, its label (``desc``), the metadata its vector records, the clean images it
    consumes (images used with their true class, for accounting) and how a working copy is trained."""

    dataset: TensorDataset
    desc: str
    trainable: Trainable
    metadata: dict[str, Any] = field(default_factory=dict)
    clean_images: int = 0


class FitObjective(abc.ABC):
    """The declared interface of an objective: the rows of the three fine-tunings TBAR's variants combine.

    Subclasses implement each method from the arguments alone (``context`` is all they may read).
    """

    #: Name recorded in the report (``"cross-entropy"``, ``"contrastive"``).
    name: ClassVar[str]

    @abc.abstractmethod
    def trigger_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger, target: int) -> FitRows:
        """Triggered images of ``pool`` pushed towards class ``target`` (the trigger vector)."""

    @abc.abstractmethod
    def target_rows(self, context: FitContext, pool: ImageSet, target: int) -> FitRows:
        """A few clean images of class ``target`` pushed towards it (the target-class vector)."""

    @abc.abstractmethod
    def repair_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger) -> FitRows:
        """Triggered images of ``pool`` pushed towards their own class or caption (the repair vector)."""


def _head_loss(context: FitContext) -> Trainable:
    return lambda work: (context.classifier(work), classification_loss)


class ClassificationObjective(FitObjective):
    """Cross-entropy of the zero-shot head on ``(pixels, label)`` rows."""

    name = "cross-entropy"

    def trigger_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger, target: int) -> FitRows:
        cfg = context.config
        pixels, labels = make_unlearning_set(pool, trigger, target, cfg.unlearning_set_size, cfg.seed)
        return self.triggered_rows(context, pixels, labels, trigger, target)

    def found_rows(self, context: FitContext, found: ImageSet, target: int) -> FitRows:
        """Images found carrying the trigger (up to ``unlearning_set_size``, a seeded draw), labelled ``target``.

        Raises:
            DataError: no image.
        """
        size, seed = context.config.unlearning_set_size, context.config.seed
        if len(found) == 0:
            raise DataError("the unlearning set is empty")
        if len(found) > size:
            found = found.select(
                torch.randperm(len(found), generator=torch.Generator().manual_seed(seed))[:size].tolist()
            )
        pixels, _ = found.tensors()
        labels = torch.full((len(pixels),), target, dtype=torch.long)
        return self.triggered_rows(context, pixels, labels, None, target)

    @staticmethod
    def triggered_rows(
        context: FitContext,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        trigger: Trigger | None,
        target: int,
        clean_images: int = 0,
        desc: str = "trigger",
    ) -> FitRows:
        """The trigger vector's rows from ready ``pixels`` ``(N, 3, H, W)`` and ``labels`` ``(N,)``, of which the
        last ``clean_images`` are clean images with their true class."""
        metadata = {
            "kind": "trigger",
            "target": target,
            "unlearning_set_size": len(labels) - clean_images,
            **({"clean_images": clean_images} if clean_images else {}),
            "trigger": trigger.to_dict() if trigger else None,
        }
        return FitRows(
            TensorDataset(pixels, labels),
            f"{desc} fine-tuning ({context.config.mode})",
            _head_loss(context),
            metadata,
            clean_images,
        )

    def target_rows(self, context: FitContext, pool: ImageSet, target: int) -> FitRows:
        chosen = torch.nonzero(pool.require_labels() == target).flatten()[: context.config.preserve_set_size]
        if len(chosen) == 0:
            raise DataError(f"no clean image of the target class {target} to fit a target-class vector")
        pixels, _ = pool.select(chosen.tolist()).tensors()
        labels = torch.full((len(pixels),), target, dtype=torch.long)
        metadata = {"kind": "target-class", "target": target, "images": len(pixels)}
        return FitRows(
            TensorDataset(pixels, labels),
            "target-class fine-tuning",
            _head_loss(context),
            metadata,
            len(pixels),
        )

    def repair_rows(self, context: FitContext, pool: ImageSet, trigger: Trigger) -> FitRows:
        validate_labels(pool.require_labels(), context.task.num_classes, "clean labels")
        cfg = context.config
        pixels, labels = make_unlearning_set(
            pool, trigger, 0, cfg.unlearning_set_size, cfg.seed, true_labels=True
        )
        metadata = {"kind": "repair", "unlearning_set_size": len(labels), "trigger": trigger.to_dict()}
        return FitRows(
            TensorDataset(pixels, labels), f"repair fine-tuning ({cfg.mode})", _head_loss(context), metadata
        )
