"""Checks before anything is written: two checkpoints match, the scale is finite, the output is safe."""

from __future__ import annotations

import logging
import math
import numbers
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputExistsError
from ..io import refuse_overlap
from .checkpoint import Checkpoint, PathLike

logger = logging.getLogger(__name__)

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


def check_scale(scale: float) -> float:
    """``scale`` as a float. Raises ValueError unless it is a finite real number (bools refused)."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
        raise InputError(f"scale must be a finite number, got {scale!r}")
    return float(scale)


def check_same_layout(base: Checkpoint, other: Checkpoint, *, floats_only: bool = False) -> None:
    """Raise naming the first tensor present in one checkpoint only, or with another shape or dtype.

    With ``floats_only`` (``other`` is a task vector), ``other`` must hold exactly the floating-point
    tensors of ``base``, in any float dtype.
    """
    wanted = {n: i for n, i in base.tensors.items() if i.is_float or not floats_only}
    missing = [name for name in wanted if name not in other.tensors]
    if missing:
        raise InputError(
            f"tensor {missing[0]!r} is in {base.path} but not in {other.path}"
            + (f" ({len(missing)} tensors missing)" if len(missing) > 1 else "")
        )
    extra = [name for name in other.tensors if name not in wanted]
    if extra:
        raise InputError(
            f"tensor {extra[0]!r} is in {other.path} but not in {base.path}"
            + (f" ({len(extra)} extra tensors)" if len(extra) > 1 else "")
        )
    for name, info in wanted.items():
        theirs = other.tensors[name]
        if info.shape != theirs.shape:
            raise InputError(
                f"tensor {name!r} has shape {list(info.shape)} in {base.path} but {list(theirs.shape)} in {other.path}"
            )
        if floats_only:
            if not theirs.is_float:
                raise InputError(
                    f"tensor {name!r} of {other.path} has dtype {theirs.dtype}, not a float dtype"
                )
        elif info.dtype != theirs.dtype:
            raise InputError(
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


def check_same_architecture(base: Checkpoint, other: Checkpoint) -> None:
    """Raise naming the first shape-defining config.json entry that differs (a warning if one has none)."""
    if base.config is None or other.config is None:
        if base.folder is not None and other.folder is not None:
            logger.warning(
                "config.json missing in %s or %s: architectures not compared", base.path, other.path
            )
        return
    ours, theirs = _architecture(base.config), _architecture(other.config)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise InputError(
                f"{base.path} and {other.path} have different architectures: config.json {key} is "
                f"{ours.get(key)!r} vs {theirs.get(key)!r}"
            )


def check_vector_model_type(base: Checkpoint, vector: Checkpoint) -> None:
    """Raise when a task vector's ``model_type`` metadata contradicts the base's config.json."""
    vector_type = vector.metadata.get("model_type")
    base_type = (base.config or {}).get("model_type")
    if vector_type and base_type and vector_type != base_type:
        raise InputError(
            f"{vector.path} is a task vector of a {vector_type!r} model, {base.path} is {base_type!r}"
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


def check_output(output: PathLike, inputs: Sequence[Checkpoint], overwrite: bool) -> Path:
    """Resolve ``output`` and refuse it when it overlaps an input, exists without overwrite, or is read-only.

    Raises:
        ValueError: the output is, is inside, or contains an input.
        FileExistsError: it exists and ``overwrite`` is False.
        PermissionError: its location is not writable.
    """
    out = refuse_overlap(output, [checkpoint.path for checkpoint in inputs])
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output {out} already exists (pass overwrite=True to replace it)")
    _writable_ancestor(out)
    return out
