"""Image files that triggers are made of: reading, hashing, decoding (cached) and resizing.

A file trigger records the file's path and the sha256 of its bytes; the decoded image is cached per
``(path, sha256)``, so a frozen trigger decodes its file once however often it is applied, and a file
that changed after the trigger was recorded is refused instead of silently stamping another picture.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

__all__ = ["file_sha256", "load_rgba", "resized_rgba", "write_example_png"]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read the trigger image file {path!r}: {err.strerror or err}") from err


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the bytes of ``path``. Raises :class:`InputError` naming the path if unreadable."""
    return hashlib.sha256(_read(os.fspath(path))).hexdigest()


@functools.lru_cache(maxsize=32)
def load_rgba(path: str, sha256: str) -> torch.Tensor:
    """Decode an image file (PNG, JPEG, anything Pillow reads) to RGBA floats.

    Args:
        path: The file.
        sha256: Hex sha256 its bytes must have (the cache key together with ``path``).

    Returns:
        A read-only-by-convention float32 tensor ``(4, h, w)`` in ``[0, 1]``: RGB, then the alpha
        channel (all ones for images without transparency). Do not modify it: it is shared.

    Raises:
        InputError: the file is missing or unreadable, is not an image, or its sha256 differs.
    """
    data = _read(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise InputError(
            f"the trigger image file {path!r} changed: its sha256 is {actual}, the trigger records {sha256}"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot decode the trigger image file {path!r}: {err}") from err
    return torch.from_numpy(rgba).permute(2, 0, 1).contiguous()


@functools.lru_cache(maxsize=64)
def resized_rgba(path: str, sha256: str, height: int, width: int) -> torch.Tensor:
    """:func:`load_rgba` resized to ``(4, height, width)`` (bilinear, antialiased when shrinking); shared."""
    rgba = load_rgba(path, sha256)
    if tuple(rgba.shape[1:]) == (height, width):
        return rgba
    resized = F.interpolate(
        rgba[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].clamp(0.0, 1.0)


def write_example_png(path: str | os.PathLike, size: int = 4, transparent: bool = True) -> Path:
    """Write a small deterministic RGBA test pattern (red/blue checker, one transparent corner pixel)."""
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rows, cols = np.indices((size, size))
    checker = (rows + cols) % 2 == 0
    rgba[checker] = (255, 32, 32, 255)
    rgba[~checker] = (32, 32, 255, 255)
    if transparent:
        rgba[0, 0, 3] = 0
    path = Path(path)
    Image.fromarray(rgba).save(path)
    return path
