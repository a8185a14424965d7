"""Registry of trigger-vector variants: which vector TBAR negates.

A variant is ``(fits: VectorFits) -> vector``. ``fits`` gives lazy access to the fine-tunings a
variant may need (each runs at most once, only if asked for), so ``plain`` costs one fine-tuning and
the others pay only for what they use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..task_vector import TaskVector


@dataclass(frozen=True)
class VectorFits:
    """Lazy fine-tunings of the backdoored model, each returning ``theta_finetuned - theta_b``.

    Attributes:
        trigger: On triggered images labelled with the target (the seed paper's trigger vector).
        target_class: On a few *clean* images of the target class, labelled with it.
        repair: On the same triggered images labelled with their *true* classes.
    """

    trigger: Callable[[], TaskVector]
    target_class: Callable[[], TaskVector]
    repair: Callable[[], TaskVector]


Variant = Callable[[VectorFits], TaskVector]
VARIANTS: dict[str, Variant] = {}


def register_variant(name: str) -> Callable[[Variant], Variant]:
    """Decorator registering a variant under ``name``."""

    def wrap(fn: Variant) -> Variant:
        if name in VARIANTS:
            raise ValueError(f"a variant named {name!r} is already registered")
        VARIANTS[name] = fn
        return fn

    return wrap


def negate(variant: str, fits: VectorFits) -> TaskVector:
    """The vector variant ``variant`` negates, built from ``fits``, its metadata naming the variant."""
    vector = VARIANTS[variant](fits)
    vector.metadata = {**vector.metadata, "variant": variant}
    return vector


@register_variant("plain")
def plain(fits: VectorFits) -> TaskVector:
    """The seed paper's TBAR: negate the trigger vector as fitted."""
    return fits.trigger()


@register_variant("target-preserving")
def target_preserving(fits: VectorFits) -> TaskVector:
    """Remove, per tensor, the trigger vector's component along a clean target-class vector, so that
    negation erases the trigger rather than the target class itself."""
    return fits.trigger().project_out(fits.target_class(), per_tensor=True)


@register_variant("repair")
def repair(fits: VectorFits) -> TaskVector:
    """Negate the opposite of the repair vector, i.e. move along ``tau_repair``: fine-tuning the same triggered
    images towards their true classes points at "ignore the trigger" without pointing away from the target
    class, which the plain trigger vector does on small models (see the README's benchmark)."""
    return -fits.repair()


@register_variant("repair-preserving")
def repair_preserving(fits: VectorFits) -> TaskVector:
    """The repair variant with, per tensor, its component along the clean target-class vector removed: the
    two corrections compose (the embedded benchmark's best trade-off on BadNets, Blended and SIG)."""
    return repair(fits).project_out(fits.target_class(), per_tensor=True)
