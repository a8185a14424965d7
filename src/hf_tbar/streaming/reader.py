"""Read row ranges of tensors as zero-copy views on memory maps, keeping resident input pages bounded."""

from __future__ import annotations

import json
import mmap
import struct
import threading
from pathlib import Path

import torch

from ..errors import InputError
from .checkpoint import DTYPES, TensorInfo, safetensors_error, view_bytes

_MADVISE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")  # not on Windows


class _Mapping:
    """One input file mapped once, read-only, and the data offsets of its tensors, read from the header
    in that same mapping (``safe_open`` validated the file when its header was first read)."""

    def __init__(self, file: Path) -> None:
        self.file = file
        with open(file, "rb") as handle:
            try:
                # Outlives the file handle. Views on it hold a buffer export (through numpy), so it is
                # unmapped only when the last view is gone: never under a live tensor.
                self.map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as err:  # an empty file
                raise safetensors_error(file, err) from err
        if _MADVISE:  # tensors are read in file order: let cold pages be read ahead in large steps
            self.map.madvise(mmap.MADV_SEQUENTIAL)
        try:
            (size,) = struct.unpack_from("<Q", self.map, 0)
            header = json.loads(self.map[8 : 8 + size])
            self.tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
        except (struct.error, ValueError, AttributeError) as err:
            raise safetensors_error(file, err) from err
        self.data_start = 8 + size
        self.read_bytes = 0  # read through the mapping
        self._done, self._low, self._high = 0, len(self.map), 0  # bytes done with since the last release

    def _range(self, info: TensorInfo, start: int, stop: int) -> tuple[int, int]:
        """Offset and size in the file of rows ``start:stop`` of ``info``, checked against the header."""
        entry = self.tensors.get(info.name)
        try:
            begin, end = (self.data_start + offset for offset in entry["data_offsets"])
            layout = (entry["dtype"], tuple(entry["shape"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"cannot read {self.file}: tensor {info.name!r} is no longer in it") from err
        if layout != (info.dtype, info.shape) or end - begin != info.nbytes or end > len(self.map):
            raise InputError(f"cannot read {self.file}: tensor {info.name!r} changed while being read")
        rows = info.shape[0] if info.shape else 1
        row_bytes = info.nbytes // rows if rows else 0
        return begin + start * row_bytes, (stop - start) * row_bytes

    def view(self, info: TensorInfo, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``info`` as a tensor viewing the mapped bytes (nothing copied)."""
        offset, size = self._range(info, start, stop)
        self.read_bytes += size
        shape = (stop - start, *info.shape[1:]) if info.shape else ()
        return view_bytes(self.map, DTYPES[info.dtype], shape, offset)

    def done(self, info: TensorInfo, start: int, stop: int, release_bytes: int) -> None:
        """Note that the view of those rows is no longer used; once ``release_bytes`` are, hand their
        pages back to the OS (they stay in the page cache)."""
        offset, size = self._range(info, start, stop)
        self._done += size
        self._low, self._high = min(self._low, offset), max(self._high, offset + size)
        if self._done >= release_bytes:
            self.release()

    def release(self) -> None:
        if _MADVISE and self._high > self._low:
            # Page-aligned outwards: a page shared with a view still in use is just mapped again.
            low = self._low - self._low % mmap.PAGESIZE
            self.map.madvise(mmap.MADV_DONTNEED, low, self._high - low)
        self._done, self._low, self._high = 0, len(self.map), 0

    def close(self) -> None:
        self.release()
        try:
            self.map.close()
        except BufferError:  # a view is still alive: the mapping goes away with the last one
            pass


class MappedReader:
    """Read row ranges of tensors as views on memory maps of their files.

    Nothing is copied: the maths reads the page cache through the views. Each file is mapped once.
    Mapped pages stay resident until released, so once ``release_bytes`` of a file are :meth:`done`
    with, their pages are handed back to the OS (``madvise(MADV_DONTNEED)``; they stay in the page
    cache), and at most ``max_open`` files (one per input checkpoint) stay mapped: resident input pages
    stay bounded by ``max_open * release_bytes`` plus the views in use, instead of growing to the file
    sizes. Without ``madvise`` (Windows), a file is mapped again after ``release_bytes`` were read.
    :meth:`read` and :meth:`done` may be called from several threads.
    """

    def __init__(self, release_bytes: int, max_open: int = 2) -> None:
        self.release_bytes = release_bytes
        self.max_open = max_open
        self._mappings: dict[Path, _Mapping] = {}  # least recently used first
        self._lock = threading.Lock()

    def read(self, info: TensorInfo, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``info`` (the whole tensor if it has no dimension), a view on the map.

        The view is read-only memory: writing to it would crash the process.
        """
        with self._lock:
            mapping = self._mappings.pop(info.file, None)
            if mapping is not None and not _MADVISE and mapping.read_bytes >= self.release_bytes:
                mapping.close()
                mapping = None
            if mapping is None:
                while len(self._mappings) >= self.max_open:
                    self._mappings.pop(next(iter(self._mappings))).close()
                mapping = _Mapping(info.file)
            self._mappings[info.file] = mapping
            return mapping.view(info, start, stop)

    def done(self, info: TensorInfo, start: int, stop: int) -> None:
        """The view of rows ``start:stop`` of ``info`` from :meth:`read` is no longer used."""
        with self._lock:
            mapping = self._mappings.get(info.file)
            if mapping is not None:  # else closed: its pages go when its views do
                mapping.done(info, start, stop, self.release_bytes)

    def close(self) -> None:
        with self._lock:
            while self._mappings:
                self._mappings.popitem()[1].close()
