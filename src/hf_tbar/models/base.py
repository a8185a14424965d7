"""Model families: what hf_tbar needs to know about one kind of two-tower image-text model.

A family is registered once, keyed by the ``model_type`` of its ``config.json``; every call site asks the
family of the model at hand (:func:`family_of`) instead of testing its class. CLIP and SigLIP are built in;
a new family is one subclass of :class:`ModelFamily` and one :func:`register_model_family` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..errors import InputError

__all__ = [
    "MODEL_FAMILIES",
    "ModelFamily",
    "family_of",
    "get_model_family",
    "register_model_family",
    "unwrap_model",
]

#: ``model_type`` -> family; filled by :func:`register_model_family`.
MODEL_FAMILIES: dict[str, ModelFamily] = {}

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


class ModelFamily:
    """What hf_tbar knows of one family of image-text models (subclass it and register an instance).

    Class attributes:
        model_type: The ``config.json`` ``model_type`` the family is registered under (``"clip"``).
        display_name: Its name in messages and model cards (``"CLIP"``).
        model_class: The transformers class of the whole two-tower model (``CLIPModel``).
        processor_class: Its processor class, built from an image processor and a tokenizer.
        image_processor_class: The PIL image processor (no torchvision needed).
        vision_prefixes: State-dict prefixes of the trainable vision parameters (tower and projection).
        text_prefixes: State-dict prefixes of the text side (tower, projection, logit scale and bias).
        encoder_layer_class: The transformer layer class FSDP wraps (``fsdp_transformer_layer_cls_to_wrap``).
        text_padding: How prompts are padded (``"longest"``; SigLIP was trained on ``"max_length"``).
        tokenizer_files: Alternative sets of tokenizer files, one of which a checkpoint folder must hold.
        lora_excluded: Module-name fragments LoRA must not target (layers whose forward reads the weight
            directly, e.g. ``nn.MultiheadAttention``'s ``out_proj``).
    """

    model_type: ClassVar[str]
    display_name: ClassVar[str]
    model_class: ClassVar[type[PreTrainedModel]]
    processor_class: ClassVar[type]
    image_processor_class: ClassVar[type]
    vision_prefixes: ClassVar[tuple[str, ...]]
    text_prefixes: ClassVar[tuple[str, ...]]
    encoder_layer_class: ClassVar[str]
    text_padding: ClassVar[str] = "longest"
    tokenizer_files: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("tokenizer.json",),
        ("vocab.json", "merges.txt"),
    )
    lora_excluded: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ parameters
    def vision_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters of the vision tower and its projection (their ``requires_grad`` untouched)."""
        return [
            p for name, p in unwrap_model(model).named_parameters() if name.startswith(self.vision_prefixes)
        ]

    def lora_target_pattern(self, modules: Sequence[str]) -> str:
        """A PEFT ``target_modules`` regex selecting ``modules`` (e.g. ``q_proj``) in the vision tower only."""
        excluded = "".join(f"(?!.*{fragment})" for fragment in self.lora_excluded)
        return rf"^{excluded}.*vision_model\..*\.({'|'.join(modules)})$"

    def image_size(self, model: nn.Module) -> int:
        """The side of the square images the vision tower reads, in pixels."""
        return int(unwrap_model(model).config.vision_config.image_size)

    # ------------------------------------------------------------------ encoders
    def image_features(self, model: PreTrainedModel, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``(B, D)`` of normalised pixel values ``(B, 3, H, W)``."""
        raise NotImplementedError

    def text_features(
        self, model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Unnormalised text embeddings ``(N, D)`` of token ids ``(N, L)``."""
        raise NotImplementedError

    def encode_images(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``(B, D)`` (``model`` may be PEFT- or Accelerate-wrapped)."""
        return F.normalize(self.image_features(unwrap_model(model), pixel_values), dim=-1)

    def encode_texts(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised text embeddings ``(N, D)``."""
        return F.normalize(self.text_features(unwrap_model(model), input_ids, attention_mask), dim=-1)

    def image_encoder(self, model: nn.Module) -> tuple[ImageEncoder, int]:
        """``pixel_values -> normalised embeddings`` of ``model`` and its input side in pixels."""
        inner = unwrap_model(model)
        return (lambda pixel_values: self.encode_images(inner, pixel_values)), self.image_size(inner)

    def tokenize(self, tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids (and attention mask) of ``texts``, padded the way the family was trained."""
        return tokenizer(list(texts), padding=self.text_padding, truncation=True, return_tensors="pt")

    # ------------------------------------------------------------------ logits
    def logit_scale(self, model: nn.Module) -> torch.Tensor:
        """The inverse temperature ``exp(logit_scale)`` (a scalar tensor)."""
        return unwrap_model(model).logit_scale.exp()

    def logit_bias(self, model: nn.Module) -> torch.Tensor | None:
        """The logit bias (SigLIP), or ``None``."""
        return None

    def logits(self, model: nn.Module, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Image-text logits ``(B, C)`` of normalised embeddings ``(B, D)`` and ``(C, D)``; the scale (and
        bias) are detached: they are not trained by hf_tbar."""
        logits = self.logit_scale(model).detach() * image_embeds @ text_embeds.to(image_embeds.dtype).T
        bias = self.logit_bias(model)
        return logits if bias is None else logits + bias.detach()

    # ------------------------------------------------------------------ loading
    def build_processor(self, image_processor, tokenizer):
        """The family's processor around a PIL ``image_processor`` and a ``tokenizer``."""
        return self.processor_class(image_processor=image_processor, tokenizer=tokenizer)

    def tiny(self, config, corpus: Sequence[str], seed: int = 0) -> tuple[PreTrainedModel, Any]:
        """A randomly initialised model of ``config``'s sizes (a :class:`~hf_tbar.TinyCLIPConfig`) and its
        processor, built offline: what the family's contract test and the offline demos run on."""
        raise NotImplementedError(f"model family {self.model_type!r} has no offline tiny builder")

    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` (unwrapped) is this family's model."""
        return isinstance(model, self.model_class)


def register_model_family(family: ModelFamily) -> ModelFamily:
    """Register ``family`` under its ``model_type`` (one call per family).

    Raises:
        ValueError: the ``model_type`` is registered already, or a required attribute is missing.
    """
    required = (
        "model_type",
        "display_name",
        "model_class",
        "processor_class",
        "image_processor_class",
        "vision_prefixes",
    )
    missing = [
        name for name in (*required, "text_prefixes", "encoder_layer_class") if not hasattr(family, name)
    ]
    if missing:
        raise ValueError(f"model family {type(family).__name__} lacks {', '.join(missing)}")
    if family.model_type in MODEL_FAMILIES:
        raise ValueError(f"a model family is registered for model_type {family.model_type!r} already")
    MODEL_FAMILIES[family.model_type] = family
    return family


def get_model_family(model_type: str | None) -> ModelFamily:
    """The family registered for ``model_type``.

    Raises:
        InputError: no family is registered for it (names it and the registered ones).
    """
    if model_type not in MODEL_FAMILIES:
        raise InputError(
            f"model_type {model_type!r} is not supported: hf_tbar knows {', '.join(sorted(MODEL_FAMILIES))} "
            "(register another with hf_tbar.models.register_model_family)"
        )
    return MODEL_FAMILIES[model_type]


def unwrap_model(model: nn.Module) -> PreTrainedModel:
    """The registered two-tower model inside a PEFT or Accelerate wrapper (LoRA layers stay active).

    Raises:
        TypeError: ``model`` holds no model of a registered family.
    """
    inner = model
    while not any(family.owns(inner) for family in MODEL_FAMILIES.values()):
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif hasattr(inner, "module"):
            inner = inner.module
        else:
            known = ", ".join(family.model_class.__name__ for family in MODEL_FAMILIES.values())
            raise TypeError(f"expected a transformers image-text model ({known}), got {type(model).__name__}")
    return inner


def family_of(model: nn.Module) -> ModelFamily:
    """The family of ``model`` (possibly wrapped).

    Raises:
        TypeError: ``model`` is not a model of a registered family.
    """
    inner = unwrap_model(model)
    return next(family for family in MODEL_FAMILIES.values() if family.owns(inner))
