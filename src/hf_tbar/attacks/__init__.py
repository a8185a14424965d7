"""Backdoor attacks: triggers (BadNets, Blended, WaNet, SIG, and the file-based ImagePatch and BlendImage),
their registry, and dataset poisoning."""

from .base import TRIGGERS, Trigger, build_trigger, register_trigger, trigger_from_dict
from .image_triggers import BlendImage, ImagePatch
from .poison import poison_dataset, select_poison_indices
from .triggers import SIG, BadNets, Blended, WaNet

__all__ = [
    "SIG",
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
