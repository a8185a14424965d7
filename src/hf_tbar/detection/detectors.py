"""The detectors, one registry: each judges a model on clean images and returns a :class:`Finding`.

Registered:

| name | what it inverts | statistic | threshold |
|---|---|---|---|
| ``class-patch`` | per class, the smallest mask and pattern sending clean images there (Neural Cleanse) | MAD anomaly index of the smallest mask | self-relative (the model's own classes) |
| ``class-perturbation`` | per class, the smallest universal additive perturbation (full-image triggers) | MAD anomaly index of the smallest RMS | self-relative |
| ``decree`` | one mask and pattern collapsing the image embeddings (DECREE, no classes) | PL1 of the mask | absolute: counts only where calibrated |

:func:`detect` runs the configured detectors on the same images and combines their findings into a
:class:`ScanVerdict`. A detector is ``fn(inputs: DetectionInputs) -> Finding`` registered with
:func:`register_detector`; the contract test runs every registered one (``tests/test_detection.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..errors import ConfigError
from ..zeroshot import ZeroShotClassifier
from .calibration import calibration_entry, model_world
from .class_inversion import ClassInversionConfig, invert_classes
from .decree import DecreeConfig, invert_trigger
from .decree_config import UNCALIBRATED, USER_CALIBRATION
from .target import estimate_target
from .verdict import Finding, ScanVerdict

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "DetectionConfig",
    "DetectionInputs",
    "detect",
    "register_detector",
]


#: Fewer clean images than this make a verdict warn: the detection zoo (benchmarks/detection_zoo.py) measured the
#: thresholds and rates with 128 images per model, and a 64-image scan has flagged a clean model.
RELIABLE_DETECTION_IMAGES = 128


@dataclass
class DetectionInputs:
    """What a detector gets: the model, its zero-shot classifier over the user's task, and clean images.

    Attributes:
        model: The CLIP model (left untouched).
        processor: Its processor.
        classifier: The zero-shot classifier over ``task``.
        task: Class names and templates.
        pixels: Clean ``[0, 1]`` images ``(N, 3, S, S)`` at the model's input size.
        labels: Their classes ``(N,)``, when known.
        config: The detection settings.
        decree: DECREE's settings.
        world: The model's kind when hf_tbar trained it (:func:`~hf_tbar.detection.calibration.model_world`).
    """

    model: nn.Module
    processor: object
    classifier: ZeroShotClassifier
    task: TaskSpec
    pixels: torch.Tensor
    labels: torch.Tensor | None
    config: DetectionConfig
    decree: DecreeConfig
    world: str | None = None


Detector = Callable[[DetectionInputs], Finding]
DETECTORS: dict[str, Detector] = {}


def register_detector(name: str) -> Callable[[Detector], Detector]:
    """Decorator registering ``fn(inputs) -> Finding`` as the detector ``name``."""

    def wrap(fn: Detector) -> Detector:
        if name in DETECTORS:
            raise ValueError(f"a detector named {name!r} is already registered")
        DETECTORS[name] = fn
        return fn

    return wrap


#: The detectors a scan runs by default, in order.
DEFAULT_DETECTORS = ("class-patch", "class-perturbation", "decree")
#: Neural Cleanse's anomaly-index threshold.
DEFAULT_ANOMALY_THRESHOLD = 2.0


@dataclass
class DetectionConfig:
    """Which detectors run, on how many clean images, with which budget and thresholds."""

    detectors: list[str] = field(
        default_factory=lambda: list(DEFAULT_DETECTORS),
        metadata={
            "help": f"Detectors to run: {', '.join(DEFAULT_DETECTORS)} (see hf_tbar.detection.DETECTORS)."
        },
    )
    detection_images: int = field(
        default=256,
        metadata={
            "help": "Clean images the detectors use (a seeded random subset, >= 2).",
            "aliases": ["--num_images"],
        },
    )
    detection_steps: int | None = field(
        default=None,
        metadata={
            "help": "Most optimisation steps of each inversion (per class for the class-conditional detectors; "
            "default: each detector's own, 200 per class and DECREE's 1000).",
            "aliases": ["--decree_steps"],
        },
    )
    anomaly_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Flag when the smallest class's MAD anomaly index is above this (default: the calibrated "
            f"value for models of a benchmarked kind, else Neural Cleanse's {DEFAULT_ANOMALY_THRESHOLD})."
        },
    )
    detection_seed: int = field(
        default=0, metadata={"help": "Seed of the image subset and of the inversions."}
    )
    calibration_file: str | None = field(
        default=None,
        metadata={"help": "A calibration file of your own (hf_tbar.detection.calibration format) to trust."},
    )
    packaged_calibration: bool = field(
        default=True,
        metadata={
            "help": "Trust the calibrations shipped with hf_tbar for the kinds of model they measured. False: "
            "only calibration_file and the detectors' own defaults (how the detection zoo recalibrates)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.detectors, str):
            self.detectors = [self.detectors]
        self.detectors = [part.strip() for item in self.detectors for part in item.split(",") if part.strip()]
        unknown = [name for name in self.detectors if name not in DETECTORS]
        if unknown or not self.detectors:
            raise ConfigError(
                f"unknown detector(s) {unknown or self.detectors}; available: {sorted(DETECTORS)}"
            )
        if len(set(self.detectors)) != len(self.detectors):
            raise ConfigError(f"a detector is named twice in {self.detectors}")
        if (
            isinstance(self.detection_images, bool)
            or not isinstance(self.detection_images, int)
            or self.detection_images < 2
        ):
            raise ConfigError(f"detection_images must be an int >= 2, got {self.detection_images!r}")
        if self.detection_steps is not None and (
            not isinstance(self.detection_steps, int) or self.detection_steps < 1
        ):
            raise ConfigError(f"detection_steps must be a positive int, got {self.detection_steps!r}")
        if self.anomaly_threshold is not None and not (
            math.isfinite(self.anomaly_threshold) and self.anomaly_threshold > 0
        ):
            raise ConfigError(f"anomaly_threshold must be a positive number, got {self.anomaly_threshold!r}")

    def decree_config(self, decree: DecreeConfig | None = None) -> DecreeConfig:
        """DECREE's settings (``decree``, default ``DecreeConfig(seed=detection_seed)``) with this config's step
        budget folded in."""
        base = decree or DecreeConfig(seed=self.detection_seed)
        return dataclasses.replace(base, steps=self.detection_steps) if self.detection_steps else base


def _class_detector(family: str) -> Detector:
    name = f"class-{family}"

    def run(inputs: DetectionInputs) -> Finding:
        config = inputs.config
        measured = calibration_entry(inputs.world, name, config.calibration_file, config.packaged_calibration)
        threshold, source = (
            DEFAULT_ANOMALY_THRESHOLD,
            (f"self-relative: the model's own {inputs.task.num_classes} classes, Neural Cleanse's index 2"),
        )
        if config.anomaly_threshold is not None:
            threshold, source = config.anomaly_threshold, "self-relative, index threshold set by the user"
        elif measured is not None and "threshold" in measured:
            threshold = float(measured["threshold"])
            source = (
                f"self-relative, index threshold {threshold:g} chosen on the detection zoo ({inputs.world})"
            )
        settings = ClassInversionConfig(family=family, threshold=threshold, seed=config.detection_seed)
        if config.detection_steps:
            settings = dataclasses.replace(settings, steps=config.detection_steps)
        result = invert_classes(inputs.classifier, inputs.pixels, inputs.labels, settings)
        what = "mask mean" if family == "patch" else "perturbation RMS"
        return Finding(
            detector=name,
            statistic=f"MAD anomaly index of the smallest {what}",
            value=result.index,
            threshold=threshold,
            direction="above",
            threshold_source=source,
            calibrated=measured is not None,
            counts=True,
            flagged=result.flagged,
            target=result.target,
            target_name=inputs.task.classnames[result.target],
            num_images=len(inputs.pixels),
            seconds=result.seconds,
            note=result.note,
            per_class={str(k): v for k, v in result.sizes().items()},
            trigger=result.trigger,
        )

    return run


register_detector("class-patch")(_class_detector("patch"))
register_detector("class-perturbation")(_class_detector("perturbation"))


@register_detector("decree")
def _decree(inputs: DetectionInputs) -> Finding:
    config = inputs.decree
    start = time.perf_counter()
    result = invert_trigger(inputs.model, inputs.processor, inputs.pixels, config)
    estimate = estimate_target(inputs.classifier, inputs.pixels, result.trigger)
    measured = calibration_entry(
        inputs.world, "decree", inputs.config.calibration_file, inputs.config.packaged_calibration
    )
    # An absolute threshold carries between models only as far as it was measured: it counts when the user set
    # it (their own calibration, or the paper's), never by default - on the detection zoo the default PL1
    # threshold fitted on one digits model flagged a clean digits model of another seed.
    counts = result.calibration in (USER_CALIBRATION, "paper")
    source = {
        "embedded-tiny-clip": "absolute, fitted on hf_tbar's embedded digits CLIP; indicative unless you set it",
        "paper": "absolute, the paper's 0.1 for foundation-size encoders, chosen by the user",
        USER_CALIBRATION: "absolute, set by the user",
        UNCALIBRATED: "absolute, fitted on another kind of model: uncalibrated here",
    }[result.calibration]
    note = None
    if not result.found:
        note = f"no step reached the cosine threshold {config.cosine_threshold:g}"
    return Finding(
        detector="decree",
        statistic="PL1 (mask L1 share)",
        value=result.pl1 if result.found else None,
        threshold=float(result.threshold),
        direction="below",
        threshold_source=source,
        calibrated=measured is not None,
        counts=counts,
        flagged=result.is_backdoored,
        target=estimate.target,
        target_name=inputs.task.classnames[estimate.target],
        num_images=len(inputs.pixels),
        seconds=time.perf_counter() - start,
        note=note,
        trigger=result.trigger,
    )


@torch.no_grad()
def trigger_success(
    classifier: ZeroShotClassifier,
    pixels: torch.Tensor,
    labels: torch.Tensor | None,
    trigger: Trigger,
    target: int,
    batch_size: int = 64,
) -> float:
    """Share of ``pixels`` ``(N, 3, S, S)`` (those whose label is not ``target``, when labels are known) that
    ``trigger`` sends to class ``target``; in ``[0, 1]``."""
    keep = pixels if labels is None else pixels[labels != target]
    if len(keep) == 0:
        keep = pixels
    stamped = torch.cat([trigger(keep[i : i + batch_size]) for i in range(0, len(keep), batch_size)])
    return float((classifier.predict(stamped, batch_size) == target).double().mean())


def detect(
    model: nn.Module,
    processor,
    classifier: ZeroShotClassifier,
    task: TaskSpec,
    pixels: torch.Tensor,
    labels: torch.Tensor | None = None,
    config: DetectionConfig | None = None,
    decree: DecreeConfig | None = None,
) -> ScanVerdict:
    """Run the configured detectors on the same clean images and combine their findings.

    Args:
        model: The CLIP model to judge (left untouched).
        processor: Its processor.
        classifier: Its zero-shot classifier over ``task`` (the user's class names and templates).
        task: The task.
        pixels: Clean ``[0, 1]`` images ``(N, 3, S, S)`` at the model's input size, ``N >= 2``.
        labels: Their classes, when known (the class-conditional detectors then leave each class's own
            images out of its inversion).
        config: Which detectors, their budget and thresholds.
        decree: DECREE's settings (default: ``DecreeConfig(seed=config.detection_seed)``).
    """
    config = config or DetectionConfig()
    decree = config.decree_config(decree)
    world = model_world(model)
    inputs = DetectionInputs(model, processor, classifier, task, pixels, labels, config, decree, world)
    findings = []
    for name in config.detectors:
        finding = DETECTORS[name](inputs)
        if finding.trigger is not None and finding.target is not None:
            finding.trigger_success = trigger_success(
                classifier, pixels, labels, finding.trigger, finding.target
            )
        logger.info("%s", finding.summary())
        findings.append(finding)
    verdict = ScanVerdict(findings=findings, num_classes=task.num_classes)
    if len(pixels) < RELIABLE_DETECTION_IMAGES:
        verdict.warnings.append(
            f"judged on {len(pixels)} clean images, fewer than the {RELIABLE_DETECTION_IMAGES} the detectors' "
            "thresholds were measured with: the anomaly index is noisier, and a clean model can be flagged "
            f"(give --detection_images {RELIABLE_DETECTION_IMAGES} and a split with that many images)"
        )
    for warning in verdict.warnings:
        logger.warning("detection: %s", warning)
    logger.info("%s", verdict.summary().splitlines()[0])
    return verdict
