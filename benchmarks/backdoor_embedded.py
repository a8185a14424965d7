"""Backdoor benchmark on the embedded data: clean CA, backdoored CA and ASR for each attack.

    python benchmarks/backdoor_embedded.py [--attacks badnets blended wanet sig] [--world digits|glyphs]

Models are trained on first use and cached (see hf_tbar.io.cache_dir). Writes results/backdoor_embedded.json
(table ``main``; see results/README.md), or results/backdoor_glyphs.json for the glyph world (64 px Greek capitals,
a world no recipe or default of hf_tbar was chosen on).
"""

from __future__ import annotations

import argparse
import logging
import time

from hf_tbar import BackdoorUnlearner
from hf_tbar.attacks import TRIGGERS
from hf_tbar.bench import results
from hf_tbar.scenarios import world_scenario
from hf_tbar.training.backdoor import BackdoorConfig
from hf_tbar.training.cache import build_seconds
from hf_tbar.training.recipes import WORLD_ATTACK_RECIPES

COLUMNS = [
    "attack",
    "recipe",
    "clean CA",
    "clean-model ASR",
    "backdoored CA",
    "backdoored ASR",
    "CA drop",
    "training s",
]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attacks", nargs="+", default=["badnets", "blended", "wanet", "sig"], choices=sorted(TRIGGERS)
    )
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument(
        "--world", default="digits", choices=sorted(WORLD_ATTACK_RECIPES), help="Embedded world."
    )
    return results.add_results_arguments(parser)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv)
    logging.basicConfig(level=logging.WARNING)
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    raw = []
    for attack in args.attacks:
        config = BackdoorConfig.for_attack(attack, target=args.target, dataset=args.world)
        recipe = f"{config.trigger().describe()}, rate {config.poison_rate}, " + (
            "trained from scratch"
            if config.stage == "pretrain"
            else f"{config.steps} steps at {config.learning_rate}"
        )
        start = time.perf_counter()
        sc = world_scenario(args.world, attack, target=args.target)
        elapsed = time.perf_counter() - start
        clean = BackdoorUnlearner(sc.clean_path, task=sc.task).evaluate(*sc.test, sc.trigger, sc.target)
        bd = BackdoorUnlearner(sc.backdoored_path, task=sc.task).evaluate(*sc.test, sc.trigger, sc.target)
        trained = build_seconds(sc.backdoored_path)  # recorded when built, whether or not this run built it
        rows.append(
            f"| {attack} | {recipe} | {100 * clean.clean_accuracy:.1f}% | {100 * clean.attack_success_rate:.1f}% | "
            f"{100 * bd.clean_accuracy:.1f}% | {100 * bd.attack_success_rate:.1f}% | "
            f"{100 * (clean.clean_accuracy - bd.clean_accuracy):.1f} | "
            f"{'-' if trained is None else f'{trained:.0f}'} |"
        )
        raw.append(
            {
                "attack": attack,
                "recipe": recipe,
                "clean": clean,
                "backdoored": bd,
                "get_s": elapsed,
                "training_s": trained,
            }
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))
    record.table(
        "main",
        results.table_from_markdown(
            "\n".join(rows),
            notes=f"Test split of the embedded {args.world} ({len(sc.test[1])} images), target class {args.target}; "
            "training s: the backdoored model's training when the cache built it, on 2 cores (with the clean model's "
            "pretraining when that was built by the same call; '-': built before builds were timed).",
        ),
    )
    record.raw["rows"] = raw
    record.write()


if __name__ == "__main__":
    main()
