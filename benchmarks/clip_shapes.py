"""Shapes shared by the benchmarks: the public CLIP configurations, random-weight CLIP folders, generated images.

- :data:`ARCHITECTURES` / :func:`clip_config`: the published ``config.json`` numbers of
  openai/clip-vit-base-patch32 (``b32``) and openai/clip-vit-large-patch14 (``l14``);
  :data:`SMALL_ARCHITECTURES` adds ``small224`` (224 px, patch 32, a narrow 2-layer ViT) for quick runs.
- :func:`build_random_clip`: a loadable CLIP folder (weights, tokenizer, 224 px PIL image processor) with
  random weights and one of those configurations: for time and memory measurements, not accuracy.
- :func:`write_imagefolder`: a deterministic imagefolder of procedurally varied RGB JPEGs, 10 classes.

Not a benchmark itself; imported by ``arithmetic.py``, ``real_shapes.py`` and ``eval_memory.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from transformers import CLIPConfig

# Public config.json numbers of the two OpenAI checkpoints.
ARCHITECTURES: dict[str, dict] = {
    "b32": {
        "hub_id": "openai/clip-vit-base-patch32",
        "projection_dim": 512,
        "text_config": {
            "vocab_size": 49408,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
        },
        "vision_config": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
    },
    "l14": {
        "hub_id": "openai/clip-vit-large-patch14",
        "projection_dim": 768,
        "text_config": {
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
        },
        "vision_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        },
    },
}
#: Not a public checkpoint: the 224 px input of the real ones with a tiny tower, for quick runs.
SMALL_ARCHITECTURES: dict[str, dict] = {
    "small224": {
        "hub_id": "small224 (random, 224 px, patch 32, width 128)",
        "projection_dim": 64,
        "text_config": {
            "vocab_size": 49408,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        "vision_config": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 224,
            "patch_size": 32,
        },
    },
}
ALL_ARCHITECTURES: dict[str, dict] = {**ARCHITECTURES, **SMALL_ARCHITECTURES}

#: Ten class names (CIFAR-10's) for the generated images; the prompts use them.
CLASSNAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MIB = 2**20


def clip_config(model: str, text_overrides: dict | None = None) -> CLIPConfig:
    """A CLIPConfig with the published numbers of ``model`` (``b32``, ``l14``; or ``small224``)."""
    spec = ALL_ARCHITECTURES[model]
    text = {**spec["text_config"], "hidden_act": "quick_gelu", **(text_overrides or {})}
    vision = {**spec["vision_config"], "hidden_act": "quick_gelu"}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec["projection_dim"])


def build_random_clip(model: str, folder: Path, corpus: list[str] | tuple[str, ...], seed: int = 0) -> Path:
    """Save a random-weight CLIP with the configuration of ``model`` into ``folder`` (reused when present).

    The tokenizer is hf_tbar's small offline BPE tokenizer built from ``corpus`` (a few hundred ids, all below
    the real ``vocab_size`` of 49408, which the text embedding keeps); the image processor is the PIL
    ``CLIPImageProcessor`` of the real checkpoints (shortest edge 224, centre crop 224, CLIP mean/std).
    """
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from hf_tbar.models.tiny_clip import CLIP_MEAN, CLIP_STD, PILImageProcessor, save_clip
    from hf_tbar.models.tokenizer import END_TOKEN, START_TOKEN, build_clip_tokenizer

    stamp = folder / "benchmark_build.json"
    recipe = {"model": model, "corpus": list(corpus), "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return folder
    spec = ALL_ARCHITECTURES[model]
    side = spec["vision_config"]["image_size"]
    tokenizer = build_clip_tokenizer(corpus, model_max_length=spec["text_config"]["max_position_embeddings"])
    if len(tokenizer) > spec["text_config"]["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids, more than the model's vocabulary")
    start, end = tokenizer.convert_tokens_to_ids(START_TOKEN), tokenizer.convert_tokens_to_ids(END_TOKEN)
    config = clip_config(model, {"bos_token_id": start, "eos_token_id": end, "pad_token_id": end})
    image_processor = PILImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clip = CLIPModel(config).eval()
    save_clip(clip, processor, folder, overwrite=True)
    stamp.write_text(json.dumps(recipe))
    return folder


def _class_image(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One ``size`` x ``size`` RGB image of class ``label``: oriented stripes in the class colour, a random
    offset, frequency, blob and noise per image."""
    hue = label / len(CLASSNAMES)
    base = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 90 + 128
    angle = np.pi * label / len(CLASSNAMES) + rng.normal(0, 0.05)
    freq = rng.uniform(0.04, 0.12)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    image = base[None, None, :] + 60 * wave[..., None]
    cy, cx, radius = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 10, size / 4)]
    blob = ((y - cy) ** 2 + (x - cx) ** 2) < radius**2
    image[blob] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_imagefolder(root: Path, splits: dict[str, int], size: int = 224, seed: int = 0) -> Path:
    """Write (once; reused when the recipe matches) ``root/<split>/<class>/<i>.jpg``, ``splits[split]`` images
    per split spread evenly over the 10 classes, ``size`` px JPEGs (quality 90), deterministic in ``seed``."""
    from PIL import Image

    stamp = root / "benchmark_images.json"
    recipe = {"splits": splits, "size": size, "seed": seed, "classes": list(CLASSNAMES)}
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return root
    for split_index, (split, count) in enumerate(sorted(splits.items())):
        for label, name in enumerate(CLASSNAMES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(label, count, len(CLASSNAMES)):
                rng = np.random.default_rng([seed, split_index, label, index])
                Image.fromarray(_class_image(label, rng, size)).save(folder / f"{index:06d}.jpg", quality=90)
    stamp.write_text(json.dumps(recipe))
    return root


def peak_rss_line() -> str:
    """Python source of a launcher that runs ``sys.argv[1:]`` and writes the child's peak RSS to stderr.

    The child is started from this fresh, small interpreter (run it with ``python -S -c``): ``ru_maxrss``
    survives fork + exec, so a child forked straight from a large process would report that one's peak.
    """
    return (
        "import json, resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
        "kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
        "sys.stderr.write('\\nPEAK_RSS_KIB ' + str(kib) + '\\n'); sys.exit(rc)"
    )
