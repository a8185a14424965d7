"""Backdoor attacks: triggers (BadNets, Blended, WaNet, SIG, the file-based ImagePatch and BlendImage, and
BadCLIP's optimised patch, Liang et al. CVPR 2024),
their registry, and dataset poisoning."""

from .badclip import BadCLIP
from .base import TRIGGERS, Trigger, build_trigger, register_trigger, trigger_from_dict
from .image_triggers import BlendImage, ImagePatch
from .poison import poison_dataset, select_poison_indices
from .triggers import SIG, BadNets, Blended, WaNet

__all__ = [
    "SIG",
    "BadCLIP",
    "TRIGGERS",
    "BadNets",
    "BlendImage",
    "Blended",
    "ImagePatch",
    "Trigger",
    "WaNet",
    "build_trigger",
    "poison_dataset",
    "register_trigger",
    "select_poison_indices",
    "trigger_from_dict",
]
