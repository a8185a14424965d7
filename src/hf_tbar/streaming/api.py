"""The public functions: TBAR negation, task vectors and their application, streamed over safetensors."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..io import atomic_output_dir, atomic_output_file
from .checkpoint import PICKLE_SUFFIXES, Checkpoint, PathLike, read_checkpoint
from .checks import (
    check_output,
    check_same_architecture,
    check_same_layout,
    check_scale,
    check_vector_model_type,
)
from .engine import Job, write_files, write_shards
from .kernels import Kernel, apply_kernel, arithmetic_kernel, difference_kernel
from .shards import parse_size

logger = logging.getLogger(__name__)

# Weights of other frameworks: never copied into an output (they would hold the base's stale weights).
_OTHER_WEIGHT_SUFFIXES = (".h5", ".msgpack", ".onnx", ".gguf", ".safetensors")
# Files of the base folder not carried over: its model card describes the base model, not the result.
_NOT_COPIED = frozenset({"README.md"})


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


def _check_finetuned(base: Checkpoint, finetuned: Checkpoint) -> None:
    check_same_layout(base, finetuned)
    check_same_architecture(base, finetuned)


def _check_vector(base: Checkpoint, vector: Checkpoint) -> None:
    check_same_layout(base, vector, floats_only=True)
    check_vector_model_type(base, vector)


def _edit_checkpoint(
    base_dir: PathLike,
    other_path: PathLike,
    output_dir: PathLike,
    scale: float,
    kernel: Callable[[float, bool, str], Kernel],
    check: Callable[[Checkpoint, Checkpoint], None],
    *,
    negate: bool,
    max_shard_size: int | str | None,
    overwrite: bool,
    progress: bool,
    desc: str,
) -> Path:
    """Write every tensor of the base into a new checkpoint folder, atomically.

    Floating-point tensors are ``kernel(scale, negate, dtype)`` of (base chunk, ``other_path`` chunk);
    integer and bool tensors, and every tensor when ``scale`` is 0, are the base's bytes. ``check``
    vets the two checkpoints first. The base folder's non-weight files are copied.
    """
    scale = check_scale(scale)
    max_bytes = None if max_shard_size is None else parse_size(max_shard_size)
    base, other = read_checkpoint(base_dir), read_checkpoint(other_path)
    check(base, other)
    out = check_output(output_dir, [base, other], overwrite)
    jobs = [
        Job(name, info.dtype, info.shape, (info, other.tensors[name]), kernel(scale, negate, info.dtype))
        if info.is_float and scale
        else Job.copy(info)
        for name, info in base.tensors.items()
    ]
    metadata = {**{k: str(v) for k, v in base.metadata.items()}, "format": "pt"}
    logger.info("%s: base %s %g x %s -> %s", desc, "-" if negate else "+", scale, other.path, out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        names = write_shards(jobs, tmp, max_bytes, metadata, desc, progress)
        _copy_extra_files(base.folder, tmp)
    logger.info("wrote %d tensors in %d file(s) to %s", len(jobs), len(names), out)
    return out


def stream_task_arithmetic(
    base_dir: PathLike,
    finetuned_dir: PathLike,
    output_dir: PathLike,
    scale: float,
    *,
    negate: bool = True,
    max_shard_size: int | str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``base - scale * (finetuned - base)`` (TBAR's negation) as a new checkpoint, tensor by tensor.

    Tensors are read in row chunks through memory maps, combined in float32 and cast back to each
    tensor's dtype; integer and bool tensors (``position_ids``) are copied from the base unchanged. Output
    shards are written as they are computed (``model.safetensors``, or ``model-0000i-of-0000n.safetensors``
    plus ``model.safetensors.index.json`` when more than one), so peak memory is a few chunks of 8 MiB
    of mapped input plus 1 MiB output pieces per thread, whatever the model or shard size (measured:
    62-76 MiB above the interpreter for ViT-B/32 and ViT-L/14, ``benchmarks/arithmetic.py``). The
    base folder's other files (config, tokenizer, processor) are copied; its README.md model card and any
    other-format weights are not.

    Args:
        base_dir: The backdoored checkpoint ``theta_b``: a folder of safetensors weights (sharded or not)
            or a single ``.safetensors`` file.
        finetuned_dir: The trigger-fine-tuned checkpoint ``theta_t``, same layout as ``base_dir``.
        output_dir: The folder to write. Written atomically: nothing is left there on error or Ctrl-C.
        scale: ``alpha``, a finite float (dimensionless); 0 reproduces the base bit for bit.
        negate: ``True`` subtracts the task vector (TBAR), ``False`` adds it.
        max_shard_size: Largest output shard, in bytes or as ``"2GB"`` / ``"500MB"`` / ``"1GiB"``; ``None``
            keeps the base's sharding (one output shard per input file, with an index when several).
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
    return _edit_checkpoint(
        base_dir,
        finetuned_dir,
        output_dir,
        scale,
        arithmetic_kernel,
        _check_finetuned,
        negate=negate,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        progress=progress,
        desc="task arithmetic",
    )


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
        raise InputError(f"output_path {out_file} must end with .safetensors")
    base, finetuned = read_checkpoint(base_dir), read_checkpoint(finetuned_dir)
    _check_finetuned(base, finetuned)
    check_output(out_file, [base, finetuned], overwrite)
    if out_file.is_dir():
        raise IsADirectoryError(f"output_path {out_file} is a folder")
    jobs = [
        Job(name, "F32", info.shape, (info, finetuned.tensors[name]), difference_kernel)
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
    with atomic_output_file(out_file) as tmp:
        write_files([(tmp, jobs)], metadata, "task vector", progress)
    logger.info("wrote the task vector of %d tensors to %s", len(jobs), out_file)
    return out_file


def stream_apply_vector(
    base_dir: PathLike,
    vector_path: PathLike,
    output_dir: PathLike,
    scale: float,
    *,
    negate: bool = True,
    max_shard_size: int | str | None = None,
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
        max_shard_size: Largest output shard, in bytes or as ``"2GB"``; ``None`` keeps the base's sharding.
        overwrite: Replace ``output_dir`` if it exists.
        progress: Show a progress bar over tensors.

    Returns:
        The output folder.
    """
    return _edit_checkpoint(
        base_dir,
        vector_path,
        output_dir,
        scale,
        apply_kernel,
        _check_vector,
        negate=negate,
        max_shard_size=max_shard_size,
        overwrite=overwrite,
        progress=progress,
        desc="apply vector",
    )
