"""DECREE on the embedded tiny CLIPs: is the clean model left alone, are the backdoored ones flagged?

For the clean tiny CLIP and one backdoored copy per attack, invert a trigger from unlabelled clean
validation images, report PL1 and the verdict, and estimate the target class (the attacks' true
target is ``--target``). Prints a markdown table.

    python benchmarks/decree_embedded.py --attacks badnets,blended,wanet,sig --num_images 256

Each model is handled by :func:`benchmark_model`, which returns one table row as a dict; later
stages (e.g. TBAR with the inverted trigger) can add columns to that dict from the
:class:`ModelContext` it builds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_tbar.data.embedded import TaskSpec, load_embedded_dataset
from hf_tbar.data.pixels import dataset_to_tensors
from hf_tbar.detection import DecreeConfig, DecreeResult, TargetEstimate, estimate_target, invert_trigger
from hf_tbar.tiny_clip import load_clip
from hf_tbar.training.backdoor import BackdoorConfig, backdoored_clip_path
from hf_tbar.training.pretrain import PretrainConfig, pretrained_clip_path
from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkArguments:
    """Which models to scan, on which clean images."""

    attacks: str = field(default="badnets,blended,wanet,sig", metadata={"help": "Comma-separated attacks."})
    target: int = field(default=0, metadata={"help": "The attacks' target class (the backdoors' recipe)."})
    split: str = field(default="validation", metadata={"help": "Split the clean images come from."})
    num_images: int = field(
        default=256, metadata={"help": "Clean images given to DECREE (first N of the split)."}
    )
    output: str | None = field(default=None, metadata={"help": "Also write the markdown table to this file."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})


@dataclass
class ModelContext:
    """What one row was computed from, for callers that add columns (e.g. TBAR with the inverted trigger)."""

    name: str
    path: Path
    classifier: ZeroShotClassifier
    processor: object
    decree: DecreeResult
    estimate: TargetEstimate


def models_to_scan(attacks: list[str], target: int) -> list[tuple[str, Path]]:
    """``(name, checkpoint folder)`` of the clean tiny CLIP and of each backdoored one (trained on first use)."""
    models = [("clean", pretrained_clip_path(PretrainConfig()))]
    for attack in attacks:
        models.append((attack, backdoored_clip_path(BackdoorConfig(attack=attack, target=target))))
    return models


def benchmark_model(
    name: str, path: Path, pixels: torch.Tensor, task: TaskSpec, config: DecreeConfig, true_target: int | None
) -> tuple[dict, ModelContext]:
    """DECREE and target estimation on one model; returns the table row and its context."""
    model, processor = load_clip(path)
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, task), processor
    )
    start = time.perf_counter()
    result = invert_trigger(model, processor, pixels, config)
    estimate = estimate_target(classifier, pixels, result.trigger)
    elapsed = time.perf_counter() - start
    row = {
        "model": name,
        "PL1": f"{result.pl1:.4f}",
        "flagged": "yes" if result.is_backdoored else "no",
        "similarity": f"{result.similarity:.3f}",
        "est. target": str(estimate.target),
        "target ok": "-" if true_target is None else ("yes" if estimate.target == true_target else "no"),
        "flip share": f"{100 * estimate.flip_share:.0f}%",
        "steps": str(result.steps),
        "time (s)": f"{elapsed:.0f}",
    }
    return row, ModelContext(name, path, classifier, processor, result, estimate)


def markdown_table(rows: list[dict]) -> str:
    """A markdown table whose columns are the rows' keys, in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((BenchmarkArguments, DecreeConfig))


def main(argv: list[str] | None = None) -> int:
    args, config = make_parser().parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    dataset, task = load_embedded_dataset("digits", image_size=PretrainConfig().architecture.image_size)
    models = models_to_scan(attacks, args.target)
    split = dataset[args.split]
    _, processor = load_clip(models[0][1])  # every embedded model shares the clean one's processor
    pixels, _ = dataset_to_tensors(split.select(range(min(args.num_images, len(split)))), processor)
    rows = []
    for name, path in models:
        row, _ = benchmark_model(name, path, pixels, task, config, None if name == "clean" else args.target)
        logger.info("%s", row)
        rows.append(row)
    table = markdown_table(rows)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
