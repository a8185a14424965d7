"""The SigLIP family (``model_type`` ``"siglip"``): ``SiglipModel``, sigmoid logits with a bias."""

from __future__ import annotations

import torch
from transformers import SiglipModel, SiglipProcessor

from .base import ModelFamily, register_model_family, unwrap_model
from .tiny_siglip import PILImageProcessor, build_tiny_siglip


class SiglipFamily(ModelFamily):
    """Google SigLIP (``google/siglip-base-patch16-224``): the towers pool their own outputs (no separate
    projection), prompts are padded to the tokenizer's full length as in training, the text tower reads no
    attention mask, and the logits carry a learnt bias (``scale * cos + bias``, read through a sigmoid).

    LoRA never targets the attention-pooling head's ``nn.MultiheadAttention.out_proj``, whose forward reads
    the weight directly and would bypass the LoRA adapter.
    """

    model_type = "siglip"
    display_name = "SigLIP"
    model_class = SiglipModel
    processor_class = SiglipProcessor
    image_processor_class = PILImageProcessor
    vision_prefixes = ("vision_model.",)
    text_prefixes = ("text_model.", "logit_scale", "logit_bias")
    encoder_layer_class = "SiglipEncoderLayer"
    text_padding = "max_length"
    tokenizer_files = (("tokenizer.json",), ("spiece.model",), ("vocab.json", "merges.txt"))
    lora_excluded = ("head.attention",)

    def tiny(self, config, corpus, seed: int = 0) -> tuple[SiglipModel, SiglipProcessor]:
        return build_tiny_siglip(config, corpus, seed=seed)

    def image_features(self, model: SiglipModel, pixel_values: torch.Tensor) -> torch.Tensor:
        return model.vision_model(pixel_values=pixel_values).pooler_output

    def text_features(
        self, model: SiglipModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return model.text_model(input_ids=input_ids).pooler_output

    def logit_bias(self, model) -> torch.Tensor:
        return unwrap_model(model).logit_bias


SIGLIP = register_model_family(SiglipFamily())
