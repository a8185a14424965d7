"""From :class:`DataArguments` to checked train/validation/test splits and their zero-shot task.

:func:`load_task_data` reads the dataset through the registered data sources, picks the image and label
columns, carves missing validation/test splits from train, caps split sizes, checks images and labels, and
builds the :class:`TaskSpec` (class names and prompt templates). Nothing is decoded beyond one row per split:
splits stay lazy (memory-mapped Arrow with an index mapping), to be streamed by
:func:`hf_tbar.data.pixel_loader`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Image, Value

from ..errors import DataError
from .arguments import DEFAULT_TEMPLATES, DataArguments
from .embedded import TaskSpec
from .pixels import decode_image, undecoded
from .sources import dataset_display_name, select_data_source

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TEMPLATES", "TaskData", "load_task_data", "resolve_target"]

#: Other names accepted for a split when its argument keeps the default.
_SPLIT_ALIASES = {"validation": ("validation", "valid", "val", "dev"), "test": ("test",)}
_ROLES = ("train", "validation", "test")


@dataclass
class TaskData:
    """Checked splits of an image-classification dataset and the zero-shot task they define.

    Args:
        train / validation / test: Lazy :class:`datasets.Dataset` splits (stream them with ``pixel_loader``).
        task: Class names (index = label) and prompt templates.
        image_column / label_column: Columns holding the images and the int labels in ``[0, num_classes)``.
        provenance: JSON-safe record: ``dataset`` (Hub id, embedded name, or a local path's base name only),
            ``config``, ``source``, ``image_column``, ``label_column``, ``data_seed``,
            ``validation_fraction``, ``max_train_samples``, ``max_eval_samples`` and ``splits``: for each of
            train/validation/test ``{"split": name read, "carved_from_train": bool, "rows": int after caps}``.
    """

    train: Dataset
    validation: Dataset
    test: Dataset
    task: TaskSpec
    image_column: str
    label_column: str
    provenance: dict


def load_task_data(args: DataArguments) -> TaskData:
    """Load, check, carve and cap the splits named by ``args`` (see :class:`DataArguments`).

    Missing validation/test splits (only when their argument keeps the default name; ``valid``/``val``/``dev``
    also count as validation) are carved from train, per class: ``round(n_class * validation_fraction)`` rows
    each (at least one when the class has enough rows), with ``np.random.default_rng(data_seed)``. Caps take a
    seeded stratified subset (classes in proportion), ``max_eval_samples`` for validation and test each.

    Raises:
        DataError: unreadable dataset, missing split or column, no images, labels without class names,
            too few class names, a label out of range (naming the value), or a class of the validation or
            test split that the train split lacks (naming it).
    """
    source = select_data_source(args)
    name = dataset_display_name(args, source)
    raw = source.load(args)
    source_task = source.task(args) if source.task is not None else None
    splits = {role: _find_split(raw, getattr(args, f"{role}_split"), role, name) for role in _ROLES}
    train = raw[splits["train"]]
    image_column = _image_column(train, args.image_column, splits["train"])
    label_column = _label_column(train, args.label_column, splits["train"])
    if image_column == label_column:
        raise DataError(f"image and label column are both {image_column!r}; pass label_column")
    read = {role: raw[split] for role, split in splits.items() if split is not None}
    for role, dataset in read.items():
        for column in (image_column, label_column):
            if column not in dataset.column_names:
                raise DataError(
                    f"split {splits[role]!r} has no column {column!r}; columns: {dataset.column_names}"
                )
    read = _encode_string_labels(read, label_column, args.classname_list())
    classnames = _classnames(read["train"], label_column, args.classname_list(), source_task, name)
    labels = {}
    for role, dataset in read.items():
        if len(dataset) == 0:
            raise DataError(f"split {splits[role]!r} of dataset {name!r} is empty")
        labels[role] = _check_labels(dataset, label_column, splits[role], len(classnames))
        decode_image(undecoded(dataset, image_column)[0][image_column], image_column)
    _check_classes_in_train(labels, splits, classnames)

    missing = [role for role in ("validation", "test") if splits[role] is None]
    if missing:
        parts = _carve(labels["train"], missing, args.validation_fraction, args.data_seed)
        train, train_labels = read["train"], labels["train"]
        for role, rows in parts.items():
            if len(rows) == 0:
                raise DataError(
                    f"split {splits['train']!r} ({len(train)} rows) is too small to carve {role} from"
                )
            read[role], labels[role] = train.select(rows), train_labels[rows]
        sizes = {role: len(rows) for role, rows in parts.items()}
        logger.info("no %s split in %s: carved from split %r, stratified, seed %d: %s rows",
                    "/".join(missing), name, splits["train"], args.data_seed, sizes)  # fmt: skip
    for role in _ROLES:
        cap = args.max_train_samples if role == "train" else args.max_eval_samples
        if cap is not None and cap < len(read[role]):
            read[role] = read[role].select(_stratified_subset(labels[role], cap, args.data_seed))

    _warn_small_validation(read["validation"], label_column, classnames, "validation" in missing, args)
    templates = args.template_list() or (source_task.templates if source_task else DEFAULT_TEMPLATES)
    try:
        task = TaskSpec(classnames=tuple(classnames), templates=tuple(templates))
    except ValueError as err:
        raise DataError(f"dataset {name!r} does not make a classification task: {err}") from err
    provenance = {
        "dataset": name,
        "config": args.dataset_config,
        "source": source.name,
        "image_column": image_column,
        "label_column": label_column,
        "data_seed": args.data_seed,
        "validation_fraction": args.validation_fraction if missing else None,
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "splits": {
            role: {
                "split": splits[role] or splits["train"],
                "carved_from_train": role in missing,
                "rows": len(read[role]),
            }
            for role in _ROLES
        },
    }
    return TaskData(
        train=read["train"],
        validation=read["validation"],
        test=read["test"],
        task=task,
        image_column=image_column,
        label_column=label_column,
        provenance=provenance,
    )


#: Validation images per class below which the scale search's accuracy constraints are coarse (one image is
#: 5 points of a class's accuracy at 20): :func:`load_task_data` warns, saying how to give more.
MIN_VALIDATION_PER_CLASS = 20


def _warn_small_validation(
    validation: Dataset, label_column: str, classnames: list[str], carved: bool, args: DataArguments
) -> None:
    """Warn when the validation split holds fewer than :data:`MIN_VALIDATION_PER_CLASS` images of some class."""
    counts = np.bincount(np.asarray(validation[label_column], dtype=np.int64), minlength=len(classnames))
    smallest = int(counts.argmin())
    if counts[smallest] >= MIN_VALIDATION_PER_CLASS:
        return
    if carved:
        how = (
            f"it was carved from train (validation_fraction {args.validation_fraction}): raise "
            "--validation_fraction, or give a dataset with a validation split (--validation_split)"
        )
    else:
        how = "give a larger validation split (--validation_split), or lift --max_eval_samples"
    logger.warning(
        "the validation split holds %d images, as few as %d of class %r (below %d per class): one image moves "
        "clean accuracy by %.1f points and that class's accuracy by %.0f, so the scale search compares wide "
        "confidence bounds; %s",
        len(validation),
        counts[smallest],
        classnames[smallest],
        MIN_VALIDATION_PER_CLASS,
        100 / max(1, len(validation)),
        100 / max(1, int(counts[smallest])),
        how,
    )


def resolve_target(task: TaskSpec, target: str | int) -> int:
    """The class index of ``target``: an int index, a class name, or an index as a string (``"3"``).

    A class name wins over the index reading; names also match ignoring case and ``_`` vs space, with a
    warning naming the class matched.

    Raises:
        DataError: an unknown class name (listing a few names) or an index out of range.
    """
    if isinstance(target, str):
        if target in task.classnames:
            return task.classnames.index(target)
        normal = [_normal(c) for c in task.classnames]
        if _normal(target) in normal:
            index = normal.index(_normal(target))
            logger.warning(
                "target %r is not a class name; it matches class %r (index %d) when case and '_' vs space are "
                "ignored: using that class",
                target,
                task.classnames[index],
                index,
            )
            return index
        if not target.strip().lstrip("-").isdigit():
            shown = ", ".join(repr(c) for c in task.classnames[:8]) + (
                ", ..." if task.num_classes > 8 else ""
            )
            raise DataError(f"unknown target class {target!r}; the {task.num_classes} classes are {shown}")
        target = int(target.strip())
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise DataError(f"target class must be a class name or index, got {target!r}")
    if not 0 <= int(target) < task.num_classes:
        raise DataError(
            f"target class {int(target)} is out of range for a task with {task.num_classes} classes"
        )
    return int(target)


# ------------------------------------------------------------------------------------------ helpers


def _normal(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def _find_split(raw: DatasetDict, requested: str, role: str, name: str) -> str | None:
    """The split to read for ``role``; ``None`` means carve it (only for a default name that is absent)."""
    if requested in raw:
        return requested
    if role in _SPLIT_ALIASES and requested == role:
        return next((alias for alias in _SPLIT_ALIASES[role] if alias in raw), None)
    raise DataError(f"dataset {name!r} has no {role} split {requested!r}; available splits: {sorted(raw)}")


def _encode_string_labels(
    read: dict[str, Dataset], label_column: str, classnames: tuple[str, ...] | None
) -> dict[str, Dataset]:
    """Cast a string label column to :class:`ClassLabel` (names: ``classnames``, else the sorted strings).

    This rewrites the label column into the datasets cache (on disk, not in memory).
    """
    feature = read["train"].features[label_column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        return read
    names = list(classnames or sorted({v for d in read.values() for v in d.unique(label_column)}))
    try:
        return {role: d.cast_column(label_column, ClassLabel(names=names)) for role, d in read.items()}
    except ValueError as err:
        raise DataError(
            f"label column {label_column!r} holds a name not in the class names {names}: {err}"
        ) from err


def _image_column(dataset: Dataset, requested: str | None, split: str) -> str:
    if requested is not None:
        if requested not in dataset.column_names:
            raise DataError(
                f"split {split!r} has no image column {requested!r}; columns: {dataset.column_names}"
            )
        return requested
    found = [c for c, f in dataset.features.items() if isinstance(f, Image)]
    found += [c for c in ("image", "img") if c in dataset.column_names]
    if not found:
        types = {c: type(f).__name__ for c, f in dataset.features.items()}
        raise DataError(
            f"split {split!r} has no column of type datasets.Image; pass image_column (columns: {types})"
        )
    return found[0]


def _label_column(dataset: Dataset, requested: str | None, split: str) -> str:
    found = [c for c, f in dataset.features.items() if isinstance(f, ClassLabel)]
    column = requested or (found[0] if found else "label")
    if column not in dataset.column_names:
        raise DataError(f"split {split!r} has no label column {column!r}; columns: {dataset.column_names}")
    return column


def _classnames(
    train: Dataset, label_column: str, given: tuple[str, ...] | None, source_task: TaskSpec | None, name: str
) -> list[str]:
    """``--classnames``, else the ClassLabel names (``_`` read as spaces), else the source's task's."""
    feature = train.features[label_column]
    if isinstance(feature, ClassLabel) and given is not None and len(given) != feature.num_classes:
        raise DataError(
            f"classnames gives {len(given)} names but label column {label_column!r} has {feature.num_classes} "
            f"classes ({feature.names[:8]})"
        )
    if given is not None:
        return list(given)
    if isinstance(feature, ClassLabel):
        return [" ".join(n.replace("_", " ").split()) for n in feature.names]
    if source_task is not None:
        return list(source_task.classnames)
    raise DataError(
        f"label column {label_column!r} of dataset {name!r} has labels but no class names; pass classnames "
        "(comma-separated, or a text file with one name per line, in label order)"
    )


def _check_labels(dataset: Dataset, label_column: str, split: str, num_classes: int) -> np.ndarray:
    """The split's labels as int64 ``(N,)``; raises naming the split and the first bad value."""
    labels = np.asarray(dataset.select_columns([label_column])[label_column])
    if labels.size and labels.dtype.kind not in "iu":
        raise DataError(
            f"label column {label_column!r} of split {split!r} holds {labels.dtype} values, not ints"
        )
    labels = labels.astype(np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        hint = " (-1 marks unlabelled rows)" if bad[0] == -1 else ""
        raise DataError(
            f"split {split!r} has label {int(bad[0])}{hint} out of range for {num_classes} classes "
            f"(labels must be in 0..{num_classes - 1})"
        )
    return labels


def _check_classes_in_train(labels: dict[str, np.ndarray], splits: dict, classnames: list[str]) -> None:
    """Every class of the validation and test splits read from the dataset has rows in train, where the
    unlearning set is drawn from (a class it lacks could be neither fine-tuned on nor repaired)."""
    in_train = set(np.unique(labels["train"]).tolist())
    for role in ("validation", "test"):
        if role not in labels:
            continue
        missing = sorted(set(np.unique(labels[role]).tolist()) - in_train)
        if missing:
            shown = ", ".join(f"{classnames[c]!r} (label {c})" for c in missing[:8])
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise DataError(
                f"split {splits[role]!r} has class {shown}{more} that the train split {splits['train']!r} lacks: "
                "train is where the unlearning set comes from, so every class evaluated needs train rows"
            )


def _carve(labels: np.ndarray, parts: list[str], fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Per class: shuffle (seeded), give ``round(n * fraction)`` rows to each of ``parts``, the rest to train."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {part: [] for part in ("train", *parts)}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        k = min(max(round(len(idx) * fraction), 1), (len(idx) - 1) // len(parts))
        for i, part in enumerate(parts):
            chosen[part].append(idx[i * k : (i + 1) * k])
        chosen["train"].append(idx[len(parts) * k :])
    return {part: np.sort(np.concatenate(ids)) for part, ids in chosen.items()}


def _stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` sorted row indices, classes in proportion to their size, seeded."""
    rng = np.random.default_rng([seed, 1])
    keys = np.empty(len(labels))
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        keys[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.sort(np.argsort(keys, kind="stable")[:n])
