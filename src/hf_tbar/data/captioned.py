"""An embedded captioned world: procedural image-caption pairs, deterministic, no download.

Each 32 px RGB scene holds one object: a geometric shape (circle, square, triangle, cross) or a handwritten
digit (scikit-learn's bundled glyphs), in one of six colours, small or large, at one of five places, on a
plain or striped dark background. Its caption is written from those attributes through several templates
and paraphrases ("a small red circle on the left", "there is a large green seven at the top", ...). A tiny
CLIP trained contrastively on the captions alone can then be asked *zero-shot* questions it never saw as
labels: which shape, which colour, which digit (:data:`HELD_OUT_TASKS`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from .embedded import TaskSpec

__all__ = [
    "CAPTION_TEMPLATES",
    "COLOURS",
    "HELD_OUT_TASKS",
    "SHAPES",
    "Scene",
    "caption_corpus",
    "random_scenes",
    "render_pairs",
    "task_labels",
    "task_split",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (160, 60, 200),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "cross")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZES = {"small": 11, "large": 19}
PLACES = {
    "left": (0.28, 0.5),
    "right": (0.72, 0.5),
    "top": (0.5, 0.28),
    "bottom": (0.5, 0.72),
    "middle": (0.5, 0.5),
}
BACKGROUNDS = ("plain", "striped")
CAPTION_TEMPLATES = (
    "a {size} {colour} {thing} on the {place}",
    "a photo of a {colour} {thing}",
    "there is a {size} {colour} {thing} at the {place}",
    "{colour} {thing}, {size}, {place}",
    "a {thing} in {colour} on a {background} background",
    "the {place} shows a {colour} {thing}",
    "a picture of a {size} {thing} that is {colour}",
)
#: The zero-shot questions the pretraining never labels: class names, and the prompts they are asked with.
HELD_OUT_TASKS: dict[str, TaskSpec] = {
    "shape": TaskSpec(SHAPES, ("a photo of a {}.", "a {} object.")),
    "colour": TaskSpec(tuple(COLOURS), ("a photo of something {}.", "a {} object.")),
    "digit": TaskSpec(DIGITS, ("a photo of a {}.", "the number {}.")),
}


@dataclass(frozen=True)
class Scene:
    """One object's attributes (indices into the attribute tables above; ``shape >= 4`` is digit ``shape - 4``)."""

    shape: int
    colour: int
    size: int
    place: int
    background: int
    glyph: int  # which handwritten sample of the digit

    def thing(self) -> str:
        return SHAPES[self.shape] if self.shape < len(SHAPES) else DIGITS[self.shape - len(SHAPES)]

    def caption(self, template: int) -> str:
        return CAPTION_TEMPLATES[template].format(
            size=list(SIZES)[self.size],
            colour=list(COLOURS)[self.colour],
            thing=self.thing(),
            place=list(PLACES)[self.place],
            background=BACKGROUNDS[self.background],
        )


@functools.lru_cache(maxsize=1)
def _glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    raw = load_digits()
    return raw.images / 16.0, raw.target


def _draw(scene: Scene, side: int, rng: np.random.Generator) -> Image.Image:
    """The scene as a ``side`` px RGB image."""
    shade = int(rng.integers(10, 60))
    image = Image.new("RGB", (side, side), (shade, shade, shade))
    draw = ImageDraw.Draw(image)
    if scene.background == 1:
        for x in range(0, side, 4):
            draw.line([(x, 0), (x, side)], fill=(shade + 30,) * 3)
    colour = list(COLOURS.values())[scene.colour]
    size = list(SIZES.values())[scene.size] * side // 32
    cx, cy = (int(c * side + rng.integers(-2, 3)) for c in list(PLACES.values())[scene.place])
    box = (cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2)
    if scene.shape == 0:
        draw.ellipse(box, fill=colour)
    elif scene.shape == 1:
        draw.rectangle(box, fill=colour)
    elif scene.shape == 2:
        draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=colour)
    elif scene.shape == 3:
        third = max(1, size // 3)
        draw.rectangle((box[0], cy - third // 2, box[2], cy + third // 2), fill=colour)
        draw.rectangle((cx - third // 2, box[1], cx + third // 2, box[3]), fill=colour)
    else:
        images, targets = _glyphs()
        options = np.flatnonzero(targets == scene.shape - len(SHAPES))
        glyph = images[options[scene.glyph % len(options)]]
        mask = Image.fromarray((glyph * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        image.paste(Image.new("RGB", (size, size), colour), (box[0], box[1]), mask)
    return image


def random_scenes(count: int, seed: int) -> list[Scene]:
    """``count`` scenes with uniformly drawn attributes (half geometric shapes, half digits)."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(count):
        shape = int(rng.integers(len(SHAPES))) if rng.random() < 0.5 else len(SHAPES) + int(rng.integers(10))
        scenes.append(
            Scene(
                shape=shape,
                colour=int(rng.integers(len(COLOURS))),
                size=int(rng.integers(len(SIZES))),
                place=int(rng.integers(len(PLACES))),
                background=int(rng.integers(len(BACKGROUNDS))),
                glyph=int(rng.integers(100)),
            )
        )
    return scenes


def render_pairs(scenes: list[Scene], seed: int, side: int = 32) -> tuple[torch.Tensor, list[str]]:
    """Pixels ``(N, 3, side, side)`` in ``[0, 1]`` and one caption per scene (template drawn with ``seed``)."""
    rng = np.random.default_rng(seed)
    pixels = np.stack([np.asarray(_draw(scene, side, rng), dtype=np.float32) / 255.0 for scene in scenes])
    captions = [scene.caption(int(rng.integers(len(CAPTION_TEMPLATES)))) for scene in scenes]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), captions


def task_labels(scenes: list[Scene], task: str) -> torch.Tensor:
    """The class index of each scene for a held-out task (``-1`` where it does not apply: a shape's digit)."""
    if task == "colour":
        return torch.tensor([s.colour for s in scenes])
    if task == "shape":
        return torch.tensor([s.shape if s.shape < len(SHAPES) else -1 for s in scenes])
    if task == "digit":
        return torch.tensor([s.shape - len(SHAPES) if s.shape >= len(SHAPES) else -1 for s in scenes])
    raise KeyError(f"unknown task {task!r}; tasks: {sorted(HELD_OUT_TASKS)}")


def caption_corpus() -> list[str]:
    """Every word of the world's captions and of the held-out tasks' prompts (for the tokenizer)."""
    words = [*COLOURS, *SHAPES, *DIGITS, *SIZES, *PLACES, *BACKGROUNDS, *CAPTION_TEMPLATES]
    for task in HELD_OUT_TASKS.values():
        words += [*task.classnames, *task.templates]
    return words


def task_split(
    task: str, count: int, seed: int, side: int = 32
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``count`` fresh scenes that a held-out task applies to (a shape for ``"shape"``, ...): pixels
    ``(count, 3, side, side)`` in ``[0, 1]``, the task's labels ``(count,)`` and each scene's caption."""
    kept: list[Scene] = []
    chunk = 0
    while len(kept) < count:
        scenes = random_scenes(2 * count, seed * 1000 + chunk)
        labels = task_labels(scenes, task)
        kept += [scene for scene, label in zip(scenes, labels.tolist()) if label >= 0]
        chunk += 1
    kept = kept[:count]
    pixels, captions = render_pairs(kept, seed, side)
    return pixels, task_labels(kept, task), captions
