"""The registry of data sources: where a :class:`DataArguments` ``dataset_name`` is read from.

Each source is registered with one call to :func:`register_data_source` (like PEFT's
``register_peft_method``): a ``matches`` predicate and a ``load`` function returning a
:class:`datasets.DatasetDict`. :func:`select_data_source` tries the sources in registration order, except the
catch-all ``"hub"``, which is always tried last (so a source registered later still gets its turn):

| name | picks | reads with |
|---|---|---|
| ``embedded`` | a name in :data:`EMBEDDED_DATASETS` | its builder, at its default (native) size |
| ``disk`` | a folder written by ``save_to_disk`` | ``datasets.load_from_disk`` |
| ``imagefolder`` | a folder holding image files (one sub-folder per class) | ``load_dataset("imagefolder")`` |
| ``files`` | a parquet/arrow file, a glob of them, or a folder of them | ``load_dataset("parquet"/"arrow")`` |
| ``hub`` | anything else that is not a local path | ``load_dataset(name, config)`` |
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import DatasetDict
from datasets.exceptions import DatasetsError

from ..errors import ConfigError, DataError
from .arguments import DataArguments
from .embedded import EMBEDDED_DATASETS, TaskSpec
from .examples import write_example_folder, write_example_parquet, write_example_saved
from .hub_source import load_hub
from .loader import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = ["DATA_SOURCES", "DataSource", "dataset_display_name", "register_data_source", "select_data_source"]

_TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
_FALLBACK = "hub"


@dataclass(frozen=True)
class DataSource:
    """A registered data source.

    Args:
        name: Registry key, recorded in the provenance (``"imagefolder"``, ``"hub"``...).
        matches: Whether this source reads ``args.dataset_name``; cheap, touches no network.
        load: Reads the dataset as a :class:`datasets.DatasetDict`; raises :class:`DataError` on failure.
        description: One line for help texts and error messages.
        task: Optional: the dataset's own :class:`TaskSpec` (class names and templates), e.g. for embedded sets.
        example: Writes a small dataset this source reads into a given folder and returns its arguments
            (offline); the data-source contract test runs every source through it.
        needs_network: The source reads only from the network (the Hub): instead of an example, the
            contract checks that offline it fails with a :class:`DataError` naming the dataset.
    """

    name: str
    matches: Callable[[DataArguments], bool]
    load: Callable[[DataArguments], DatasetDict]
    description: str
    task: Callable[[DataArguments], TaskSpec] | None = None
    example: Callable[[Path], DataArguments] | None = None
    needs_network: bool = False


DATA_SOURCES: dict[str, DataSource] = {}


def register_data_source(
    name: str,
    *,
    matches: Callable[[DataArguments], bool],
    load: Callable[[DataArguments], DatasetDict],
    description: str,
    task: Callable[[DataArguments], TaskSpec] | None = None,
    example: Callable[[Path], DataArguments] | None = None,
    needs_network: bool = False,
) -> DataSource:
    """Register a data source under ``name``; it is tried after those registered before it (``hub`` last).

    Raises:
        ConfigError: ``name`` is already registered, or it has neither an offline ``example`` nor
            ``needs_network=True``.
    """
    if name in DATA_SOURCES:
        raise ConfigError(f"a data source named {name!r} is already registered")
    if example is None and not needs_network:
        raise ConfigError(f"data source {name!r} needs an offline example (or needs_network=True)")
    source = DataSource(
        name=name,
        matches=matches,
        load=load,
        description=description,
        task=task,
        example=example,
        needs_network=needs_network,
    )
    DATA_SOURCES[name] = source
    return source


def select_data_source(args: DataArguments) -> DataSource:
    """The first registered source whose ``matches`` accepts ``args`` (``hub`` is tried last).

    Raises:
        DataError: no source reads ``args.dataset_name`` (e.g. a local path that does not exist).
    """
    ordered = [s for s in DATA_SOURCES.values() if s.name != _FALLBACK]
    ordered += [DATA_SOURCES[_FALLBACK]] if _FALLBACK in DATA_SOURCES else []
    for source in ordered:
        if source.matches(args):
            return source
    name = args.dataset_name
    what = "exists but is not" if _local_path(name).exists() else "does not exist and is not"
    kinds = "; ".join(f"{s.name}: {s.description}" for s in ordered)
    raise DataError(f"dataset {name!r} {what} a dataset any data source reads ({kinds})")


def dataset_display_name(args: DataArguments, source: DataSource) -> str:
    """The dataset's name for reports: the Hub id or embedded name, or a local path's base name only."""
    if source.name in ("hub", "embedded"):
        return args.dataset_name
    path = _local_path(args.dataset_name)
    if _is_glob(args.dataset_name):
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return path.resolve().name or path.name


# ------------------------------------------------------------------------------------------ helpers


def _local_path(name: str) -> Path:
    return Path(os.path.expandvars(name)).expanduser()


def _is_glob(name: str) -> bool:
    return any(char in name for char in "*?[")


def _looks_like_path(name: str) -> bool:
    """A name no Hub id can be: absolute, relative (./ ../ ~), two or more slashes, or a table suffix."""
    return (
        name.startswith(("/", "./", "../", "~", "$", "\\"))
        or name.count("/") > 1
        or _is_glob(name)
        or Path(name).suffix.lower() in _TABLE_SUFFIXES
    )


def _first_file(folder: Path, suffixes: frozenset[str] | set[str]) -> Path | None:
    for root, _dirs, files in os.walk(folder):
        for file in sorted(files):
            if Path(file).suffix.lower() in suffixes:
                return Path(root) / file
    return None


def _wrap_local(kind: str, name: str, load: Callable[[], DatasetDict | datasets.Dataset]) -> DatasetDict:
    """Run a local ``load``, turning the errors datasets raises into :class:`DataError` naming ``name``."""
    try:
        loaded = load()
    except (DatasetsError, FileNotFoundError, ValueError, OSError, IndexError) as err:
        raise DataError(f"cannot read {kind} dataset {name!r}: {err}") from err
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


# ---------------------------------------------------------------------------------- embedded


@functools.lru_cache(maxsize=2)
def _embedded(name: str) -> tuple[DatasetDict, TaskSpec]:
    """Build an embedded dataset once (its ``load`` and ``task`` share it); small, in memory."""
    return EMBEDDED_DATASETS[name]()


register_data_source(
    "embedded",
    matches=lambda args: args.dataset_name in EMBEDDED_DATASETS,
    load=lambda args: _embedded(args.dataset_name)[0],
    task=lambda args: _embedded(args.dataset_name)[1],
    description=f"a dataset shipped with hf_tbar ({', '.join(sorted(EMBEDDED_DATASETS))})",
    example=lambda root: DataArguments(dataset_name="digits"),
)

# -------------------------------------------------------------------------------------- disk


def _is_saved_dataset(args: DataArguments) -> bool:
    folder = _local_path(args.dataset_name)
    return folder.is_dir() and (
        (folder / "dataset_dict.json").is_file()
        or ((folder / "dataset_info.json").is_file() and (folder / "state.json").is_file())
    )


register_data_source(
    "disk",
    matches=_is_saved_dataset,
    load=lambda args: _wrap_local(
        "save_to_disk",
        args.dataset_name,
        lambda: datasets.load_from_disk(str(_local_path(args.dataset_name))),
    ),
    description="a folder written by Dataset(Dict).save_to_disk",
    example=lambda root: write_example_saved(root / "saved"),
)

# ------------------------------------------------------------------------------- imagefolder


def _is_image_folder(args: DataArguments) -> bool:
    folder = _local_path(args.dataset_name)
    return folder.is_dir() and _first_file(folder, IMAGE_SUFFIXES) is not None


register_data_source(
    "imagefolder",
    matches=_is_image_folder,
    load=lambda args: _wrap_local(
        "imagefolder",
        args.dataset_name,
        lambda: datasets.load_dataset("imagefolder", data_dir=str(_local_path(args.dataset_name))),
    ),
    description="a local folder of images with one sub-folder per class (optionally under train/test/...)",
    example=lambda root: write_example_folder(root / "colours"),
)

# ------------------------------------------------------------------------------------- files


def _table_format(args: DataArguments) -> str | None:
    """``"parquet"`` / ``"arrow"`` when ``dataset_name`` is such a file, a glob of them, or a folder of them."""
    name = args.dataset_name
    path = _local_path(name)
    if _is_glob(name):
        found = sorted(glob.glob(str(path), recursive=True))
        suffixes = {Path(match).suffix.lower() for match in found}
    elif path.is_file():
        suffixes = {path.suffix.lower()}
    elif path.is_dir():
        first = _first_file(path, set(_TABLE_SUFFIXES))
        suffixes = {first.suffix.lower()} if first is not None else set()
    else:
        return None
    formats = {_TABLE_SUFFIXES[s] for s in suffixes if s in _TABLE_SUFFIXES}
    return formats.pop() if len(formats) == 1 and len(suffixes) == 1 else None


def _load_files(args: DataArguments) -> DatasetDict:
    fmt = _table_format(args)
    path = _local_path(args.dataset_name)
    if path.is_dir():
        return _wrap_local(fmt, args.dataset_name, lambda: datasets.load_dataset(fmt, data_dir=str(path)))
    return _wrap_local(fmt, args.dataset_name, lambda: datasets.load_dataset(fmt, data_files=str(path)))


register_data_source(
    "files",
    matches=lambda args: _table_format(args) is not None,
    load=_load_files,
    description="a parquet or arrow file, a glob of them, or a folder of them",
    example=lambda root: write_example_parquet(root / "tables"),
)


# The Hub, the catch-all source (tried last whatever the registration order); its reader has its own module.
register_data_source(
    "hub",
    matches=lambda args: (
        not _local_path(args.dataset_name).exists() and not _looks_like_path(args.dataset_name)
    ),
    load=load_hub,
    description="a dataset id on the Hugging Face Hub (or in its local cache), e.g. 'cifar10'",
    needs_network=True,
)
