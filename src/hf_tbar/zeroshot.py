"""Zero-shot classification: class names x prompt templates -> a linear head over image features.

Works for every registered model family (CLIP, SigLIP): encoders, prompt padding and logits come from the
family of the model at hand (:func:`hf_tbar.models.family_of`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data.embedded import TaskSpec
from .data.pixels import validate_pixels
from .models import family_of, unwrap_model

#: Kept for code written before model families: the registered model inside a PEFT/Accelerate wrapper.
unwrap_clip = unwrap_model


def encode_images(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings ``(B, D)`` of *normalised* pixel values ``(B, 3, H, W)``."""
    return family_of(model).encode_images(model, pixel_values)


def encode_texts(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L2-normalised text embeddings ``(N, D)`` of token ids ``(N, L)``."""
    return family_of(model).encode_texts(model, input_ids, attention_mask)


def class_embeddings(model: nn.Module, tokenizer, task: TaskSpec) -> torch.Tensor:
    """Differentiable zero-shot head ``(C, D)``: per class, the mean of its normalised template
    embeddings, renormalised (CLIP's prompt ensembling)."""
    clip = unwrap_model(model)
    family = family_of(clip)
    device = next(clip.parameters()).device
    tokens = family.tokenize(tokenizer, task.prompts()).to(device)
    text = family.encode_texts(clip, tokens["input_ids"], tokens.get("attention_mask"))
    text = text.view(task.num_classes, len(task.templates), -1).mean(dim=1)
    return F.normalize(text, dim=-1)


@torch.no_grad()
def build_zero_shot_head(model: nn.Module, tokenizer, task: TaskSpec) -> torch.Tensor:
    """The zero-shot head ``(C, D)`` of a frozen text tower (computed once, reused for every scale)."""
    clip = unwrap_model(model)
    was_training = clip.training
    clip.eval()
    head = class_embeddings(clip, tokenizer, task)
    clip.train(was_training)
    return head.detach()


class ZeroShotClassifier(nn.Module):
    """Image classifier ``[0, 1]`` pixels -> logits over the task's classes, through the vision tower.

    The head (text side) is a fixed buffer; only the wrapped model's vision parameters receive
    gradients when trained. Pixels are normalised inside, so triggers can act on raw pixels.

    Args:
        model: A model of a registered family (``CLIPModel``, ``SiglipModel``), possibly wrapped by PEFT.
        head: Zero-shot head ``(C, D)`` from :func:`build_zero_shot_head`.
        image_mean: Per-channel mean of the image processor.
        image_std: Per-channel std of the image processor.
    """

    def __init__(self, model: nn.Module, head: torch.Tensor, image_mean, image_std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("head", head.detach().clone(), persistent=False)
        self.register_buffer(
            "mean", torch.as_tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.as_tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    @classmethod
    def from_processor(cls, model: nn.Module, head: torch.Tensor, processor) -> ZeroShotClassifier:
        image_processor = getattr(processor, "image_processor", processor)
        return cls(model, head, image_processor.image_mean, image_processor.image_std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        validate_pixels(pixels, "pixels", check_values=False)
        family = family_of(self.model)
        features = family.encode_images(self.model, (pixels - self.mean) / self.std)
        return family.logits(self.model, features, self.head)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted class indices ``(N,)`` (eval mode, batched)."""
        was_training = self.training
        self.eval()
        device = self.head.device
        preds = [
            self(pixels[i : i + batch_size].to(device)).argmax(-1).cpu()
            for i in range(0, len(pixels), batch_size)
        ]
        self.train(was_training)
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
