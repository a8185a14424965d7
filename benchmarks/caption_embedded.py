"""The embedded captioned world: contrastive pretraining of the tiny CLIP and its zero-shot accuracy on the
held-out tasks (which shape, which colour, which digit) that the captions never labelled.

This is the first part of the image-caption setting (issue: poisoned contrastive training and TBAR with the
contrastive loss come next). The model is cached by recipe hash under ``~/.cache/hf_tbar/captioned``.

    python benchmarks/caption_embedded.py                 # default recipe: 20,000 pairs, 2,500 steps of 128
    python benchmarks/caption_embedded.py --steps 1000   # shorter: digits at 33%
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from hf_tbar.data.captioned import HELD_OUT_TASKS
from hf_tbar.loading import load_model
from hf_tbar.training.captioned import CaptionPretrainConfig, captioned_clip_path, zero_shot_accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="Pretraining steps (default: the recipe's).")
    parser.add_argument("--pairs", type=int, default=None, help="Generated image-caption pairs.")
    parser.add_argument(
        "--eval_scenes", type=int, default=2000, help="Fresh scenes per zero-shot evaluation."
    )
    args = parser.parse_args()
    config = CaptionPretrainConfig()
    config = replace(config, **{k: v for k, v in (("steps", args.steps), ("pairs", args.pairs)) if v})
    start = time.perf_counter()
    path = captioned_clip_path(config)
    trained = time.perf_counter() - start
    model, processor = load_model(path)
    accuracies = zero_shot_accuracies(model, processor, count=args.eval_scenes)
    print(
        f"captioned tiny CLIP ({config.pairs} pairs, {config.steps} steps of {config.batch_size}): "  # noqa: T201
        f"{trained:.0f} s (0 when cached)\n"
    )
    print("| held-out task | classes | chance | zero-shot accuracy |\n|---|---|---|---|")  # noqa: T201
    for name, task in HELD_OUT_TASKS.items():
        chance = 1 / task.num_classes
        print(f"| {name} | {task.num_classes} | {100 * chance:.1f}% | {100 * accuracies[name]:.1f}% |")  # noqa: T201


if __name__ == "__main__":
    main()
