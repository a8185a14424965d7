"""Backdoor benchmark in the glyph world (64 px Greek capitals): clean CA, backdoored CA and ASR for each attack.

    OMP_NUM_THREADS=1 python benchmarks/backdoor_glyphs.py [--attacks badnets blended wanet sig] [--target 0]

The clean CLIP (``PretrainConfig.for_dataset("glyphs")``) and each backdoor (``GLYPH_ATTACK_RECIPES``) are
trained on first use and cached (see hf_tbar.io.cache_dir); the build column is the time that took.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from hf_tbar import BackdoorUnlearner
from hf_tbar.attacks import TRIGGERS
from hf_tbar.scenarios import glyph_scenario
from hf_tbar.training import PRETRAIN_METRICS_FILE, PretrainConfig, pretrained_clip_path
from hf_tbar.training.backdoor import BackdoorConfig


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attacks", nargs="+", default=["badnets", "blended", "wanet", "sig"], choices=sorted(TRIGGERS)
    )
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    clean_path = pretrained_clip_path(PretrainConfig.for_dataset("glyphs", seed=args.seed))
    metrics = json.loads((clean_path / PRETRAIN_METRICS_FILE).read_text())
    print(
        f"clean glyph CLIP: {100 * metrics['accuracy']:.1f}% zero-shot on {metrics['total']} test glyphs "
        f"(chance {100 * metrics['chance_accuracy']:.0f}%), built in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    rows = [
        "| attack | recipe | clean CA | clean-model ASR | backdoored CA | backdoored ASR | CA drop | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack in args.attacks:
        config = BackdoorConfig.for_attack(attack, target=args.target, dataset="glyphs", seed=args.seed)
        recipe = f"{config.trigger().describe()}, rate {config.poison_rate}, " + (
            "trained from scratch"
            if config.stage == "pretrain"
            else f"{config.steps} steps at {config.learning_rate}"
        )
        start = time.perf_counter()
        sc = glyph_scenario(attack, target=args.target, seed=args.seed)
        elapsed = time.perf_counter() - start
        clean = BackdoorUnlearner(sc.clean_path, task=sc.task).evaluate(*sc.test, sc.trigger, sc.target)
        bd = BackdoorUnlearner(sc.backdoored_path, task=sc.task).evaluate(*sc.test, sc.trigger, sc.target)
        rows.append(
            f"| {attack} | {recipe} | {100 * clean.clean_accuracy:.1f}% | {100 * clean.attack_success_rate:.1f}% | "
            f"{100 * bd.clean_accuracy:.1f}% | {100 * bd.attack_success_rate:.1f}% | "
            f"{100 * (clean.clean_accuracy - bd.clean_accuracy):.1f} | {elapsed:.0f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
