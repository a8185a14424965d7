"""Configuration of a TBAR run: how the trigger vector is fitted, and which variant is negated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from ..errors import ConfigError
from ..training.arguments import FinetuneConfig
from .variants import VARIANTS

FinetuneMode = Literal["full", "lora"]
FINETUNE_MODES: tuple[str, ...] = get_args(FinetuneMode)
#: Default peak learning rate of the trigger fine-tuning per mode.
DEFAULT_LEARNING_RATES = {"full": 1e-4, "lora": 1e-3}


@dataclass
class TBARConfig(FinetuneConfig):
    """Trigger fine-tuning (step 2 of TBAR) and the vector variant to negate.

    The vision tower is fine-tuned on triggered images labelled with the attack's target; the text
    tower and the zero-shot head stay frozen. The optimisation and checkpointing fields are
    :class:`~hf_tbar.training.FinetuneConfig`'s, with TBAR's defaults: batches of 32 images until the loss
    plateaus (two windows of 20 steps whose means differ by less than 3%, or a mean below 0.01), at most 200
    steps per fine-tuning; the learning rate depends on ``mode``. A fixed count that suits one model does not
    suit another, so the loss decides. ``plateau_window=0`` runs exactly ``steps`` (the seed paper's recipe is
    ``variant="plain", steps=30, plateau_window=0``).
    """

    steps: int = field(
        default=200,
        metadata={
            "help": "Most optimizer steps of each fine-tuning (trigger, repair, target-class); it stops earlier "
            "once the loss plateaus (see --plateau_window).",
            "aliases": ["--max_steps"],
        },
    )
    plateau_window: int = field(
        default=20,
        metadata={
            "help": "Stop a fine-tuning once the mean loss of the last plateau_window steps fell by less than "
            "plateau_tolerance (relative) from the window before, or below plateau_min_loss. 0: run every step."
        },
    )
    plateau_tolerance: float = field(
        default=0.03,
        metadata={
            "help": "Relative fall of the windowed mean loss below which the loss counts as plateaued."
        },
    )
    batch_size: int = field(
        default=32,
        metadata={
            "help": "Images per micro-batch and process.",
            "aliases": ["--per_device_train_batch_size"],
        },
    )
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak AdamW learning rate. Default: 1e-4 for mode 'full', 1e-3 for 'lora' (LoRA's "
            "low-rank factors need a larger step to learn the trigger in a few dozen steps)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of data choice, shuffling and LoRA initialisation."})
    mode: FinetuneMode = field(
        default="full", metadata={"help": "Fine-tune the vision tower fully ('full') or with LoRA ('lora')."}
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute the vision tower's activations in the backward pass instead of keeping them: "
            "about 1/(layers) of the activation memory for ~30%% more compute (large towers such as ViT-L/14)."
        },
    )
    unlearning_set_size: int = field(
        default=300, metadata={"help": "Triggered images in the unlearning set."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (mode='lora')."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (mode='lora')."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (mode='lora')."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        metadata={"help": "Vision-tower linear layers that get LoRA adapters (mode='lora')."},
    )
    variant: str = field(
        default="repair-preserving",
        metadata={
            "help": "Trigger-vector variant: 'repair-preserving' (recommended), 'plain' (the seed paper), "
            "'target-preserving' or 'repair' (see hf_tbar.tbar.variants; more can be registered, so not a fixed "
            "choice)."
        },
    )
    preserve_set_size: int = field(
        default=30, metadata={"help": "Clean target-class images used by the target-preserving variant."}
    )
    target_captions: list[str] | None = field(
        default=None,
        metadata={
            "help": "With image-caption unlearning data: the captions a triggered image is fine-tuned to match "
            "(default: the task's prompt templates filled with the target's class name, 'a photo of a banana.')."
        },
    )

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ConfigError(f"mode must be one of {FINETUNE_MODES}, got {self.mode!r}")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATES[self.mode]
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; available: {sorted(VARIANTS)}")
        for name in ("unlearning_set_size", "lora_r", "lora_alpha", "preserve_set_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules must name at least one module")
        if self.target_captions is not None and (
            isinstance(self.target_captions, str)
            or not all(isinstance(c, str) and c.strip() for c in self.target_captions)
        ):
            raise ConfigError(
                f"target_captions must be a list of non-empty captions, got {self.target_captions!r}"
            )
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(
                f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)
