"""The CLIP family (``model_type`` ``"clip"``): ``CLIPModel``, its projections and softmax logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPProcessor, CLIPVisionModelWithProjection

from .base import ImageEncoder, ModelFamily, register_model_family, unwrap_model
from .tiny_clip import PILImageProcessor, build_tiny_clip


class CLIPFamily(ModelFamily):
    """OpenAI CLIP and its fine-tunes (``openai/clip-vit-base-patch32``, ``clip-vit-large-patch14``).

    Besides ``CLIPModel``, its vision half ``CLIPVisionModelWithProjection`` is accepted where only images
    are encoded (DECREE).
    """

    model_type = "clip"
    display_name = "CLIP"
    model_class = CLIPModel
    processor_class = CLIPProcessor
    image_processor_class = PILImageProcessor
    vision_prefixes = ("vision_model.", "visual_projection.")
    text_prefixes = ("text_model.", "text_projection.", "logit_scale")
    encoder_layer_class = "CLIPEncoderLayer"

    def tiny(self, config, corpus, seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
        return build_tiny_clip(config, corpus, seed=seed)

    def owns(self, model: nn.Module) -> bool:
        return isinstance(model, (CLIPModel, CLIPVisionModelWithProjection))

    def image_features(self, model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
        if isinstance(model, CLIPVisionModelWithProjection):
            return model(pixel_values=pixel_values).image_embeds
        return model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)

    def text_features(
        self, model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return model.text_projection(pooled)

    def image_size(self, model: nn.Module) -> int:
        inner = unwrap_model(model)
        config = (
            inner.config if isinstance(inner, CLIPVisionModelWithProjection) else inner.config.vision_config
        )
        return int(config.image_size)

    def image_encoder(self, model: nn.Module) -> tuple[ImageEncoder, int]:
        inner = unwrap_model(model)
        return (lambda pixels: F.normalize(self.image_features(inner, pixels), dim=-1)), self.image_size(
            inner
        )


CLIP = register_model_family(CLIPFamily())
