"""Image-caption data for the unlearning set: :class:`CaptionDataArguments` and :func:`load_caption_data`.

TBAR fine-tunes on triggered copies of clean images. When those images come with captions (CLIP's own kind of
data), the vectors are fitted with CLIP's contrastive loss instead of the zero-shot head's cross-entropy (see
:mod:`hf_tbar.tbar.contrastive`). The captions come either from a column of the classification dataset's train
split (``caption_column`` alone), or from a second dataset of (image, caption) rows (``caption_dataset``), read
through the same data sources as ``dataset_name`` (Hub id, imagefolder with a ``metadata.jsonl``, a
``save_to_disk`` folder, parquet/arrow files). Validation and test stay the classification dataset's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset, Value

from ..errors import ConfigError, DataError
from .arguments import DataArguments
from .images import DatasetImages
from .pixels import decode_image, undecoded
from .sources import dataset_display_name, select_data_source
from .task_data import TaskData, _find_split, _image_column

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CAPTION_COLUMNS", "CaptionData", "CaptionDataArguments", "load_caption_data"]

#: Columns tried, in order, for the captions of a ``caption_dataset`` when ``caption_column`` is not given
#: (``text`` is the column an imagefolder's ``metadata.jsonl`` conventionally holds).
DEFAULT_CAPTION_COLUMNS = ("text", "caption")
_STRING_TYPES = ("string", "large_string")


@dataclass
class CaptionDataArguments(DataArguments):
    """:class:`DataArguments` plus where the captions of an image-caption unlearning set come from.

    With neither ``caption_column`` nor ``caption_dataset`` the run is a classification one, as with
    :class:`DataArguments`.
    """

    caption_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of captions: the unlearning set is then image-caption data and TBAR's vectors are "
            "fitted with CLIP's contrastive loss. Alone, it is read from the train split of --dataset_name; "
            "with --caption_dataset, from that dataset (default there: 'text', else 'caption')."
        },
    )
    caption_dataset: str | None = field(
        default=None,
        metadata={
            "help": "A second dataset of (image, caption) rows used as the unlearning set (--dataset_name then "
            "gives validation and test only): a Hub id, an imagefolder whose metadata.jsonl has a 'text' "
            "column, a save_to_disk folder, or parquet/arrow file(s). --max_train_samples caps its rows."
        },
    )
    caption_dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration (subset) name of a Hub --caption_dataset."}
    )
    caption_split: str = field(default="train", metadata={"help": "Split of --caption_dataset to read."})
    caption_image_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of images of --caption_dataset. Default: its first column of type datasets.Image."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("caption_column", "caption_dataset", "caption_dataset_config", "caption_image_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be None or a non-empty string, got {value!r}")
        if not isinstance(self.caption_split, str) or not self.caption_split.strip():
            raise ConfigError(f"caption_split must be a non-empty split name, got {self.caption_split!r}")
        if self.caption_dataset is None:
            for name in ("caption_dataset_config", "caption_image_column"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} {getattr(self, name)!r} needs caption_dataset")
            if self.caption_split != "train":
                raise ConfigError(f"caption_split {self.caption_split!r} needs caption_dataset")
        image_column = self.image_column if self.caption_dataset is None else self.caption_image_column
        if self.caption_column is not None and self.caption_column == image_column:
            raise ConfigError(f"caption_column and the image column must differ, both are {image_column!r}")
        if self.caption_dataset is None and self.caption_column is not None:
            if self.caption_column == self.label_column:
                raise ConfigError(
                    f"caption_column and label_column must differ, both are {self.caption_column!r}"
                )

    @property
    def uses_captions(self) -> bool:
        """Whether the unlearning set is image-caption data."""
        return self.caption_column is not None or self.caption_dataset is not None


@dataclass
class CaptionData:
    """The checked image-caption rows of the unlearning set.

    Args:
        dataset: Lazy :class:`datasets.Dataset` rows (images decoded batch by batch).
        image_column / caption_column: Columns of the images and of their captions (strings).
        label_column: Column of the task's labels when the rows are the classification train split, else
            ``None`` (a caption dataset's labels, if any, are not the task's).
        provenance: JSON-safe record for the report: ``kind`` (``"image-caption"``), ``objective``
            (``"contrastive"``), ``dataset`` (Hub id or a local path's base name only), ``config``, ``source``,
            ``split``, ``image_column``, ``caption_column``, ``label_column`` and ``rows`` (after caps).
    """

    dataset: Dataset
    image_column: str
    caption_column: str
    label_column: str | None
    provenance: dict

    def images(self, processor, name: str = "image-caption unlearning set") -> DatasetImages:
        """The rows as an image set read through ``processor``, captions included."""
        return DatasetImages(
            self.dataset,
            processor,
            self.image_column,
            self.label_column,
            name,
            caption_column=self.caption_column,
        )


def load_caption_data(args: DataArguments, data: TaskData) -> CaptionData | None:
    """The image-caption unlearning set named by ``args`` (``None`` when ``args`` names no captions).

    ``data`` is the run's classification data (:func:`~hf_tbar.data.load_task_data` of the same ``args``):
    with ``caption_column`` alone its train split (already carved and capped) is read; with
    ``caption_dataset`` that dataset is read through the registered data sources, its ``caption_split``
    capped to ``max_train_samples`` rows (seeded by ``data_seed``).

    Raises:
        DataError: an unreadable caption dataset or missing split, no caption column (listing the columns),
            a caption column that is the image or label column or does not hold strings, or no rows.
    """
    if not isinstance(args, CaptionDataArguments) or not args.uses_captions:
        return None
    if args.caption_dataset is None:
        dataset, label_column = data.train, data.label_column
        image_column, split = data.image_column, data.provenance["splits"]["train"]["split"]
        name, what = data.provenance["dataset"], "dataset"
        source_name, config = data.provenance["source"], data.provenance.get("config")
        column = args.caption_column
        if column not in dataset.column_names:
            raise DataError(
                f"split {split!r} of dataset {name!r} has no caption column {column!r}; columns: "
                f"{dataset.column_names}"
            )
    else:
        source_args = DataArguments(
            dataset_name=args.caption_dataset, dataset_config=args.caption_dataset_config
        )
        source = select_data_source(source_args)
        name, what = dataset_display_name(source_args, source), "caption dataset"
        source_name, config, label_column = source.name, args.caption_dataset_config, None
        raw = source.load(source_args)
        split = _find_split(raw, args.caption_split, "caption", name)
        dataset = raw[split]
        try:
            image_column = _image_column(dataset, args.caption_image_column, split)
        except DataError as err:
            raise DataError(f"caption dataset {name!r}: {err}") from err
        column = _caption_column(dataset, args.caption_column, name, split)
        if args.max_train_samples is not None and args.max_train_samples < len(dataset):
            rows = np.random.default_rng([args.data_seed, 2]).permutation(len(dataset))
            dataset = dataset.select(np.sort(rows[: args.max_train_samples]))
    where = f"split {split!r} of {what} {name!r}"
    if column == image_column:
        raise DataError(
            f"caption column {column!r} is the image column of {where}; pass the column of captions"
        )
    if column == label_column:
        raise DataError(
            f"caption column {column!r} is the label column of {where}; pass the column of captions"
        )
    feature = dataset.features[column]
    if not (isinstance(feature, Value) and feature.dtype in _STRING_TYPES):
        kind = feature.dtype if isinstance(feature, Value) else type(feature).__name__
        raise DataError(
            f"caption column {column!r} of {where} holds {kind} values, not strings (one per image)"
        )
    if len(dataset) == 0:
        raise DataError(f"{where} is empty: the image-caption unlearning set needs rows")
    decode_image(undecoded(dataset, image_column)[0][image_column], image_column)
    provenance = {
        "kind": "image-caption",
        "objective": "contrastive",
        "dataset": name,
        "config": config,
        "source": source_name,
        "split": split,
        "image_column": image_column,
        "caption_column": column,
        "label_column": label_column,
        "rows": len(dataset),
    }
    logger.info(
        "image-caption unlearning set: %d rows of %s, captions in column %r", len(dataset), where, column
    )
    return CaptionData(dataset, image_column, column, label_column, provenance)


def _caption_column(dataset: Dataset, requested: str | None, name: str, split: str) -> str:
    """``requested``, else the first of :data:`DEFAULT_CAPTION_COLUMNS` the split has."""
    if requested is not None:
        if requested not in dataset.column_names:
            raise DataError(
                f"split {split!r} of caption dataset {name!r} has no caption column {requested!r}; columns: "
                f"{dataset.column_names}"
            )
        return requested
    found = [column for column in DEFAULT_CAPTION_COLUMNS if column in dataset.column_names]
    if not found:
        tried = ", ".join(repr(c) for c in DEFAULT_CAPTION_COLUMNS)
        raise DataError(
            f"split {split!r} of caption dataset {name!r} has no caption column (looked for {tried}); pass "
            f"caption_column (columns: {dataset.column_names})"
        )
    return found[0]
