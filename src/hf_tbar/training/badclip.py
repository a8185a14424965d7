"""BadCLIP's patch optimisation (Liang et al., CVPR 2024) as pure tensor maths over an image encoder.

The patch ``p`` (pasted at the image centre, :func:`~hf_tbar.attacks.badclip.paste_patch`) is optimised with
Adam against a *frozen* clean CLIP, on images ``x`` that do not show the target, each paired with a natural
caption ``c`` of the target (a real target image's caption)::

    L(p) = InfoNCE(E_img(x + p), E_txt(c))                                  # the textual target
         + w * mean(max(0, |E_img(x + p) - e_pos| - |E_img(x + p) - E_img(x)| + margin))   # the visual target

``e_pos`` are embeddings of real target-class images (a random draw per batch, as the paper's code); the
negatives are the images' own clean embeddings; distances are Euclidean between L2-normalised embeddings
(:class:`torch.nn.TripletMarginLoss`'s). The encoder is any callable from ``[0, 1]`` pixels to normalised
embeddings, so nothing here knows a model: the captioned world's use is in
:mod:`hf_tbar.training.captioned_badclip`. Not the prompt-learning BadCLIP of Bai et al. (CVPR 2024).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attacks.badclip import initial_patch, paste_patch
from ..errors import ConfigError, InputError
from .losses import contrastive_loss

logger = logging.getLogger(__name__)

__all__ = ["PatchOptimisation", "badclip_loss", "optimise_patch", "triplet_term"]


def triplet_term(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, margin: float
) -> torch.Tensor:
    """Triplet margin loss ``mean(max(0, |a - p| - |a - n| + margin))`` with Euclidean distances.

    Args:
        anchors: Embeddings ``(B, D)`` (the patched images).
        positives: Embeddings ``(B, D)`` they should come close to (real target-class images).
        negatives: Embeddings ``(B, D)`` they should move away from (their own clean images).
        margin: How much closer to the positive than to the negative an anchor must be, in embedding units.

    Returns:
        A scalar ``>= 0``.
    """
    if not anchors.shape == positives.shape == negatives.shape or anchors.ndim != 2:
        raise InputError(
            f"anchors, positives and negatives must be (B, D) of one shape, got {tuple(anchors.shape)}, "
            f"{tuple(positives.shape)}, {tuple(negatives.shape)}"
        )
    closer = (anchors - positives).norm(dim=1) - (anchors - negatives).norm(dim=1)
    return F.relu(closer + margin).mean()


def badclip_loss(
    patched: torch.Tensor,
    captions: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    scale: torch.Tensor | float,
    triplet_weight: float,
    margin: float,
    groups: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """BadCLIP's objective on one batch; every embedding is L2-normalised, ``(B, D)``.

    Args:
        patched: Embeddings of the patched images.
        captions: Embeddings of their paired natural target captions.
        positives: Embeddings of real target-class images.
        negatives: Embeddings of the same images without the patch.
        scale: CLIP's inverse temperature (``logit_scale.exp()``).
        triplet_weight: ``w``, the weight of the triplet term (the paper: 500).
        margin: The triplet margin.
        groups: ``(B,)`` ids of identical captions (positives of each other in the InfoNCE), or ``None``.

    Returns:
        ``{"loss": total, "contrastive": ..., "triplet": ...}``, scalars.
    """
    contrastive = contrastive_loss(patched, captions, scale, groups=groups)
    triplet = triplet_term(patched, positives, negatives, margin)
    return {"loss": contrastive + triplet_weight * triplet, "contrastive": contrastive, "triplet": triplet}


@dataclass(frozen=True)
class PatchOptimisation:
    """The optimisation's own settings (the data and the encoder are passed to :func:`optimise_patch`)."""

    patch_size: int = field(default=4, metadata={"help": "Side of the square patch, in pixels of the input."})
    steps: int = field(default=300, metadata={"help": "Adam steps."})
    learning_rate: float = field(default=0.01, metadata={"help": "Adam's rate, in pixel units per step."})
    batch_size: int = field(default=64, metadata={"help": "Images per step."})
    triplet_weight: float = field(
        default=500.0, metadata={"help": "Weight of the triplet term (paper: 500)."}
    )
    margin: float = field(default=0.1, metadata={"help": "Triplet margin, in embedding units (paper: 0.1)."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the starting patch, the batches and the positives."}
    )

    def __post_init__(self) -> None:
        for name in ("patch_size", "steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.triplet_weight < 0 or self.margin < 0:
            raise ConfigError(
                f"triplet_weight and margin must be >= 0, got {self.triplet_weight} and {self.margin}"
            )


def optimise_patch(
    encode: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    caption_embeds: torch.Tensor,
    positive_embeds: torch.Tensor,
    scale: float,
    settings: PatchOptimisation,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Optimise BadCLIP's patch with Adam; reproducible for ``settings.seed`` (start, batches and positives).

    Args:
        encode: A frozen image encoder: ``[0, 1]`` pixels ``(B, 3, H, W)`` to L2-normalised embeddings
            ``(B, D)``, differentiable with respect to the pixels.
        images: ``(N, 3, H, W)`` images in ``[0, 1]`` that do not show the target.
        caption_embeds: ``(N, D)`` embeddings of the natural target caption paired with each image.
        positive_embeds: ``(M, D)`` embeddings of real target-class images, ``M >= 1``.
        scale: CLIP's inverse temperature (``logit_scale.exp()``).
        settings: Patch side, steps, learning rate, batch size, triplet weight and margin, seed.
        groups: ``(N,)`` ids of identical captions, or ``None``.

    Returns:
        The patch ``(3, s, s)`` in ``[0, 1]`` and the total loss of every step.
    """
    if images.ndim != 4 or len(images) != len(caption_embeds) or len(positive_embeds) == 0:
        raise InputError(
            f"need images (N, 3, H, W), caption embeddings (N, D) and positives (M>=1, D); got "
            f"{tuple(images.shape)}, {tuple(caption_embeds.shape)}, {tuple(positive_embeds.shape)}"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    patch = initial_patch(settings.patch_size, settings.seed).to(images).requires_grad_(True)
    optimizer = torch.optim.Adam([patch], lr=settings.learning_rate)
    batch = min(settings.batch_size, len(images))
    losses = []
    for step in range(settings.steps):
        rows = torch.randperm(len(images), generator=generator)[:batch]
        picks = torch.randint(len(positive_embeds), (batch,), generator=generator)
        with torch.no_grad():
            clean = encode(images[rows])
        parts = badclip_loss(
            encode(paste_patch(images[rows], patch)),
            caption_embeds[rows],
            positive_embeds[picks],
            clean,
            scale,
            settings.triplet_weight,
            settings.margin,
            groups=None if groups is None else groups[rows],
        )
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        losses.append(parts["loss"].item())
        if step % 50 == 0 or step == settings.steps - 1:
            logger.info(
                "BadCLIP patch step %d/%d: loss %.4f (contrastive %.4f, triplet %.4f)",
                step + 1,
                settings.steps,
                losses[-1],
                parts["contrastive"].item(),
                parts["triplet"].item(),
            )
    return patch.detach().clamp(0.0, 1.0), losses
