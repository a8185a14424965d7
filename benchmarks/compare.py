"""Defenses side by side on the embedded backdoored tiny CLIPs: CA, ASR, CA retention, target-class
accuracy, and what each defense consumed (clean / triggered images, fine-tuning steps, wall time).

    python benchmarks/compare.py --attacks badnets blended --seeds 3
    python benchmarks/compare.py --attacks badnets --defenses tbar --set_sizes 50 100 300 1000   # set size
    python benchmarks/compare.py --attacks badnets --defenses tbar --clean_shares 0 0.25 0.5      # clean share
    python benchmarks/compare.py --attacks badnets --defenses tbar --scales 0.5 1 1.5 2 3        # scale

Writes ``results.csv`` (one row per run), ``summary.csv`` / ``summary.md`` (mean and std over seeds)
and ``tradeoff.png`` (CA retention vs ASR) under ``--output_dir``; the same as ``hf-tbar bench``. Also
writes the results file (tables ``summary``, as printed, and ``by_attack``, defences as rows and attacks
as columns): results/compare.json or results/compare_ablation.json for the canonical runs of
results/runs.yaml, results/custom/ otherwise.
"""

from __future__ import annotations

import logging

import torch
from transformers import HfArgumentParser

from hf_tbar.bench import BenchArguments, Stat, SummaryRow, markdown_table, results, run_benchmark, summarize
from hf_tbar.bench import write_outputs as write_bench_outputs
from hf_tbar.cli.bench import _progress  # the progress lines of `hf-tbar bench`


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((BenchArguments, results.ResultsArguments))


def _pct(stat: Stat, spread: bool = False) -> str:
    if stat.count == 0:
        return "-"
    text = f"{100 * stat.mean:.1f}"
    return text + (f" ± {100 * stat.std:.1f}" if spread and stat.count > 1 else "")


def by_attack(summary: list[SummaryRow], seeds: int) -> results.Table:
    """One row per defence setting, one column per attack: ``ASR ± std / CA retention / target-class acc``."""
    attacks = list(dict.fromkeys(row.attack for row in summary))
    several_sizes = len({row.set_size for row in summary if row.set_size is not None}) > 1
    cells: dict[str, dict[str, str]] = {}
    images: dict[str, list[str]] = {}
    for row in summary:
        label = "backdoored" if row.defense == "none" else row.setting
        if several_sizes and row.set_size is not None:
            label += f", {row.set_size} images"
        s = row.stats
        if row.runs and row.failed == row.runs:
            cell = "no feasible scale"
        else:
            cell = " / ".join(
                (
                    _pct(s["attack_success_rate"], spread=True),
                    _pct(s["ca_retention"]),
                    _pct(s["target_class_accuracy"]),
                )
            )
            if row.failed:
                cell += f" ({row.runs - row.failed}/{row.runs} seeds)"
        cells.setdefault(label, {})[row.attack] = cell
        used = "-"
        if row.defense != "none" and s["clean_images"].count:
            used = f"{s['clean_images'].mean:.0f} + {s['triggered_images'].mean:.0f}"
        if used not in images.setdefault(label, []):
            images[label].append(used)
    rows = [
        [label, ", ".join(images[label]), *(by.get(a, "-") for a in attacks)] for label, by in cells.items()
    ]
    return results.Table(
        ["defence", "images (clean + triggered)", *attacks],
        rows,
        notes=f"Cells: ASR ± std / CA retention / target-class accuracy, in %, mean over {seeds} seed(s), "
        "on the test split.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    parsed = parser.parse_args_into_dataclasses(args=argv)
    record = results.start(__file__, parser, parsed, argv, ignore=("output_dir", "threads"))
    args = parsed[0]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # as `hf-tbar bench` (hf_tbar.cli.bench.run), keeping the rows for the results file
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_benchmark(args, on_row=_progress)
    note = (
        f"Embedded digits, test split, target class {args.target}; mean ± std over {args.seeds} seed(s) "
        f"(defense randomness and data draw; the backdoored model is fixed)."
    )
    paths = write_bench_outputs(rows, args.output_dir, note)
    print(paths["summary_md"].read_text())
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    summary = summarize(rows)
    record.table("summary", results.table_from_markdown(markdown_table(summary), notes=note))
    record.table("by_attack", by_attack(summary, args.seeds))
    record.raw["rows"] = [row.to_dict() for row in rows]
    record.raw["summary"] = [row.flat() for row in summary]
    record.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
