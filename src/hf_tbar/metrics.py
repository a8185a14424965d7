"""Pure metric functions over predictions and labels (no models, no I/O)."""

from __future__ import annotations

import math

import torch


def _as_long(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.long).flatten()


def clean_accuracy(predictions, labels) -> float:
    """Top-1 accuracy (a share in [0, 1]) of predictions against true labels."""
    preds, labels = _as_long(predictions), _as_long(labels)
    if preds.shape != labels.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and labels {tuple(labels.shape)} differ in length"
        )
    if labels.numel() == 0:
        raise ValueError("cannot compute accuracy over zero examples")
    return (preds == labels).double().mean().item()


def attack_success_rate(predictions, labels, target: int) -> float:
    """Share of triggered images *whose true label is not the target* that are predicted as ``target``.

    Args:
        predictions: Predictions on triggered images.
        labels: The images' true (clean) labels.
        target: The attack's target class.
    """
    preds, labels = _as_long(predictions), _as_long(labels)
    if preds.shape != labels.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and labels {tuple(labels.shape)} differ in length"
        )
    keep = labels != int(target)
    if not keep.any():
        raise ValueError(f"no example has a true label other than the target {target}: ASR is undefined")
    return (preds[keep] == int(target)).double().mean().item()


def per_class_accuracy(predictions, labels, num_classes: int) -> list[float]:
    """Accuracy for each class index ``0..num_classes-1`` (NaN for a class with no example)."""
    preds, labels = _as_long(predictions), _as_long(labels)
    out = []
    for cls in range(num_classes):
        mask = labels == cls
        out.append((preds[mask] == cls).double().mean().item() if mask.any() else math.nan)
    return out


def ca_retention(sanitized_ca: float | None, backdoored_ca: float | None) -> float | None:
    """CA retention: clean accuracy of the sanitized model divided by the backdoored model's (dimensionless).

    The one place hf_tbar computes it (results, report, card, safety gate, benchmarks).

    Returns:
        ``sanitized_ca / backdoored_ca``, or ``None`` when it is undefined: the backdoored accuracy is zero
        (or negative), or either accuracy is missing or not a finite number. The safety gate then says the
        retention cannot be checked.
    """
    sanitized, backdoored = finite(sanitized_ca), finite(backdoored_ca)
    if sanitized is None or backdoored is None or backdoored <= 0:
        return None
    return sanitized / backdoored


def finite(value) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else ``None`` (missing, NaN, a string...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


METRIC_MODULES = ("attack_success_rate", "clean_accuracy")


def load_metric(name: str):
    """Load one of hf_tbar's metrics as an ``evaluate`` module, offline (no Hub access).

    Example:
        ```python
        >>> load_metric("attack_success_rate").compute(predictions=[0, 1], references=[1, 1], target=0)
        {'attack_success_rate': 0.5}
        ```
    """
    from pathlib import Path

    import evaluate

    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric {name!r}; available: {list(METRIC_MODULES)}")
    return evaluate.load(str(Path(__file__).parent / "metric_modules" / name))
