"""BadCLIP's trigger: a patch optimised against the clean CLIP, then pasted like any image patch.

This is **BadCLIP** of Liang et al., "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive
Learning" (CVPR 2024): a patch at the image centre is optimised against the frozen *clean* CLIP so that
patched images already sit near the target's captions and the target's real images in embedding space; the
optimised patch then poisons image-caption pairs like any other trigger, and a backdoor that agrees with what
the clean model already believes is hard to unlearn.

Not to be confused with the other "BadCLIP" of the same conference (Bai et al., "BadCLIP: Trigger-Aware Prompt
Learning for Backdoor Attacks on CLIP", CVPR 2024), which backdoors *prompt learning* with a learnable trigger
generator and is not implemented here.

This module holds the trigger (:class:`BadCLIP`, registered as ``"badclip"``: an
:class:`~hf_tbar.attacks.image_triggers.ImagePatch` whose file is the optimised patch) and the pixel maths the
optimisation shares with it (:func:`paste_patch`, :func:`patch_offset`, :func:`initial_patch`). The loss and
the optimisation loop are in :mod:`hf_tbar.training.badclip`; the captioned world's cached patch in
:mod:`hf_tbar.training.captioned_badclip`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, InputError
from .base import Trigger, _generator, register_trigger
from .image_triggers import ImagePatch

__all__ = ["BadCLIP", "initial_patch", "paste_patch", "patch_offset", "save_patch_png"]


def patch_offset(height: int, width: int, side: int) -> tuple[int, int]:
    """Top-left corner ``(y, x)``, in pixels, of a ``side`` px square centred on a ``height x width`` image
    (rounded towards the top-left, as :class:`~hf_tbar.attacks.image_triggers.ImagePatch`'s ``"center"``).

    Raises:
        InputError: the patch is larger than the image.
    """
    if side > min(height, width):
        raise InputError(f"a {side} px patch does not fit {height}x{width} px images")
    return (height - side) // 2, (width - side) // 2


def paste_patch(pixels: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` at the centre of every image, differentiably with respect to the patch.

    Args:
        pixels: Images ``(B, 3, H, W)`` in ``[0, 1]``.
        patch: The patch ``(3, s, s)``; clamped to ``[0, 1]`` before pasting (the optimisation's variable may
            leave that range, the pasted pixels never do).

    Returns:
        A new ``(B, 3, H, W)`` tensor: ``pixels`` with the ``s x s`` centre square replaced by the patch.
    """
    if patch.ndim != 3 or patch.shape[0] != 3 or patch.shape[1] != patch.shape[2]:
        raise InputError(f"a patch must be (3, s, s), got {tuple(patch.shape)}")
    side = patch.shape[-1]
    top, left = patch_offset(*pixels.shape[-2:], side)
    mask = torch.zeros(pixels.shape[-2:], dtype=pixels.dtype, device=pixels.device)
    mask[top : top + side, left : left + side] = 1.0
    height, width = pixels.shape[-2:]
    canvas = F.pad(patch.clamp(0.0, 1.0).to(pixels), (left, width - left - side, top, height - top - side))
    return pixels * (1.0 - mask) + canvas * mask


def initial_patch(side: int, seed: int) -> torch.Tensor:
    """BadCLIP's random start: ``(3, side, side)`` draws of a normal ``N(0.5, 0.25^2)`` clipped to ``[0, 1]``;
    a pure function of ``side`` (pixels) and ``seed``."""
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ConfigError(f"the patch side must be a positive number of pixels, got {side!r}")
    draws = torch.randn((3, side, side), generator=_generator(seed))
    return (0.5 + 0.25 * draws).clamp(0.0, 1.0)


def save_patch_png(patch: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a ``(3, s, s)`` patch in ``[0, 1]`` as an 8-bit RGB PNG (what :class:`BadCLIP` reads back)."""
    array = (patch.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(array), mode="RGB").save(path)
    return path


@register_trigger
@dataclass(frozen=True)
class BadCLIP(ImagePatch):
    """BadCLIP (Liang et al., CVPR 2024): an optimised patch pasted at the image centre.

    The patch is an image file written by the optimisation against the clean model (in the captioned world:
    :func:`hf_tbar.training.captioned_badclip.badclip_patch_path`); stamping is the image patch's, at the
    centre by default as in the paper, so the same file always stamps the same pixels. Not the prompt-learning
    attack of Bai et al. (CVPR 2024) that shares the name.

    Args:
        path: The optimised patch (a PNG); read and hashed at construction.
        sha256: Expected sha256 of the file; computed when ``None``, checked otherwise.
        position: Where the patch goes (see :class:`~hf_tbar.attacks.image_triggers.ImagePatch`); ``"center"``
            by default, where the patch was optimised.
        size: Side in pixels of the model input; ``None`` keeps the file's own size (as optimised).
        relative_size: Or the side as a fraction of the shorter input side.
        margin: Distance from the border, for corner positions only.
        seed: Seed of random positions; also of :meth:`example`'s stand-in patch.
    """

    name = "badclip"
    position: str | tuple[int, int] = "center"

    @classmethod
    def example(cls, directory: str | os.PathLike, seed: int = 0) -> Trigger:
        """A stand-in: BadCLIP's random starting patch (4 px, drawn from ``seed``) written to ``directory``,
        stamped at an eighth of the input side."""
        path = save_patch_png(initial_patch(4, seed), Path(directory) / f"{cls.name}-example-{seed}.png")
        return cls(path=str(path), relative_size=0.125, seed=seed)

    def describe(self, image_size: int | None = None) -> str:
        """E.g. ``"BadCLIP (Liang et al.) optimised patch 'patch.png' (sha256 1a2b3c4d...), 4x4 px at center"``."""
        return "BadCLIP (Liang et al.) optimised patch " + super().describe(image_size).split(" ", 1)[1]
