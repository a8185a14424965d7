"""The defense comparison harness (``hf-tbar bench``, ``benchmarks/compare.py``): run, aggregate, write, plot."""

from __future__ import annotations

import os
from pathlib import Path

from .arguments import DEFAULT_ATTACKS, DEFAULT_DEFENSES, BenchArguments
from .harness import (
    BenchRow,
    BenchRun,
    benchmark_attack,
    draw_clean_subset,
    run_benchmark,
)
from .plot import plot_tradeoff
from .summary import Stat, SummaryRow, markdown_table, setting_label, summarize, write_csv

RESULTS_FILE = "results.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
PLOT_FILE = "tradeoff.png"


def write_outputs(rows: list[BenchRow], output_dir: str | os.PathLike, note: str = "") -> dict[str, Path]:
    """Write the per-run CSV, the aggregated CSV and markdown table, and the trade-off plot.

    Returns:
        ``{"results": ..., "summary_csv": ..., "summary_md": ..., "plot": ...}`` paths.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    table = markdown_table(summary)
    (out / SUMMARY_MD).write_text((note + "\n\n" if note else "") + table + "\n")
    return {
        "results": write_csv(out / RESULTS_FILE, [row.to_dict() for row in rows]),
        "summary_csv": write_csv(out / SUMMARY_CSV, [row.flat() for row in summary]),
        "summary_md": out / SUMMARY_MD,
        "plot": plot_tradeoff(summary, out / PLOT_FILE),
    }


__all__ = [
    "DEFAULT_ATTACKS",
    "DEFAULT_DEFENSES",
    "PLOT_FILE",
    "RESULTS_FILE",
    "SUMMARY_CSV",
    "SUMMARY_MD",
    "BenchArguments",
    "BenchRow",
    "BenchRun",
    "Stat",
    "SummaryRow",
    "benchmark_attack",
    "draw_clean_subset",
    "markdown_table",
    "plot_tradeoff",
    "run_benchmark",
    "setting_label",
    "summarize",
    "write_csv",
    "write_outputs",
]
