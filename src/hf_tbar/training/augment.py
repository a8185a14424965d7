"""Pixel-space augmentation: random per-image affine jitter (vectorised, seeded by the caller's RNG)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    pixels: torch.Tensor, max_shift: float = 0.1, max_rotation: float = 10.0, max_scale: float = 0.1
) -> torch.Tensor:
    """Randomly shift, rotate and rescale each image of ``(B, 3, H, W)`` ``[0, 1]`` pixels.

    Args:
        max_shift: Largest translation, as a share of the image side.
        max_rotation: Largest rotation, in degrees.
        max_scale: Largest relative zoom in or out.
    """
    batch = pixels.shape[0]
    device, dtype = pixels.device, pixels.dtype
    angle = (torch.rand(batch, device=device, dtype=dtype) * 2 - 1) * math.radians(max_rotation)
    scale = 1 + (torch.rand(batch, device=device, dtype=dtype) * 2 - 1) * max_scale
    shift = (torch.rand(batch, 2, device=device, dtype=dtype) * 2 - 1) * 2 * max_shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
