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
from .inverted import InvertedTrigger
from .target import TargetEstimate, estimate_target

__all__ = [
    "DecreeConfig",
    "DecreeResult",
    "InvertedTrigger",
    "LambdaState",
    "TargetEstimate",
    "estimate_target",
    "image_encoder",
    "invert_trigger",
    "mean_pairwise_cosine",
    "update_lambda",
]
