"""Shared test constants: the one micro CLIP architecture every fast test builds."""

from hf_tbar.tiny_clip import TinyCLIPConfig

#: A 1-layer, width-32 CLIP on 32 px images: built offline in milliseconds.
MICRO = TinyCLIPConfig(
    vision_layers=1,
    text_layers=1,
    vision_width=32,
    text_width=32,
    vision_heads=2,
    text_heads=2,
    projection_dim=16,
)
