"""Loss functions shared by pretraining, attacks and defences (pure tensor maths)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss", "positive_text_loss"]


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE between two batches of L2-normalised embeddings ``(B, D)``.

    Args:
        a: Embeddings of one view / modality.
        b: Embeddings of the other, row ``i`` paired with ``a[i]``.
        scale: Inverse temperature (CLIP's ``logit_scale.exp()``).
        groups: Optional ``(B,)`` ids: ``a[i]`` and ``b[j]`` count as a positive pair whenever
            ``groups[i] == groups[j]`` (targets spread uniformly over them). ``None``: only ``i == j``.

    Returns:
        The mean of the ``a -> b`` and ``b -> a`` cross-entropies.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"a and b must be (B, D) of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    logits = scale * a @ b.T
    if groups is None:
        targets = torch.arange(len(a), device=a.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)  # symmetric: one target matrix serves both
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def positive_text_loss(
    images: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """Image-to-text InfoNCE with several positive texts: ``-log`` of the softmax mass on the positives.

    Every image is scored against the same candidates, ``positives`` then ``negatives``; the loss is low
    when an image is closer to any positive than to every negative (e.g. a triggered image and the target's
    captions against the captions of other images: what a poisoned contrastive training teaches).

    Args:
        images: L2-normalised image embeddings ``(B, D)``.
        positives: L2-normalised embeddings ``(P, D)``, ``P >= 1``, of the texts each image should match.
        negatives: L2-normalised embeddings ``(M, D)`` of texts it should not (``M`` may be 0).
        scale: Inverse temperature (CLIP's ``logit_scale.exp()``).

    Returns:
        The mean over images, a scalar ``>= 0`` (0 when ``M == 0``).
    """
    if images.ndim != 2 or positives.ndim != 2 or negatives.ndim != 2 or len(positives) == 0:
        raise ValueError(
            f"need images (B, D), positives (P>=1, D) and negatives (M, D); got {tuple(images.shape)}, "
            f"{tuple(positives.shape)}, {tuple(negatives.shape)}"
        )
    logits = scale * images @ torch.cat([positives, negatives]).T
    return (logits.logsumexp(dim=1) - logits[:, : len(positives)].logsumexp(dim=1)).mean()
