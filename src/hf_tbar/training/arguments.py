"""The training arguments every fine-tuning shares: checkpointing, then optimisation on top of it.

:class:`CheckpointArguments` is the base; :class:`FinetuneConfig` adds the optimisation settings; the TBAR
and defense configs inherit from it and override only defaults (as TRL's ``SFTConfig`` does with
``TrainingArguments``). Fields whose name differs from ``transformers.TrainingArguments`` also answer to that
name on the command line (``--max_steps``, ``--per_device_train_batch_size``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

from ..errors import ConfigError

__all__ = ["MIXED_PRECISION", "CheckpointArguments", "FinetuneConfig"]

MixedPrecision = Literal["no", "fp16", "bf16"]
MIXED_PRECISION: tuple[str, ...] = get_args(MixedPrecision)


@dataclass
class CheckpointArguments:
    """Accelerate checkpoints of a training run: where, how often, how many, and whether to resume."""

    checkpoint_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for Accelerate training checkpoints (accelerator.save_state), one sub-folder per "
            "fine-tuning run; None: no checkpoints."
        },
    )
    checkpoint_steps: int = field(
        default=50,
        metadata={
            "help": "With checkpoint_dir: save every this many optimizer steps, and after the last one.",
            "aliases": ["--save_steps"],
        },
    )
    keep_checkpoints: int = field(
        default=1,
        metadata={
            "help": "With checkpoint_dir: how many of a run's newest checkpoints to keep.",
            "aliases": ["--save_total_limit"],
        },
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Resume an interrupted fine-tuning from its newest checkpoint in checkpoint_dir (same "
            "settings, data, starting weights and number of processes); without it such a checkpoint is an "
            "error."
        },
    )

    def __post_init__(self) -> None:
        for name in ("checkpoint_steps", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.checkpoint_dir is not None:
            if (
                not isinstance(self.checkpoint_dir, (str, os.PathLike))
                or not str(self.checkpoint_dir).strip()
            ):
                raise ConfigError(f"checkpoint_dir must be a folder path, got {self.checkpoint_dir!r}")
            self.checkpoint_dir = str(self.checkpoint_dir)
        if not isinstance(self.resume, bool):
            raise ConfigError(f"resume must be True or False, got {self.resume!r}")
        if self.resume and self.checkpoint_dir is None:
            raise ConfigError("resume=True needs a checkpoint_dir to resume from")


@dataclass
class FinetuneConfig(CheckpointArguments):
    """Optimisation settings of a fine-tuning run (AdamW, linear warm-up then cosine decay)."""

    steps: int = field(default=50, metadata={"help": "Optimizer steps.", "aliases": ["--max_steps"]})
    batch_size: int = field(
        default=64,
        metadata={
            "help": "Images per micro-batch and process.",
            "aliases": ["--per_device_train_batch_size"],
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: MixedPrecision = field(
        default="no", metadata={"help": "Accelerate mixed precision (fp16 and bf16 need a GPU to be faster)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of shuffling, augmentation and initialisation."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.learning_rate is not None and not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise ConfigError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            raise ConfigError(f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )

    def finetune_config(self, steps: int | None = None) -> FinetuneConfig:
        """These optimisation and checkpointing settings as a plain :class:`FinetuneConfig` (what the loop and
        a run's checkpoint fingerprint read), with ``steps`` replaced when given."""
        names = [f.name for f in fields(FinetuneConfig)]
        return FinetuneConfig(
            **{**{name: getattr(self, name) for name in names}, **({"steps": steps} if steps else {})}
        )
