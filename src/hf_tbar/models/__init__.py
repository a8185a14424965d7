"""Models: the image-text families (CLIP, SigLIP), loading checkpoints, and the tiny offline models.

| module | job |
|---|---|
| ``base`` | :class:`ModelFamily`, what hf_tbar knows of one ``model_type``, registered with one call |
| ``clip``, ``siglip`` | the CLIP and SigLIP families |
| ``loading`` | :func:`load_model`: a checked checkpoint folder or Hub id, any registered family |
| ``arguments`` | :class:`ModelArguments`: the model a command loads (folder or Hub id, revision, device) |
| ``tiny_clip``, ``tiny_siglip`` | tiny randomly initialised models built offline from a :class:`TinyCLIPConfig` |
| ``tokenizer`` | the byte-level BPE tokenizer of the tiny models, built from a corpus |
"""

from .arguments import ModelArguments
from .base import (
    MODEL_FAMILIES,
    ModelFamily,
    family_of,
    get_model_family,
    register_model_family,
    unwrap_model,
)
from .clip import CLIP, CLIPFamily
from .loading import load_model
from .siglip import SIGLIP, SiglipFamily
from .tiny_clip import TinyCLIPConfig, build_tiny_clip, save_clip
from .tiny_siglip import build_tiny_siglip

__all__ = [
    "CLIP",
    "MODEL_FAMILIES",
    "SIGLIP",
    "CLIPFamily",
    "ModelArguments",
    "ModelFamily",
    "SiglipFamily",
    "TinyCLIPConfig",
    "build_tiny_clip",
    "build_tiny_siglip",
    "family_of",
    "get_model_family",
    "load_model",
    "register_model_family",
    "save_clip",
    "unwrap_model",
]
