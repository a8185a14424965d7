"""Tiny CLIP checkpoints built offline from a config: model, tokenizer and image processor in one folder.

:data:`PILImageProcessor` (the PIL image processor, no torchvision needed) is also the CLIP family's
``image_processor_class``: the family module builds on this one, not the other way round.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

try:  # transformers >= 5.x: CLIPImageProcessor is the torchvision backend, the PIL one has its own class
    from transformers import CLIPImageProcessorPil as PILImageProcessor
except ImportError:  # older releases: CLIPImageProcessor is the PIL processor
    from transformers import CLIPImageProcessor as PILImageProcessor

from ..io import atomic_output_dir
from .tokenizer import END_TOKEN, START_TOKEN, build_clip_tokenizer

__all__ = ["CLIP_MEAN", "CLIP_STD", "PILImageProcessor", "TinyCLIPConfig", "build_tiny_clip", "save_clip"]

logger = logging.getLogger(__name__)

# CLIP's published normalisation constants (openai/clip-vit-base-patch32's preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyCLIPConfig:
    """Architecture of a tiny CLIP. Defaults: ~1M parameters, ViT 4 layers / width 128 / patch 8 on 32 px."""

    image_size: int = field(default=32, metadata={"help": "Input side of the vision tower, in pixels."})
    patch_size: int = field(default=8, metadata={"help": "ViT patch side, in pixels."})
    vision_layers: int = field(default=4, metadata={"help": "Transformer layers of the vision tower."})
    vision_width: int = field(default=128, metadata={"help": "Hidden size of the vision tower."})
    vision_heads: int = field(default=4, metadata={"help": "Attention heads of the vision tower."})
    text_layers: int = field(default=2, metadata={"help": "Transformer layers of the text tower."})
    text_width: int = field(default=64, metadata={"help": "Hidden size of the text tower."})
    text_heads: int = field(default=2, metadata={"help": "Attention heads of the text tower."})
    projection_dim: int = field(default=64, metadata={"help": "Size of the shared embedding space."})
    max_text_length: int = field(default=32, metadata={"help": "Longest prompt, in tokens."})

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TinyCLIPConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.vision_width % self.vision_heads or self.text_width % self.text_heads:
            raise ValueError("vision_width / text_width must be divisible by their numbers of heads")

    def to_clip_config(self, vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPConfig:
        text, vision = self.tower_configs(vocab_size, bos_token_id, eos_token_id)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.projection_dim)

    def tower_configs(self, vocab_size: int, bos_token_id: int, eos_token_id: int) -> tuple[dict, dict]:
        """The text and vision tower sizes as transformers config keyword arguments (any family's)."""
        text = dict(
            vocab_size=vocab_size,
            hidden_size=self.text_width,
            intermediate_size=4 * self.text_width,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_text_length,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
        )
        vision = dict(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.vision_width,
            intermediate_size=4 * self.vision_width,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
        )
        return text, vision


def build_tiny_clip(
    config: TinyCLIPConfig, corpus: Iterable[str], seed: int = 0
) -> tuple[CLIPModel, CLIPProcessor]:
    """A randomly initialised CLIP and a matching processor, no download involved.

    Args:
        config: The architecture.
        corpus: Texts (class names, templates) the tokenizer must encode with whole-word tokens.
        seed: Seed of the weight initialisation.
    """
    tokenizer = build_clip_tokenizer(corpus, model_max_length=config.max_text_length)
    clip_config = config.to_clip_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids(START_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
    )
    image_processor = PILImageProcessor(  # the PIL processor: no torchvision needed, nor warned about
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(clip_config)
    model.eval()
    return model, processor


def save_clip(
    model: CLIPModel, processor: CLIPProcessor, output_dir: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Save model (safetensors), tokenizer and image processor into ``output_dir`` atomically.

    The folder loads with ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained``.
    Nothing is left at ``output_dir`` if saving fails.
    """
    with atomic_output_dir(output_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    logger.info("saved CLIP checkpoint to %s", output_dir)
    return Path(output_dir)
