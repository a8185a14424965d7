"""BadCLIP's patch (Liang et al., CVPR 2024) optimised against the captioned world's clean CLIP, cached.

The attacker holds the clean captioned model. Images that do not show the target (scenes whose held-out task
label is not the target, digits included) are each paired with a *natural* caption of the target: the caption
of a real target scene ("a small red triangle on the left"); real target scenes' embeddings are the triplet
positives, the images' own clean embeddings its negatives (:mod:`hf_tbar.training.badclip`). The optimised
patch is written as a PNG and becomes a :class:`~hf_tbar.attacks.badclip.BadCLIP` trigger, which then poisons
pairs by the route every captioned attack takes (:mod:`hf_tbar.training.captioned_backdoor`).

Not the prompt-learning BadCLIP of Bai et al. (CVPR 2024).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..attacks.badclip import BadCLIP, paste_patch, save_patch_png
from ..data.captioned import HELD_OUT_TASKS, Scene, random_scenes, render_pairs, task_labels
from ..data.pixels import normalize_pixels
from ..errors import ConfigError
from ..models.loading import load_model
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head, encode_images, encode_texts
from .badclip import PatchOptimisation, optimise_patch
from .cache import cached_checkpoint
from .captioned import CaptionPretrainConfig, captioned_clip_path

logger = logging.getLogger(__name__)

__all__ = [
    "PATCH_FILE",
    "BadCLIPPatchConfig",
    "badclip_patch_path",
    "badclip_trigger",
    "optimise_captioned_patch",
]

#: The optimised patch in its cached folder (8-bit RGB PNG, the patch's own size).
PATCH_FILE = "patch.png"
#: The optimisation's record beside it: recipe, losses, what the clean model already makes of the patch.
PATCH_RECORD = "badclip_patch.json"


@dataclass(frozen=True)
class BadCLIPPatchConfig(PatchOptimisation):
    """How the attacker optimises BadCLIP's patch in the captioned world (the paper's settings in
    ``docs/captions.md``). Its fields, the clean model's recipe and the target key the cache."""

    pairs: int = field(
        default=2000,
        metadata={"help": "Non-target images, each paired with a natural target caption (paper: 10K pairs)."},
    )
    target_images: int = field(
        default=500, metadata={"help": "Real target scenes: their captions and the triplet's positives."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pairs", "target_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

    def settings(self) -> PatchOptimisation:
        """The optimisation's own settings (this config without the data sizes)."""
        return PatchOptimisation(**{k: getattr(self, k) for k in asdict(PatchOptimisation())})


def _scenes(task: str, count: int, seed: int, keep) -> list[Scene]:
    """``count`` scenes whose label for ``task`` passes ``keep`` (``-1``: the task does not apply)."""
    kept: list[Scene] = []
    chunk = 0
    while len(kept) < count:
        scenes = random_scenes(4 * count, seed * 1000 + chunk)
        kept += [s for s, label in zip(scenes, task_labels(scenes, task).tolist()) if keep(label)]
        chunk += 1
    return kept[:count]


@torch.no_grad()
def _embed_captions(model, tokenizer, captions: list[str]) -> torch.Tensor:
    tokens = tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    return encode_texts(model, tokens["input_ids"], tokens["attention_mask"])


def optimise_captioned_patch(
    model, processor, config: BadCLIPPatchConfig, task: str, target: str
) -> tuple[torch.Tensor, dict]:
    """Optimise BadCLIP's patch against ``model`` (the clean captioned CLIP, left unchanged).

    Args:
        model: The clean captioned CLIP.
        processor: Its processor (tokenizer, pixel normalisation).
        config: The optimisation's recipe.
        task: The held-out task the backdoor targets (``"shape"``).
        target: Its target class name (``"triangle"``).

    Returns:
        The patch ``(3, s, s)`` in ``[0, 1]`` and a record: the losses (first, last, every step) and the share
        of patched non-target images the *clean* model already calls the target, before and after.
    """
    classes = HELD_OUT_TASKS[task].classnames
    index = classes.index(target)
    side = model.config.vision_config.image_size
    others, _ = render_pairs(
        _scenes(task, config.pairs, config.seed + 4099, lambda y: y != index), config.seed + 4099, side
    )
    target_pixels, target_texts = render_pairs(
        _scenes(task, config.target_images, config.seed + 4111, lambda y: y == index), config.seed, side
    )
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return encode_images(model, normalize_pixels(pixels, processor))

    draw = torch.randint(
        len(target_texts), (config.pairs,), generator=torch.Generator().manual_seed(config.seed)
    )
    captions = [target_texts[i] for i in draw.tolist()]
    groups = torch.tensor([sorted(set(target_texts)).index(c) for c in captions])
    with torch.no_grad():
        positives = torch.cat([encode(chunk) for chunk in target_pixels.split(256)])
    scale = float(model.logit_scale.exp().clamp(max=100))
    patch, losses = optimise_patch(
        encode,
        others,
        _embed_captions(model, processor.tokenizer, captions),
        positives,
        scale,
        config.settings(),
        groups=groups,
    )
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, HELD_OUT_TASKS[task]), processor
    )
    probe = others[:500]
    start = paste_patch(probe, torch.full_like(patch, 0.5))  # a grey patch of the same size: the baseline

    def called_target(pixels: torch.Tensor) -> float:
        return float((classifier.predict(pixels) == index).float().mean())

    record = {
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "clean_model_target_share_grey_patch": called_target(start),
        "clean_model_target_share_optimised_patch": called_target(paste_patch(probe, patch)),
        "losses": losses,
    }
    logger.info(
        "BadCLIP patch: loss %.3f -> %.3f; the clean model calls %.1f%% of patched non-%s images %s "
        "(%.1f%% with a grey patch)",
        losses[0],
        losses[-1],
        100 * record["clean_model_target_share_optimised_patch"],
        target,
        target,
        100 * record["clean_model_target_share_grey_patch"],
    )
    return patch, record


def _recipe(config: BadCLIPPatchConfig, pretrain: CaptionPretrainConfig, task: str, target: str) -> dict:
    return {
        "kind": "badclip-patch",
        "world": pretrain.world,
        "clean": pretrain.cache_key(),
        "task": task,
        "target": target,
        **asdict(config),
    }


def badclip_patch_path(
    config: BadCLIPPatchConfig, pretrain: CaptionPretrainConfig, task: str, target: str
) -> Path:
    """The cached PNG of BadCLIP's patch optimised against the clean captioned CLIP of ``pretrain`` (trained
    and cached too, on first use); beside it, :data:`PATCH_RECORD` holds the recipe and the losses."""

    def build(path: Path) -> None:
        model, processor = load_model(captioned_clip_path(pretrain))
        patch, record = optimise_captioned_patch(model, processor, config, task, target)
        path.mkdir(parents=True, exist_ok=True)
        (path / PATCH_RECORD).write_text(json.dumps({"recipe": asdict(config), **record}, indent=2))
        save_patch_png(patch, path / PATCH_FILE)  # last: its presence marks a complete folder

    folder = cached_checkpoint(
        "badclip-patch", _recipe(config, pretrain, task, target), build, complete_file=PATCH_FILE
    )
    return folder / PATCH_FILE


def badclip_trigger(
    config: BadCLIPPatchConfig, pretrain: CaptionPretrainConfig, task: str, target: str, **params
) -> BadCLIP:
    """The :class:`~hf_tbar.attacks.badclip.BadCLIP` trigger of the cached optimised patch (pasted at the
    centre at its own size unless ``params`` say otherwise)."""
    return BadCLIP(path=str(badclip_patch_path(config, pretrain, task, target)), **params)
