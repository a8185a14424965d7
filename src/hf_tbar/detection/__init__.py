"""Backdoor detection and trigger reverse-engineering for CLIP models.

| module | its one job |
|---|---|
| ``detectors`` | the detector registry, :class:`DetectionConfig` and :func:`detect` (runs them, combines them) |
| ``verdict`` | :class:`Finding` (one detector's outcome) and :class:`ScanVerdict` (the combined verdict) |
| ``class_inversion`` | per-class trigger inversion on the zero-shot head (Neural Cleanse; patch and perturbation) |
| ``anomaly`` | the MAD anomaly index (pure) |
| ``decree``, ``decree_config`` | DECREE: encoder-level inversion, no classes; its absolute PL1 threshold |
| ``calibration`` | which kinds of model each threshold was measured on (recipe files, calibration files) |
| ``inverted`` | the inverted triggers (mask and pattern; additive perturbation) |
| ``target`` | the class a trigger drives images to |
"""

from .anomaly import anomaly_indices
from .calibration import CALIBRATION_FILE, load_calibrations, model_world
from .class_inversion import ClassInversionConfig, ClassInversionResult, invert_classes
from .decree import (
    DecreeConfig,
    DecreeResult,
    LambdaState,
    image_encoder,
    invert_trigger,
    mean_pairwise_cosine,
    update_lambda,
)
from .decree_config import CALIBRATIONS, UNCALIBRATED_NOTE, calibration_for
from .detectors import (
    DEFAULT_DETECTORS,
    DETECTORS,
    DetectionConfig,
    DetectionInputs,
    detect,
    register_detector,
)
from .inverted import InvertedPerturbation, InvertedTrigger
from .target import TargetEstimate, estimate_target
from .verdict import Finding, ScanVerdict

__all__ = [
    "CALIBRATIONS",
    "CALIBRATION_FILE",
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "UNCALIBRATED_NOTE",
    "ClassInversionConfig",
    "ClassInversionResult",
    "DecreeConfig",
    "DecreeResult",
    "DetectionConfig",
    "DetectionInputs",
    "Finding",
    "InvertedPerturbation",
    "InvertedTrigger",
    "LambdaState",
    "ScanVerdict",
    "TargetEstimate",
    "anomaly_indices",
    "calibration_for",
    "detect",
    "estimate_target",
    "image_encoder",
    "invert_classes",
    "invert_trigger",
    "load_calibrations",
    "mean_pairwise_cosine",
    "model_world",
    "register_detector",
    "update_lambda",
]
