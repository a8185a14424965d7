"""Where the images come from: :class:`DataArguments`, in the style of TRL's ``ScriptArguments``.

One dataclass says which dataset to read (an embedded name, a Hub id, or a local folder / file), which of
its columns and splits to use, how to carve missing splits and cap sizes, and which class names and prompt
templates make the zero-shot task. It is validated on construction (:class:`~hf_tbar.errors.ConfigError`
naming the field and the value); :func:`hf_tbar.data.load_task_data` turns it into data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

__all__ = ["DEFAULT_TEMPLATES", "DataArguments"]

#: A dozen of OpenAI's 80 ImageNet prompt templates (CLIP's zero-shot recipe), "a photo of a {}." first.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
)

#: Suffixes that mark a ``--classnames`` / ``--templates`` value as a file name rather than a list.
_TEXT_FILE_SUFFIXES = (".txt", ".csv", ".names", ".lst", ".list")


def _read_lines(path: Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file, stripped."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _looks_like_missing_file(value: str) -> bool:
    return value.strip().lower().endswith(_TEXT_FILE_SUFFIXES) and not Path(value).expanduser().is_file()


@dataclass
class DataArguments:
    """Arguments that select and shape the image-classification data of a run.

    Splits that the dataset lacks are carved from the train split, seeded by ``data_seed`` and stratified
    by label; ``max_train_samples`` / ``max_eval_samples`` then cap the splits with a seeded stratified
    subset (see :func:`hf_tbar.data.load_task_data`).
    """

    dataset_name: str = field(
        default="digits",
        metadata={
            "help": "An embedded dataset ('digits'), a Hub dataset id ('cifar10', 'food101'), a local folder "
            "in imagefolder layout (one sub-folder per class), a folder written by save_to_disk, or "
            "parquet/arrow file(s): a file, a glob or a folder of them."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration (subset) name of a Hub dataset, if it has several."}
    )
    image_column: str | None = field(
        default=None,
        metadata={"help": "Column holding the images. Default: the first column of type datasets.Image."},
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the class labels. Default: the first ClassLabel column, else 'label'."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training / fine-tuning."})
    validation_split: str = field(
        default="validation",
        metadata={
            "help": "Split used for validation; when the dataset has none, it is carved from the train split "
            "(seeded, stratified by label, validation_fraction of it)."
        },
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Share of the train split carved into each missing validation/test split, in (0, 0.5)."
        },
    )
    test_split: str = field(
        default="test",
        metadata={
            "help": "Split used for the final evaluation; carved from train like validation when missing."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on train rows (seeded stratified subset). Default: all."}
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Cap on validation rows and on test rows, each (seeded stratified subset). Default: all."
        },
    )
    classnames: str | None = field(
        default=None,
        metadata={
            "help": "Class names, comma-separated ('cat,dog') or a text file with one name per line, in label "
            "order. Overrides the dataset's ClassLabel names; required when the labels have no names."
        },
    )
    templates: str | None = field(
        default=None,
        metadata={
            "help": "Prompt templates, each with exactly one '{}': a text file with one per line, or templates "
            "separated by '|'. Default: the embedded task's own, else a set of CLIP's ImageNet templates."
        },
    )
    data_seed: int = field(default=0, metadata={"help": "Seed of split carving and of subset sampling."})

    def __post_init__(self) -> None:
        if not isinstance(self.dataset_name, str) or not self.dataset_name.strip():
            raise ConfigError(f"dataset_name must be a non-empty string, got {self.dataset_name!r}")
        for name in ("dataset_config", "image_column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be None or a non-empty string, got {value!r}")
        if self.image_column is not None and self.image_column == self.label_column:
            raise ConfigError(f"image_column and label_column must differ, both are {self.image_column!r}")
        for name in ("train_split", "validation_split", "test_split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty split name, got {value!r}")
        for name in ("validation_split", "test_split"):
            if getattr(self, name) == self.train_split:
                raise ConfigError(f"{name} must differ from train_split, both are {self.train_split!r}")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 0.5:
            raise ConfigError(f"validation_fraction must be a number in (0, 0.5), got {fraction!r}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be None or a positive int, got {value!r}")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ConfigError(f"data_seed must be a non-negative int, got {self.data_seed!r}")
        self.classname_list()
        self.template_list()

    def classname_list(self) -> tuple[str, ...] | None:
        """The ``classnames`` argument as a tuple (read from the file if it names one), or ``None``.

        Raises:
            ConfigError: a missing file, an empty name, or a name given twice.
        """
        if self.classnames is None:
            return None
        path = Path(self.classnames).expanduser()
        if path.is_file():
            names = _read_lines(path)
        elif _looks_like_missing_file(self.classnames):
            raise ConfigError(f"classnames file {self.classnames!r} does not exist")
        else:
            names = [name.strip() for name in self.classnames.split(",")]
        if not names or any(not name for name in names):
            raise ConfigError(f"classnames {self.classnames!r} holds an empty class name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"classnames {self.classnames!r} names {duplicates} more than once")
        return tuple(names)

    def template_list(self) -> tuple[str, ...] | None:
        """The ``templates`` argument as a tuple (read from the file if it names one), or ``None``.

        Raises:
            ConfigError: a missing file, or a template without exactly one ``{}``.
        """
        if self.templates is None:
            return None
        path = Path(self.templates).expanduser()
        if path.is_file():
            templates = _read_lines(path)
        elif _looks_like_missing_file(self.templates):
            raise ConfigError(f"templates file {self.templates!r} does not exist")
        else:
            templates = [template.strip() for template in self.templates.split("|")]
        if not templates:
            raise ConfigError(f"templates {self.templates!r} holds no template")
        for template in templates:
            if template.count("{}") != 1:
                raise ConfigError(
                    f"template {template!r} (from templates={self.templates!r}) must contain exactly one '{{}}'"
                )
        return tuple(templates)
