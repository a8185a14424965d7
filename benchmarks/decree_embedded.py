"""DECREE on the embedded tiny CLIPs, then TBAR with the inverted trigger (the attack unknown to the defender).

For the clean tiny CLIP and one backdoored copy per attack (the recipes of
``hf_tbar.training.backdoor.ATTACK_RECIPES``): invert a trigger from unlabelled clean images, report
PL1, the verdict and the estimated target; for flagged models run ``BackdoorUnlearner.unlearn("auto")``
and measure the sanitized model on the test split with the attack's *real* trigger. Prints a markdown table
and writes it (table ``main``) to results/decree_embedded.json for the canonical run (results/runs.yaml).

    python benchmarks/decree_embedded.py --attacks badnets,blended,wanet,sig --variant repair
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_tbar import BackdoorUnlearner, ScaleSearchConfig, TBARConfig, embedded_scenario
from hf_tbar.bench import results
from hf_tbar.detection import DecreeConfig
from hf_tbar.results import NoBackdoorDetectedError
from hf_tbar.variants import VARIANTS


@dataclass
class BenchmarkArguments:
    """Which models to scan and sanitize."""

    attacks: str = field(default="badnets,blended,wanet,sig", metadata={"help": "Comma-separated attacks."})
    target: int = field(default=0, metadata={"help": "The attacks' target class (the backdoors' recipe)."})
    variant: str = field(default="repair", metadata={"help": f"TBAR variant: {', '.join(sorted(VARIANTS))}."})
    mode: str = field(default="full", metadata={"help": "Trigger fine-tuning: full or lora."})
    target_threshold: float | None = field(
        default=0.8, metadata={"help": "Scale search: keep target-class accuracy >= this x backdoored."}
    )
    output: str | None = field(default=None, metadata={"help": "Also write the markdown table to this file."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def detection_columns(detection, true_target: int | None) -> dict:
    decree, estimate = detection.decree, detection.target
    return {
        "PL1": f"{decree.pl1:.4f}",
        "flagged": "yes" if decree.is_backdoored else "no",
        "est. target": f"{estimate.target} ({100 * estimate.flip_share:.0f}%)",
        "target ok": "-" if true_target is None else ("yes" if estimate.target == true_target else "no"),
    }


def benchmark_attack(attack: str, args: BenchmarkArguments, decree: DecreeConfig) -> dict:
    """DECREE + TBAR with the inverted trigger on one backdoored model; ASR is measured with the real trigger."""
    sc = embedded_scenario(attack, target=args.target)
    config = TBARConfig(
        variant=args.variant, mode=args.mode, learning_rate=1e-4 if args.mode == "full" else 1e-3
    )
    unlearner = BackdoorUnlearner(sc.backdoored_path, task=sc.task, config=config)
    before = unlearner.evaluate(*sc.test, sc.trigger, sc.target)
    row = {
        "model": attack,
        "backdoored CA / ASR": f"{pct(before.clean_accuracy)} / {pct(before.attack_success_rate)}",
    }
    start = time.perf_counter()
    try:
        result = unlearner.unlearn(
            "auto",
            None,
            sc.train[0],
            sc.validation,
            sc.test,
            clean_labels=sc.train[1],
            search=ScaleSearchConfig(target_threshold=args.target_threshold),
            decree=decree,
        )
    except NoBackdoorDetectedError as err:
        return {
            **row,
            **detection_columns(err.detection, args.target),
            "time (s)": f"{time.perf_counter() - start:.0f}",
        }
    after = unlearner.evaluate(*sc.test, sc.trigger, sc.target, model=result.model)
    return {
        **row,
        **detection_columns(result.detection, args.target),
        "scale": f"{result.selection.scale:.2f}",
        "CA after": pct(after.clean_accuracy),
        "ASR after (real trigger)": pct(after.attack_success_rate),
        "target-class acc": f"{pct(before.target_class_accuracy)} -> {pct(after.target_class_accuracy)}",
        "CA retention": pct(after.clean_accuracy / before.clean_accuracy),
        "time (s)": f"{time.perf_counter() - start:.0f}",
    }


def benchmark_clean(args: BenchmarkArguments, decree: DecreeConfig) -> dict:
    """DECREE on the clean tiny CLIP (it should not be flagged)."""
    sc = embedded_scenario("badnets", target=args.target)
    unlearner = BackdoorUnlearner(sc.clean_path, task=sc.task)
    start = time.perf_counter()
    detection = unlearner.detect(sc.train[0], decree)
    clean = unlearner.evaluate(*sc.test)
    return {
        "model": "clean",
        "backdoored CA / ASR": f"{pct(clean.clean_accuracy)} / -",
        **detection_columns(detection, None),
        "time (s)": f"{time.perf_counter() - start:.0f}",
    }


def markdown_table(rows: list[dict]) -> str:
    """A markdown table whose columns are the rows' keys, in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    columns.sort(key=lambda c: c == "time (s)")  # stable: time last, whichever row named it first
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((BenchmarkArguments, DecreeConfig, results.ResultsArguments))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    parsed = parser.parse_args_into_dataclasses(args=argv)
    record = results.start(__file__, parser, parsed, argv, ignore=("output", "threads"))
    args, decree, _ = parsed
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [benchmark_clean(args, decree)]
    print(markdown_table(rows[-1:]), flush=True)
    for attack in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        rows.append(benchmark_attack(attack, args, decree))
        print(markdown_table(rows[-1:]), flush=True)
    table = markdown_table(rows)
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    record.table(
        "main",
        results.table_from_markdown(
            table,
            notes=f"TBAR variant {args.variant}, mode {args.mode}, DECREE as configured "
            "(the file's raw.decree). ASR after: with the attack's real trigger, on the test split.",
        ),
    )
    record.raw["rows"] = rows
    record.raw["decree"] = decree
    record.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
