"""Registry of trigger-vector variants: what is negated, given the fitted trigger vector.

A variant is ``(trigger_vector, fit_target_vector) -> vector``; ``fit_target_vector()`` lazily
fine-tunes on a few *clean* target-class images and returns that "target-class" vector, so variants
that do not need it cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from .task_vector import TaskVector

Variant = Callable[[TaskVector, Callable[[], TaskVector]], TaskVector]
VARIANTS: dict[str, Variant] = {}


def register_variant(name: str) -> Callable[[Variant], Variant]:
    """Decorator registering a variant under ``name``."""

    def wrap(fn: Variant) -> Variant:
        if name in VARIANTS:
            raise ValueError(f"a variant named {name!r} is already registered")
        VARIANTS[name] = fn
        return fn

    return wrap


@register_variant("plain")
def plain(trigger_vector: TaskVector, fit_target_vector: Callable[[], TaskVector]) -> TaskVector:
    """The seed paper's TBAR: negate the trigger vector as fitted."""
    return trigger_vector


@register_variant("target-preserving")
def target_preserving(trigger_vector: TaskVector, fit_target_vector: Callable[[], TaskVector]) -> TaskVector:
    """Remove, per tensor, the trigger vector's component along a clean target-class vector, so that
    negation erases the trigger rather than the target class itself."""
    return trigger_vector.project_out(fit_target_vector(), per_tensor=True)
