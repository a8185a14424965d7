"""Datasets that ship with an installed package, as :class:`datasets.DatasetDict` objects.

Every builder returns ``train``/``validation``/``test`` splits with an ``image`` column (RGB PIL
images) and a ``label`` column (:class:`datasets.ClassLabel`), plus the task's class names and
prompt templates as a :class:`TaskSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

from ..errors import InputError


@dataclass(frozen=True)
class TaskSpec:
    """A zero-shot classification task: class names and the prompt templates that embed them.

    Each template holds one ``{}`` placeholder for the class name, as in CLIP's zero-shot recipe.
    """

    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.classnames) < 2:
            raise InputError(f"a task needs at least two classes, got {list(self.classnames)}")
        if len(set(self.classnames)) != len(self.classnames):
            raise InputError(f"class names must be unique, got {list(self.classnames)}")
        if not self.templates:
            raise InputError("a task needs at least one prompt template")
        for template in self.templates:
            if template.count("{}") != 1:
                raise InputError(f"template {template!r} must contain exactly one '{{}}' placeholder")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def prompts(self) -> list[str]:
        """Every class name in every template (class-major order)."""
        return [t.format(c) for c in self.classnames for t in self.templates]

    def check_label(self, label: int, what: str = "target class") -> int:
        """Return ``label`` if it indexes a class of this task, else raise naming the bad value."""
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise TypeError(f"{what} must be an int class index, got {label!r}")
        if not 0 <= int(label) < self.num_classes:
            raise InputError(f"{what} {label} is out of range for a task with {self.num_classes} classes")
        return int(label)

    def to_dict(self) -> dict:
        return {"classnames": list(self.classnames), "templates": list(self.templates)}


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}.",
    "a blurry image of the digit {}.",
)
DIGITS_TASK = TaskSpec(classnames=DIGIT_NAMES, templates=DIGIT_TEMPLATES)


def _stratified_splits(
    labels: np.ndarray, fractions: tuple[float, float], seed: int
) -> dict[str, np.ndarray]:
    """Per-class shuffle, then cut each class into validation / test / train by ``fractions``."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = round(len(idx) * fractions[0])
        n_test = round(len(idx) * fractions[1])
        parts["validation"] += idx[:n_val].tolist()
        parts["test"] += idx[n_val : n_val + n_test].tolist()
        parts["train"] += idx[n_val + n_test :].tolist()
    return {name: np.sort(np.asarray(ids)) for name, ids in parts.items()}


def load_digits(image_size: int = 32, seed: int = 0) -> tuple[DatasetDict, TaskSpec]:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images), upscaled to RGB ``image_size`` px.

    Splits are stratified: 20% validation, 25% test, the rest train. Pixel intensities 0-16 are mapped
    to 0-255, white strokes on black, and resized bilinearly.

    Args:
        image_size: Side of the square RGB images, in pixels.
        seed: Seed of the split.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if image_size < 8:
        raise InputError(f"image_size must be at least 8 pixels, got {image_size}")
    raw = sk_load_digits()
    images = (raw.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    labels = raw.target.astype(np.int64)
    features = Features({"image": Image(), "label": ClassLabel(names=list(DIGIT_NAMES))})
    splits = _stratified_splits(labels, (0.2, 0.25), seed)

    def to_rgb(arr: np.ndarray) -> PILImage.Image:
        img = PILImage.fromarray(arr, mode="L").resize((image_size, image_size), PILImage.BILINEAR)
        return img.convert("RGB")

    dataset = DatasetDict(
        {
            name: Dataset.from_dict(
                {"image": [to_rgb(images[i]) for i in ids], "label": labels[ids].tolist()}, features=features
            )
            for name, ids in splits.items()
        }
    )
    return dataset, DIGITS_TASK


#: Embedded datasets by name: each builder takes ``image_size`` (pixels) and ``seed`` and returns the splits and
#: their task. ``"glyphs"`` (:func:`hf_tbar.data.glyphs.load_glyphs`, 64 px by default) registers itself when
#: :mod:`hf_tbar.data` is imported.
EMBEDDED_DATASETS: dict[str, Callable[..., tuple[DatasetDict, TaskSpec]]] = {"digits": load_digits}


def load_embedded_dataset(name: str = "digits", **kwargs) -> tuple[DatasetDict, TaskSpec]:
    """Load an embedded dataset by name (see :data:`EMBEDDED_DATASETS`)."""
    try:
        builder = EMBEDDED_DATASETS[name]
    except KeyError:
        raise InputError(
            f"unknown embedded dataset {name!r}; available: {sorted(EMBEDDED_DATASETS)}"
        ) from None
    return builder(**kwargs)
