"""Backdoor detection and trigger reverse-engineering (DECREE) for CLIP image encoders."""

from .decree import (
    DecreeConfig,
    DecreeResult,
    LambdaState,
    image_encoder,
    invert_trigger,
    mean_pairwise_cosine,
    update_lambda,
)
from .decree_config import CALIBRATIONS, UNCALIBRATED_NOTE, calibration_for, is_embedded_tiny_clip
from .inverted import InvertedTrigger
from .target import TargetEstimate, estimate_target

__all__ = [
    "CALIBRATIONS",
    "UNCALIBRATED_NOTE",
    "DecreeConfig",
    "DecreeResult",
    "InvertedTrigger",
    "LambdaState",
    "TargetEstimate",
    "calibration_for",
    "estimate_target",
    "image_encoder",
    "invert_trigger",
    "is_embedded_tiny_clip",
    "mean_pairwise_cosine",
    "update_lambda",
]
