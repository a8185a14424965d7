"""Reading what a user gives TBAR: the model (a CLIPModel or a path) with its processor, and images (tensors,
image sets or ``datasets.Dataset`` splits) read through the processor and checked against the task and the
model's input size."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from ..data.embedded import TaskSpec
from ..data.images import ImageSet, TensorImages, as_image_set
from ..data.pixels import image_size_of, validate_pixels
from ..errors import ConfigError, DataError, ModelLoadError
from ..models import ModelFamily, family_of
from ..models.loading import load_model
from ..zeroshot import build_zero_shot_head
from .unlearning_set import FoundSplit, split_found_images

#: What the API accepts as images: ``[0, 1]`` pixels ``(N, 3, H, W)``, an image set or a dataset split.
Images = torch.Tensor | ImageSet | Dataset


@dataclass(frozen=True)
class Subject:
    """The model to sanitize (in eval mode, on ``device``) with its processor, family, input size ``(height,
    width)`` in pixels, source (a path or Hub id, the model's ``name_or_path``, or ``"in-memory"``) and zero-shot
    head ``(num_classes, embed_dim)`` for ``task``."""

    model: PreTrainedModel
    processor: Any
    family: ModelFamily
    image_size: tuple[int, int]
    source: str
    task: TaskSpec
    device: torch.device
    head: torch.Tensor


def load_subject(
    model: PreTrainedModel | str | os.PathLike,
    processor: Any = None,
    task: TaskSpec | None = None,
    device: str | torch.device | None = None,
    revision: str | None = None,
) -> Subject:
    """The model (loaded with its processor when a path or Hub id is given, at ``revision`` of a Hub id), checked
    against its processor, moved to ``device`` (default: this process's GPU under torchrun, else the first GPU,
    else the CPU).

    Raises:
        TypeError: not a model of a registered family.
        ConfigError: no processor, or no task.
        ModelLoadError: the processor crops images to another size than the model reads.
    """
    source = str(model) if isinstance(model, (str, os.PathLike)) else None
    if source is not None:
        model, loaded_processor = load_model(model, **({} if revision is None else {"revision": revision}))
        processor = processor or loaded_processor
    try:
        family = family_of(model)
    except TypeError:
        raise TypeError(
            f"BackdoorUnlearner needs a transformers CLIPModel or SiglipModel, got {type(model).__name__}"
        ) from None
    if processor is None:
        raise ConfigError(
            "the model's processor is needed (pass processor=..., or a checkpoint path that includes one)"
        )
    if task is None:
        raise ConfigError("the zero-shot task (class names and templates) is needed: pass task=TaskSpec(...)")
    side, image_size = family.image_size(model), image_size_of(processor)
    if image_size != (side, side):
        raise ModelLoadError(
            f"the processor crops images to {image_size[0]}x{image_size[1]} px but the model "
            f"reads {side}x{side} px: pass the model's own processor"
        )
    source = source or getattr(model, "name_or_path", "") or "in-memory"
    local_gpu = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # under torchrun: each process its own GPU
    device = torch.device(device or (local_gpu if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    head = build_zero_shot_head(model, processor.tokenizer, task)
    return Subject(model, processor, family, image_size, source, task, device, head)


@dataclass(frozen=True)
class ImageReader:
    """Turns images given to TBAR into checked image sets.

    Attributes:
        processor: The model's processor (decodes dataset rows).
        num_classes: Classes of the task (labels are checked against it).
        image_size: ``(height, width)`` in pixels the model reads.
        image_column / label_column: Columns read from a ``datasets.Dataset``.
        caption_column: Column of captions of a clean dataset (``None``: no captions).
    """

    processor: Any
    num_classes: int
    image_size: tuple[int, int]
    image_column: str = "image"
    label_column: str = "label"
    caption_column: str | None = None

    def read(self, data: Images | tuple, name: str, captions: bool = False) -> ImageSet:
        """``data`` as an image set read through the processor, its labels checked; with ``captions``, a
        dataset's caption column is read too, and its label column only if it has one."""
        label_column: str | None = self.label_column
        caption_column = self.caption_column if captions else None
        if caption_column is not None and isinstance(data, Dataset) and label_column not in data.column_names:
            label_column = None
        images = as_image_set(
            data,
            self.processor,
            name=name,
            caption_column=caption_column,
            image_column=self.image_column,
            label_column=label_column,
        )
        return images.check(self.num_classes, self.image_size)

    def found(self, poisoned: Images | tuple, seed: int) -> FoundSplit:
        """Poisoned images found as they are, read and split (seeded) for fine-tuning, scale selection and
        verification (:func:`~hf_tbar.tbar.unlearning_set.split_found_images`)."""
        return split_found_images(self.read(poisoned, "poisoned images"), seed=seed)

    def read_pair(self, pixels: Images, labels: torch.Tensor | None, name: str) -> ImageSet:
        """``pixels`` with their ``labels`` (``None``: carried by the image set); a pixel tensor needs one label
        per image.

        Raises:
            DataError: a pixel tensor without labels, or with as many labels as images.
        """
        if isinstance(pixels, torch.Tensor):
            validate_pixels(pixels, name)
            if labels is None or len(labels) != len(pixels):
                got = "no" if labels is None else len(labels)
                raise DataError(f"got {len(pixels)} {name} but {got} labels")
        return self.read(pixels if labels is None else (pixels, labels), name)

    def clean_set(
        self, pixels: Images | None, labels: torch.Tensor | None, captions: Sequence[str] | None
    ) -> ImageSet | None:
        """The clean images of an unlearning run as one image set (``None``: none given), with their captions:
        ``captions`` for a tensor, ``caption_column`` for a dataset.

        Raises:
            DataError: captions given with images that are not a tensor.
        """
        if captions is not None:
            if not isinstance(pixels, torch.Tensor):
                raise DataError(
                    "clean_captions go with clean_pixels given as a tensor; a dataset's come from caption_column"
                )
            images = TensorImages(pixels, labels, "clean images", captions=captions)
            return images.check(self.num_classes, self.image_size)
        if pixels is None:
            return None
        return self.read(pixels if labels is None else (pixels, labels), "clean images", captions=True)
