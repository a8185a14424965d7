"""The four standard triggers of the backdoor benchmarks (BackdoorBench parameters by default)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from .base import Trigger, _generator, check_fraction, register_trigger, relative_pixels

#: BadNets' default side as a fraction of the shorter image side: 3 px at 32 px, 21 px at 224 px.
BADNETS_RELATIVE_SIZE = 3 / 32


def _grey_name(value: float) -> str:
    return {0.0: "black", 1.0: "white"}.get(float(value), f"grey {value:g}")


@register_trigger
@dataclass(frozen=True)
class BadNets(Trigger):
    """A solid square patch (BadNets) in the bottom-right corner, sized relative to the input by default.

    The default side is ``relative_size = 3/32`` of the shorter image side, rounded half up: the classic
    3x3 patch on 32 px images (bit for bit as before) and 21x21 on 224 px inputs (published CLIP attacks
    use 16x16 there; pass ``patch_size=16``).

    Args:
        patch_size: Side of the square in pixels of the model input, or ``None`` to use ``relative_size``.
        margin: Distance of the patch from the bottom-right corner, in pixels.
        value: Grey level of the patch in ``[0, 1]``.
        seed: Unused by this deterministic trigger, kept so every trigger takes one.
        relative_size: Side as a fraction in (0, 1] of the shorter image side, used when ``patch_size``
            is ``None`` (at least 1 px).

    :meth:`to_dict` records either ``patch_size`` (explicit pixels; the format of older reports) or
    ``relative_size``, never both.
    """

    name = "badnets"
    patch_size: int | None = None
    margin: int = 0
    value: float = 1.0
    seed: int = 0
    relative_size: float = BADNETS_RELATIVE_SIZE

    def __post_init__(self) -> None:
        if self.patch_size is not None:
            if (
                isinstance(self.patch_size, bool)
                or not isinstance(self.patch_size, int)
                or self.patch_size < 1
            ):
                raise ConfigError(f"patch_size must be a positive number of pixels, got {self.patch_size!r}")
            if self.relative_size != BADNETS_RELATIVE_SIZE:
                raise ConfigError(
                    f"give patch_size (pixels) or relative_size (fraction), not both: got patch_size="
                    f"{self.patch_size} and relative_size={self.relative_size}"
                )
        object.__setattr__(self, "relative_size", check_fraction(self.relative_size, "relative_size"))
        if self.margin < 0:
            raise ConfigError(f"margin must be >= 0 pixels, got {self.margin}")
        check_fraction(self.value, "value", low_open=False)

    def pixel_size(self, height: int, width: int) -> int:
        """Side of the patch, in pixels, on ``height x width`` inputs."""
        if self.patch_size is not None:
            return self.patch_size
        return relative_pixels(self.relative_size, height, width)

    def resolved(self, height: int, width: int) -> BadNets:
        """The same patch with its side fixed in pixels for ``height x width`` inputs (explicit ``patch_size``)."""
        return replace(self, patch_size=self.pixel_size(height, width), relative_size=BADNETS_RELATIVE_SIZE)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("relative_size" if self.patch_size is not None else "patch_size")
        return out

    def describe(self, image_size: int | None = None) -> str:
        """E.g. ``"BadNets 21x21 px white patch (relative size 0.094 of 224 px)"``.

        Args:
            image_size: Side of the (square) model input in pixels; without it a relative size is
                reported with what it gives at 32 and 224 px.
        """
        colour = _grey_name(self.value)
        where = f", {self.margin} px from the bottom-right corner" if self.margin else ""
        if image_size is None and self.patch_size is None:
            at = ", ".join(f"{relative_pixels(self.relative_size, s, s)} px at {s} px" for s in (32, 224))
            return f"BadNets {colour} patch of relative size {self.relative_size:.3f} ({at}){where}"
        side = self.pixel_size(image_size, image_size) if image_size else self.patch_size
        if self.patch_size is None:
            how = f" (relative size {self.relative_size:.3f} of {image_size} px)"
        else:
            how = (
                f" (explicit size, {self.patch_size / image_size:.3f} of {image_size} px)"
                if image_size
                else ""
            )
        return f"BadNets {side}x{side} px {colour} patch{how}{where}"

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        side = self.pixel_size(height, width)
        if side + self.margin > min(height, width):
            raise InputError(
                f"a {side}px BadNets patch with margin {self.margin} px does not fit images of {height}x{width} px"
            )
        out = pixels.clone()
        bottom, right = height - self.margin, width - self.margin
        out[..., bottom - side : bottom, right - side : right] = self.value
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
