"""The captioned benchmark scenario: the contrastively pretrained tiny CLIP, a copy poisoned by contrastive
training on image-caption pairs, and the defender's data (captioned clean scenes of the evaluation task)."""

from __future__ import annotations

from ..data.captioned import task_split
from ..models.loading import load_model
from ..training.captioned import captioned_clip_path
from ..training.captioned_backdoor import CaptionBackdoorConfig, poisoned_captioned_clip_path
from .embedded import EmbeddedScenario

__all__ = ["captioned_scenario"]

#: Seeds of the defender's scenes (none of them is a pretraining or poisoning seed).
SPLIT_SEEDS = {"train": 101, "validation": 102, "test": 103}


def captioned_scenario(
    attack: str = "badnets",
    backdoor: CaptionBackdoorConfig | None = None,
    train_size: int = 2000,
    validation_size: int = 500,
    test_size: int = 1000,
) -> EmbeddedScenario:
    """Build (or reuse from the cache) the clean and poisoned captioned tiny CLIPs and the defender's data.

    ``train`` holds ``train_size`` clean scenes of the evaluation task with their labels and, in
    ``train_captions``, their captions; ``validation`` and ``test`` are labelled scenes for the scale search
    and the final zero-shot CA/ASR. Without ``backdoor`` the recipe of
    :data:`~hf_tbar.training.captioned_backdoor.CAPTION_ATTACK_RECIPES` for ``attack`` is used.
    """
    backdoor = backdoor or CaptionBackdoorConfig.for_attack(attack)
    backdoored_path = poisoned_captioned_clip_path(backdoor)
    _, processor = load_model(backdoored_path)
    side = backdoor.pretrain.architecture.image_size
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    splits = {name: task_split(backdoor.task, sizes[name], SPLIT_SEEDS[name], side) for name in sizes}
    return EmbeddedScenario(
        clean_path=captioned_clip_path(backdoor.pretrain),
        backdoored_path=backdoored_path,
        processor=processor,
        task=backdoor.eval_task,
        trigger=backdoor.trigger().resolved(side, side),
        target=backdoor.target_index,
        train=splits["train"][:2],
        validation=splits["validation"][:2],
        test=splits["test"][:2],
        train_captions=splits["train"][2],
    )
