"""The one per-tensor loop: stream every output tensor, chunk by chunk, from its inputs into its file."""

from __future__ import annotations

import contextlib
import functools
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue

import torch
from tqdm.auto import tqdm

from .checkpoint import DTYPES, TensorInfo, nbytes
from .kernels import Buffers, Kernel, all_finite, non_finite_error
from .reader import MappedReader
from .shards import plan_like, plan_shards, shard_names, write_index
from .writer import SafetensorsWriter, file_order

# Elements per chunk of a tensor (8 MiB in float32) and bytes read through the mapping of an input file
# before the mapped pages already used are handed back to the OS (see MappedReader). Peak memory above
# the interpreter is about _WORKERS + 1 output chunks (+ 3 float32 temporaries each for other dtypes) +
# 2 x (_RELEASE_BYTES + a few chunks) of mapped input.
_CHUNK_ELEMENTS = 2 * 2**20
_RELEASE_BYTES = 16 * 2**20
# Elements of a chunk computed, tested and written at a time, so that they stay in the CPU cache.
_PIECE_ELEMENTS = 2**18
# Threads that compute, check and write chunks, each on its own core while the next chunks are read.
_WORKERS = 2
# Chunks under this many bytes (biases, norms) are done on the calling thread: a hand-off costs more.
_INLINE_BYTES = 64 * 2**10
# torch intra-op threads for the maths while streaming (restored afterwards). The maths is one memory-bound
# pass per chunk and the workers already keep the cores busy: on a 2-core machine, a second torch thread
# made the whole run ~1.5x slower (its OpenMP barrier waits on a core busy with writing).
_MATH_THREADS = 1


@dataclass(frozen=True)
class Job:
    """One output tensor: its layout, the input tensors it is computed from, and the chunk kernel."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    sources: tuple[TensorInfo, ...]
    kernel: Kernel | None  # None: copy sources[0] unchanged

    @classmethod
    def copy(cls, info: TensorInfo) -> Job:
        """Copy the bytes of ``info`` unchanged."""
        return cls(info.name, info.dtype, info.shape, (info,), None)

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


class _Workers:
    """Run chunk tasks on ``count`` threads, each with its own :class:`Buffers`; at most ``count + 1``
    tasks are queued or running (each holds a chunk of mapped input and, running, an output chunk)."""

    def __init__(self, count: int, elements: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="hf_tbar-worker")
        self._spares: SimpleQueue[Buffers] = SimpleQueue()
        for _ in range(count):
            self._spares.put(Buffers(elements))
        self._own = Buffers(elements)  # for tasks run on the calling thread
        self._pending: deque[Future] = deque()
        self._limit = count + 1

    def run(self, task: Callable[[Buffers], None], inline: bool) -> None:
        """Run ``task`` here (``inline``) or on a worker; raise what an earlier task raised."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._limit):
            self._pending.popleft().result()
        if inline:
            try:
                task(self._own)
            except Exception:
                self.wait()  # an error of an earlier chunk comes first
                raise
        else:
            self._pending.append(self._executor.submit(self._with_buffers, task))

    def _with_buffers(self, task: Callable[[Buffers], None]) -> None:
        buffers = self._spares.get()  # never waits: no more tasks run than there are Buffers
        try:
            task(buffers)
        finally:
            self._spares.put(buffers)

    def wait(self) -> None:
        """Wait for every task; raise what one raised."""
        while self._pending:
            self._pending.popleft().result()

    def cancel(self) -> None:
        """Drop the queued tasks and wait for the running ones, ignoring their errors."""
        for future in self._pending:
            future.cancel()
        for future in self._pending:
            with contextlib.suppress(BaseException):
                future.result()
        self._pending.clear()

    def shutdown(self) -> None:
        self.cancel()
        self._executor.shutdown(wait=True)


def _raise_non_finite(job: Job, chunks: Sequence[torch.Tensor], buffers: Buffers) -> None:
    """Raise the ValueError naming the tensor and the likely cause for a chunk found non-finite (the
    whole chunk is computed again, so that the error counts the bad values of the whole chunk)."""
    out = torch.empty(chunks[0].shape, dtype=DTYPES[job.dtype])
    job.kernel([chunk.reshape(-1) for chunk in chunks], out.view(-1), buffers)
    error = non_finite_error(job.name, job.dtype, [s.file for s in job.sources], chunks, out)
    raise error or RuntimeError(f"tensor {job.name!r}: a result was non-finite, then finite")


def _write_chunk(
    job: Job,
    start: int,
    stop: int,
    chunks: Sequence[torch.Tensor],
    reader: MappedReader,
    writer: SafetensorsWriter,
    buffers: Buffers,
) -> None:
    """Compute rows ``start:stop`` of ``job``'s tensor from the ``chunks`` of its sources and write them
    in place, ``_PIECE_ELEMENTS`` at a time, each piece tested for NaN/Inf and written while still in
    the CPU cache."""
    itemsize = DTYPES[job.dtype].itemsize
    offset = writer.starts[job.name] + start * math.prod(job.shape[1:]) * itemsize
    if job.kernel is None:
        writer.write(offset, chunks[0])
    else:
        sources = [chunk.reshape(-1) for chunk in chunks]
        elements = sources[0].numel()
        for begin in range(0, elements, _PIECE_ELEMENTS):
            end = min(elements, begin + _PIECE_ELEMENTS)
            out = buffers.output(DTYPES[job.dtype], (end - begin,))
            job.kernel([source[begin:end] for source in sources], out, buffers)
            if not all_finite(out):
                _raise_non_finite(job, chunks, buffers)
            writer.write(offset + begin * itemsize, out)
    for source in job.sources:
        reader.done(source, start, stop)


def _run_job(job: Job, reader: MappedReader, writer: SafetensorsWriter, workers: _Workers) -> None:
    """Stream one output tensor: read row chunks of its sources and hand each to a worker."""
    rows = job.shape[0] if job.shape else 1
    row_elements = math.prod(job.shape[1:]) if job.shape else 1
    row_bytes = row_elements * DTYPES[job.dtype].itemsize
    step = max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        chunks = [reader.read(source, start, stop) for source in job.sources]
        task = functools.partial(_write_chunk, job, start, stop, chunks, reader, writer)
        workers.run(task, inline=(stop - start) * row_bytes < _INLINE_BYTES)


def _write_file(
    path: Path,
    jobs: Sequence[Job],
    metadata: dict[str, str],
    reader: MappedReader,
    bar: tqdm,
    workers: _Workers,
) -> None:
    entries = [(job.name, job.dtype, job.shape) for job in jobs]
    writer = SafetensorsWriter(path, entries, metadata)
    try:
        for i in file_order(entries):
            _run_job(jobs[i], reader, writer, workers)
            bar.update(1)
        workers.wait()
    except BaseException:
        workers.cancel()
        writer.abort()
        raise
    writer.close()


def write_files(
    files: Sequence[tuple[Path, Sequence[Job]]], metadata: dict[str, str], desc: str, progress: bool
) -> None:
    """Stream every job into its file, with one progress bar over all tensors.

    Chunks are read here and computed, checked and written by ``_WORKERS`` threads, each running the
    maths on ``_MATH_THREADS`` torch threads (the setting is restored afterwards).
    """
    reader, workers = MappedReader(release_bytes=_RELEASE_BYTES), _Workers(_WORKERS, _PIECE_ELEMENTS)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, _MATH_THREADS))
    try:
        with tqdm(
            total=sum(len(jobs) for _, jobs in files),
            desc=desc,
            unit="tensor",
            disable=None if progress else True,
        ) as bar:
            for path, jobs in files:
                _write_file(path, jobs, metadata, reader, bar, workers)
    finally:
        torch.set_num_threads(threads)
        workers.shutdown()
        reader.close()


def write_shards(
    jobs: Sequence[Job],
    folder: Path,
    max_bytes: int | None,
    metadata: dict[str, str],
    desc: str,
    progress: bool,
) -> list[str]:
    """Write ``jobs`` into ``folder`` as ``model.safetensors`` or shards plus an index; return the file names.

    Shards hold at most ``max_bytes`` (a larger tensor alone), or, with ``None``, the tensors of one file
    of the first source each (the sharding of the input).
    """
    if max_bytes is None:
        plan = plan_like([job.sources[0].file for job in jobs])
    else:
        plan = plan_shards([job.nbytes for job in jobs], max_bytes)
    shards = [[jobs[i] for i in shard] for shard in plan]
    names = shard_names(len(shards))
    write_files([(folder / name, shard) for name, shard in zip(names, shards)], metadata, desc, progress)
    if len(shards) > 1:
        write_index(
            folder,
            {job.name: name for name, shard in zip(names, shards) for job in shard},
            total_parameters=sum(math.prod(job.shape) for job in jobs),
            total_size=sum(job.nbytes for job in jobs),
        )
    return names
