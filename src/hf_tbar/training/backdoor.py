"""Implanting a backdoor: fine-tune a CLIP's vision tower on a poisoned split (single-task setting)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch.nn.functional as F
from datasets import Dataset
from torch.utils.data import TensorDataset
from transformers import CLIPModel

from ..attacks import Trigger, build_trigger, poison_dataset
from ..attacks.base import check_fraction
from ..data.embedded import TaskSpec, load_embedded_dataset
from ..data.pixels import dataset_to_tensors
from ..errors import ConfigError
from ..io import atomic_output_dir
from ..models import family_of
from ..models.loading import load_model
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head
from .arguments import finetune_config_of
from .cache import cached_checkpoint
from .loop import FinetuneConfig, run_training
from .pretrain import PretrainConfig, pretrain_clip, pretrained_clip_path
from .recipes import WORLD_ATTACK_RECIPES

logger = logging.getLogger(__name__)

BACKDOOR_RECIPE_FILE = "backdoor_recipe.json"

#: Where the poison enters: the attacker fine-tunes a clean CLIP on poisoned data (the seed paper's
#: single-task setting), or the model is trained from scratch on poisoned data (the embedded pretraining).
STAGES = ("finetune", "pretrain")


@dataclass(frozen=True)
class BackdoorConfig:
    """How the attacker poisons and fine-tunes. The default parameters follow BackdoorBench."""

    attack: str = field(
        default="badnets", metadata={"help": "Registered trigger name (badnets, blended, wanet, sig)."}
    )
    attack_params: dict = field(
        default_factory=dict, metadata={"help": "Trigger parameters, e.g. {'alpha': 0.2}."}
    )
    target: int = field(default=0, metadata={"help": "Target class index of the all-to-one attack."})
    poison_rate: float = field(
        default=0.1, metadata={"help": "Share of the training split poisoned, in (0, 1]."}
    )
    steps: int = field(default=300, metadata={"help": "Fine-tuning steps of the vision tower."})
    batch_size: int = field(default=64, metadata={"help": "Images per step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    seed: int = field(default=0, metadata={"help": "Seed of the poisoned-row choice and of training."})
    stage: str = field(
        default="finetune",
        metadata={
            "help": "'finetune': fine-tune the clean CLIP's vision tower on poisoned data (steps, batch_size, "
            "learning_rate apply); 'pretrain': train the CLIP from scratch on poisoned data with the pretraining recipe."
        },
    )

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {self.stage!r}")
        self.trigger()  # unknown attack or bad parameters fail here, naming the value
        check_fraction(self.poison_rate, "poison_rate")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise ConfigError(f"target must be a non-negative class index, got {self.target!r}")
        self.finetune_config()

    @classmethod
    def for_attack(
        cls,
        attack: str,
        attack_params: dict | None = None,
        target: int = 0,
        dataset: str = "digits",
        **overrides,
    ) -> BackdoorConfig:
        """The recipe of ``attack`` in the embedded world ``dataset`` (:data:`~hf_tbar.training.recipes.ATTACK_RECIPES` for the
        digits, :data:`~hf_tbar.training.recipes.GLYPH_ATTACK_RECIPES` for the glyphs); ``attack_params`` and ``overrides`` win.

        Raises:
            ConfigError: ``dataset`` is not a world with recipes (:data:`WORLD_ATTACK_RECIPES`).
        """
        if dataset not in WORLD_ATTACK_RECIPES:
            raise ConfigError(
                f"no attack recipes for the dataset {dataset!r}; worlds with recipes: {sorted(WORLD_ATTACK_RECIPES)}"
            )
        recipe = dict(WORLD_ATTACK_RECIPES[dataset].get(attack, {}))
        params = {**recipe.pop("attack_params", {}), **(attack_params or {})}
        return cls(attack=attack, attack_params=params, target=target, **{**recipe, **overrides})

    def trigger(self) -> Trigger:
        return build_trigger(self.attack, **{"seed": self.seed, **self.attack_params})

    def finetune_config(self) -> FinetuneConfig:
        return finetune_config_of(self, warmup_steps=10)

    def to_dict(self, image_size: int | None = None) -> dict:
        """The recipe; ``image_size`` (pixels) resolves sizes relative to the input (BadNets) to pixels."""
        trigger = self.trigger()
        if image_size is not None:
            trigger = trigger.resolved(image_size, image_size)
        return {**asdict(self), "trigger": trigger.to_dict()}


def vision_parameters(model: CLIPModel) -> list:
    """Freeze everything but the vision tower and its projection; return the trainable parameters."""
    for param in model.parameters():
        param.requires_grad_(False)
    params = family_of(model).vision_parameters(model)
    for param in params:
        param.requires_grad_(True)
    return params


def classification_loss(classifier: ZeroShotClassifier, batch: tuple):
    """Cross-entropy of the zero-shot head on a ``(pixels, labels)`` batch."""
    pixels, labels = batch
    return F.cross_entropy(classifier(pixels), labels)


def backdoor_clip(
    model: CLIPModel, processor, task: TaskSpec, train: Dataset, config: BackdoorConfig
) -> tuple[CLIPModel, Dataset]:
    """Poison ``train`` with ``config``'s trigger and fine-tune the vision tower on it, in place.

    Returns:
        The backdoored model (the same object) and the poisoned dataset.
    """
    task.check_label(config.target)
    poisoned = poison_dataset(train, config.trigger(), config.target, config.poison_rate, seed=config.seed)
    pixels, labels = dataset_to_tensors(poisoned, processor)
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, task), processor
    )
    params = vision_parameters(model)
    run_training(
        classifier,
        params,
        TensorDataset(pixels, labels),
        classification_loss,
        config.finetune_config(),
        desc=f"backdooring ({config.attack})",
    )
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()
    return model, poisoned


def backdoored_clip_path(
    backdoor: BackdoorConfig | None = None, pretrain: PretrainConfig | None = None
) -> Path:
    """Path of a cached backdoored tiny CLIP (the clean one fine-tuned on a poisoned train split).

    The folder is a plain CLIP checkpoint plus ``backdoor_recipe.json`` (trigger, target, rate).
    Trains the clean model and the backdoor on first use.
    """
    backdoor = backdoor or BackdoorConfig()
    pretrain = pretrain or PretrainConfig()
    recipe = backdoor.to_dict(image_size=pretrain.architecture.image_size)

    def build(path: Path) -> None:
        dataset, task = load_embedded_dataset(
            pretrain.dataset, image_size=pretrain.architecture.image_size, seed=pretrain.seed
        )
        if backdoor.stage == "pretrain":
            task.check_label(backdoor.target)
            poisoned = poison_dataset(
                dataset["train"],
                backdoor.trigger(),
                backdoor.target,
                backdoor.poison_rate,
                seed=backdoor.seed,
            )
            # The poisoned rows are the world's own: trained as its clean model is (the text tower's rate).
            recipe_of_world = replace(pretrain, text_learning_rate_ratio=pretrain.text_ratio(own_rows=False))
            with tempfile.TemporaryDirectory(prefix="hf_tbar-backdoor-") as scratch:
                model, processor = load_model(
                    pretrain_clip(
                        recipe_of_world,
                        Path(scratch) / "model",
                        train=poisoned,
                        task=task,
                        held_out=dataset["test"],
                    )
                )
        else:
            model, processor = load_model(pretrained_clip_path(pretrain))
            backdoor_clip(model, processor, task, dataset["train"], backdoor)
        with atomic_output_dir(path) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            written = {"backdoor": recipe, "pretrain": pretrain.to_dict(), "task": task.to_dict()}
            (tmp / BACKDOOR_RECIPE_FILE).write_text(json.dumps(written, indent=2))

    cache_recipe = {"kind": "backdoor", "world": pretrain.world, "clean": pretrain.cache_key(), **recipe}
    return cached_checkpoint("backdoored", cache_recipe, build)
