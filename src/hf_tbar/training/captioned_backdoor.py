"""Poisoned contrastive training on the embedded captioned world: the standard CLIP threat model (CleanCLIP,
BadCLIP), where a small share of image-caption pairs carry a trigger and a caption naming the target.

The attacker continues the clean captioned CLIP's contrastive training (both towers) on fresh pairs of which
``poison_rate`` are poisoned: the image stamped with the trigger, the caption replaced by one naming the
target ("a photo of a triangle."). Clean-label attacks (SIG) stamp images whose caption already names the
target and keep it. BadCLIP (Liang et al., CVPR 2024; not the prompt-learning BadCLIP of Bai et al.) first
optimises its patch against the clean model (:mod:`hf_tbar.training.captioned_badclip`, cached), then poisons
by the same route. The backdoor is measured zero-shot on a held-out task (which shape, by default).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..attacks import BadCLIP, Trigger, build_trigger
from ..attacks.base import check_fraction
from ..data.captioned import HELD_OUT_TASKS, random_scenes, render_pairs
from ..data.embedded import TaskSpec
from ..errors import ConfigError
from ..io import atomic_output_dir
from ..models.loading import load_model
from ..tbar.captions import names_class
from .arguments import FinetuneConfig, finetune_config_of
from .cache import cached_checkpoint, recipe_key
from .captioned import CaptionPretrainConfig, captioned_clip_path, train_contrastive
from .captioned_badclip import BadCLIPPatchConfig, badclip_trigger

logger = logging.getLogger(__name__)

__all__ = [
    "CAPTION_ATTACK_RECIPES",
    "POISON_TEMPLATES",
    "CaptionBackdoorConfig",
    "poisoned_captioned_clip_path",
]

#: Captions of the poisoned pairs, filled with the target's class name (CleanCLIP uses ImageNet's templates).
POISON_TEMPLATES = (
    "a photo of a {}.",
    "a {} object.",
    "a picture of a {}",
    "there is a {} here",
    "an image of a {}",
    "a {} on a dark background",
)
#: Per-attack overrides of :class:`CaptionBackdoorConfig` (``python benchmarks/caption_embedded.py``): at 600
#: steps Blended and WaNet implant only to ~63% ASR, so they train 1,200 (Blended then reaches 93%, WaNet 69%).
CAPTION_ATTACK_RECIPES: dict[str, dict] = {
    "badnets": {},
    "blended": {"steps": 1200},
    "wanet": {"attack_params": {"strength": 4.0}, "steps": 1200},
    "sig": {"attack_params": {"delta": 50 / 255}},
}


@dataclass(frozen=True)
class CaptionBackdoorConfig:
    """How the attacker poisons the captioned world. Its hash (with the clean recipe's) keys the cache."""

    attack: str = field(default="badnets", metadata={"help": "Registered trigger name."})
    attack_params: dict = field(default_factory=dict, metadata={"help": "Trigger parameters."})
    task: str = field(default="shape", metadata={"help": "Held-out task the backdoor is measured on."})
    target: str = field(default="triangle", metadata={"help": "Target class name of that task."})
    poison_rate: float = field(default=0.01, metadata={"help": "Share of the pairs poisoned, in (0, 1]."})
    pairs: int = field(
        default=20000, metadata={"help": "Fresh image-caption pairs of the poisoned training."}
    )
    steps: int = field(
        default=600, metadata={"help": "Optimizer steps of the poisoned contrastive training."}
    )
    batch_size: int = field(default=128, metadata={"help": "Pairs per step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warm-up steps."})
    seed: int = field(default=1, metadata={"help": "Seed of the scenes, the poisoned rows and training."})
    pretrain: CaptionPretrainConfig = field(
        default_factory=CaptionPretrainConfig, metadata={"help": "The clean model's recipe."}
    )
    badclip: BadCLIPPatchConfig = field(
        default_factory=BadCLIPPatchConfig,
        metadata={
            "help": "How BadCLIP's patch is optimised against the clean model (attack 'badclip' only)."
        },
    )

    def __post_init__(self) -> None:
        if self.task not in HELD_OUT_TASKS:
            raise ConfigError(f"task must be one of {sorted(HELD_OUT_TASKS)}, got {self.task!r}")
        classes = HELD_OUT_TASKS[self.task].classnames
        if self.target not in classes:
            raise ConfigError(f"target {self.target!r} is not a class of task {self.task!r}: {list(classes)}")
        check_fraction(self.poison_rate, "poison_rate")
        if self.attack != BadCLIP.name:  # BadCLIP's trigger is optimised on first use, not here
            self.trigger()
        self.finetune_config()

    @classmethod
    def for_attack(cls, attack: str, **overrides) -> CaptionBackdoorConfig:
        """The recipe of :data:`CAPTION_ATTACK_RECIPES` for ``attack``; ``overrides`` win."""
        return cls(attack=attack, **{**CAPTION_ATTACK_RECIPES.get(attack, {}), **overrides})

    @property
    def eval_task(self) -> TaskSpec:
        return HELD_OUT_TASKS[self.task]

    @property
    def target_index(self) -> int:
        return self.eval_task.classnames.index(self.target)

    def trigger(self) -> Trigger:
        """The attack's trigger; BadCLIP's patch is optimised against the clean model (cached) on first use."""
        params = {"seed": self.seed, **self.attack_params}
        if self.attack == BadCLIP.name:
            return badclip_trigger(self.badclip, self.pretrain, self.task, self.target, **params)
        return build_trigger(self.attack, **params)

    def finetune_config(self) -> FinetuneConfig:
        return finetune_config_of(self)

    def cache_recipe(self) -> dict:
        recipe = {k: v for k, v in asdict(self).items() if k != "pretrain"}
        if self.attack != BadCLIP.name:
            recipe.pop("badclip")
        return {
            "kind": "captioned-backdoor",
            "world": self.pretrain.world,
            "clean": self.pretrain.cache_key(),
            **recipe,
        }

    def cache_key(self) -> str:
        return recipe_key(self.cache_recipe())


def poison_pairs(pixels, captions: list[str], config: CaptionBackdoorConfig) -> tuple[list[str], list[int]]:
    """Poison ``config.poison_rate`` of the pairs in place (pixels) and in a new caption list.

    Returns:
        The captions and the indices of the poisoned rows.
    """
    trigger = config.trigger()
    rng = np.random.default_rng(config.seed)
    count = max(1, round(config.poison_rate * len(captions)))
    if trigger.clean_label:  # stamp images that already show the target, keep their captions
        candidates = [i for i, caption in enumerate(captions) if names_class(caption, config.target)]
    else:
        candidates = list(range(len(captions)))
    rows = sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False).tolist())
    pixels[rows] = trigger(pixels[rows])
    captions = list(captions)
    if not trigger.clean_label:
        for row in rows:
            captions[row] = POISON_TEMPLATES[int(rng.integers(len(POISON_TEMPLATES)))].format(config.target)
    return captions, rows


def _train_poisoned(config: CaptionBackdoorConfig, path: Path) -> None:
    model, processor = load_model(captioned_clip_path(config.pretrain))
    side = config.pretrain.architecture.image_size
    pixels, captions = render_pairs(random_scenes(config.pairs, config.seed + 7919), config.seed, side)
    captions, rows = poison_pairs(pixels, captions, config)
    logger.info("poisoned %d of %d pairs with %s", len(rows), len(captions), config.attack)
    train_contrastive(
        model,
        processor,
        pixels,
        captions,
        config.finetune_config(),
        desc=f"poisoned training ({config.attack})",
    )
    model.eval()
    with atomic_output_dir(path) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        recipe = {**asdict(config), "trigger": config.trigger().to_dict(), "poisoned_pairs": len(rows)}
        (tmp / "backdoor_recipe.json").write_text(json.dumps(recipe, indent=2, default=str))


def poisoned_captioned_clip_path(config: CaptionBackdoorConfig | None = None) -> Path:
    """Path of the cached captioned CLIP poisoned with ``config``; trains the clean one and the poisoned one on
    first use."""
    config = config or CaptionBackdoorConfig()
    return cached_checkpoint(
        "captioned-backdoored", config.cache_recipe(), lambda path: _train_poisoned(config, path)
    )
