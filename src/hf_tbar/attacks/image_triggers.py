"""Triggers made of the user's own image files: a pasted patch (:class:`ImagePatch`) and a blended
picture (:class:`BlendImage`, BackdoorBench's Blended with its Hello Kitty image).

Both record the file's path and the sha256 of its bytes. :meth:`~ImagePatch.to_dict` keeps the path as
given, the file's base name and the sha256; :meth:`~ImagePatch.public_dict` drops the path, for reports
and model cards that should not publish a local path. Rebuild from a public description with
``trigger_from_dict(description, path="where/the/file/is.png")``: the sha256 is checked either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, InputError
from .base import Trigger, _generator, check_fraction, register_trigger, relative_pixels
from .image_files import file_sha256, load_rgba, resized_rgba, write_example_png

__all__ = ["POSITIONS", "BlendImage", "ImagePatch"]

#: Named positions of :class:`ImagePatch`; ``"random"`` draws a seeded position per image.
POSITIONS = ("bottom-right", "top-left", "top-right", "bottom-left", "center", "random")


@dataclass(frozen=True)
class _ImageFileTrigger(Trigger):
    """Shared file handling: ``path`` is read and hashed at construction, ``sha256`` is checked if given."""

    path: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise ConfigError(f"{self.name}: path must name an image file, got {self.path!r}")
        path = os.fspath(self.path)
        actual = file_sha256(path)
        if self.sha256 is not None and str(self.sha256).lower() != actual:
            raise InputError(
                f"the trigger image file {path!r} has sha256 {actual}, but the trigger records {self.sha256}"
            )
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "sha256", actual)
        load_rgba(path, actual)  # fails now, naming the path, if the file is not an image

    @property
    def file_name(self) -> str:
        """Base name of the image file."""
        return Path(self.path).name

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image file, in pixels."""
        rgba = load_rgba(self.path, self.sha256)
        return int(rgba.shape[1]), int(rgba.shape[2])

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "path" (as given), "file_name", "sha256", **parameters}``; unset sizes left out."""
        out = super().to_dict()
        out = {"name": out.pop("name"), "path": out.pop("path"), "file_name": self.file_name, **out}
        return {key: list(v) if isinstance(v, tuple) else v for key, v in out.items() if v is not None}

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the path: the file is named by its base name and sha256 only."""
        out = self.to_dict()
        out.pop("path")
        return out

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> Trigger:
        params = dict(params)
        file_name = params.pop("file_name", None)
        if "path" not in params:
            raise InputError(
                f"the {cls.name} trigger was recorded without its file path (file {file_name!r}, sha256 "
                f"{params.get('sha256')}); rebuild it with trigger_from_dict(description, path=...)"
            )
        return super().from_dict(params)

    @classmethod
    def example(cls, directory: str | os.PathLike, seed: int = 0) -> Trigger:
        """An instance on a 4x4 RGBA test pattern written to ``directory``."""
        path = write_example_png(Path(directory) / f"{cls.name}-example.png")
        return cls(path=str(path), seed=seed)  # type: ignore[call-arg]


@register_trigger
@dataclass(frozen=True)
class ImagePatch(_ImageFileTrigger):
    """Paste an image file (PNG, JPEG...) as a patch: ``x' = (1 - m) x + m p`` inside the patch area.

    The file's alpha channel (RGBA, LA, or a palette with transparency) is the mask ``m``; opaque
    images replace the pixels they cover.

    Args:
        path: The image file; read and hashed at construction (:class:`InputError` if unreadable).
        sha256: Expected sha256 of the file's bytes; computed when ``None``, checked otherwise.
        position: Where the patch goes: a corner (``"bottom-right"``, ``"top-left"``, ``"top-right"``,
            ``"bottom-left"``), ``"center"``, ``(x, y)`` pixel coordinates of the patch's top-left
            corner, or ``"random"``: a different position per image, drawn from ``seed`` (as CleanCLIP's
            BadNets), reproducible for a given seed and batch.
        size: Side of the square patch in pixels of the model input.
        relative_size: Side of the square patch as a fraction in (0, 1] of the shorter input side
            (rounded half up, >= 1 px). With neither size, the file keeps its own size (it must fit).
        margin: Distance from the image border in pixels, for corner positions only.
        seed: Seed of the random positions.
    """

    name = "image-patch"
    position: str | tuple[int, int] = "bottom-right"
    size: int | None = None
    relative_size: float | None = None
    margin: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        position = self.position
        if isinstance(position, (list, tuple)):
            if len(position) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in position
            ):
                raise ConfigError(f"position must be a name or (x, y) integer pixels, got {position!r}")
            if min(position) < 0:
                raise ConfigError(f"position (x, y) must be >= 0 pixels, got {tuple(position)}")
            object.__setattr__(self, "position", tuple(position))
        elif position not in POSITIONS:
            raise ConfigError(f"position must be one of {POSITIONS} or (x, y) pixels, got {position!r}")
        if self.size is not None and self.relative_size is not None:
            raise ConfigError(
                f"give size (pixels) or relative_size (fraction), not both: got {self.size} and "
                f"{self.relative_size}"
            )
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1
        ):
            raise ConfigError(f"size must be a positive number of pixels, got {self.size!r}")
        if self.relative_size is not None:
            object.__setattr__(self, "relative_size", check_fraction(self.relative_size, "relative_size"))
        if isinstance(self.margin, bool) or not isinstance(self.margin, int) or self.margin < 0:
            raise ConfigError(f"margin must be >= 0 pixels, got {self.margin!r}")

    def patch_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the pasted patch, in pixels, on ``height x width`` inputs."""
        if self.size is not None:
            return self.size, self.size
        if self.relative_size is not None:
            side = relative_pixels(self.relative_size, height, width)
            return side, side
        return self.image_size

    def resolved(self, height: int, width: int) -> ImagePatch:
        """The same patch with a relative size fixed in pixels for ``height x width`` inputs."""
        if self.relative_size is None:
            return self
        return replace(self, size=self.patch_size(height, width)[0], relative_size=None)

    def offsets(self, batch: int, height: int, width: int) -> torch.Tensor:
        """Top-left corner ``(y, x)`` of the patch in each image: long tensor ``(batch, 2)``, in pixels.

        Raises:
            InputError: the patch (with its margin or at its ``(x, y)``) does not fit the input.
        """
        ph, pw = self.patch_size(height, width)
        if ph > height or pw > width:
            raise InputError(
                f"the {ph}x{pw} px patch from {self.path!r} is larger than the {height}x{width} px model "
                "input; pass size= or relative_size="
            )
        free_y, free_x = height - ph, width - pw
        if self.position == "random":
            draws = torch.rand((batch, 2), generator=_generator(self.seed))
            spans = torch.tensor([free_y + 1, free_x + 1], dtype=draws.dtype)
            return (draws * spans).floor().long().clamp_max(torch.tensor([free_y, free_x]))
        if isinstance(self.position, tuple):
            x, y = self.position
            where = f"at (x={x}, y={y})"
        else:
            m = self.margin
            y, x = {
                "top-left": (m, m),
                "top-right": (m, free_x - m),
                "bottom-left": (free_y - m, m),
                "bottom-right": (free_y - m, free_x - m),
                "center": (free_y // 2, free_x // 2),
            }[self.position]
            where = f"at {self.position} with margin {m} px"
        if not (0 <= y <= free_y and 0 <= x <= free_x):
            raise InputError(
                f"the {ph}x{pw} px patch from {self.path!r} {where} does not fit the {height}x{width} px input"
            )
        return torch.tensor([[y, x]]).expand(batch, 2)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        ph, pw = self.patch_size(height, width)
        offsets = self.offsets(pixels.shape[0], height, width).tolist()
        rgba = resized_rgba(self.path, self.sha256, ph, pw).to(pixels)
        rgb, mask = rgba[:3], rgba[3:]
        out = pixels.clone()
        if self.position != "random":
            offsets = offsets[:1]  # one position for the whole batch
        for i, (y, x) in enumerate(offsets):
            rows = slice(i, i + 1) if self.position == "random" else slice(None)
            region = out[rows, :, y : y + ph, x : x + pw]
            out[rows, :, y : y + ph, x : x + pw] = (1.0 - mask) * region + mask * rgb
        return out

    def describe(self, image_size: int | None = None) -> str:
        """E.g. ``"image-patch 'logo.png' (sha256 1a2b3c4d...), 16x16 px at bottom-right"``."""
        if image_size is not None:
            ph, pw = self.patch_size(image_size, image_size)
            size = f"{ph}x{pw} px"
        elif self.relative_size is not None:
            size = f"relative size {self.relative_size:.3f}"
        else:
            size = f"{self.size or self.image_size[0]}x{self.size or self.image_size[1]} px"
        where = f"(x, y) = {self.position}" if isinstance(self.position, tuple) else self.position
        return f"{self.name} {self.file_name!r} (sha256 {self.sha256[:8]}...), {size} at {where}"


@register_trigger
@dataclass(frozen=True)
class BlendImage(_ImageFileTrigger):
    """Blend an image file, resized to the input, into every image: ``x' = (1 - alpha) x + alpha p``.

    BackdoorBench's Blended attack with its own picture (Hello Kitty by default there). An alpha channel
    in the file scales the blend per pixel: ``x' = (1 - alpha m) x + alpha m p``.

    Args:
        path: The image file; read and hashed at construction (:class:`InputError` if unreadable).
        sha256: Expected sha256 of the file's bytes; computed when ``None``, checked otherwise.
        alpha: Blend ratio in (0, 1].
        seed: Unused by this deterministic trigger, kept so every trigger takes one.
    """

    name = "blend-image"
    alpha: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alpha", check_fraction(self.alpha, "alpha"))

    def pattern(self, height: int, width: int) -> torch.Tensor:
        """The picture ``p`` resized to ``height x width``: RGBA float tensor ``(4, height, width)``, shared."""
        return resized_rgba(self.path, self.sha256, height, width)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        rgba = self.pattern(*pixels.shape[-2:]).to(pixels)
        weight = self.alpha * rgba[3:]
        return (1.0 - weight) * pixels + weight * rgba[:3]

    def describe(self, image_size: int | None = None) -> str:
        """E.g. ``"blend-image 'kitty.png' (sha256 1a2b3c4d...), alpha 0.2"``."""
        return f"{self.name} {self.file_name!r} (sha256 {self.sha256[:8]}...), alpha {self.alpha:g}"
