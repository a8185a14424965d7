"""Training routines: a generic Accelerate loop, the embedded pretraining, backdooring.

Tiny models of your own: :func:`build_tiny_clip` (a random CLIP whose tokenizer reads your class names),
:func:`pretrain_clip` (teach it your task, measured on held-out rows), :func:`backdoor_clip` (poison it).
"""

from ..models.tiny_clip import TinyCLIPConfig, build_tiny_clip
from .backdoor import BackdoorConfig, backdoor_clip, backdoored_clip_path
from .loop import FinetuneConfig, run_training
from .pretrain import PRETRAIN_METRICS_FILE, PretrainConfig, pretrain_clip, pretrained_clip_path
from .recipes import ATTACK_RECIPES

__all__ = [
    "ATTACK_RECIPES",
    "PRETRAIN_METRICS_FILE",
    "BackdoorConfig",
    "FinetuneConfig",
    "PretrainConfig",
    "TinyCLIPConfig",
    "backdoor_clip",
    "backdoored_clip_path",
    "build_tiny_clip",
    "pretrain_clip",
    "pretrained_clip_path",
    "run_training",
]
