"""Model families (CLIP, SigLIP): one adapter per ``model_type``, registered with one call."""

from .base import (
    MODEL_FAMILIES,
    ModelFamily,
    family_of,
    get_model_family,
    register_model_family,
    unwrap_model,
)
from .clip import CLIP, CLIPFamily
from .siglip import SIGLIP, SiglipFamily

__all__ = [
    "CLIP",
    "MODEL_FAMILIES",
    "SIGLIP",
    "CLIPFamily",
    "ModelFamily",
    "SiglipFamily",
    "family_of",
    "get_model_family",
    "register_model_family",
    "unwrap_model",
]
