"""One small Accelerate training loop shared by pretraining, backdooring and trigger fine-tuning."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class FinetuneConfig:
    """Optimisation settings of a fine-tuning run (AdamW, linear warm-up then cosine decay)."""

    steps: int = field(default=50, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=64, metadata={"help": "Images per micro-batch and process."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str = field(
        default="no", metadata={"help": "Accelerate mixed precision: no, fp16 or bf16."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of shuffling, augmentation and initialisation."})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            raise ValueError(f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )


def _cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def _schedule(config: FinetuneConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def run_training(
    module: nn.Module,
    parameters: list[nn.Parameter],
    dataset: Dataset,
    compute_loss: Callable[[nn.Module, tuple], torch.Tensor],
    config: FinetuneConfig,
    desc: str = "training",
    accelerator: Accelerator | None = None,
) -> list[float]:
    """Train ``parameters`` of ``module`` for ``config.steps`` optimizer steps; returns the loss per step.

    The module is trained in place. Under ``accelerate launch`` / ``torchrun`` each process sees its
    shard of every global batch and gradients are averaged, so the global batch is
    ``batch_size x num_processes x gradient_accumulation_steps``.

    Args:
        module: What the loss is computed through (wrapped by ``accelerator.prepare``).
        parameters: The trainable parameters; everything else should have ``requires_grad=False``.
        dataset: Map-style dataset of tensors (e.g. a ``TensorDataset``).
        compute_loss: ``(prepared_module, batch) -> scalar loss``.
        config: Optimisation settings.
        desc: Progress-bar label.
    """
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty dataset")
    if not parameters:
        raise ValueError("no trainable parameters were given")
    accelerator = accelerator or Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps, mixed_precision=config.mixed_precision
    )
    set_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=min(config.batch_size, len(dataset)),
        shuffle=True,
        drop_last=len(dataset) >= config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    prepared, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
    prepared.train()
    batches = _cycle(loader)
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc=desc, disable=not accelerator.is_local_main_process, leave=False)
    for _ in bar:
        step_loss = 0.0
        for _ in range(config.gradient_accumulation_steps):
            with accelerator.accumulate(prepared):
                loss = compute_loss(prepared, next(batches))
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach().float().item() / config.gradient_accumulation_steps
        losses.append(step_loss)
        bar.set_postfix(loss=f"{step_loss:.4f}")
    prepared.eval()
    accelerator.wait_for_everyone()
    logger.info("%s: %d steps, final loss %.4f", desc, config.steps, losses[-1])
    return losses
