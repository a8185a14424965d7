"""Measuring: evaluating a scale, selecting the scale and detecting; the read-only half of BackdoorUnlearner.

:class:`Measuring` is a mixin of :class:`~hf_tbar.BackdoorUnlearner` (it uses ``model``, ``processor``,
``config``, ``classifier``, ``resolve_target`` and ``_images``). Every pass streams its images batch by batch.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import CLIPModel

from ..attacks.base import Trigger
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict, detect
from ..errors import DataError
from ..evaluation import EvalResult, evaluate_classifier
from ..scale_search import ScaleSearchConfig, ScaleSelection, format_sweep, search_scale
from ..task_vector import TaskVector
from .vector_fitting import Images

logger = logging.getLogger(__name__)


class Measuring:
    """CA/ASR evaluation, the scale search and detection (mixin of ``BackdoorUnlearner``)."""

    def evaluate(
        self,
        pixels: Images | tuple,
        labels: torch.Tensor | None = None,
        trigger: Trigger | None = None,
        target: int | str | None = None,
        model: CLIPModel | None = None,
        triggered: Images | None = None,
    ) -> EvalResult:
        """CA, ASR, target-class and per-class accuracy of ``model`` (default: the backdoored one), streamed.

        Args:
            pixels: Clean images: ``(N, 3, H, W)`` ``[0, 1]`` pixels with ``labels``, or an image set / dataset.
            trigger: Stamped on the non-target clean images to measure ASR.
            triggered: Or images that already carry the trigger: ASR is their share classified as ``target``.
        """
        if target is not None:
            target = self.resolve_target(target)
        clean = self._images(pixels if labels is None else (pixels, labels), "evaluation images")
        found = self._images(triggered, "poisoned images") if triggered is not None else None
        return evaluate_classifier(self.classifier(model), clean, None, trigger, target, triggered=found)

    def select_scale(
        self,
        vector: TaskVector,
        pixels: Images | tuple,
        labels: torch.Tensor | None,
        trigger: Trigger | None,
        target: int,
        search: ScaleSearchConfig | None = None,
        triggered: Images | None = None,
    ) -> ScaleSelection:
        """Step 5: the scale with the lowest validation ASR subject to the accuracy constraints.

        One working copy of the model is re-weighted in place per candidate scale; the text head is
        computed once; each evaluation streams the validation images.
        """
        work = copy.deepcopy(self.model)
        # The backdoored model is never modified: it is the reference each candidate is rebuilt from, so no
        # second copy of the weights the vector touches is kept (a model's worth of memory at ViT-L/14).
        base = {k: v for k, v in self.model.state_dict().items() if k in vector}

        def evaluate(scale: float):
            state = work.state_dict()
            with torch.no_grad():
                for name, tensor in base.items():
                    state[name].copy_(tensor)
            vector.apply_to(work, -scale, in_place=True)
            result = self.evaluate(pixels, labels, trigger, target, model=work, triggered=triggered)
            if result.attack_success_rate is None:
                raise DataError(
                    f"the validation images hold no image outside the target class {target} "
                    f"({self.task.classnames[target]!r}): the attack success rate cannot be measured on them"
                )
            return (
                result.clean_accuracy,
                result.attack_success_rate,
                result.target_class_accuracy,
                result.num_examples,
                result.num_triggered,
                result.num_target,
            )

        selection = search_scale(evaluate, search)
        logger.info(
            "selected scale %.3f after %d evaluations (validation CA %.1f%%, ASR %.1f%%); the sweep:\n%s",
            selection.scale,
            selection.evaluations,
            100 * selection.best.clean_accuracy,
            100 * selection.best.attack_success_rate,
            format_sweep(selection.sweep),
        )
        return selection

    def detect(
        self,
        clean_pixels: Images,
        config: DetectionConfig | None = None,
        decree: DecreeConfig | None = None,
    ) -> ScanVerdict:
        """Judge the model with the detectors of ``config`` on up to ``config.detection_images`` clean images (a
        seeded random subset; only those are decoded, with their labels when the images carry them).

        Raises:
            DataError: fewer than two clean images, or images of the wrong size for the model.
        """
        config = config or DetectionConfig(detection_seed=self.config.seed)
        pool = self._images(clean_pixels, "clean images")
        if len(pool) < 2:
            raise DataError(f"detection needs at least 2 clean images, got {len(pool)}")
        generator = torch.Generator().manual_seed(config.detection_seed)
        order = torch.randperm(len(pool), generator=generator)[: config.detection_images]
        chosen, labels = pool.select(order.tolist()).tensors()
        return detect(
            self.model, self.processor, self.classifier(), self.task, chosen, labels, config, decree
        )
