"""The MAD anomaly index (Neural Cleanse, Wang et al. 2019): how far below its peers one class's trigger size is.

A backdoored class needs a much smaller trigger than the others to send clean images to it. With the median
``m`` of the per-class sizes and their median absolute deviation ``MAD``, a class's index is
``(m - size) / (1.4826 x MAD)``: the number of robust standard deviations it lies below the median
(``1.4826 x MAD`` estimates the standard deviation of normally distributed sizes). Neural Cleanse flags a class
whose index is above 2. hf_tbar computes it on the logarithm of the sizes (``log_scale``): sizes are scale
quantities (a share of the image, an RMS), and a class needing a quarter of its peers' trigger is as anomalous
whatever the scale; on the embedded digits this separates a BadNets model from a clean one by more than raw
sizes do. Pure functions over floats: no models.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["MAD_CONSISTENCY", "MIN_CLASSES", "anomaly_indices", "smallest_outlier"]

#: ``1.4826 x MAD`` estimates the standard deviation of a normal distribution.
MAD_CONSISTENCY = 1.4826
#: Classes needed for a median and a deviation to mean anything.
MIN_CLASSES = 3


def anomaly_indices(sizes: Sequence[float], log_scale: bool = False) -> list[float]:
    """The anomaly index of every class: ``(median - size) / (1.4826 x MAD)``; positive below the median.

    Args:
        sizes: One trigger size per class (mask L1 share, perturbation RMS...), at least :data:`MIN_CLASSES` of
            them; positive when ``log_scale``.
        log_scale: Compute the index on ``log(size)`` (sizes below 1e-12 count as 1e-12).

    Returns:
        One index per class, in the order given. When every size but at most half equals the median
        (``MAD == 0``), a class below the median gets ``inf`` and the others ``0``.

    Raises:
        ValueError: fewer than :data:`MIN_CLASSES` sizes, or a size that is not a finite number.
    """
    values = [float(size) for size in sizes]
    if log_scale:
        values = [math.log(max(v, 1e-12)) if math.isfinite(v) else v for v in values]
    if len(values) < MIN_CLASSES:
        raise ValueError(
            f"an anomaly index needs the trigger sizes of at least {MIN_CLASSES} classes, got {len(values)}"
        )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"trigger sizes must be finite numbers, got {values}")
    median = statistics.median(values)
    spread = MAD_CONSISTENCY * statistics.median(abs(v - median) for v in values)
    if spread == 0:
        return [math.inf if v < median else 0.0 for v in values]
    return [(median - v) / spread for v in values]


def smallest_outlier(sizes: Sequence[float], log_scale: bool = False) -> tuple[int, float]:
    """The class with the smallest trigger and its anomaly index (:func:`anomaly_indices`)."""
    indices = anomaly_indices(sizes, log_scale)
    smallest = min(range(len(sizes)), key=lambda i: sizes[i])
    return smallest, indices[smallest]
