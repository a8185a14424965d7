"""The embedded benchmark scenarios: a cached clean tiny CLIP, a backdoored copy, and tensor splits, in the digits
world (:func:`embedded_scenario`) or the glyph world (:func:`glyph_scenario`)."""

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

    Without ``backdoor``, the attack's recipe from :data:`~hf_tbar.training.recipes.ATTACK_RECIPES` is used
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


def world_scenario(
    world: str = "digits",
    attack: str = "badnets",
    target: int = 0,
    seed: int = 0,
    attack_params: dict | None = None,
) -> EmbeddedScenario:
    """:func:`embedded_scenario` in the embedded world ``world``: ``"digits"`` (32 px) or ``"glyphs"``
    (:mod:`hf_tbar.data.glyphs`, 64 px, ten Greek capitals drawn stroke by stroke).

    The clean CLIP follows ``PretrainConfig.for_dataset(world)`` and the backdoor the world's recipe of
    ``attack`` (:data:`~hf_tbar.training.recipes.WORLD_ATTACK_RECIPES`). Both are cached by recipe.

    Args:
        world: The embedded dataset whose clean and backdoored CLIPs to build.
        attack: A registered trigger name (badnets, blended, wanet, sig).
        target: The target class index.
        seed: Seed of the clean model (its initialisation and the data it is trained on) and of the backdoor
            (poisoned rows, training order): each seed is its own clean parent.
        attack_params: Trigger parameters overriding the recipe's.

    Raises:
        ConfigError: ``world`` has no pretraining or attack recipes.
    """
    pretrain = PretrainConfig.for_dataset(world, seed=seed)
    backdoor = BackdoorConfig.for_attack(attack, attack_params, target=target, dataset=world, seed=seed)
    return embedded_scenario(attack, pretrain=pretrain, backdoor=backdoor)


def glyph_scenario(
    attack: str = "badnets", target: int = 0, seed: int = 0, attack_params: dict | None = None
) -> EmbeddedScenario:
    """:func:`world_scenario` in the glyph world (64 px; targets 0-9: delta, lambda, pi, sigma, omega, theta,
    psi, xi, phi, gamma)."""
    return world_scenario("glyphs", attack, target, seed, attack_params)
