"""Trigger objects and their registry.

A trigger is a frozen dataclass: its parameters are fixed at construction and validated there,
it is deterministic given its ``seed``, it maps a batch of ``[0, 1]`` pixels ``(B, 3, H, W)`` to a
triggered batch of the same shape, and it round-trips through :meth:`Trigger.to_dict` /
:func:`trigger_from_dict` (so a model card or report can say which trigger was removed).
"""

from __future__ import annotations

import dataclasses
import math
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import torch

from ..data.pixels import validate_pixels

TRIGGERS: dict[str, type[Trigger]] = {}
T = TypeVar("T", bound="type[Trigger]")


def register_trigger(cls: T) -> T:
    """Class decorator: make a trigger constructible by its ``name`` (see :func:`build_trigger`)."""
    if cls.name in TRIGGERS:
        raise ValueError(f"a trigger named {cls.name!r} is already registered")
    TRIGGERS[cls.name] = cls
    return cls


class Trigger(ABC):
    """Base class of all triggers. Subclasses are frozen dataclasses registered with :func:`register_trigger`."""

    name: ClassVar[str]
    #: True for clean-label attacks, which poison only images of the target class (e.g. SIG).
    clean_label: ClassVar[bool] = False

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on a batch of ``[0, 1]`` pixels ``(B, 3, H, W)``; returns a new tensor in ``[0, 1]``."""
        validate_pixels(pixels)
        if pixels.shape[0] == 0:
            return pixels.clone()
        return self.apply(pixels).clamp(0.0, 1.0)

    @abstractmethod
    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """The trigger itself, on a validated non-empty batch."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description: ``{"name": ..., **parameters}``."""
        return {"name": self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without anything private to this machine (e.g. a local file path).

        What a published report or model card should record. Triggers built from files keep the file's
        name and sha256; rebuild them with ``trigger_from_dict(description, path=...)``.
        """
        return self.to_dict()

    def public_files(self) -> dict[str, bytes]:
        """Files that :meth:`public_dict` names by ``file_name`` and that belong beside the report, by name
        (e.g. an inverted trigger's tensors); none for a trigger described by its parameters alone."""
        return {}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> Trigger:
        """Build this trigger from the parameters of a :meth:`to_dict` description (``name`` removed)."""
        return build_trigger(cls.name, **params)

    @classmethod
    def example(cls, directory: str | os.PathLike, seed: int = 0) -> Trigger:
        """A working instance for tests and demos; triggers that need files write them in ``directory``."""
        return cls(seed=seed)  # type: ignore[call-arg]

    def resolved(self, height: int, width: int) -> Trigger:
        """This trigger with every size relative to the input fixed in pixels for ``height x width`` inputs.

        Triggers without relative sizes return themselves.
        """
        return self

    def describe(self, image_size: int | None = None) -> str:
        """One line for logs and model cards; ``image_size`` (pixels) resolves input-relative sizes."""
        params = ", ".join(
            f"{k}={v}" for k, v in self.to_dict().items() if k != "name" and not isinstance(v, list)
        )
        return f"{self.name}({params})"


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _trigger_class(name: str) -> type[Trigger]:
    try:
        return TRIGGERS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; available: {sorted(TRIGGERS)}") from None


def build_trigger(name: str, **params: Any) -> Trigger:
    """Build a registered trigger by name, e.g. ``build_trigger("blended", alpha=0.2, seed=0)``."""
    cls = _trigger_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - fields)
    if unknown:
        raise TypeError(f"attack {name!r} has no parameter(s) {unknown}; its parameters: {sorted(fields)}")
    return cls(**params)


def trigger_from_dict(description: dict[str, Any], **overrides: Any) -> Trigger:
    """Inverse of :meth:`Trigger.to_dict` (and of :meth:`Trigger.public_dict`).

    Args:
        description: ``{"name": ..., **parameters}`` as written by :meth:`Trigger.to_dict`.
        overrides: Parameters that replace or complete the description, e.g. ``path="patch.png"`` for a
            file trigger recorded with :meth:`Trigger.public_dict` (its sha256 is still checked).
    """
    if "name" not in description:
        raise ValueError(f"a trigger description needs a 'name' key, got keys {sorted(description)}")
    params = {**description, **overrides}
    return _trigger_class(params.pop("name")).from_dict(params)


def check_fraction(value: float, what: str, low_open: bool = True) -> float:
    """Validate a number in (0, 1] (or [0, 1] when ``low_open`` is False)."""
    value = float(value)
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{what} must be in {interval}, got {value}")
    return value


def relative_pixels(fraction: float, height: int, width: int) -> int:
    """``fraction`` of the shorter side of a ``height x width`` image, rounded half up to whole pixels (>= 1)."""
    return max(1, math.floor(fraction * min(height, width) + 0.5))
