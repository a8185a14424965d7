"""Write one safetensors file whose layout is fixed up front; tensor data is written chunk by chunk."""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from errno import ENOSPC
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .checkpoint import DTYPES, nbytes, tensor_bytes

# (name, safetensors dtype code, shape) of one tensor to write.
Entry = tuple[str, str, tuple[int, ...]]
# Bytes per write() call at most, so that a copied chunk (up to 8 MiB) holds the file's lock in short
# turns while another thread has a computed piece (1 MiB) to write.
_WRITE_BYTES = 2**20

if hasattr(os, "pwrite"):
    _pwrite = os.pwrite
else:  # Windows
    _seek_lock = threading.Lock()

    def _pwrite(fd: int, data: Any, offset: int) -> int:
        with _seek_lock:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.write(fd, data)


def _load_fallocate() -> Callable[[int, int], int] | None:
    """Linux ``fallocate(fd, 0, 0, size)`` as ``f(fd, size) -> errno`` (0 on success), or None elsewhere.

    Called through libc because ``os.posix_fallocate`` falls back to writing the file block by block
    where the file system lacks ``fallocate``; this one just fails there (and the writes allocate).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # a libc without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int

    def fallocate(fd: int, size: int) -> int:
        return 0 if function(fd, 0, 0, size) == 0 else ctypes.get_errno()

    return fallocate


_FALLOCATE = _load_fallocate()


def _preallocate(fd: int, path: Path, size: int) -> None:
    """Reserve ``size`` bytes of disk for the file at ``path`` before writing it.

    Writes into reserved blocks skip ext4's delayed allocation, which made them steadier and faster here
    (in ``benchmarks/arithmetic.py`` streaming beats the "write" row, plain ``write()`` calls of the same
    bytes), and a full disk fails here, before any computation, with an error naming the file. File
    systems without ``fallocate`` allocate as the writes go.
    """
    if _FALLOCATE is None or size == 0:
        return
    errno = _FALLOCATE(fd, size)
    if errno == ENOSPC:
        raise OSError(ENOSPC, f"No space left on device for the {size} bytes of", str(path))


def file_order(entries: Sequence[Entry]) -> list[int]:
    """Indexes of ``entries`` in the order they are stored: by decreasing element size (stable).

    This keeps every tensor aligned to its element size, as :func:`safetensors.torch.save_file` does.
    """
    return sorted(range(len(entries)), key=lambda i: -DTYPES[entries[i][1]].itemsize)


class SafetensorsWriter:
    """Write one safetensors file holding ``entries``, in :func:`file_order`.

    The header (names, dtypes, shapes, offsets) is written first, so each chunk of tensor data can be
    written at its place as soon as it is computed, from any thread and in any order: nothing but the
    chunks being written is ever held in memory. The file is created exclusively (never overwritten).
    """

    def __init__(self, path: Path, entries: Sequence[Entry], metadata: dict[str, str]) -> None:
        self.path = path
        header: dict[str, Any] = {"__metadata__": dict(metadata)}
        starts: dict[str, int] = {}
        offset = 0
        for i in file_order(entries):
            name, dtype, shape = entries[i]
            size = nbytes(dtype, shape)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            starts[name] = offset
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.data_bytes = offset
        self.starts = {name: 8 + len(raw) + start for name, start in starts.items()}  # in the file
        self._lock = threading.Lock()
        self._written = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        self._fd: int | None = os.open(path, flags, 0o666)  # closed by close() or abort()
        try:
            self._write_at(0, struct.pack("<Q", len(raw)) + raw)
            _preallocate(self._fd, path, 8 + len(raw) + offset)
        except BaseException:
            self.abort()
            raise

    def write(self, offset: int, chunk: torch.Tensor) -> None:
        """Write the bytes of ``chunk`` (in the dtype of its tensor) at ``offset`` in the file (from
        :attr:`starts`). Safe to call from several threads: one writes at a time, the others sleep (in
        the kernel, writers of one file would spin on its lock)."""
        data = tensor_bytes(chunk)
        with self._lock:
            self._write_at(offset, data)
            self._written += data.nbytes

    def _write_at(self, offset: int, data: Any) -> None:
        view, done = memoryview(data), 0
        while done < len(view):
            done += _pwrite(self._fd, view[done : done + _WRITE_BYTES], offset + done)

    def close(self) -> None:
        """Close the file, then re-open it with safetensors to validate its header."""
        os.close(self._fd)
        self._fd = None
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
