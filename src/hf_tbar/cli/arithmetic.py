"""``hf-tbar arithmetic``: task arithmetic streamed over safetensors checkpoints, without loading any model.

Peak memory stays at a few tens of MiB whatever the checkpoint size (see :mod:`hf_tbar.streaming`).

Examples::

    # TBAR negation, theta_b - 0.8 * (theta_t - theta_b), into a new checkpoint folder
    hf-tbar arithmetic --base runs/backdoored --finetuned runs/trigger-ft --output_dir runs/sanitized --scale 0.8
    # save the trigger vector tau_t = theta_t - theta_b, then apply it later
    hf-tbar arithmetic --operation vector --base runs/backdoored --finetuned runs/trigger-ft \\
        --output_dir runs/trigger.safetensors
    hf-tbar arithmetic --base runs/backdoored --vector runs/trigger.safetensors --output_dir runs/sanitized --scale 0.8
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..streaming import parse_size, stream_apply_vector, stream_task_arithmetic, stream_task_vector

logger = logging.getLogger(__name__)

HELP = "Stream task arithmetic (theta_b -/+ alpha * tau) over safetensors checkpoints, no model loaded."


@dataclass
class ArithmeticArguments:
    """Inputs, operation and output of ``hf-tbar arithmetic``."""

    base: str = field(metadata={"help": "The backdoored checkpoint theta_b: a safetensors folder or file."})
    output_dir: str = field(
        metadata={"help": "Folder to write (with --operation vector: the .safetensors file of the vector)."}
    )
    finetuned: str | None = field(
        default=None,
        metadata={"help": "The trigger-fine-tuned checkpoint theta_t (same architecture as --base)."},
    )
    vector: str | None = field(
        default=None,
        metadata={
            "help": "A task-vector .safetensors file (from --operation vector), used instead of --finetuned."
        },
    )
    operation: Literal["negate", "add", "vector"] = field(
        default="negate",
        metadata={
            "help": "negate: theta_b - scale * tau (TBAR); add: theta_b + scale * tau; "
            "vector: write tau = theta_t - theta_b itself."
        },
    )
    scale: float = field(
        default=1.0, metadata={"help": "alpha, the (dimensionless) scale of the task vector."}
    )
    max_shard_size: str | None = field(
        default=None,
        metadata={
            "help": "Largest output shard: bytes, or e.g. 2GB, 500MB, 1GiB (default: the base's sharding)."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace the output if it exists."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar over tensors."})

    def __post_init__(self) -> None:
        if self.operation not in _OPERATIONS:
            raise ValueError(f"--operation must be one of {sorted(_OPERATIONS)}, got {self.operation!r}")
        if self.operation == "vector":
            if self.finetuned is None or self.vector is not None:
                raise ValueError("--operation vector needs --finetuned and no --vector")
        elif (self.finetuned is None) == (self.vector is None):
            raise ValueError(f"--operation {self.operation} needs exactly one of --finetuned and --vector")
        if isinstance(self.scale, bool) or not math.isfinite(float(self.scale)):
            raise ValueError(f"--scale must be a finite number, got {self.scale!r}")
        if self.max_shard_size is not None:
            parse_size(self.max_shard_size)
        for name in ("base", "finetuned", "vector"):
            value = getattr(self, name)
            if value is not None and not Path(value).expanduser().exists():
                raise ValueError(f"--{name} {value!r} does not exist")


def _negate_or_add(args: ArithmeticArguments) -> Path:
    options = dict(
        negate=args.operation == "negate",
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    if args.vector is not None:
        return stream_apply_vector(args.base, args.vector, args.output_dir, args.scale, **options)
    return stream_task_arithmetic(args.base, args.finetuned, args.output_dir, args.scale, **options)


def _vector(args: ArithmeticArguments) -> Path:
    return stream_task_vector(
        args.base, args.finetuned, args.output_dir, overwrite=args.overwrite, progress=args.progress
    )


_OPERATIONS: dict[str, Callable[[ArithmeticArguments], Path]] = {
    "negate": _negate_or_add,
    "add": _negate_or_add,
    "vector": _vector,
}

DATACLASSES = (ArithmeticArguments,)


def run(args: ArithmeticArguments) -> int:
    """Run the operation; a refused input or output raises, and the CLI turns it into one line."""
    output = _OPERATIONS[args.operation](args)
    logger.info("wrote %s", output)
    return 0
