"""Task arithmetic streamed over safetensors checkpoints, one chunk of one tensor in memory at a time.

TBAR's negation ``theta_clean = theta_b - alpha * (theta_t - theta_b)`` only needs, for each tensor, the
same tensor of the two checkpoints. This module computes it without building any model: tensors are read
through memory-mapped :func:`safetensors.safe_open` handles in row chunks (float32 maths, cast back to
each tensor's dtype) and written straight into output shards whose layout is planned from the input
headers, so peak memory stays at a few chunks (tens of MiB) whatever the size of the model or shards.
The maths runs on one torch thread (the setting is restored afterwards) while a second thread writes.
Every output goes through :func:`hf_tbar.io.atomic_output_dir`: an error or Ctrl-C leaves nothing at the
output path, and inputs are only ever read.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import numbers
import os
import re
import shutil
import struct
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from .io import atomic_output_dir

logger = logging.getLogger(__name__)

__all__ = ["parse_size", "stream_apply_vector", "stream_task_arithmetic", "stream_task_vector"]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
# Suffixes of pickle checkpoints, which this module refuses to open (unpickling can run arbitrary code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Weights of other frameworks: never copied into an output (they would hold the base's stale weights).
_OTHER_WEIGHT_SUFFIXES = (".h5", ".msgpack", ".onnx", ".gguf", ".safetensors")
# Files of the base folder not carried over: its model card describes the base model, not the result.
_NOT_COPIED = frozenset({"README.md"})

# Elements per chunk of a tensor (8 MiB in float32) and bytes read through one mapping of an input file
# before it is re-mapped, so that mapped pages already used are handed back to the OS. Peak memory above
# the interpreter is about 2 float32 chunks of scratch + 2 x (_REMAP_BYTES + a chunk) of mapped input.
_CHUNK_ELEMENTS = 2 * 2**20
_REMAP_BYTES = 16 * 2**20
# torch intra-op threads for the maths while streaming (restored afterwards). The maths is one memory-bound
# pass per chunk and a writer thread overlaps the output I/O: on a 2-core machine, a second torch thread
# made the whole run ~1.5x slower (its OpenMP barrier waits on a core busy with the writer).
_MATH_THREADS = 1

_DTYPES: dict[str, torch.dtype] = {
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
# config.json keys that fix the shapes and wiring of the weights, at any nesting level.
_ARCHITECTURE_KEYS = frozenset(
    {
        "model_type",
        "architectures",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
        "image_size",
        "patch_size",
        "num_channels",
        "projection_dim",
    }
)

PathLike = str | os.PathLike
# A chunk kernel maps row chunks of the source tensors to the output chunk, in the output dtype. It may
# compute into ``scratch``, a float32 buffer of the chunk's shape that is reused for the next chunk.
Kernel = Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------- sizes


def parse_size(size: int | str) -> int:
    """Parse a shard size the way transformers does: an int (bytes) or ``"2GB"``, ``"500MB"``, ``"1GiB"``.

    Decimal units (``KB``, ``MB``, ``GB``) are powers of 1000, binary ones (``KiB``, ``MiB``, ``GiB``)
    powers of 1024.

    Raises:
        ValueError: not a positive size.
    """
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        value = int(size)
    elif isinstance(size, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if match is None:
            raise ValueError(f"max_shard_size {size!r} is not a size such as 2GB, 500MB or 1GiB")
        number, unit = float(match.group(1)), (match.group(2) or "B").upper()
        power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
        value = int(number * (1024 if "I" in unit else 1000) ** power)
    else:
        raise ValueError(f"max_shard_size must be an int or a string such as '2GB', got {size!r}")
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    return float(scale)


# ------------------------------------------------------------------------------------ reading inputs


@dataclass(frozen=True)
class _TensorInfo:
    """Where one tensor lives and what it is, read from a safetensors header (no data read)."""

    name: str
    dtype: str  # safetensors dtype code, e.g. "F32"
    shape: tuple[int, ...]
    file: Path

    @property
    def is_float(self) -> bool:
        return _DTYPES[self.dtype].is_floating_point

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class _Checkpoint:
    """The weights of a checkpoint folder (one file, or shards listed by an index) or of one file."""

    path: Path
    folder: Path | None  # None when the checkpoint is a single .safetensors file
    tensors: dict[str, _TensorInfo]  # in file order, then data-offset order
    metadata: dict[str, str]
    config: dict | None


def _safetensors_error(file: Path, err: Exception) -> ValueError:
    return ValueError(f"cannot read {file}: not a valid safetensors file (truncated or corrupted?): {err}")


def _refuse_pickle(path: Path) -> None:
    raise ValueError(
        f"{path} is a pickle checkpoint; hf_tbar will not unpickle it (loading pickles can run arbitrary "
        "code). Convert it to safetensors first, e.g. load it yourself with torch.load(..., weights_only=True) "
        "and save it with save_pretrained(..., safe_serialization=True)."
    )


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a checkpoint folder and, for a sharded one, its index's weight_map."""
    indexes = [folder / SAFE_WEIGHTS_INDEX_NAME] if (folder / SAFE_WEIGHTS_INDEX_NAME).is_file() else []
    indexes = indexes or sorted(folder.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise ValueError(f"{folder} holds several safetensors indexes {[p.name for p in indexes]}: pass one")
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(
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
        raise ValueError(
            f"{folder} holds several .safetensors files {[p.name for p in singles]} but no index.json"
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        _refuse_pickle(folder / pickles[0])
    raise FileNotFoundError(f"{folder} has no safetensors weights (no {SAFE_WEIGHTS_NAME} or index)")


def _read_header(file: Path) -> tuple[list[_TensorInfo], dict[str, str]]:
    """Names, dtypes and shapes of the tensors of one safetensors file, in data-offset order."""
    try:
        with safe_open(file, framework="pt") as handle:
            infos = []
            for name in handle.offset_keys():
                view = handle.get_slice(name)
                infos.append(_TensorInfo(name, view.get_dtype(), tuple(view.get_shape()), file))
            metadata = dict(handle.metadata() or {})
    except SafetensorError as err:
        raise _safetensors_error(file, err) from err
    unknown = [info for info in infos if info.dtype not in _DTYPES]
    if unknown:
        raise ValueError(f"{file}: tensor {unknown[0].name!r} has unsupported dtype {unknown[0].dtype}")
    return infos, metadata


def _read_checkpoint(path: PathLike) -> _Checkpoint:
    """Read the headers (never the data) of a checkpoint folder or a single ``.safetensors`` file."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            _refuse_pickle(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"{path} is neither a checkpoint folder nor a .safetensors file")
        folder, files, weight_map = None, [path], None
    else:
        folder = path
        files, weight_map = _weight_files(path)
    tensors: dict[str, _TensorInfo] = {}
    metadata: dict[str, str] = {}
    for file in files:
        infos, file_metadata = _read_header(file)
        metadata = metadata or file_metadata
        for info in infos:
            if info.name in tensors:
                raise ValueError(
                    f"tensor {info.name!r} is stored twice: in {tensors[info.name].file} and {file}"
                )
            tensors[info.name] = info
    if weight_map is not None:
        for name, shard in weight_map.items():
            if name not in tensors or tensors[name].file.name != shard:
                raise ValueError(f"index of {path} maps tensor {name!r} to {shard}, which does not hold it")
        extra = [name for name in tensors if name not in weight_map]
        if extra:
            raise ValueError(
                f"tensor {extra[0]!r} of {tensors[extra[0]].file} is missing from the index of {path}"
            )
    config = None
    if folder is not None and (folder / CONFIG_NAME).is_file():
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{folder / CONFIG_NAME} is not valid JSON: {err}") from err
    return _Checkpoint(path=path, folder=folder, tensors=tensors, metadata=metadata, config=config)


class _MappedReader:
    """Read row ranges of tensors through ``safe_open`` memory maps.

    Pages of a mapping stay resident while it is open, so a file is re-mapped after ``remap_bytes`` have
    been read through it, and at most ``max_open`` files (one per input checkpoint) stay mapped: resident
    input pages stay bounded by ``max_open * remap_bytes`` instead of growing to the file sizes.
    """

    def __init__(self, remap_bytes: int | None = None, max_open: int = 2) -> None:
        self.remap_bytes = _REMAP_BYTES if remap_bytes is None else remap_bytes
        self.max_open = max_open
        self._handles: dict[Path, Any] = {}  # least recently used first
        self._read: dict[Path, int] = {}

    def read(self, info: _TensorInfo, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``info`` (the whole tensor if it has no dimension), a view on the map."""
        if self._read.get(info.file, 0) >= self.remap_bytes:
            self._close(info.file)
        try:
            if info.file in self._handles:
                self._handles[info.file] = self._handles.pop(info.file)
            else:
                while len(self._handles) >= self.max_open:
                    self._close(next(iter(self._handles)))
                self._handles[info.file] = safe_open(info.file, framework="pt")
                self._read[info.file] = 0
            handle = self._handles[info.file]
            tensor = handle.get_slice(info.name)[start:stop] if info.shape else handle.get_tensor(info.name)
        except SafetensorError as err:
            raise _safetensors_error(info.file, err) from err
        self._read[info.file] += tensor.numel() * tensor.element_size()
        return tensor

    def _close(self, file: Path) -> None:
        handle = self._handles.pop(file, None)
        self._read.pop(file, None)
        if handle is not None:
            handle.__exit__(None, None, None)

    def close(self) -> None:
        for file in list(self._handles):
            self._close(file)


# ------------------------------------------------------------------------------------ writing output


@dataclass(frozen=True)
class _Job:
    """One output tensor: its layout, the input tensors it is computed from, and the chunk kernel."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    sources: tuple[_TensorInfo, ...]
    kernel: Kernel | None  # None: copy sources[0] unchanged

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _DTYPES[self.dtype].itemsize


class _SafetensorsWriter:
    """Write one safetensors file whose layout is fixed up front; tensor data is appended chunk by chunk.

    The header (names, dtypes, shapes, offsets) is written first, so nothing but the chunk being written
    is ever held in memory. Tensors are laid out by decreasing element size, which keeps every tensor
    aligned to its element size, as :func:`safetensors.torch.save_file` does. Each chunk is written by
    ``executor`` (one thread) while the caller computes the next one; at most one write is pending.
    """

    def __init__(
        self, path: Path, jobs: Sequence[_Job], metadata: dict[str, str], executor: Executor
    ) -> None:
        self.path = path
        self._executor = executor
        self._pending: Future | None = None
        self.jobs = sorted(jobs, key=lambda job: -_DTYPES[job.dtype].itemsize)
        header: dict[str, Any] = {"__metadata__": dict(metadata)}
        offset = 0
        for job in self.jobs:
            header[job.name] = {
                "dtype": job.dtype,
                "shape": list(job.shape),
                "data_offsets": [offset, offset + job.nbytes],
            }
            offset += job.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.data_bytes = offset
        self._file = open(path, "xb")  # closed by close() or abort()
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._written = 0

    def write(self, chunk: torch.Tensor, check: Callable[[], None] | None = None) -> None:
        """Queue the bytes of ``chunk`` (in the dtype of the tensor being written) after the pending write.

        ``check`` runs on the writer thread just before the bytes are written; an exception it raises
        comes out of the next ``write`` or ``close``. The caller must leave ``chunk``'s memory untouched
        until then.
        """
        data = chunk.contiguous().reshape(-1).view(torch.uint8).numpy()
        self._wait()
        self._pending = self._executor.submit(self._emit, data, check)
        self._written += data.nbytes

    def _emit(self, data: Any, check: Callable[[], None] | None) -> None:
        if check is not None:
            check()
        self._file.write(data)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises what the write (or its check) raised
            self._pending = None

    def close(self) -> None:
        """Finish writing, close the file, then re-open it with safetensors to validate its header."""
        self._wait()
        self._file.close()
        if self._written != self.data_bytes:
            raise RuntimeError(
                f"{self.path}: wrote {self._written} data bytes, the header announces {self.data_bytes}"
            )
        try:
            with safe_open(self.path, framework="pt"):
                pass
        except SafetensorError as err:
            raise RuntimeError(f"wrote an invalid safetensors file {self.path}: {err}") from err

    def abort(self) -> None:
        """Close the file without validating it (the caller is failing anyway)."""
        with contextlib.suppress(BaseException):
            self._wait()
        self._file.close()


def _plan_shards(jobs: Sequence[_Job], max_bytes: int) -> list[list[_Job]]:
    """Group jobs into shards of at most ``max_bytes`` (a larger tensor gets a shard of its own)."""
    shards: list[list[_Job]] = [[]]
    size = 0
    for job in jobs:
        if shards[-1] and size + job.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(job)
        size += job.nbytes
    return shards


class _Scratch:
    """Two flat float32 buffers handed out in turn: one is being written while the next chunk fills the other."""

    def __init__(self, elements: int | None = None) -> None:
        elements = _CHUNK_ELEMENTS if elements is None else elements
        self._buffers = [torch.empty(elements, dtype=torch.float32) for _ in range(2)]
        self._turn = 0

    def take(self, shape: torch.Size) -> torch.Tensor:
        """A float32 tensor of ``shape`` in the next buffer (freshly allocated if it does not fit)."""
        self._turn ^= 1
        n = math.prod(shape)
        buffer = self._buffers[self._turn]
        return (buffer[:n] if n <= buffer.numel() else torch.empty(n, dtype=torch.float32)).view(shape)


def _run_job(job: _Job, reader: _MappedReader, writer: _SafetensorsWriter, scratch: _Scratch) -> None:
    """Stream one output tensor: read row chunks of its sources, apply the kernel, queue the result."""
    rows = job.shape[0] if job.shape else 1
    row_elements = math.prod(job.shape[1:]) if job.shape else 1
    step = max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        chunks = [reader.read(source, start, stop) for source in job.sources]
        if job.kernel is None:
            out = chunks[0]
        else:
            out = job.kernel(chunks, scratch.take(chunks[0].shape))
        writer.write(out, None if job.kernel is None else functools.partial(_check_finite, job, chunks, out))
        del chunks, out


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether a float tensor holds no NaN/Inf. A sum (one fast pass) is non-finite if any value is (or on
    overflow), and only then is the exact, slower element-wise test run."""
    total = tensor.numpy().sum() if tensor.dtype == torch.float32 else tensor.sum(dtype=torch.float32).item()
    return math.isfinite(float(total)) or bool(torch.isfinite(tensor).all())


def _check_finite(job: _Job, chunks: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """Raise ValueError naming the tensor when the output chunk ``out`` holds NaN or Inf."""
    if _all_finite(out):
        return
    bad = int((~torch.isfinite(out)).sum())
    causes = [
        f"{source.file} already holds non-finite values"
        for source, chunk in zip(job.sources, chunks)
        if chunk.is_floating_point() and not bool(torch.isfinite(chunk).all())
    ]
    cause = "; ".join(causes) or f"overflow in the result or when casting it to {job.dtype}"
    raise ValueError(f"tensor {job.name!r}: the result has {bad} non-finite (NaN/Inf) values ({cause})")


def _shard_names(count: int) -> list[str]:
    if count == 1:
        return [SAFE_WEIGHTS_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _write_files(
    files: Sequence[tuple[Path, Sequence[_Job]]], metadata: dict[str, str], desc: str, progress: bool
) -> None:
    """Stream every job into its file, with one progress bar over all tensors."""
    reader, scratch = _MappedReader(), _Scratch()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_tbar-writer")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, _MATH_THREADS))
    try:
        with tqdm(
            total=sum(len(jobs) for _, jobs in files), desc=desc, unit="tensor", disable=not progress
        ) as bar:
            for path, jobs in files:
                _write_file(path, jobs, metadata, reader, bar, scratch, executor)
    finally:
        torch.set_num_threads(threads)
        executor.shutdown(wait=True)
        reader.close()


def _write_shards(
    jobs: Sequence[_Job], folder: Path, max_bytes: int, metadata: dict[str, str], desc: str, progress: bool
) -> list[str]:
    """Write ``jobs`` into ``folder`` as ``model.safetensors`` or shards plus an index; return the file names."""
    shards = _plan_shards(jobs, max_bytes)
    names = _shard_names(len(shards))
    _write_files([(folder / name, shard) for name, shard in zip(names, shards)], metadata, desc, progress)
    if len(shards) > 1:
        weight_map = {job.name: name for name, shard in zip(names, shards) for job in shard}
        index = {
            "metadata": {
                "total_parameters": sum(math.prod(job.shape) for job in jobs),
                "total_size": sum(job.nbytes for job in jobs),
            },
            "weight_map": dict(sorted(weight_map.items())),
        }
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return names


def _write_file(
    path: Path,
    jobs: Sequence[_Job],
    metadata: dict[str, str],
    reader: _MappedReader,
    bar: tqdm,
    scratch: _Scratch,
    executor: Executor,
) -> None:
    writer = _SafetensorsWriter(path, jobs, metadata, executor)
    try:
        for job in writer.jobs:
            _run_job(job, reader, writer, scratch)
            bar.update(1)
    except BaseException:
        writer.abort()
        raise
    writer.close()


# ------------------------------------------------------------------------------------------ checks


def _check_same_layout(base: _Checkpoint, other: _Checkpoint, *, floats_only: bool = False) -> None:
    """Raise naming the first tensor present in one checkpoint only, or with another shape or dtype."""
    wanted = {n: i for n, i in base.tensors.items() if i.is_float or not floats_only}
    missing = [name for name in wanted if name not in other.tensors]
    if missing:
        raise ValueError(
            f"tensor {missing[0]!r} is in {base.path} but not in {other.path}"
            + (f" ({len(missing)} tensors missing)" if len(missing) > 1 else "")
        )
    extra = [name for name in other.tensors if name not in wanted]
    if extra:
        raise ValueError(
            f"tensor {extra[0]!r} is in {other.path} but not in {base.path}"
            + (f" ({len(extra)} extra tensors)" if len(extra) > 1 else "")
        )
    for name, info in wanted.items():
        theirs = other.tensors[name]
        if info.shape != theirs.shape:
            raise ValueError(
                f"tensor {name!r} has shape {list(info.shape)} in {base.path} but {list(theirs.shape)} in {other.path}"
            )
        if floats_only:
            if not theirs.is_float:
                raise ValueError(
                    f"tensor {name!r} of {other.path} has dtype {theirs.dtype}, not a float dtype"
                )
        elif info.dtype != theirs.dtype:
            raise ValueError(
                f"tensor {name!r} has dtype {info.dtype} in {base.path} but {theirs.dtype} in {other.path}"
            )


def _architecture(config: dict, prefix: str = "") -> dict[str, Any]:
    """The shape-defining entries of a config.json, flattened to dotted keys."""
    found: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            found.update(_architecture(value, f"{prefix}{key}."))
        elif key in _ARCHITECTURE_KEYS:
            found[f"{prefix}{key}"] = value
    return found


def _check_same_architecture(base: _Checkpoint, other: _Checkpoint) -> None:
    if base.config is None or other.config is None:
        if base.folder is not None and other.folder is not None:
            logger.warning(
                "config.json missing in %s or %s: architectures not compared", base.path, other.path
            )
        return
    ours, theirs = _architecture(base.config), _architecture(other.config)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise ValueError(
                f"{base.path} and {other.path} have different architectures: config.json {key} is "
                f"{ours.get(key)!r} vs {theirs.get(key)!r}"
            )


def _writable_ancestor(path: Path) -> None:
    """Raise PermissionError unless a folder can be created where ``path`` will be written."""
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {ancestor} is a file, not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=".hf_tbar-probe-", dir=ancestor)).rmdir()
    except OSError as err:
        raise PermissionError(f"cannot write {path}: {ancestor} is not writable ({err.strerror})") from err


def _check_output(output: PathLike, inputs: Sequence[_Checkpoint], overwrite: bool) -> Path:
    """Resolve ``output`` and refuse it when it overlaps an input, exists without overwrite, or is read-only."""
    out = Path(output).expanduser().resolve()
    for checkpoint in inputs:
        inp = checkpoint.path
        if out == inp or inp in out.parents:
            raise ValueError(f"output {out} is inside the input {inp}: write it somewhere else")
        if out in inp.parents:
            raise ValueError(f"output {out} contains the input {inp}: writing it would delete that input")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} already exists (pass overwrite=True to replace it)")
    _writable_ancestor(out)
    return out


def _copy_extra_files(folder: Path | None, dest: Path) -> None:
    """Copy the non-weight top-level files of a checkpoint folder (config, tokenizer, processor...)."""
    if folder is None:
        return
    for path in sorted(folder.iterdir()):
        name = path.name
        is_weights = path.suffix in PICKLE_SUFFIXES + _OTHER_WEIGHT_SUFFIXES or name.endswith(".index.json")
        if name.startswith(".") or is_weights or name in _NOT_COPIED or not path.is_file():
            logger.debug("not copying %s", path)
            continue
        shutil.copyfile(path, dest / name)


def _output_metadata(base: _Checkpoint) -> dict[str, str]:
    return {**{k: str(v) for k, v in base.metadata.items()}, "format": "pt"}


# ------------------------------------------------------------------------------------------ kernels


def _arithmetic_kernel(scale: float, negate: bool, dtype: str) -> Kernel:
    """``base -/+ scale * (finetuned - base)`` in float32, as one fused ``lerp``, cast to ``dtype``."""
    weight = -scale if negate else scale
    out_dtype = _DTYPES[dtype]

    def kernel(chunks: Sequence[torch.Tensor], scratch: torch.Tensor) -> torch.Tensor:
        base, finetuned = (chunk.to(torch.float32) for chunk in chunks)
        return torch.lerp(base, finetuned, weight, out=scratch).to(out_dtype)

    return kernel


def _apply_kernel(scale: float, negate: bool, dtype: str) -> Kernel:
    """``base -/+ scale * vector`` in float32 (one fused ``add``), cast to ``dtype``."""
    alpha = -scale if negate else scale
    out_dtype = _DTYPES[dtype]

    def kernel(chunks: Sequence[torch.Tensor], scratch: torch.Tensor) -> torch.Tensor:
        base, vector = (chunk.to(torch.float32) for chunk in chunks)
        return torch.add(base, vector, alpha=alpha, out=scratch).to(out_dtype)

    return kernel


def _difference_kernel(chunks: Sequence[torch.Tensor], scratch: torch.Tensor) -> torch.Tensor:
    """``finetuned - base`` in float32."""
    base, finetuned = (chunk.to(torch.float32) for chunk in chunks)
    return torch.sub(finetuned, base, out=scratch)


# ------------------------------------------------------------------------------------------ public API


def stream_task_arithmetic(
    base_dir: PathLike,
    finetuned_dir: PathLike,
    output_dir: PathLike,
    scale: float,
    *,
    negate: bool = True,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``base - scale * (finetuned - base)`` (TBAR's negation) as a new checkpoint, tensor by tensor.

    Tensors are read in row chunks through memory maps, combined in float32 and cast back to each
    tensor's dtype; integer and bool tensors (``position_ids``) are copied from the base unchanged. Output
    shards are written as they are computed (``model.safetensors``, or ``model-0000i-of-0000n.safetensors``
    plus ``model.safetensors.index.json`` when more than one), so peak memory is a few float32 chunks
    of 8 MiB plus at most 16 MiB of mapped input per checkpoint, whatever the model or shard size. The base folder's other files (config, tokenizer, processor) are
    copied; its README.md model card and any other-format weights are not.

    Args:
        base_dir: The backdoored checkpoint ``theta_b``: a folder of safetensors weights (sharded or not)
            or a single ``.safetensors`` file.
        finetuned_dir: The trigger-fine-tuned checkpoint ``theta_t``, same layout as ``base_dir``.
        output_dir: The folder to write. Written atomically: nothing is left there on error or Ctrl-C.
        scale: ``alpha``, a finite float (dimensionless); 0 reproduces the base bit for bit.
        negate: ``True`` subtracts the task vector (TBAR), ``False`` adds it.
        max_shard_size: Largest output shard, in bytes or as ``"2GB"`` / ``"500MB"`` / ``"1GiB"``.
        overwrite: Replace ``output_dir`` if it exists.
        progress: Show a progress bar over tensors.

    Returns:
        The output folder.

    Raises:
        ValueError: the checkpoints differ (a tensor in one only, a shape or dtype, the architecture in
            config.json), a file is not valid safetensors, a pickle checkpoint, a non-finite scale or
            result, or an output inside an input.
        FileExistsError: ``output_dir`` exists and ``overwrite`` is False.
        PermissionError: the output location is not writable.
    """
    scale = _check_scale(scale)
    max_bytes = parse_size(max_shard_size)
    base, finetuned = _read_checkpoint(base_dir), _read_checkpoint(finetuned_dir)
    _check_same_layout(base, finetuned)
    _check_same_architecture(base, finetuned)
    out = _check_output(output_dir, [base, finetuned], overwrite)
    jobs = [
        _Job(
            name,
            info.dtype,
            info.shape,
            (info, finetuned.tensors[name]),
            _arithmetic_kernel(scale, negate, info.dtype),
        )
        if info.is_float and scale
        else _Job(
            name, info.dtype, info.shape, (info,), None
        )  # integer tensors, or scale 0: the base's bytes
        for name, info in base.tensors.items()
    ]
    sign = "-" if negate else "+"
    logger.info("writing base %s %g * (finetuned - base) to %s", sign, scale, out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        names = _write_shards(jobs, tmp, max_bytes, _output_metadata(base), "task arithmetic", progress)
        _copy_extra_files(base.folder, tmp)
    logger.info("wrote %d tensors in %d file(s) to %s", len(jobs), len(names), out)
    return out


def stream_task_vector(
    base_dir: PathLike,
    finetuned_dir: PathLike,
    output_path: PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the task vector ``finetuned - base`` (floating-point tensors only) as one float32 safetensors file.

    Streamed like :func:`stream_task_arithmetic`. The vector is stored in float32 (the exact difference
    of the two checkpoints, whatever their dtype), with metadata ``format="pt"``,
    ``hf_tbar_type="task_vector"``, the folder names of both inputs and the base's ``model_type``, so
    :func:`stream_apply_vector` with the same scale reproduces :func:`stream_task_arithmetic` up to float32
    rounding (one unit in the last place).

    Args:
        base_dir: The base checkpoint (folder or ``.safetensors`` file).
        finetuned_dir: The fine-tuned checkpoint, same tensors, shapes and dtypes.
        output_path: The ``.safetensors`` file to write (atomically).
        overwrite: Replace ``output_path`` if it exists.
        progress: Show a progress bar over tensors.

    Returns:
        The written file.
    """
    out_file = Path(output_path).expanduser().resolve()
    if out_file.suffix != ".safetensors":
        raise ValueError(f"output_path {out_file} must end with .safetensors")
    base, finetuned = _read_checkpoint(base_dir), _read_checkpoint(finetuned_dir)
    _check_same_layout(base, finetuned)
    _check_same_architecture(base, finetuned)
    _check_output(out_file, [base, finetuned], overwrite)
    if out_file.is_dir():
        raise IsADirectoryError(f"output_path {out_file} is a folder")
    jobs = [
        _Job(name, "F32", info.shape, (info, finetuned.tensors[name]), _difference_kernel)
        for name, info in base.tensors.items()
        if info.is_float
    ]
    metadata = {
        "format": "pt",
        "hf_tbar_type": "task_vector",
        "base": base.path.name,
        "finetuned": finetuned.path.name,
    }
    if base.config and "model_type" in base.config:
        metadata["model_type"] = str(base.config["model_type"])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _write_files([(tmp, jobs)], metadata, "task vector", progress)
        os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote the task vector of %d tensors to %s", len(jobs), out_file)
    return out_file


def stream_apply_vector(
    base_dir: PathLike,
    vector_path: PathLike,
    output_dir: PathLike,
    scale: float,
    *,
    negate: bool = True,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``base - scale * vector`` (``+`` with ``negate=False``) as a new checkpoint, streamed.

    The vector (from :func:`stream_task_vector`) must hold exactly the floating-point tensors of the base,
    with the same shapes; integer and bool tensors of the base are copied unchanged. Output layout,
    dtypes, atomicity and memory as in :func:`stream_task_arithmetic`.

    Args:
        base_dir: The checkpoint to edit (folder or ``.safetensors`` file).
        vector_path: A task-vector ``.safetensors`` file.
        output_dir: The folder to write.
        scale: ``alpha``, a finite float.
        negate: ``True`` subtracts the vector (TBAR), ``False`` adds it.
        max_shard_size: Largest output shard, in bytes or as ``"2GB"``.
        overwrite: Replace ``output_dir`` if it exists.
        progress: Show a progress bar over tensors.

    Returns:
        The output folder.
    """
    scale = _check_scale(scale)
    max_bytes = parse_size(max_shard_size)
    base, vector = _read_checkpoint(base_dir), _read_checkpoint(vector_path)
    _check_same_layout(base, vector, floats_only=True)
    vector_type = vector.metadata.get("model_type")
    base_type = (base.config or {}).get("model_type")
    if vector_type and base_type and vector_type != base_type:
        raise ValueError(
            f"{vector.path} is a task vector of a {vector_type!r} model, {base.path} is {base_type!r}"
        )
    out = _check_output(output_dir, [base, vector], overwrite)
    jobs = [
        _Job(
            name,
            info.dtype,
            info.shape,
            (info, vector.tensors[name]),
            _apply_kernel(scale, negate, info.dtype),
        )
        if info.is_float and scale
        else _Job(name, info.dtype, info.shape, (info,), None)
        for name, info in base.tensors.items()
    ]
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        names = _write_shards(jobs, tmp, max_bytes, _output_metadata(base), "apply vector", progress)
        _copy_extra_files(base.folder, tmp)
    logger.info("wrote %d tensors in %d file(s) to %s", len(jobs), len(names), out)
    return out
