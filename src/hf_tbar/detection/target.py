"""Target-class estimation: the class an (inverted) trigger drives a zero-shot classifier to."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..attacks.base import Trigger
from ..data.pixels import validate_pixels
from ..zeroshot import ZeroShotClassifier


@dataclass(frozen=True)
class TargetEstimate:
    """Where a trigger sends images.

    Attributes:
        target: Index of the class receiving the most triggered images.
        flip_share: Share of the triggered images classified as ``target``, in ``[0, 1]``.
        shares: Per class, the share of triggered images classified as it (sums to 1), length C.
        clean_share: Share of the *clean* images already classified as ``target`` (the baseline).
    """

    target: int
    flip_share: float
    shares: tuple[float, ...]
    clean_share: float

    def to_dict(self) -> dict:
        return {**asdict(self), "shares": list(self.shares)}


@torch.no_grad()
def estimate_target(
    classifier: ZeroShotClassifier, pixels: torch.Tensor, trigger: Trigger, batch_size: int = 512
) -> TargetEstimate:
    """Stamp ``trigger`` on clean images and take the class the classifier predicts most often.

    Args:
        classifier: A zero-shot classifier over C classes (its head has C rows).
        pixels: Clean ``[0, 1]`` images ``(N, 3, H, W)``, N >= 1.
        trigger: Any trigger, e.g. the :class:`~hf_tbar.detection.InvertedTrigger` from DECREE.
        batch_size: Images per forward pass.

    Raises:
        ValueError: no images.
    """
    validate_pixels(pixels, "pixels")
    if pixels.shape[0] == 0:
        raise ValueError("estimate_target needs at least one clean image, got 0")
    num_classes = int(classifier.head.shape[0])
    triggered = torch.cat([trigger(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])
    predictions = classifier.predict(triggered, batch_size=batch_size)
    shares = torch.bincount(predictions, minlength=num_classes).double() / len(predictions)
    target = int(shares.argmax())
    clean_predictions = classifier.predict(pixels, batch_size=batch_size)
    return TargetEstimate(
        target=target,
        flip_share=float(shares[target]),
        shares=tuple(float(s) for s in shares),
        clean_share=float((clean_predictions == target).double().mean()),
    )
