"""Working copies of a model to fine-tune: the frozen tensors shared with the original, not copied.

Both the trigger-vector fitting and the negation adapter build on a copy whose untrained tensors are the
original's own; :func:`grad_flags_kept` gives the original its ``requires_grad`` flags back afterwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from transformers import PreTrainedModel

from .base import family_of

__all__ = ["grad_flags_kept", "working_copy"]


def working_copy(model: PreTrainedModel, share_vision: bool = False) -> PreTrainedModel:
    """A copy of ``model`` to fine-tune whose frozen tensors are *shared* with ``model``, not copied.

    The text tower (and the logit scale) are never trained by TBAR, so the copy reuses them; with
    ``share_vision`` (LoRA, whose base weights stay frozen) the vision tower's tensors are shared as well and
    the copy costs only its module objects. Its trainable tensors must be chosen after the call.
    """
    trained = set() if share_vision else {id(param) for param in family_of(model).vision_parameters(model)}
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in trained}
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def grad_flags_kept(model: torch.nn.Module) -> Iterator[None]:
    """Give ``model``'s parameters back their ``requires_grad`` flags on exit (a :func:`working_copy` shares
    its frozen tensors, so choosing the copy's trainable tensors sets their flags too)."""
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    try:
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
