"""The embedded benchmark scenario: a cached clean tiny CLIP, a backdoored copy, and tensor splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec, load_embedded_dataset
from ..data.pixels import dataset_to_tensors
from ..models.loading import load_model
from ..training.backdoor import BackdoorConfig, backdoored_clip_path
from ..training.pretrain import PretrainConfig, pretrained_clip_path

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class EmbeddedScenario:
    """A backdoored tiny CLIP with its clean parent, the attack, and clean ``(pixels, labels)`` splits.

    The defender's data: ``train`` (clean images to stamp the trigger on), ``validation`` (scale
    selection); ``test`` is held out for the final CA/ASR.
    """

    clean_path: Path
    backdoored_path: Path
    processor: object
    task: TaskSpec
    trigger: Trigger
    target: int
    train: Split
    validation: Split
    test: Split
    #: One caption per ``train`` image in the captioned world (image-caption data), else ``None``.
    train_captions: list[str] | None = None


def embedded_scenario(
    attack: str = "badnets",
    attack_params: dict | None = None,
    target: int = 0,
    pretrain: PretrainConfig | None = None,
    backdoor: BackdoorConfig | None = None,
) -> EmbeddedScenario:
    """Build (or reuse from the cache) the clean and backdoored tiny CLIPs and the data splits.

    Without ``backdoor``, the attack's recipe from :data:`~hf_tbar.training.backdoor.ATTACK_RECIPES` is used
    (``attack_params`` override its trigger parameters).
    """
    pretrain = pretrain or PretrainConfig()
    backdoor = backdoor or BackdoorConfig.for_attack(attack, attack_params, target=target)
    clean_path = pretrained_clip_path(pretrain)
    backdoored_path = backdoored_clip_path(backdoor, pretrain)
    _, processor = load_model(backdoored_path)
    dataset, task = load_embedded_dataset(
        pretrain.dataset, image_size=pretrain.architecture.image_size, seed=pretrain.seed
    )
    splits = {name: dataset_to_tensors(dataset[name], processor) for name in ("train", "validation", "test")}
    return EmbeddedScenario(
        clean_path=clean_path,
        backdoored_path=backdoored_path,
        processor=processor,
        task=task,
        trigger=backdoor.trigger(),
        target=backdoor.target,
        **splits,
    )
