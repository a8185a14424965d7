"""Loss functions shared by pretraining, attacks and defences (pure tensor maths)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss"]


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
