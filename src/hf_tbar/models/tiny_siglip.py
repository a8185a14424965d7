"""Tiny SigLIP checkpoints built offline (the second model family's test bed): model, tokenizer and PIL
image processor, from the same :class:`~hf_tbar.models.tiny_clip.TinyCLIPConfig` architecture numbers.

:data:`PILImageProcessor` is also the SigLIP family's ``image_processor_class``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import SiglipConfig, SiglipModel, SiglipProcessor

try:  # transformers >= 5.x: the PIL image processor has its own class
    from transformers import SiglipImageProcessorPil as PILImageProcessor
except ImportError:
    from transformers import SiglipImageProcessor as PILImageProcessor

from .tiny_clip import TinyCLIPConfig
from .tokenizer import END_TOKEN, START_TOKEN, build_clip_tokenizer

__all__ = ["build_tiny_siglip"]

#: SigLIP's published normalisation (google/siglip-base-patch16-224): pixels to [-1, 1].
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def siglip_config(
    config: TinyCLIPConfig, vocab_size: int, bos_token_id: int, eos_token_id: int
) -> SiglipConfig:
    """A :class:`~transformers.SiglipConfig` of ``config``'s sizes; the text head projects to the vision
    width (SigLIP has no separate projection: both towers end in the shared space)."""
    text, vision = config.tower_configs(vocab_size, bos_token_id, eos_token_id)
    text["projection_size"] = config.vision_width
    return SiglipConfig(text_config=text, vision_config=vision)


def build_tiny_siglip(config: TinyCLIPConfig, corpus: Iterable[str], seed: int = 0):
    """A randomly initialised :class:`~transformers.SiglipModel` and its ``SiglipProcessor``, offline.

    The tokenizer is hf_tbar's byte-level BPE built from ``corpus`` (a real SigLIP uses SentencePiece; the
    family pads prompts to the tokenizer's full length either way).

    Args:
        config: The architecture (``projection_dim`` is unused: SigLIP's space is the vision width).
        corpus: Texts (class names, templates) the tokenizer must encode with whole-word tokens.
        seed: Seed of the weight initialisation.
    """
    tokenizer = build_clip_tokenizer(corpus, model_max_length=config.max_text_length)
    model_config = siglip_config(
        config,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids(START_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
    )
    image_processor = PILImageProcessor(
        size={"height": config.image_size, "width": config.image_size},
        image_mean=list(SIGLIP_MEAN),
        image_std=list(SIGLIP_STD),
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SiglipModel(model_config)
    model.eval()
    return model, processor
