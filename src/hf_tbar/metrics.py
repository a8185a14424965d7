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


# --- small samples: confidence bounds and chance -------------------------------------------------------

#: One-sided significance of the chance test: a model is above chance when ``P(X >= correct) < 0.01`` for a
#: model that guesses uniformly.
CHANCE_ALPHA = 0.01
#: A model also counts as "near chance" below ``chance + CHANCE_BAND x (1 - chance)``: 10% of the way from
#: guessing (``1 / k``) to perfect accuracy, e.g. 19% with 10 classes and 55% with 2.
CHANCE_BAND = 0.1


def wilson_interval(successes: int, total: int, confidence: float = 0.9) -> tuple[float, float]:
    """Wilson score interval of a binomial share ``successes / total`` (two-sided, at ``confidence``).

    It stays inside ``[0, 1]`` and is meaningful at 0 or ``total`` successes, where the normal approximation
    collapses: with 96 images one image is 1 point, and the interval says how many points the share can
    move by chance.

    Args:
        successes: Count of successes, ``0 <= successes <= total``.
        total: Number of trials; ``0`` gives the uninformative ``(0.0, 1.0)``.
        confidence: Two-sided level in ``(0, 1)``.

    Returns:
        ``(low, high)`` shares in ``[0, 1]``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return 0.0, 1.0
    z = _normal_quantile(0.5 + confidence / 2)
    share = successes / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (Acklam's rational approximation, relative error below 1.2e-9)."""
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.3577518672690,
        -30.66479806614716,
        2.506628277459239,
    )
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
    c = (
        -0.007784894002430293,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - low:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


def binomial_tail(successes: int, total: int, share: float) -> float:
    """``P(X >= successes)`` for ``X ~ Binomial(total, share)``: the one-sided p-value of seeing at least
    ``successes`` when each trial succeeds with probability ``share`` (exact, summed in log space)."""
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    if not 0 < share < 1:
        return 1.0 if (share >= 1 or successes == 0) else 0.0
    log_p, log_q = math.log(share), math.log1p(-share)
    terms = [
        math.lgamma(total + 1)
        - math.lgamma(i + 1)
        - math.lgamma(total - i + 1)
        + i * log_p
        + (total - i) * log_q
        for i in range(successes, total + 1)
    ]
    peak = max(terms)
    return min(1.0, math.exp(peak) * sum(math.exp(t - peak) for t in terms))


def chance_accuracy(num_classes: int) -> float:
    """Accuracy of uniform guessing over ``num_classes`` classes, ``1 / num_classes``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return 1.0 / num_classes


def near_chance(
    correct: int, total: int, num_classes: int, alpha: float = CHANCE_ALPHA, band: float = CHANCE_BAND
) -> bool:
    """Whether ``correct`` right answers out of ``total`` over ``num_classes`` classes are no evidence that the
    model solves the task: not significantly above guessing (one-sided binomial test at ``alpha``), or within
    ``band`` of the way from guessing to perfect accuracy (see :data:`CHANCE_BAND`)."""
    chance = chance_accuracy(num_classes)
    if total == 0:
        return True
    if correct / total < chance + band * (1 - chance):
        return True
    return binomial_tail(correct, total, chance) >= alpha


def loss_did_not_fall(losses: list[float], share: float = 0.9) -> bool:
    """True when the mean of the last three losses is above ``share`` x the mean of the first three."""
    if len(losses) < 4:
        return False
    head, tail = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    return tail > share * head
