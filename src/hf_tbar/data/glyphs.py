"""An embedded glyph world: ten Greek capitals drawn stroke by stroke, deterministic, no font, no download.

Each RGB image holds one letter (delta, lambda, pi, ...) drawn as polylines: a random position, size,
rotation, slant, wobble of every stroke point and stroke width, in a random colour over a random background
texture (plain, noise, stripes, checks or a gradient) of another colour. The letters are drawn by hand here
rather than with a font, so the images are the same on every machine and every Pillow version. It is the
third image family of hf_tbar's embedded worlds, at 64 px by default (the digits are 8x8 scans upscaled to 32
px): a task a tiny CLIP can learn to well above 80% zero-shot accuracy, with shapes that overlap (delta and
lambda, pi and gamma, theta and phi) so that it is not solved by colour or position.
"""

from __future__ import annotations

import math

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from PIL import ImageDraw

from ..errors import InputError
from .embedded import EMBEDDED_DATASETS, TaskSpec

__all__ = ["BACKGROUNDS", "GLYPHS_TASK", "GLYPH_NAMES", "GLYPH_STROKES", "GLYPH_TEMPLATES", "load_glyphs"]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, points: int = 16) -> list:
    """Points of an elliptic arc from ``start`` to ``stop`` degrees (0 = right, 90 = down), in unit coordinates."""
    angles = np.linspace(math.radians(start), math.radians(stop), points)
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


#: Each glyph as polylines in the unit square (x right, y down); a closed stroke repeats its first point.
GLYPH_STROKES: dict[str, tuple[list[tuple[float, float]], ...]] = {
    "delta": ([(0.5, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.0)],),
    "lambda": ([(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)],),
    "pi": ([(0.0, 0.0), (1.0, 0.0)], [(0.2, 0.0), (0.2, 1.0)], [(0.8, 0.0), (0.8, 1.0)]),
    "sigma": ([(1.0, 0.05), (1.0, 0.0), (0.0, 0.0), (0.5, 0.5), (0.0, 1.0), (1.0, 1.0), (1.0, 0.95)],),
    "omega": ([(0.0, 1.0), (0.3, 1.0), *_arc(0.5, 0.45, 0.45, 0.45, 115, 425), (0.7, 1.0), (1.0, 1.0)],),
    "theta": (_arc(0.5, 0.5, 0.45, 0.5, 0, 360, 24), [(0.2, 0.5), (0.8, 0.5)]),
    "psi": ([*_arc(0.5, 0.2, 0.45, 0.4, 180, 0, 12)], [(0.5, 0.0), (0.5, 1.0)]),
    "xi": ([(0.0, 0.0), (1.0, 0.0)], [(0.2, 0.5), (0.8, 0.5)], [(0.0, 1.0), (1.0, 1.0)]),
    "phi": (_arc(0.5, 0.5, 0.45, 0.28, 0, 360, 24), [(0.5, 0.0), (0.5, 1.0)]),
    "gamma": ([(0.0, 1.0), (0.0, 0.0), (1.0, 0.0), (1.0, 0.15)],),
}
GLYPH_NAMES: tuple[str, ...] = tuple(GLYPH_STROKES)
GLYPH_TEMPLATES = (
    "a drawing of the letter {}.",
    "the greek letter {}.",
    "a {} symbol.",
    "a photo of the glyph {}.",
)
GLYPHS_TASK = TaskSpec(classnames=GLYPH_NAMES, templates=GLYPH_TEMPLATES)
BACKGROUNDS = ("plain", "noise", "stripes", "checks", "gradient")
#: Offsets of the splits' random streams, so each split is its own draw from the seed.
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and an ink colour (RGB, 0-255) whose luminances differ by at least 90 levels."""
    while True:
        background, ink = rng.integers(0, 256, size=(2, 3))
        luma = np.array([0.299, 0.587, 0.114])
        if abs(float(luma @ background) - float(luma @ ink)) >= 90:
            return background.astype(np.float32), ink.astype(np.float32)


def _background(kind: int, colour: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(side, side, 3)`` float array: ``colour`` with one of :data:`BACKGROUNDS`' textures."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / side
    name = BACKGROUNDS[kind]
    if name == "plain":
        shade = np.zeros((side, side), np.float32)
    elif name == "noise":
        shade = rng.normal(0.0, 18.0, size=(side, side)).astype(np.float32)
    elif name == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(0.08, 0.2)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        shade = 22.0 * np.sign(np.sin(2 * math.pi * phase)).astype(np.float32)
    elif name == "checks":
        cells = int(rng.integers(4, 9))
        shade = 22.0 * (((xs * cells).astype(int) + (ys * cells).astype(int)) % 2 * 2 - 1).astype(np.float32)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        shade = 45.0 * ((xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle)).astype(np.float32)
    return colour[None, None, :] + shade[:, :, None]


def _draw_glyph(label: int, side: int, rng: np.random.Generator) -> PILImage.Image:
    """One ``side`` px RGB image of glyph ``label``, drawn at 4x and downsampled (anti-aliased strokes)."""
    background, ink = _colours(rng)
    canvas = _background(int(rng.integers(len(BACKGROUNDS))), background, side, rng)
    scale_up = 4
    big = side * scale_up
    size = rng.uniform(0.5, 0.8) * big  # the glyph's box side
    angle = math.radians(rng.uniform(-25, 25))
    slant = rng.uniform(-0.2, 0.2)
    aspect = rng.uniform(0.8, 1.2)
    margin = size * 0.75
    centre = rng.uniform(margin, big - margin, size=2) if big > 2 * margin else np.full(2, big / 2)
    cos, sin = math.cos(angle), math.sin(angle)
    mask = PILImage.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    width = max(1, round(rng.uniform(0.08, 0.16) * size))
    # A hand's wobble: a smooth random displacement of the unit square, the same for every stroke.
    amplitude, frequency, phase = (
        rng.uniform(0.0, 0.04, 2),
        rng.uniform(0.5, 1.5, (2, 2)),
        rng.uniform(0, 6.3, 2),
    )
    for stroke in GLYPH_STROKES[GLYPH_NAMES[label]]:
        points = np.asarray(stroke, dtype=np.float64) - 0.5
        points = points + amplitude * np.sin(2 * math.pi * points @ frequency.T + phase)
        x = (points[:, 0] + slant * points[:, 1]) * aspect * size
        y = points[:, 1] * size
        xy = np.stack([centre[0] + cos * x - sin * y, centre[1] + sin * x + cos * y], axis=1)
        draw.line([tuple(p) for p in xy], fill=255, width=width, joint="curve")
        for end in (xy[0], xy[-1]):  # round caps
            draw.ellipse(
                [end[0] - width / 2, end[1] - width / 2, end[0] + width / 2, end[1] + width / 2], fill=255
            )
    alpha = np.asarray(mask.resize((side, side), PILImage.BOX), dtype=np.float32)[:, :, None] / 255.0
    pixels = (1.0 - alpha) * canvas + alpha * ink[None, None, :]
    return PILImage.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), mode="RGB")


def _render_split(count: int, side: int, seed: int, stream: int) -> dict[str, list]:
    """``count`` images, classes balanced (the remainder to the first classes), in a seeded random order."""
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.arange(count) % len(GLYPH_NAMES))
    return {"image": [_draw_glyph(int(label), side, rng) for label in labels], "label": labels.tolist()}


def load_glyphs(
    image_size: int = 64, seed: int = 0, train_size: int = 2000, eval_size: int = 500
) -> tuple[DatasetDict, TaskSpec]:
    """Ten Greek capitals (:data:`GLYPH_NAMES`) drawn with random strokes, colours and background textures.

    Every split is drawn from its own random stream of ``seed``: the same seed gives the same images, and the
    splits share no image. Classes are balanced in every split.

    Args:
        image_size: Side of the square RGB images, in pixels (16 or more).
        seed: Seed of the drawing.
        train_size: Images in the ``train`` split.
        eval_size: Images in each of the ``validation`` and ``test`` splits.

    Returns:
        A :class:`~datasets.DatasetDict` with ``train``/``validation``/``test`` splits (``image``: RGB PIL
        images, ``label``: :class:`~datasets.ClassLabel`), and :data:`GLYPHS_TASK`.

    Raises:
        InputError: ``image_size`` below 16 px, or a split size below the number of classes.
    """
    if image_size < 16:
        raise InputError(f"image_size must be at least 16 pixels for the glyphs, got {image_size}")
    for name, value in (("train_size", train_size), ("eval_size", eval_size)):
        if value < len(GLYPH_NAMES):
            raise InputError(f"{name} must be at least {len(GLYPH_NAMES)} (one image per class), got {value}")
    features = Features({"image": Image(), "label": ClassLabel(names=list(GLYPH_NAMES))})
    sizes = {"train": train_size, "validation": eval_size, "test": eval_size}
    dataset = DatasetDict(
        {
            name: Dataset.from_dict(
                _render_split(count, image_size, seed, _SPLIT_STREAMS[name]), features=features
            )
            for name, count in sizes.items()
        }
    )
    return dataset, GLYPHS_TASK


EMBEDDED_DATASETS["glyphs"] = load_glyphs
