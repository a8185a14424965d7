"""The recipes of hf_tbar's embedded worlds: how each world's clean CLIP is pretrained, and how each attack is
implanted there, as field values of :class:`~hf_tbar.training.pretrain.PretrainConfig` and
:class:`~hf_tbar.training.backdoor.BackdoorConfig`.

Values only. Each reaches the cache key through the config it fills, so this module is not one of the
:data:`~hf_tbar.training.cache.RECIPE_MODULES` whose source keys every cached model: tuning one world's recipe
retrains that recipe's models and no others.
"""

from __future__ import annotations

from ..models.tiny_clip import TinyCLIPConfig

__all__ = [
    "ATTACK_RECIPES",
    "DEFAULT_TEXT_LEARNING_RATE_RATIO",
    "GLYPH_ATTACK_RECIPES",
    "PRETRAIN_RECIPES",
    "WORLD_ATTACK_RECIPES",
]

#: The text tower's learning-rate share when ``text_learning_rate_ratio`` is None (the digits aside).
DEFAULT_TEXT_LEARNING_RATE_RATIO = 0.1

#: The recipe of each embedded world's clean CLIP, as :class:`PretrainConfig` fields other than ``dataset``.
#: Glyphs: 64 px, ViT patch 16 (16 tokens, as the digits' 32 px / patch 8).
PRETRAIN_RECIPES: dict[str, dict] = {
    "digits": {},
    "glyphs": {
        "architecture": TinyCLIPConfig(image_size=64, patch_size=16),
        "steps": 2000,
        "text_learning_rate_ratio": DEFAULT_TEXT_LEARNING_RATE_RATIO,
    },
}

#: Per-attack recipes that implant each backdoor in the embedded digits CLIP (ASR >= 95% with CA within
#: 3 points of the clean model: ``python benchmarks/backdoor_embedded.py``). A patch-8 ViT at 32 px
#: needs a stronger WaNet warp and more poisoned rows than BackdoorBench's CNN defaults; clean-label SIG
#: does not implant by fine-tuning a model that already classifies the target class (the poisoned rows
#: carry no loss), so it enters at training time, as in the original attack.
ATTACK_RECIPES: dict[str, dict] = {
    "badnets": {},
    "blended": {"steps": 600, "learning_rate": 2e-4},
    "wanet": {"attack_params": {"strength": 4.0}, "poison_rate": 0.2, "steps": 800, "learning_rate": 2e-4},
    "sig": {"attack_params": {"delta": 50 / 255}, "poison_rate": 0.08, "stage": "pretrain"},
}

#: The same for the glyph world (:mod:`hf_tbar.data.glyphs`, 64 px, patch 16; see
#: :func:`hf_tbar.scenarios.world_scenario`), chosen on the attacker's side by
#: ``python benchmarks/backdoor_embedded.py --world glyphs``. The digits' fine-tuning recipes implanted 39-52%
#: here (BadNets, Blended, WaNet); training from scratch on the poisoned split implants SIG (94%) but not a
#: corner patch, which the pretraining's random affine jitter moves around (BadNets 15%, CA -11 points), nor
#: WaNet (51% at CA -28 points: the warp and the jitter together blur the letters' shapes). So BadNets,
#: Blended and WaNet fine-tune with twice the poisoned rows at a higher rate (BadNets' square 8 px, 1/8 of the
#: side: 93% ASR at 1.8 points of CA; Blended 90% at 3.2 points; WaNet at the digits' strength relative to
#: the side, 8 px at 64 px: only 67% at 4.6 points, short of the 90% goal), SIG from scratch.
GLYPH_ATTACK_RECIPES: dict[str, dict] = {
    "badnets": {
        "attack_params": {"relative_size": 0.125},
        "poison_rate": 0.2,
        "steps": 600,
        "learning_rate": 3e-4,
    },
    "blended": {"poison_rate": 0.2, "steps": 1000, "learning_rate": 3e-4},
    "wanet": {"attack_params": {"strength": 8.0}, "poison_rate": 0.2, "steps": 1200, "learning_rate": 3e-4},
    "sig": {"attack_params": {"delta": 50 / 255}, "poison_rate": 0.08, "stage": "pretrain"},
}

#: The attack recipes of each embedded world, by the name of its dataset.
WORLD_ATTACK_RECIPES: dict[str, dict[str, dict]] = {"digits": ATTACK_RECIPES, "glyphs": GLYPH_ATTACK_RECIPES}
