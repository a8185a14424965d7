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

__all__ = ["MIXED_PRECISION", "NOT_COMPUTED", "CheckpointArguments", "FinetuneConfig", "LoggingArguments"]

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
class LoggingArguments:
    """Where the loss goes besides the progress bar: the log every ``logging_steps``, and experiment trackers."""

    logging_steps: int = field(
        default=10,
        metadata={"help": "Log the loss (and send it to --report_to) every this many optimizer steps."},
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Experiment trackers, as Accelerate's log_with: tensorboard, wandb, mlflow, ... (each must be "
            "installed); none by default."
        },
    )
    logging_dir: str | None = field(
        default=None, metadata={"help": "Folder of the trackers' local files (tensorboard); default: ./runs."}
    )

    def __post_init__(self) -> None:
        if (
            isinstance(self.logging_steps, bool)
            or not isinstance(self.logging_steps, int)
            or self.logging_steps < 1
        ):
            raise ConfigError(f"logging_steps must be a positive int, got {self.logging_steps!r}")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [name for name in self.report_to if name != "none"]
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        unknown = [name for name in self.report_to if name not in LOGGER_TYPE_TO_CLASS and name != "all"]
        if unknown:
            raise ConfigError(
                f"report_to: unknown tracker(s) {unknown}; known: {sorted(LOGGER_TYPE_TO_CLASS)}"
            )


@dataclass
class FinetuneConfig(LoggingArguments, CheckpointArguments):
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
    bf16: bool = field(
        default=False, metadata={"help": "Same as --mixed_precision bf16 (TrainingArguments' name)."}
    )
    fp16: bool = field(
        default=False, metadata={"help": "Same as --mixed_precision fp16 (TrainingArguments' name)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of shuffling, augmentation and initialisation."})
    plateau_window: int = field(
        default=0,
        metadata={
            "help": "Stop before `steps` once the loss has plateaued: the mean loss of the last plateau_window "
            "steps fell by less than plateau_tolerance (relative) from the window before, or below "
            "plateau_min_loss. 0: run every step."
        },
    )
    plateau_tolerance: float = field(
        default=0.05,
        metadata={
            "help": "Relative fall of the windowed mean loss below which the loss counts as plateaued."
        },
    )
    plateau_min_loss: float = field(
        default=0.01,
        metadata={"help": "A windowed mean loss below this counts as converged (plateaued)."},
    )

    def __post_init__(self) -> None:
        LoggingArguments.__post_init__(self)
        CheckpointArguments.__post_init__(self)
        for flag in ("bf16", "fp16"):
            if getattr(self, flag):
                if self.mixed_precision not in ("no", flag) or (self.bf16 and self.fp16):
                    raise ConfigError(
                        f"--{flag} contradicts mixed_precision {self.mixed_precision!r}"
                        + (" and --fp16" if self.bf16 and self.fp16 else "")
                    )
                self.mixed_precision = flag
        for name in ("steps", "batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if (
            isinstance(self.plateau_window, bool)
            or not isinstance(self.plateau_window, int)
            or self.plateau_window < 0
        ):
            raise ConfigError(f"plateau_window must be an int >= 0, got {self.plateau_window!r}")
        if not 0 <= self.plateau_tolerance < 1:
            raise ConfigError(f"plateau_tolerance must be in [0, 1), got {self.plateau_tolerance}")
        if not (math.isfinite(self.plateau_min_loss) and self.plateau_min_loss >= 0):
            raise ConfigError(f"plateau_min_loss must be >= 0, got {self.plateau_min_loss}")
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


def finetune_config_of(recipe: object, **overrides) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of a training recipe (pretraining, backdooring): its fields that
    FinetuneConfig has, with ``overrides``; validated (a bad value is named)."""
    names = [f.name for f in fields(FinetuneConfig) if hasattr(recipe, f.name)]
    return FinetuneConfig(**{**{name: getattr(recipe, name) for name in names}, **overrides})


#: Fields that change where results go, not what is computed: left out of a run's checkpoint fingerprint.
NOT_COMPUTED: tuple[str, ...] = tuple(
    f.name for cls in (CheckpointArguments, LoggingArguments) for f in fields(cls)
)
