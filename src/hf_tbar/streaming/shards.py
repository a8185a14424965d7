"""Output shards: the size limit, how tensors are grouped into files, their names, and the index file."""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .checkpoint import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME


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
            raise InputError(f"max_shard_size {size!r} is not a size such as 2GB, 500MB or 1GiB")
        number, unit = float(match.group(1)), (match.group(2) or "B").upper()
        power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
        value = int(number * (1024 if "I" in unit else 1000) ** power)
    else:
        raise InputError(f"max_shard_size must be an int or a string such as '2GB', got {size!r}")
    if value <= 0:
        raise InputError(f"max_shard_size must be positive, got {size!r}")
    return value


def plan_shards(sizes: Sequence[int], max_bytes: int) -> list[list[int]]:
    """Group consecutive items of byte ``sizes`` into shards of at most ``max_bytes`` (as index lists).

    An item larger than ``max_bytes`` gets a shard of its own.
    """
    shards: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if shards[-1] and total + size > max_bytes:
            shards.append([])
            total = 0
        shards[-1].append(i)
        total += size
    return shards


def plan_like(files: Sequence[Path]) -> list[list[int]]:
    """Group item indexes by the file each item comes from (``files[i]``), files in name order: the
    output keeps the sharding of the input (``model-0000i-of-0000n`` shard i holds what input shard i did).
    """
    groups: dict[Path, list[int]] = {}
    for i, file in enumerate(files):
        groups.setdefault(file, []).append(i)
    return [groups[file] for file in sorted(groups)]


def shard_names(count: int) -> list[str]:
    """``model.safetensors`` for one shard, else transformers' ``model-0000i-of-0000n.safetensors``."""
    if count == 1:
        return [SAFE_WEIGHTS_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_index(folder: Path, weight_map: dict[str, str], total_parameters: int, total_size: int) -> None:
    """Write ``model.safetensors.index.json`` (tensor name -> shard file, sorted by name)."""
    index = {
        "metadata": {"total_parameters": total_parameters, "total_size": total_size},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
