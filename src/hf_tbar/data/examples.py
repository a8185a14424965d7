"""Small example datasets written offline, one per local data source: what the data-source contract test,
the docs and a quick try of a source run on (three colour classes of 32 px squares with a moving spot)."""

from __future__ import annotations

from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from .arguments import DataArguments

__all__ = [
    "EXAMPLE_CLASSES",
    "example_image",
    "write_example_folder",
    "write_example_parquet",
    "write_example_saved",
]

#: The classes of the example datasets and their RGB colours.
EXAMPLE_CLASSES: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 30),
    "green": (30, 180, 40),
    "blue": (40, 50, 210),
}
PER_CLASS = 6


def example_image(name: str, index: int, size: int = 32) -> Image.Image:
    """A ``size`` px square of class ``name``'s colour with a white spot placed by ``index``."""
    image = Image.new("RGB", (size, size), EXAMPLE_CLASSES[name])
    x = (index * 5) % (size - 6)
    image.paste((255, 255, 255), (x, 4, x + 5, 9))
    return image


def _rows() -> dict[str, list]:
    names = list(EXAMPLE_CLASSES)
    return {
        "image": [example_image(name, i) for name in names for i in range(PER_CLASS)],
        "label": [c for c in range(len(names)) for _ in range(PER_CLASS)],
    }


def _features() -> Features:
    return Features({"image": ImageFeature(), "label": ClassLabel(names=list(EXAMPLE_CLASSES))})


def write_example_folder(root: Path) -> DataArguments:
    """An ``imagefolder`` layout under ``root``: one sub-folder of PNG files per class."""
    for name in EXAMPLE_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(PER_CLASS):
            example_image(name, index).save(root / name / f"{name}_{index}.png")
    return DataArguments(dataset_name=str(root))


def write_example_saved(root: Path) -> DataArguments:
    """A ``DatasetDict.save_to_disk`` folder with a train and a test split."""
    train = Dataset.from_dict(_rows(), features=_features())
    DatasetDict({"train": train, "test": train.select(range(0, len(train), 3))}).save_to_disk(str(root))
    return DataArguments(dataset_name=str(root))


def write_example_parquet(root: Path) -> DataArguments:
    """One parquet file (images stored as PNG bytes) whose class names are given with ``classnames``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "colours.parquet"
    Dataset.from_dict(_rows(), features=_features()).to_parquet(str(path))
    return DataArguments(dataset_name=str(path), classnames=",".join(EXAMPLE_CLASSES))
