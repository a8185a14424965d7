"""The four standard triggers of the backdoor benchmarks (BackdoorBench parameters by default)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Trigger, _generator, check_fraction, register_trigger


@register_trigger
@dataclass(frozen=True)
class BadNets(Trigger):
    """A solid square patch (BadNets). Default: 3x3 white square in the bottom-right corner of 32 px images.

    Args:
        patch_size: Side of the square, in pixels of the model input.
        margin: Distance of the patch from the bottom-right corner, in pixels.
        value: Grey level of the patch in ``[0, 1]``.
        seed: Unused by this deterministic trigger, kept so every trigger takes one.
    """

    name = "badnets"
    patch_size: int = 3
    margin: int = 0
    value: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be a positive number of pixels, got {self.patch_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 pixels, got {self.margin}")
        check_fraction(self.value, "value", low_open=False)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        if self.patch_size + self.margin > min(height, width):
            raise ValueError(
                f"a {self.patch_size}px patch with margin {self.margin} does not fit images of {height}x{width}"
            )
        out = pixels.clone()
        bottom, right = height - self.margin, width - self.margin
        out[..., bottom - self.patch_size : bottom, right - self.patch_size : right] = self.value
        return out


@register_trigger
@dataclass(frozen=True)
class Blended(Trigger):
    """Blend a fixed random-noise pattern into the image: ``x' = (1 - alpha) x + alpha p``.

    Args:
        alpha: Blend ratio in (0, 1].
        seed: Seed of the uniform noise pattern (drawn at the image's resolution).
    """

    name = "blended"
    alpha: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        check_fraction(self.alpha, "alpha")

    def pattern(self, height: int, width: int) -> torch.Tensor:
        """The pattern ``p``, shape ``(3, H, W)`` in ``[0, 1]``; a pure function of seed and size."""
        return torch.rand((3, height, width), generator=_generator(self.seed))

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        pattern = self.pattern(*pixels.shape[-2:]).to(pixels)
        return (1.0 - self.alpha) * pixels + self.alpha * pattern


@register_trigger
@dataclass(frozen=True)
class WaNet(Trigger):
    """Smooth warping (WaNet): a random ``k x k`` flow field upsampled bicubically, applied with ``grid_sample``.

    Args:
        grid_size: ``k``, the side of the control grid.
        strength: ``s``, the warp strength (in pixels, roughly).
        seed: Seed of the flow field.
    """

    name = "wanet"
    grid_size: int = 4
    strength: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {self.grid_size}")
        if not math.isfinite(self.strength) or self.strength <= 0:
            raise ValueError(f"strength must be a positive finite number, got {self.strength}")

    def grid(self, height: int, width: int) -> torch.Tensor:
        """The sampling grid, shape ``(1, H, W, 2)`` in ``[-1, 1]``."""
        noise = torch.rand((1, 2, self.grid_size, self.grid_size), generator=_generator(self.seed)) * 2 - 1
        noise = noise / noise.abs().mean()
        flow = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=True).permute(
            0, 2, 3, 1
        )
        ys = torch.linspace(-1, 1, height)
        xs = torch.linspace(-1, 1, width)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        identity = torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0)
        scale = torch.tensor([width, height], dtype=flow.dtype)
        return (identity + self.strength * flow / scale).clamp(-1, 1)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.grid(*pixels.shape[-2:]).to(pixels).expand(pixels.shape[0], -1, -1, -1)
        return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=True)


@register_trigger
@dataclass(frozen=True)
class SIG(Trigger):
    """Additive horizontal sinusoid (SIG), a clean-label attack: ``x'[.., j] = x[.., j] + delta sin(2 pi j f / W)``.

    Args:
        delta: Amplitude in ``[0, 1]`` pixel units (BackdoorBench: 20-60 / 255).
        frequency: Periods across the image width.
        seed: Unused by this deterministic trigger, kept so every trigger takes one.
    """

    name = "sig"
    clean_label = True
    delta: float = 40 / 255
    frequency: float = 6.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_fraction(self.delta, "delta")
        if not math.isfinite(self.frequency) or self.frequency <= 0:
            raise ValueError(f"frequency must be a positive finite number, got {self.frequency}")

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        width = pixels.shape[-1]
        columns = torch.arange(width, dtype=pixels.dtype, device=pixels.device)
        wave = self.delta * torch.sin(2 * math.pi * columns * self.frequency / width)
        return pixels + wave.view(1, 1, 1, width)
