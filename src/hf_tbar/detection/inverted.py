"""The triggers recovered by trigger inversion: a soft mask and a pattern, ``x' = (1 - m) x + m p``
(:class:`InvertedTrigger`), or a universal additive perturbation, ``x' = clip(x + delta)``
(:class:`InvertedPerturbation`).

A report names an inverted trigger by file (:data:`INVERTED_TRIGGER_FILE`, safetensors, beside the report)
instead of carrying its mask and pattern inline; reports written before that keep them inline and still read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..attacks.base import Trigger, register_trigger
from ..errors import InputError

PLACEHOLDER_SIZE = 32  # side of the seeded random trigger built without mask and pattern
#: File holding an inverted trigger's ``mask`` and ``pattern`` tensors in a sanitized folder (its report
#: names it in ``trigger.file_name``).
INVERTED_TRIGGER_FILE = "inverted_trigger.safetensors"


def _as_tensor(value: Any, what: str, ndim: int) -> torch.Tensor:
    """A float32 CPU tensor of rank ``ndim`` with finite values in ``[0, 1]``, from a tensor or nested lists."""
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32).detach().cpu().clone()
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must be a tensor or nested lists of numbers, got {type(value).__name__}"
        ) from err
    if tensor.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"{what} is empty: shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{what} has non-finite values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return tensor


class _TensorTrigger(Trigger):
    """A trigger made of tensors found by an inversion: saved beside the report as
    :data:`INVERTED_TRIGGER_FILE` (safetensors) and named there by file, instead of inline lists.

    Subclasses list their tensor fields in ``tensor_names`` and describe their size in :meth:`public_size`.
    """

    tensor_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the tensors as nested lists of floats."""
        return {
            "name": self.name,
            **{k: getattr(self, k).tolist() for k in self.tensor_names},
            "seed": self.seed,
        }

    def to_safetensors(self) -> bytes:
        """The tensors as the bytes of a safetensors file, the same bytes for the same trigger (one metadata key:
        safetensors writes several in no fixed order). The seed is the report's to record."""
        tensors = {k: getattr(self, k).contiguous() for k in self.tensor_names}
        return save_safetensors(tensors, metadata={"trigger": self.name})

    def public_files(self) -> dict[str, bytes]:
        """:data:`INVERTED_TRIGGER_FILE` and its bytes: the file :meth:`public_dict` names."""
        return {INVERTED_TRIGGER_FILE: self.to_safetensors()}

    def public_size(self) -> list[int]:
        return list(getattr(self, self.tensor_names[0]).shape[-2:])

    def public_dict(self) -> dict[str, Any]:
        """The trigger named by its file instead of inline lists: ``{"name", "file_name", "sha256", "size",
        "seed"}``. Rebuild it with ``trigger_from_dict(description, path=<folder>/<file_name>)``."""
        return {
            "name": self.name,
            "file_name": INVERTED_TRIGGER_FILE,
            "sha256": hashlib.sha256(self.to_safetensors()).hexdigest(),
            "size": self.public_size(),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> Trigger:
        """Build from :meth:`to_dict`'s inline tensors, or from :meth:`public_dict` with ``path`` (the file, whose
        sha256 is checked when the description records one).

        Raises:
            InputError: a description naming a file without its ``path``; a file that is missing, changed or
                not this trigger's (naming the file).
        """
        params = dict(params)
        file_name, path = params.pop("file_name", None), params.pop("path", None)
        if path is None and file_name is None:
            return super().from_dict(params)
        if path is None:
            raise InputError(
                f"the inverted trigger was recorded as file {file_name!r} (sha256 {params.get('sha256')}); "
                f"rebuild it with trigger_from_dict(description, path=<folder>/{file_name})"
            )
        return cls.load(path, sha256=params.get("sha256"), seed=int(params.get("seed", 0)))

    @classmethod
    def load(cls, path: str | os.PathLike, sha256: str | None = None, seed: int = 0) -> Trigger:
        """Read a trigger written by :meth:`to_safetensors`.

        Args:
            path: The ``.safetensors`` file.
            sha256: Expected sha256 of its bytes (checked when given).
            seed: Seed of the inversion that produced it (recorded in the report).

        Raises:
            InputError: the file is missing or unreadable, its sha256 differs, or it does not hold this
                trigger's tensors (naming the file).
        """
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise InputError(f"cannot read the inverted trigger file {os.fspath(path)!r}: {err}") from None
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is not None and str(sha256).lower() != actual:
            raise InputError(
                f"the inverted trigger file {os.fspath(path)!r} changed: its sha256 is {actual}, the report "
                f"records {sha256}"
            )
        try:
            tensors = load_safetensors(data)
            return cls(**{k: tensors[k] for k in cls.tensor_names}, seed=seed)
        except (SafetensorError, KeyError, ValueError, TypeError) as err:
            names = " and ".join(cls.tensor_names)
            raise InputError(
                f"{os.fspath(path)!r} is not an inverted trigger file ({names} tensors): {err}"
            ) from None


@register_trigger
@dataclass(frozen=True, eq=False)
class InvertedTrigger(_TensorTrigger):
    """A reverse-engineered trigger (e.g. by DECREE): ``x' = (1 - m) x + m p``.

    Args:
        mask: Soft mask ``m`` of shape ``(H, W)`` in ``[0, 1]`` (tensor or nested lists).
        pattern: Pattern ``p`` of shape ``(3, H, W)`` in ``[0, 1]`` pixel units (tensor or nested lists).
        seed: Seed of the inversion that produced it (the trigger itself is deterministic).

    Images of another size than ``(H, W)`` get the mask and pattern resized bilinearly. Built with
    neither mask nor pattern (``build_trigger("inverted", seed=s)``), it is a seeded random 32x32
    placeholder, so that every registered trigger can be built from its name and seed.
    """

    name = "inverted"
    tensor_names = ("mask", "pattern")
    mask: torch.Tensor = field(default=None)  # type: ignore[assignment]
    pattern: torch.Tensor = field(default=None)  # type: ignore[assignment]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mask is None and self.pattern is None:
            generator = torch.Generator().manual_seed(int(self.seed))
            object.__setattr__(
                self, "mask", torch.rand((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), generator=generator)
            )
            object.__setattr__(
                self, "pattern", torch.rand((3, PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), generator=generator)
            )
        if self.mask is None or self.pattern is None:
            raise ValueError("an inverted trigger needs both a mask (H, W) and a pattern (3, H, W)")
        mask = _as_tensor(self.mask, "mask", 2)
        pattern = _as_tensor(self.pattern, "pattern", 3)
        if pattern.shape[0] != 3 or pattern.shape[1:] != mask.shape:
            raise ValueError(
                f"pattern must have shape (3, H, W) matching the mask {tuple(mask.shape)}, got {tuple(pattern.shape)}"
            )
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "pattern", pattern)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InvertedTrigger):
            return NotImplemented
        return (
            self.seed == other.seed
            and torch.equal(self.mask, other.mask)
            and torch.equal(self.pattern, other.pattern)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.seed, self.size))

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the mask and pattern, in pixels."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def mask_l1(self) -> float:
        """L1 norm of the mask over its three colour channels, ``3 * sum(m)`` (DECREE's convention)."""
        return 3.0 * float(self.mask.sum())

    @property
    def pl1(self) -> float:
        """Normalised mask norm ``|m|_1 / (H W 3)`` in ``[0, 1]``: the share of the image the trigger covers."""
        height, width = self.size
        return self.mask_l1 / (height * width * 3)

    def resized(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask ``(1, 1, height, width)`` and pattern ``(1, 3, height, width)`` at another resolution."""
        mask, pattern = self.mask[None, None], self.pattern[None]
        if (height, width) != self.size:
            mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
            pattern = F.interpolate(
                pattern, size=(height, width), mode="bilinear", align_corners=False
            ).clamp(0, 1)
        return mask, pattern

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        mask, pattern = self.resized(*pixels.shape[-2:])
        mask, pattern = mask.to(pixels), pattern.to(pixels)
        return (1.0 - mask) * pixels + mask * pattern

    def describe(self, image_size: int | None = None) -> str:
        height, width = self.size
        return f"{self.name}(size={height}x{width}, pl1={self.pl1:.4f}, seed={self.seed})"

    def save_png(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Save a picture of the mask, the pattern and ``m * p`` side by side (matplotlib, Agg canvas).

        Args:
            path: Output ``.png`` file; parent folders are created.
            title: Figure title; defaults to :meth:`describe`.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure = Figure(figsize=(9, 3.4))
        FigureCanvasAgg(figure)
        panels = (
            ("mask m", self.mask.numpy(), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}),
            ("pattern p", self.pattern.permute(1, 2, 0).numpy(), {}),
            ("m * p", (self.mask[None] * self.pattern).permute(1, 2, 0).numpy(), {}),
        )
        for index, (label, image, options) in enumerate(panels, start=1):
            axis = figure.add_subplot(1, 3, index)
            axis.imshow(image, interpolation="nearest", **options)
            axis.set_title(label)
            axis.axis("off")
        figure.suptitle(title or self.describe())
        figure.savefig(path, dpi=100, bbox_inches="tight")
        return path


def logit_to_unit(logit: torch.Tensor, eps: float) -> torch.Tensor:
    """DECREE's squashing ``tanh(z) / (2 - eps) + 0.5``, strictly inside ``(0, 1)`` for ``eps > 0``."""
    return torch.tanh(logit) / (2.0 - eps) + 0.5


def unit_to_logit(value: torch.Tensor, eps: float) -> torch.Tensor:
    """Inverse of :func:`logit_to_unit` for values in ``[0, 1]``."""
    scaled = ((value.double() - 0.5) * (2.0 - eps)).clamp(-1.0 + 1e-12, 1.0 - 1e-12)  # finite at 0 and 1
    return torch.atanh(scaled).to(value.dtype)


@register_trigger
@dataclass(frozen=True, eq=False)
class InvertedPerturbation(_TensorTrigger):
    """A reverse-engineered full-image trigger: a universal additive perturbation, ``x' = clip(x + delta)``.

    What the perturbation family of class-conditional inversion (:mod:`hf_tbar.detection.class_inversion`)
    finds for full-image backdoors (Blended, SIG, WaNet), which offer no small patch to a mask.

    Args:
        delta: Perturbation of shape ``(3, H, W)`` in pixel units, values in ``[-1, 1]`` (tensor or nested lists).
        seed: Seed of the inversion that produced it (the trigger itself is deterministic).

    Images of another size get ``delta`` resized bilinearly. Built without ``delta``
    (``build_trigger("inverted-perturbation", seed=s)``), it is a seeded random 32x32 placeholder of RMS 0.05.
    """

    name = "inverted-perturbation"
    tensor_names = ("delta",)
    delta: torch.Tensor = field(default=None)  # type: ignore[assignment]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delta is None:
            generator = torch.Generator().manual_seed(int(self.seed))
            noise = torch.randn((3, PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), generator=generator)
            object.__setattr__(self, "delta", (0.05 * noise).clamp(-1, 1))
        try:
            delta = torch.as_tensor(self.delta, dtype=torch.float32).detach().cpu().clone()
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"delta must be a tensor or nested lists of numbers, got {type(self.delta).__name__}"
            ) from err
        if delta.ndim != 3 or delta.shape[0] != 3 or delta.numel() == 0:
            raise ValueError(f"delta must have shape (3, H, W), got {tuple(delta.shape)}")
        if not torch.isfinite(delta).all() or float(delta.abs().max()) > 1.0:
            raise ValueError("delta must hold finite values in [-1, 1]")
        object.__setattr__(self, "delta", delta)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InvertedPerturbation):
            return NotImplemented
        return self.seed == other.seed and torch.equal(self.delta, other.delta)

    def __hash__(self) -> int:
        return hash((self.name, self.seed, tuple(self.delta.shape)))

    @property
    def rms(self) -> float:
        """Root mean square of ``delta`` in pixel units (its size: the L2 norm over ``sqrt(3 H W)``)."""
        return float(self.delta.pow(2).mean().sqrt())

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        delta = self.delta[None]
        if tuple(pixels.shape[-2:]) != tuple(delta.shape[-2:]):
            delta = F.interpolate(delta, size=tuple(pixels.shape[-2:]), mode="bilinear", align_corners=False)
        return pixels + delta.to(pixels)

    def describe(self, image_size: int | None = None) -> str:
        height, width = self.delta.shape[-2:]
        return f"{self.name}(size={height}x{width}, rms={self.rms:.4f}, seed={self.seed})"
