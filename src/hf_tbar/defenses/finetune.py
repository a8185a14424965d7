"""Clean fine-tuning: the simplest baseline, cross-entropy of the zero-shot head on the defender's clean images."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import TensorDataset
from transformers import CLIPModel

from ..training.backdoor import classification_loss, vision_parameters
from ..training.loop import FinetuneConfig, run_training
from .base import DefenseConfig, DefenseData, DefenseResult, register_defense, zero_shot_classifier


@dataclass
class CleanFinetuneConfig(FinetuneConfig, DefenseConfig):
    """Fine-tuning of the vision tower on clean images; the defaults match TBAR's budget (30 steps of 32)."""

    steps: int = field(default=30, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=32, metadata={"help": "Images per micro-batch and process."})


@register_defense("clean-finetune", CleanFinetuneConfig)
def clean_finetune(model: CLIPModel, data: DefenseData, config: CleanFinetuneConfig) -> DefenseResult:
    """Clean fine-tuning: cross-entropy on the clean images with their true labels (vision tower only)."""
    params = vision_parameters(model)
    losses = run_training(
        zero_shot_classifier(model, data),
        params,
        TensorDataset(data.clean_pixels, data.clean_labels),
        classification_loss,
        config,
        desc="clean fine-tuning",
    )
    return DefenseResult(model=model, clean_images_used=data.num_clean, finetune_steps=len(losses))
