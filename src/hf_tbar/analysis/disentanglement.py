"""Weight disentanglement error (Ortiz-Jimenez et al., 2023) between a clean task vector and a trigger vector.

For a base model ``theta_0``, a clean task vector ``tau_c`` (data ``D_c``: clean images) and a trigger
vector ``tau_t`` (data ``D_t``: triggered images), the seed paper plots

    xi(a_c, a_t) = sum_{k in {c, t}} E_{x ~ D_k} [ 1{ f(x; theta_0 + a_k tau_k) != f(x; theta_0 + a_c tau_c + a_t tau_t) } ]

over a grid of ``(a_c, a_t)``, ``f`` the predicted class. ``xi`` is in ``[0, 2]`` and 0 at the origin by
construction. It stays small when adding one vector does not change the predictions on the other's
task, i.e. when the two tasks live in separate weight directions (the property TBAR relies on to
negate the trigger without touching clean behaviour).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models import family_of
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)


def disentanglement_from_predictions(
    clean_alone: torch.Tensor,
    trigger_alone: torch.Tensor,
    clean_joint: torch.Tensor,
    trigger_joint: torch.Tensor,
) -> torch.Tensor:
    """The error grid from predicted classes (pure tensor maths).

    Args:
        clean_alone: ``(A_c, N_c)`` predictions on ``D_c`` of ``theta_0 + a_c tau_c``, one row per ``a_c``.
        trigger_alone: ``(A_t, N_t)`` predictions on ``D_t`` of ``theta_0 + a_t tau_t``, one row per ``a_t``.
        clean_joint: ``(A_c, A_t, N_c)`` predictions on ``D_c`` of ``theta_0 + a_c tau_c + a_t tau_t``.
        trigger_joint: ``(A_c, A_t, N_t)`` the same on ``D_t``.

    Returns:
        ``(A_c, A_t)`` float64 grid of ``xi``.
    """
    a_c, n_c = clean_alone.shape
    a_t, n_t = trigger_alone.shape
    if clean_joint.shape != (a_c, a_t, n_c) or trigger_joint.shape != (a_c, a_t, n_t):
        raise ValueError(
            f"joint predictions must have shapes {(a_c, a_t, n_c)} and {(a_c, a_t, n_t)}, got "
            f"{tuple(clean_joint.shape)} and {tuple(trigger_joint.shape)}"
        )
    if n_c == 0 or n_t == 0:
        raise ValueError("both data sets need at least one image")
    clean_error = (clean_joint != clean_alone[:, None, :]).double().mean(dim=-1)
    trigger_error = (trigger_joint != trigger_alone[None, :, :]).double().mean(dim=-1)
    return clean_error + trigger_error


@dataclass
class DisentanglementResult:
    """``error[i, j] = xi(clean_scales[i], trigger_scales[j])``."""

    clean_scales: list[float]
    trigger_scales: list[float]
    error: torch.Tensor

    def at(self, clean_scale: float, trigger_scale: float) -> float:
        """``xi`` at a grid point."""
        return float(
            self.error[self.clean_scales.index(clean_scale), self.trigger_scales.index(trigger_scale)]
        )

    def to_dict(self) -> dict:
        return {
            "clean_scales": self.clean_scales,
            "trigger_scales": self.trigger_scales,
            "error": self.error.tolist(),
        }

    def to_markdown(self) -> str:
        """The grid as a markdown table: one row per ``a_c``, one column per ``a_t``, ``xi`` to 2 decimals."""
        header = "| a_c \\ a_t | " + " | ".join(f"{a:g}" for a in self.trigger_scales) + " |"
        lines = [header, "|" + "---|" * (len(self.trigger_scales) + 1)]
        for i, a_c in enumerate(self.clean_scales):
            lines.append(f"| {a_c:g} | " + " | ".join(f"{float(v):.2f}" for v in self.error[i]) + " |")
        return "\n".join(lines)


@torch.no_grad()
def disentanglement_error(
    model: nn.Module,
    clean_vector: TaskVector,
    trigger_vector: TaskVector,
    clean_scales: Sequence[float],
    trigger_scales: Sequence[float],
    processor,
    task,
    clean_pixels: torch.Tensor,
    triggered_pixels: torch.Tensor,
    batch_size: int = 512,
) -> DisentanglementResult:
    """``xi(a_c, a_t)`` over the grid ``clean_scales x trigger_scales`` for the base ``model``.

    One working copy of the model is re-weighted in place per grid point (the input is not modified).
    The zero-shot head is built once from the text tower, or per point when a vector changes it.

    Args:
        model: The base model ``theta_0`` (a :class:`~transformers.CLIPModel`).
        clean_vector: ``tau_c``, e.g. from fine-tuning on clean labelled images.
        trigger_vector: ``tau_t``, e.g. TBAR's trigger vector.
        clean_scales: Grid of ``a_c``.
        trigger_scales: Grid of ``a_t``.
        processor: The model's ``CLIPProcessor``.
        task: The :class:`~hf_tbar.TaskSpec` of the zero-shot head.
        clean_pixels: ``D_c``, clean ``[0, 1]`` images ``(N_c, 3, H, W)``.
        triggered_pixels: ``D_t``, triggered ``[0, 1]`` images ``(N_t, 3, H, W)``.

    Returns:
        The grid as a :class:`DisentanglementResult` (``error`` of shape ``(len(clean_scales), len(trigger_scales))``).
    """
    clean_scales, trigger_scales = [float(a) for a in clean_scales], [float(a) for a in trigger_scales]
    if not clean_scales or not trigger_scales:
        raise ValueError("both scale grids need at least one value")
    work = copy.deepcopy(model).eval()
    keys = set(clean_vector.keys()) | set(trigger_vector.keys())
    state = work.state_dict()
    base = {k: state[k].detach().clone() for k in keys}
    text_changes = any(
        k.startswith(family_of(model).text_prefixes) and bool(vector.vector[k].any())
        for vector in (clean_vector, trigger_vector)
        for k in vector.keys()
    )
    fixed_head = None if text_changes else build_zero_shot_head(work, processor.tokenizer, task)
    cache: dict[tuple[float, float], tuple[torch.Tensor, torch.Tensor]] = {}

    def predict(a_c: float, a_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        if (a_c, a_t) not in cache:
            for name, tensor in base.items():
                state[name].copy_(tensor)
            clean_vector.apply_to(work, a_c, in_place=True)
            trigger_vector.apply_to(work, a_t, in_place=True)
            head = (
                fixed_head
                if fixed_head is not None
                else build_zero_shot_head(work, processor.tokenizer, task)
            )
            classifier = ZeroShotClassifier.from_processor(work, head, processor).to(head.device)
            cache[(a_c, a_t)] = (
                classifier.predict(clean_pixels, batch_size),
                classifier.predict(triggered_pixels, batch_size),
            )
        return cache[(a_c, a_t)]

    points = [(a_c, a_t) for a_c in clean_scales for a_t in trigger_scales]
    for a_c, a_t in tqdm(points, desc="disentanglement grid", leave=False, disable=None):
        predict(a_c, a_t)
    clean_alone = torch.stack([predict(a_c, 0.0)[0] for a_c in clean_scales])
    trigger_alone = torch.stack([predict(0.0, a_t)[1] for a_t in trigger_scales])
    clean_joint = torch.stack(
        [torch.stack([predict(a_c, a_t)[0] for a_t in trigger_scales]) for a_c in clean_scales]
    )
    trigger_joint = torch.stack(
        [torch.stack([predict(a_c, a_t)[1] for a_t in trigger_scales]) for a_c in clean_scales]
    )
    error = disentanglement_from_predictions(clean_alone, trigger_alone, clean_joint, trigger_joint)
    logger.info(
        "disentanglement error: mean %.3f, max %.3f over %d points", error.mean(), error.max(), len(points)
    )
    return DisentanglementResult(clean_scales, trigger_scales, error)
