"""Read the headers of a safetensors checkpoint (a folder, sharded or not, or one file) without its data."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..errors import InputError

PathLike = str | os.PathLike

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
# Suffixes of pickle checkpoints, which are refused (unpickling can run arbitrary code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Size in bytes of a tensor of safetensors dtype code ``dtype`` and ``shape``."""
    return math.prod(shape) * DTYPES[dtype].itemsize


# The torch dtypes numpy also has; the others (bfloat16, float8) go through numpy as a same-size integer.
_NUMPY: dict[torch.dtype, np.dtype] = {
    dtype: np.dtype(name)
    for dtype in DTYPES.values()
    if hasattr(np, name := str(dtype).removeprefix("torch."))
}
_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _carrier(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if numpy has it, else the integer dtype of the same size (its bytes, reinterpreted)."""
    return dtype if dtype in _NUMPY else _SAME_SIZE_INT[dtype.itemsize]


def view_bytes(buffer: Any, dtype: torch.dtype, shape: Sequence[int], offset: int = 0) -> torch.Tensor:
    """A tensor of ``dtype`` and ``shape`` on the bytes of ``buffer`` from ``offset`` (nothing copied).

    The tensor keeps ``buffer`` exported (numpy holds it) while it lives, so a ``mmap`` under it cannot
    be closed. Made through numpy: one or two cheap torch calls. A read-only ``buffer`` gives a tensor
    that must not be written to.
    """
    carrier = _carrier(dtype)
    array = np.frombuffer(buffer, dtype=_NUMPY[carrier], count=math.prod(shape), offset=offset)
    if array.flags.writeable:
        tensor = torch.from_numpy(array.reshape(shape))
    else:  # a read-only mapping: torch would warn that writing to the tensor is undefined
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            tensor = torch.from_numpy(array.reshape(shape))
    return tensor if carrier == dtype else tensor.view(dtype)


def tensor_bytes(tensor: torch.Tensor) -> np.ndarray:
    """The bytes of ``tensor`` as a flat uint8 numpy array: a view when it is contiguous, else a copy."""
    carrier = _carrier(tensor.dtype)
    array = (tensor if carrier == tensor.dtype else tensor.view(carrier)).numpy()
    return array.reshape(-1).view(np.uint8)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, read from a safetensors header (no data read)."""

    name: str
    dtype: str  # safetensors dtype code, e.g. "F32"
    shape: tuple[int, ...]
    file: Path

    @property
    def is_float(self) -> bool:
        return DTYPES[self.dtype].is_floating_point

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


@dataclass(frozen=True)
class Checkpoint:
    """The weights of a checkpoint folder (one file, or shards listed by an index) or of one file."""

    path: Path
    folder: Path | None  # None when the checkpoint is a single .safetensors file
    tensors: dict[str, TensorInfo]  # in file order, then data-offset order
    metadata: dict[str, str]
    config: dict | None


def safetensors_error(file: Path, err: Exception) -> ValueError:
    """The error raised for a file safetensors cannot parse, naming the file."""
    return ValueError(f"cannot read {file}: not a valid safetensors file (truncated or corrupted?): {err}")


def refuse_pickle(path: Path) -> None:
    """Raise: ``path`` is a pickle checkpoint, which is never unpickled."""
    raise InputError(
        f"{path} is a pickle checkpoint; hf_tbar will not unpickle it (loading pickles can run arbitrary "
        "code). Convert it to safetensors first, e.g. load it yourself with torch.load(..., weights_only=True) "
        "and save it with save_pretrained(..., safe_serialization=True)."
    )


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a checkpoint folder and, for a sharded one, its index's weight_map."""
    indexes = [folder / SAFE_WEIGHTS_INDEX_NAME] if (folder / SAFE_WEIGHTS_INDEX_NAME).is_file() else []
    indexes = indexes or sorted(folder.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise InputError(f"{folder} holds several safetensors indexes {[p.name for p in indexes]}: pass one")
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(
                f"{indexes[0]} is not a safetensors index (no readable weight_map): {err}"
            ) from err
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{indexes[0]} lists shard(s) {missing} that are not in {folder}")
        return files, weight_map
    singles = [folder / SAFE_WEIGHTS_NAME] if (folder / SAFE_WEIGHTS_NAME).is_file() else []
    singles = singles or sorted(folder.glob("*.safetensors"))
    if len(singles) == 1:
        return singles, None
    if len(singles) > 1:
        raise InputError(
            f"{folder} holds several .safetensors files {[p.name for p in singles]} but no index.json"
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        refuse_pickle(folder / pickles[0])
    raise FileNotFoundError(f"{folder} has no safetensors weights (no {SAFE_WEIGHTS_NAME} or index)")


def _read_header(file: Path) -> tuple[list[TensorInfo], dict[str, str]]:
    """Names, dtypes and shapes of the tensors of one safetensors file, in data-offset order."""
    try:
        with safe_open(file, framework="pt") as handle:
            infos = []
            for name in handle.offset_keys():
                view = handle.get_slice(name)
                infos.append(TensorInfo(name, view.get_dtype(), tuple(view.get_shape()), file))
            metadata = dict(handle.metadata() or {})
    except SafetensorError as err:
        raise safetensors_error(file, err) from err
    unknown = [info for info in infos if info.dtype not in DTYPES]
    if unknown:
        raise InputError(f"{file}: tensor {unknown[0].name!r} has unsupported dtype {unknown[0].dtype}")
    return infos, metadata


def _check_index(path: Path, tensors: dict[str, TensorInfo], weight_map: dict[str, str]) -> None:
    """Raise unless the index maps every tensor to the shard that holds it, and nothing else."""
    for name, shard in weight_map.items():
        if name not in tensors or tensors[name].file.name != shard:
            raise InputError(f"index of {path} maps tensor {name!r} to {shard}, which does not hold it")
    extra = [name for name in tensors if name not in weight_map]
    if extra:
        raise InputError(
            f"tensor {extra[0]!r} of {tensors[extra[0]].file} is missing from the index of {path}"
        )


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read the headers (never the data) of a checkpoint folder or a single ``.safetensors`` file.

    Raises:
        FileNotFoundError: ``path`` does not exist, or a folder holds no safetensors weights.
        ValueError: a pickle checkpoint, a file safetensors cannot parse, an inconsistent index, a
            tensor stored twice, or an unreadable config.json (each names the file).
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            refuse_pickle(path)
        if path.suffix != ".safetensors":
            raise InputError(f"{path} is neither a checkpoint folder nor a .safetensors file")
        folder, files, weight_map = None, [path], None
    else:
        folder = path
        files, weight_map = _weight_files(path)
    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, str] = {}
    for file in files:
        infos, file_metadata = _read_header(file)
        metadata = metadata or file_metadata
        for info in infos:
            if info.name in tensors:
                raise InputError(
                    f"tensor {info.name!r} is stored twice: in {tensors[info.name].file} and {file}"
                )
            tensors[info.name] = info
    if weight_map is not None:
        _check_index(path, tensors, weight_map)
    config = None
    if folder is not None and (folder / CONFIG_NAME).is_file():
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{folder / CONFIG_NAME} is not valid JSON: {err}") from err
    return Checkpoint(path=path, folder=folder, tensors=tensors, metadata=metadata, config=config)
