"""The tensor maths of streamed task arithmetic, one row chunk at a time, and the finiteness check."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .checkpoint import view_bytes


class Buffers:
    """Memory one thread computes chunks into, allocated once and reused from chunk to chunk.

    ``output(dtype, shape)`` is where a chunk to write is computed, valid until the next call.
    ``float32(slot, elements)`` is a kernel's temporary, valid until the next call with the same slot.
    A buffer grows to fit a larger chunk (a tensor row over ``elements``).
    """

    def __init__(self, elements: int) -> None:
        self._bytes = 4 * elements
        self._buffers: dict[object, np.ndarray] = {}

    def _take(self, key: object, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
        size = math.prod(shape) * dtype.itemsize
        buffer = self._buffers.get(key)
        if buffer is None or buffer.nbytes < size:
            buffer = self._buffers[key] = np.empty(max(size, self._bytes), np.uint8)
        return view_bytes(buffer, dtype, shape)

    def output(self, dtype: torch.dtype, shape: Sequence[int]) -> torch.Tensor:
        return self._take("output", dtype, shape)

    def float32(self, slot: int, elements: int) -> torch.Tensor:
        return self._take(slot, torch.float32, (elements,))


# A chunk kernel computes ``out`` (flat, in the output dtype) from the flat chunks of the source tensors
# (as many elements), with float32 temporaries from ``Buffers``. It works element by element, so a chunk
# may be computed in pieces.
Kernel = Callable[[Sequence[torch.Tensor], torch.Tensor, Buffers], None]


def _float32(chunk: torch.Tensor, buffers: Buffers, slot: int) -> torch.Tensor:
    """``chunk`` in float32: itself when it already is (no copy), else converted into a temporary."""
    if chunk.dtype == torch.float32:
        return chunk
    return buffers.float32(slot, chunk.numel()).copy_(chunk)


def _into(out: torch.Tensor, buffers: Buffers, result: Callable[[torch.Tensor], object]) -> None:
    """Run ``result(out=...)``, a float32 computation: straight into ``out`` when it is float32, else
    into a temporary then cast (rounded to nearest) into ``out``."""
    if out.dtype == torch.float32:
        result(out)
    else:
        temporary = buffers.float32(2, out.numel())
        result(temporary)
        out.copy_(temporary)


def arithmetic_kernel(scale: float, negate: bool, dtype: str) -> Kernel:
    """``base -/+ scale * (finetuned - base)`` in float32, as one fused ``lerp``, cast to ``dtype``."""
    weight = -scale if negate else scale

    def kernel(chunks: Sequence[torch.Tensor], out: torch.Tensor, buffers: Buffers) -> None:
        base, finetuned = (_float32(chunk, buffers, slot) for slot, chunk in enumerate(chunks))
        _into(out, buffers, lambda into: torch.lerp(base, finetuned, weight, out=into))

    return kernel


def apply_kernel(scale: float, negate: bool, dtype: str) -> Kernel:
    """``base -/+ scale * vector`` in float32 (one fused ``add``), cast to ``dtype``."""
    alpha = -scale if negate else scale

    def kernel(chunks: Sequence[torch.Tensor], out: torch.Tensor, buffers: Buffers) -> None:
        base, vector = (_float32(chunk, buffers, slot) for slot, chunk in enumerate(chunks))
        _into(out, buffers, lambda into: torch.add(base, vector, alpha=alpha, out=into))

    return kernel


def difference_kernel(chunks: Sequence[torch.Tensor], out: torch.Tensor, buffers: Buffers) -> None:
    """``finetuned - base`` in float32."""
    base, finetuned = (_float32(chunk, buffers, slot) for slot, chunk in enumerate(chunks))
    torch.sub(finetuned, base, out=out)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a float tensor holds no NaN/Inf. A sum (one fast pass) is non-finite if any value is (or on
    overflow), and only then is the exact, slower element-wise test run."""
    return math.isfinite(tensor.sum(dtype=torch.float32).item()) or bool(torch.isfinite(tensor).all())


def non_finite_error(
    name: str, dtype: str, sources: Sequence[object], chunks: Sequence[torch.Tensor], out: torch.Tensor
) -> ValueError | None:
    """``None`` when ``out`` is finite, else the error naming tensor ``name`` and the likely cause.

    ``sources`` are the files the ``chunks`` came from (named when an input already holds NaN/Inf).
    """
    if all_finite(out):
        return None
    bad = int((~torch.isfinite(out)).sum())
    causes = [
        f"{source} already holds non-finite values"
        for source, chunk in zip(sources, chunks)
        if chunk.is_floating_point() and not bool(torch.isfinite(chunk).all())
    ]
    cause = "; ".join(causes) or f"overflow in the result or when casting it to {dtype}"
    return ValueError(f"tensor {name!r}: the result has {bad} non-finite (NaN/Inf) values ({cause})")
