"""How far DECREE's thresholds carry: false-positive and detection rates over several tiny-CLIP recipes.

hf_tbar's default DECREE thresholds (cosine 0.6, PL1 0.01) were fitted on the embedded tiny CLIP of seed 0.
This script pretrains the same tiny CLIP with other seeds (each seed also draws another data split and
initialisation: another recipe, cached by its hash), backdoors each with the given attacks, and runs DECREE on
every clean and backdoored model with the default and the paper's thresholds. It prints one row per model
and the false-positive rate (clean models flagged) and detection rate (backdoored models flagged) per
threshold set: the evidence behind calling a verdict on any other model "uncalibrated". Both tables
(``models``, ``rates``) go to results/decree_calibration.json for the canonical run of results/runs.yaml.

    python benchmarks/decree_calibration.py --seeds 0 1 2 --attacks badnets blended
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import torch
from transformers import HfArgumentParser

from hf_tbar import BackdoorUnlearner, embedded_scenario
from hf_tbar.bench import results
from hf_tbar.detection import DecreeConfig, invert_trigger
from hf_tbar.training.pretrain import PretrainConfig


@dataclass
class CalibrationArguments:
    """Which recipes and attacks to scan."""

    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2], metadata={"help": "Pretraining seeds (recipes)."}
    )
    attacks: list[str] = field(default_factory=lambda: ["badnets", "blended"], metadata={"help": "Attacks."})
    num_images: int = field(default=256, metadata={"help": "Clean train images DECREE inverts from."})
    thresholds: list[str] = field(
        default_factory=lambda: ["default"],
        metadata={"help": "Threshold sets, each a DECREE run per model: default (fitted on seed 0), paper."},
    )
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})


#: The threshold sets: the cosine threshold also steers DECREE's optimisation, so each set is its own run.
THRESHOLDS = {"default": DecreeConfig, "paper": DecreeConfig.paper}


def scan(path, task, pixels: torch.Tensor, config: DecreeConfig) -> tuple[float, bool]:
    """PL1 of DECREE's inverted trigger and whether ``config``'s thresholds flag the model."""
    unlearner = BackdoorUnlearner(path, task=task)
    result = invert_trigger(unlearner.model, unlearner.processor, pixels, config)
    return result.pl1, result.is_backdoored


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((CalibrationArguments, results.ResultsArguments))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    parsed = parser.parse_args_into_dataclasses(args=argv)
    record = results.start(__file__, parser, parsed, argv, ignore=("threads",))
    args = parsed[0]
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    thresholds = {name: THRESHOLDS[name]() for name in args.thresholds}
    rows = []
    header = " | ".join(f"PL1 / flagged ({name})" for name in thresholds)
    lines = [f"| recipe | model | backdoored ASR | {header} | time (s) |"]
    lines.append("|---|---|---|" + "---|" * len(thresholds) + "---|")
    print("\n".join(lines), flush=True)
    raw = []
    for seed in args.seeds:
        pretrain = replace(PretrainConfig(), seed=seed)
        for attack in [None, *args.attacks]:
            start = time.perf_counter()
            scenario = embedded_scenario(attack or args.attacks[0], pretrain=pretrain)
            pixels = scenario.train[0]
            path = scenario.clean_path if attack is None else scenario.backdoored_path
            chosen = pixels[torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))]
            chosen = chosen[: args.num_images]
            scans = {
                name: scan(path, scenario.task, chosen, replace(config, seed=seed))
                for name, config in thresholds.items()
            }
            asr = "-"
            if attack is not None:
                evaluation = BackdoorUnlearner(path, task=scenario.task).evaluate(
                    *scenario.test, scenario.trigger, scenario.target
                )
                asr = f"{100 * evaluation.attack_success_rate:.1f}%"
            rows.append({"backdoored": attack is not None, **{name: hit for name, (_, hit) in scans.items()}})
            cells = " | ".join(f"{pl1:.4f} / {'yes' if hit else 'no'}" for pl1, hit in scans.values())
            lines.append(
                f"| seed {seed} | {attack or 'clean'} | {asr} | {cells} | {time.perf_counter() - start:.0f} |"
            )
            print(lines[-1], flush=True)
            raw.append(
                {
                    "seed": seed,
                    "attack": attack,
                    "backdoored_asr": asr,
                    "scans": {name: {"pl1": pl1, "flagged": hit} for name, (pl1, hit) in scans.items()},
                    "wall_s": time.perf_counter() - start,
                }
            )
    rates = ["| thresholds | false-positive rate (clean flagged) | detection rate (backdoored flagged) |"]
    rates.append("|---|---|---|")
    for name in thresholds:
        clean = [row[name] for row in rows if not row["backdoored"]]
        dirty = [row[name] for row in rows if row["backdoored"]]
        rates.append(f"| {name} | {sum(clean)}/{len(clean)} | {sum(dirty)}/{len(dirty)} |")
    print("\n" + "\n".join(rates))
    record.table(
        "models",
        results.table_from_markdown(
            "\n".join(lines),
            notes=f"DECREE on {args.num_images} clean train images per model; each seed pretrains the tiny "
            "CLIP with another data split and initialisation.",
        ),
    )
    record.table("rates", results.table_from_markdown("\n".join(rates)))
    record.raw.update({"rows": raw, "thresholds": thresholds})
    record.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
