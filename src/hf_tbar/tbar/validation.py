"""The validation images of a scale search: decoded and stamped once, split into a screen and the rest, every
evaluation counted in images forwarded.

A :class:`ValidationSet` is built once per run from the user's validation images. The first pass (the check
that the backdoored model solves the task at all) keeps the backdoored model's clean predictions, so the
search's reference accuracies cost nothing more; :meth:`ValidationSet.arm` stamps the trigger once on every
image outside the target class (or takes images found carrying it). When the decoded images and their
triggered copies fit in ``cache_bytes``, each candidate scale then costs only its forward passes; otherwise
every evaluation streams its part of the images from the source again, batch by batch, so memory stays flat
in the number of images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import torch

from ..attacks.base import Trigger
from ..data.images import ImageSet, TensorImages
from ..data.pixels import validate_pixels
from ..errors import DataError
from ..evaluation import EVAL_BATCH_SIZE, EvalResult, predict_batches
from ..metrics import attack_success_rate, clean_accuracy, per_class_accuracy
from ..scale_search import Counts
from ..zeroshot import ZeroShotClassifier

logger = logging.getLogger(__name__)

#: Bytes of decoded validation pixels (clean images and triggered copies, float32) a search keeps in memory;
#: above it, every evaluation decodes its images again from their source.
CACHE_BYTES = 1 << 30


def screen_indices(labels: torch.Tensor, fraction: float, minimum: int, seed: int = 0) -> torch.Tensor:
    """A stratified, seeded screen: about ``max(fraction, minimum / N)`` of the images of every class, at least
    one per class that has two or more, returned sorted ``(S,)``."""
    share = max(fraction, minimum / max(len(labels), 1))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        take = min(len(members) - 1, max(1, math.ceil(share * len(members)))) if len(members) > 1 else 0
        chosen.append(members[:take])
    return torch.sort(torch.cat(chosen)).values


class ValidationSet:
    """Labelled validation images split into part 0 (a stratified screen) and part 1 (the rest), or one part.

    Args:
        images: Labelled validation images.
        num_classes: Classes of the task (labels are checked against it).
        screen: Share and least number of images of the screen, ``(fraction, minimum)``; ``None`` (or a set
            under twice the minimum) keeps one part, every image.
        image_size: ``(H, W)`` the model reads, to size the cache before decoding.
        seed: Seed of the screen's draw.
        cache_bytes: Most bytes of decoded pixels kept in memory (:data:`CACHE_BYTES`).
        batch_size: Images per forward pass.

    Attributes:
        decodes: Images decoded from the source so far (a set that fits the cache is decoded once).
        forwarded: Images passed through a model so far (clean and triggered).
    """

    def __init__(
        self,
        images: ImageSet,
        num_classes: int,
        screen: tuple[float, int] | None = None,
        image_size: tuple[int, int] | None = None,
        seed: int = 0,
        cache_bytes: int = CACHE_BYTES,
        batch_size: int = EVAL_BATCH_SIZE,
    ) -> None:
        images.check(num_classes)
        self.images, self.num_classes, self.batch_size = images, num_classes, batch_size
        self.labels = images.require_labels()
        count = len(self.labels)
        if screen is not None and count >= 2 * screen[1]:
            first = screen_indices(self.labels, screen[0], screen[1], seed)
            rest = torch.ones(count, dtype=torch.bool)
            rest[first] = False
            self.parts = [first, torch.nonzero(rest).flatten()]
        else:
            self.parts = [torch.arange(count)]
        self.cache_bytes = cache_bytes
        self._pixels: torch.Tensor | None = images.pixels if isinstance(images, TensorImages) else None
        if self._pixels is not None:
            self._image_bytes = self._pixels[0].numel() * self._pixels.element_size()
        else:
            self._image_bytes = 3 * 4 * (image_size[0] * image_size[1] if image_size else 0)
        self._baseline: torch.Tensor | None = None  # the backdoored model's clean predictions (N,)
        # the backdoored model's triggered predictions per part, once armed
        self._baseline_triggered: dict[int, torch.Tensor] = {}
        self.trigger: Trigger | None = None
        self.target: int | None = None
        self._found: list[ImageSet] | None = None
        self._outside: list[torch.Tensor] = []  # per part, the indices of images outside the target class
        self._triggered: list[torch.Tensor | None] = []
        self.decodes = self.forwarded = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def screened(self) -> bool:
        """Whether the images are split into a screen and the rest."""
        return len(self.parts) == 2

    # ------------------------------------------------------------------ reading
    def _fits(self, images: int) -> bool:
        return self._image_bytes > 0 and images * self._image_bytes <= self.cache_bytes

    def _clean_batches(self, index: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(pixels, labels)`` of the images at ``index``, ``batch_size`` at a time (from memory or decoded)."""
        if self._pixels is not None:
            for start in range(0, len(index), self.batch_size):
                chunk = index[start : start + self.batch_size]
                yield self._pixels[chunk], self.labels[chunk]
            return
        for pixels, labels in self.images.select(index.tolist()).batches(self.batch_size):
            validate_pixels(pixels, self.images.name)
            self.decodes += len(pixels)
            yield pixels, labels

    def _decode_all(self) -> None:
        """Keep every decoded image in memory when they and their triggered copies fit the cache."""
        if self._pixels is None and not self._image_bytes:  # the size the model reads: decode one image
            first, _ = self.images.select([0]).tensors()
            self.decodes += 1
            self._image_bytes = first[0].numel() * first.element_size()
        if self._pixels is None and self._fits(2 * len(self)):
            chunks = [pixels for pixels, _ in self._clean_batches(torch.arange(len(self)))]
            self._pixels = torch.cat(chunks)

    def _predict(self, classifier: ZeroShotClassifier, pixels: torch.Tensor) -> torch.Tensor:
        self.forwarded += len(pixels)
        return predict_batches(classifier, pixels, self.batch_size)

    def _clean_predictions(self, classifier: ZeroShotClassifier, part: int) -> torch.Tensor:
        return torch.cat([self._predict(classifier, px) for px, _ in self._clean_batches(self.parts[part])])

    # ------------------------------------------------------------------ the backdoored model
    def baseline(self, classifier: ZeroShotClassifier) -> EvalResult:
        """The backdoored model's clean accuracy (the task check); its predictions are kept for the search.

        ``classifier`` is over the backdoored model. Decodes every image once, into memory when it fits.
        """
        self._decode_all()
        preds = torch.empty(len(self), dtype=torch.long)
        for part, index in enumerate(self.parts):
            preds[index] = self._clean_predictions(classifier, part)
        self._baseline = preds
        return EvalResult(
            clean_accuracy=clean_accuracy(preds, self.labels),
            per_class_accuracy=per_class_accuracy(preds, self.labels, self.num_classes),
            num_examples=len(self),
        )

    def arm(
        self, trigger: Trigger | None, target: int, found: ImageSet | None = None, classname: str = ""
    ) -> None:
        """Set what the ASR is measured on: ``trigger`` stamped once on every image outside ``target`` (kept in
        memory when it fits), or ``found`` images already carrying a trigger (split in the screen's proportion;
        with fewer than two, the search keeps one part).

        Raises:
            DataError: no image outside the target class (with a trigger), or no found image.
        """
        self.trigger, self.target, self._triggered, self._found = trigger, int(target), [], None
        self._baseline_triggered = {}
        if found is not None:
            if len(found) == 0:
                raise DataError("no poisoned images to measure the attack success rate on")
            if self.screened and len(found) >= 2:
                cut = min(len(found) - 1, max(1, round(len(found) * len(self.parts[0]) / len(self))))
                self._found = [found.select(range(cut)), found.select(range(cut, len(found)))]
            else:
                self._found, self.parts = [found], [torch.arange(len(self))]
            return
        self._outside = [index[self.labels[index] != self.target] for index in self.parts]
        outside = sum(len(index) for index in self._outside)
        if outside == 0:
            name = f" ({classname!r})" if classname else ""
            raise DataError(
                f"the validation images hold no image outside the target class {self.target}{name}: the attack "
                "success rate cannot be measured on them"
            )
        decoded = 0 if isinstance(self.images, TensorImages) else len(self)  # the decoded clean copies
        if self._pixels is None or not self._fits(outside + decoded):
            self._triggered = [None] * len(self.parts)  # stamped again by every evaluation
            return
        for index in self._outside:
            stamped = [self.trigger(pixels) for pixels, _ in self._clean_batches(index)]
            self._triggered.append(torch.cat(stamped) if stamped else torch.empty(0))

    def _triggered_predictions(self, classifier: ZeroShotClassifier, part: int) -> torch.Tensor:
        """Predictions on the triggered images of ``part`` ``(T,)`` (found images: the target's share counts)."""
        if self._found is not None:
            preds = []
            for pixels, _ in self._found[part].batches(self.batch_size):
                validate_pixels(pixels, "poisoned images")
                preds.append(self._predict(classifier, pixels))
            return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        cached = self._triggered[part]
        if cached is not None:
            return self._predict(classifier, cached) if len(cached) else torch.empty(0, dtype=torch.long)
        preds = [
            self._predict(classifier, self.trigger(px)) for px, _ in self._clean_batches(self._outside[part])
        ]
        return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)

    def _require_armed(self) -> None:
        if self.target is None:
            raise DataError("the validation set is not armed: call arm(trigger, target) first")

    # ------------------------------------------------------------------ counting
    def _counts(
        self, clean: torch.Tensor, index: torch.Tensor, triggered: torch.Tensor, forwarded: int
    ) -> Counts:
        labels = self.labels[index]
        in_target = labels == self.target
        return Counts(
            clean=len(index),
            clean_correct=int((clean == labels).sum()),
            triggered=len(triggered),
            hits=int((triggered == self.target).sum()),
            target=int(in_target.sum()),
            target_correct=int((clean[in_target] == self.target).sum()),
            forwarded=forwarded,
        )

    def counts(self, classifier: ZeroShotClassifier, part: int) -> Counts:
        """What ``classifier`` gets right on ``part`` (clean) and how often it follows the trigger there."""
        self._require_armed()
        start = self.forwarded
        clean = self._clean_predictions(classifier, part)
        triggered = self._triggered_predictions(classifier, part)
        return self._counts(clean, self.parts[part], triggered, self.forwarded - start)

    def baseline_counts(self, classifier: ZeroShotClassifier) -> Counts:
        """The backdoored model's counts: clean ones over every image (the kept predictions, free after
        :meth:`baseline`), triggered ones on part 0 only (they are reported, never compared)."""
        self._require_armed()
        if self._baseline is None:
            self.baseline(classifier)
        start = self.forwarded
        triggered = self._backdoored_triggered(classifier, 0)
        everything = torch.arange(len(self))
        return self._counts(self._baseline, everything, triggered, self.forwarded - start)

    def _backdoored_triggered(self, classifier: ZeroShotClassifier, part: int) -> torch.Tensor:
        """The backdoored model's triggered predictions on ``part``, forwarded once per arming (the search's
        baseline and the verification's "before" share them)."""
        if part not in self._baseline_triggered:
            self._baseline_triggered[part] = self._triggered_predictions(classifier, part)
        return self._baseline_triggered[part]

    def result(self, classifier: ZeroShotClassifier, backdoored: bool = False) -> EvalResult:
        """CA, ASR, target-class and per-class accuracy of ``classifier`` on every image (``backdoored``:
        ``classifier`` is over the backdoored model, and its clean predictions and the triggered ones already
        forwarded for the search's baseline are reused)."""
        self._require_armed()
        clean = torch.empty(len(self), dtype=torch.long)
        triggered = []
        for part, index in enumerate(self.parts):
            if not backdoored or self._baseline is None:
                clean[index] = self._clean_predictions(classifier, part)
            if backdoored:
                triggered.append(self._backdoored_triggered(classifier, part))
            else:
                triggered.append(self._triggered_predictions(classifier, part))
        if backdoored and self._baseline is not None:
            clean = self._baseline
        flipped = torch.cat(triggered)
        result = EvalResult(
            clean_accuracy=clean_accuracy(clean, self.labels),
            per_class_accuracy=per_class_accuracy(clean, self.labels, self.num_classes),
            num_examples=len(self),
            num_target=int((self.labels == self.target).sum()),
            num_triggered=len(flipped),
        )
        result.target_class_accuracy = result.per_class_accuracy[self.target]
        if self._found is not None:
            result.attack_success_rate = float((flipped == self.target).double().mean())
        else:
            true = torch.cat([self.labels[index] for index in self._outside])
            result.attack_success_rate = attack_success_rate(flipped, true, self.target)
        return result
