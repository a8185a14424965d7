"""`hf-tbar unlearn` end to end at the real CLIP sizes: wall time, time per step and per image, peak RSS.

Builds random-weight CLIP folders with the published configurations of openai/clip-vit-base-patch32 (``b32``)
and openai/clip-vit-large-patch14 (``l14``) (tokenizer + 224 px PIL image processor; random weights, so this
measures time and memory, not accuracy), a generated 224 px imagefolder of 10 classes (train / validation /
test folders), and runs the whole CLI as a subprocess per row::

    hf-tbar unlearn --model <random CLIP> --dataset_name <imagefolder> --target 0 --trigger badnets \
        --trigger_size 16 --mode full|lora --steps 2 --unlearning_set_size 64 --max_eval_samples 256 \
        --ca_threshold 0.01 --target_threshold 0.01 --force --output_dir ...

(loose constraints and ``--force`` so that a random model finishes the run). Per row: wall time end to end
(interpreter start to the saved folder), seconds per fine-tuning step (``vector_fit_s / steps``: it also
holds drawing the unlearning set and copying the model), seconds per evaluated image in the scale search
(``scale_search_s / (cost x (clean + triggered validation images))``, the cost in full-validation evaluation
equivalents), the task check, scale-search (its cost and the scales it evaluated) and verification seconds, the
rest ("other": imports, model load, zero-shot head, saving), and the child's peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a small launcher interpreter). Checkpoints and images are cached
under ``--work_dir`` (default ``outputs/benchmarks/real_shapes``); results go to stdout (markdown) and
``outputs/benchmarks/real_shapes.json`` (rows are merged by model/mode/cap/batch/dtype/child env across runs). ``--child_env KEY=VALUE`` sets
variables of the child, e.g. ``MALLOC_MMAP_THRESHOLD_=131072`` to see how much of the peak is glibc's retention.

Targets on 2 CPU cores: ViT-B/32 end to end < 10 min, and at most half of the wall time measured at commit
9e7408a (238 s full, 201 s LoRA) since the halving search; with 64 triggered images, 2 steps, 256 validation
images (full and LoRA); ViT-L/14 LoRA peak RSS < 8 GB (8e9 bytes). L/14 is ~15x slower per image than
B/32, so its validation/test cap defaults to ``--l14_max_eval_samples 32`` and its micro-batch to
``--l14_batch_size 8`` (both stated in the table).

    python benchmarks/real_shapes.py --models b32                    # full and LoRA
    python benchmarks/real_shapes.py --models l14 --modes lora --gradient_checkpointing
    python benchmarks/real_shapes.py --models b32 l14 --dtype bf16   # on a GPU: fine-tuning in bf16

``--dtype bf16`` passes ``--mixed_precision bf16`` (Accelerate autocast of the trigger fine-tuning only;
evaluation and the scale search stay fp32). It is meant for a GPU run; on CPU it works but is not faster.

The rows of this run (table ``main``) also go to results/real_shapes_b32.json or results/real_shapes_l14.json
for the canonical runs of results/runs.yaml, results/custom/ otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clip_shapes import (
    ALL_ARCHITECTURES,
    CLASSNAMES,
    MIB,
    build_random_clip,
    peak_rss_line,
    write_imagefolder,
)

from hf_tbar.bench import results

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0
WALL_TARGET_S = {"b32": 600.0}
RSS_TARGET_BYTES = {("l14", "lora"): 8e9}
#: Wall seconds of the rows of results/real_shapes_b32.json at commit 9e7408a (before the halving search, the
#: decode-once validation set): issue #25's target is half of them.
HALF_OF_S = {("b32", "full"): 238.0, ("b32", "lora"): 201.0}


def templates() -> tuple[str, ...]:
    from hf_tbar.data.arguments import DEFAULT_TEMPLATES

    return DEFAULT_TEMPLATES


def hf_tbar_command() -> list[str]:
    executable = Path(sys.executable).with_name("hf-tbar")
    if executable.is_file():
        return [str(executable)]
    return [sys.executable, "-c", "import sys; from hf_tbar.cli import main; sys.exit(main())"]


def validation_images(data_dir: Path, cap: int) -> tuple[int, int]:
    """(clean, triggered) validation images per evaluation: the capped split and its non-target rows."""
    from hf_tbar.data import DataArguments, load_task_data

    data = load_task_data(DataArguments(dataset_name=str(data_dir), max_eval_samples=cap))
    labels = data.validation[data.label_column]
    return len(labels), sum(1 for label in labels if label != TARGET)


def eval_cap(args, model: str) -> int:
    return args.l14_max_eval_samples if model == "l14" else args.max_eval_samples


def run_row(args, model: str, mode: str, model_dir: Path, data_dir: Path, env: dict) -> dict:
    cap = eval_cap(args, model)
    clean, triggered = validation_images(data_dir, cap)  # also builds the datasets cache before the run
    batch = args.l14_batch_size if model == "l14" and args.l14_batch_size else args.batch_size
    out = args.work_dir / "runs" / f"{model}-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    command = hf_tbar_command() + ["unlearn", "--model", str(model_dir), "--dataset_name", str(data_dir)]
    command += ["--target", str(TARGET), "--trigger", "badnets", "--trigger_size", "16"]
    command += ["--mode", mode, "--steps", str(args.steps), "--batch_size", str(batch)]
    command += ["--unlearning_set_size", str(args.unlearning_set_size), "--max_eval_samples", str(cap)]
    command += ["--ca_threshold", "0.01", "--target_threshold", "0.01", "--force", "--output_dir", str(out)]
    if args.dtype == "bf16":
        command += ["--mixed_precision", "bf16"]
    if args.gradient_checkpointing:
        command += ["--gradient_checkpointing"]
    log = args.work_dir / "runs" / f"{model}-{mode}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running {model} {mode} (cap {cap}, batch {batch}); log: {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as stream:
        done = subprocess.run(
            [sys.executable, "-S", "-c", peak_rss_line(), *command], stdout=stream, stderr=stream, env=env
        )
    wall = time.perf_counter() - start
    text = log.read_text()
    peak_kib = int(text.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])
    if done.returncode != 0:
        raise RuntimeError(f"{model} {mode} failed (exit {done.returncode}):\n{text[-4000:]}")
    report = json.loads((out / "tbar_report.json").read_text())
    timings = report["timings_s"]
    evaluations = report["selection"]["evaluations"]
    cost = report["selection"].get("cost") or evaluations  # full-validation evaluation equivalents
    per_eval = clean + triggered
    known = (
        timings["vector_fit_s"]
        + timings["scale_search_s"]
        + timings["verification_s"]
        + timings["task_check_s"]
    )
    row = {
        "model": model,
        "hub_id": ALL_ARCHITECTURES[model]["hub_id"],
        "mode": mode,
        "dtype": args.dtype,
        "child_env": " ".join(args.child_env),
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps": args.steps,
        "batch_size": batch,
        "unlearning_set_size": args.unlearning_set_size,
        "max_eval_samples": cap,
        "validation_clean": clean,
        "validation_triggered": triggered,
        "test_examples": report["before"]["num_examples"],
        "evaluations": evaluations,
        "search_cost": cost,
        "search_strategy": report["selection"].get("strategy"),
        "wall_s": wall,
        "vector_fit_s": timings["vector_fit_s"],
        "s_per_step": timings["vector_fit_s"] / args.steps,
        "scale_search_s": timings["scale_search_s"],
        "s_per_image": timings["scale_search_s"] / (cost * per_eval),
        "task_check_s": timings["task_check_s"],
        "verification_s": timings["verification_s"],
        "other_s": wall - known,
        "peak_rss_mib": peak_kib / 1024,
        "threads": os.cpu_count(),
    }
    if model in WALL_TARGET_S:
        row["wall_target_s"] = WALL_TARGET_S[model]
        row["wall_target_met"] = wall < WALL_TARGET_S[model]
    if (model, mode) in HALF_OF_S:
        row["half_target_s"] = HALF_OF_S[(model, mode)] / 2
        row["half_target_met"] = wall <= HALF_OF_S[(model, mode)] / 2
    if (model, mode) in RSS_TARGET_BYTES:
        row["rss_target_mib"] = RSS_TARGET_BYTES[(model, mode)] / MIB
        row["rss_target_met"] = peak_kib * 1024 < RSS_TARGET_BYTES[(model, mode)]
    shutil.rmtree(out, ignore_errors=True)
    return row


def verdict(row: dict) -> str:
    parts = []
    if "wall_target_met" in row:
        parts.append(
            f"wall < {row['wall_target_s'] / 60:.0f} min: {'yes' if row['wall_target_met'] else 'NO'}"
        )
    if "half_target_met" in row:
        parts.append(
            f"wall <= {row['half_target_s']:.0f} s (half): {'yes' if row['half_target_met'] else 'NO'}"
        )
    if "rss_target_met" in row:
        parts.append(f"RSS < 8 GB: {'yes' if row['rss_target_met'] else 'NO'}")
    return "; ".join(parts) or "-"


def setting(row: dict) -> str:
    """The dtype, checkpointing and extra environment of a row."""
    ckpt = "grad-ckpt" if row.get("gradient_checkpointing") else ""
    return " ".join(part for part in (row["dtype"], ckpt, row.get("child_env", "")) if part)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | mode | dtype / env | val/test cap | batch | steps | wall s | s/step | s/image (search) "
        "| task check s | scale search s (cost, scales) | verification s | other s | peak RSS MiB | targets |",
        "|" + "---|" * 15,
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['mode']} | {setting(r)} | {r['max_eval_samples']} | {r['batch_size']} "
            f"| {r['steps']} | {r['wall_s']:.0f} | {r['s_per_step']:.1f} | {r['s_per_image']:.3f} "
            f"| {r.get('task_check_s', float('nan')):.0f} "
            f"| {r['scale_search_s']:.0f} ({r.get('search_cost', r['evaluations']):.1f}, {r['evaluations']}) "
            f"| {r['verification_s']:.0f} | {r['other_s']:.0f} "
            f"| {r['peak_rss_mib']:.0f} | {verdict(r)} |"
        )
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(ALL_ARCHITECTURES),
        default=["b32"],
        help="small224: a quick check.",
    )
    parser.add_argument("--modes", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    parser.add_argument("--steps", type=int, default=2, help="Fine-tuning steps.")
    parser.add_argument("--unlearning_set_size", type=int, default=64, help="Triggered images.")
    parser.add_argument("--max_eval_samples", type=int, default=256, help="Validation and test cap (b32).")
    parser.add_argument(
        "--l14_max_eval_samples",
        type=int,
        default=32,
        help="Validation and test cap of l14 (slower per image).",
    )
    parser.add_argument("--batch_size", type=int, default=32, help="Fine-tuning micro-batch.")
    parser.add_argument("--l14_batch_size", type=int, default=8, help="Micro-batch of l14 (0: --batch_size).")
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: pass --mixed_precision bf16 (for a GPU run; fine-tuning only).",
    )
    parser.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="Pass --gradient_checkpointing (activation recomputation in the trigger fine-tuning).",
    )
    parser.add_argument(
        "--child_env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Extra environment of the hf-tbar child, e.g. MALLOC_MMAP_THRESHOLD_=131072 (recorded per row).",
    )
    parser.add_argument("--work_dir", type=Path, default=ROOT / "outputs/benchmarks/real_shapes")
    parser.add_argument("--json", type=Path, default=ROOT / "outputs/benchmarks/real_shapes.json")
    return results.add_results_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv, ignore=("work_dir", "json"))
    args.work_dir = args.work_dir.resolve()
    cache = args.work_dir / "hf-datasets-cache"
    os.environ["HF_DATASETS_CACHE"] = str(cache)  # before datasets is imported, here and in the children
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for pair in args.child_env:
        key, _, value = pair.partition("=")
        env[key] = value
    eval_images = max(args.max_eval_samples, args.l14_max_eval_samples)
    splits = {"train": max(200, 2 * args.unlearning_set_size), "validation": eval_images, "test": eval_images}
    data_dir = write_imagefolder(args.work_dir / f"images224-{eval_images}", splits, size=224)
    corpus = [*CLASSNAMES, *templates()]
    rows = []
    for model in args.models:
        model_dir = build_random_clip(model, args.work_dir / "models" / model, corpus)
        for mode in args.modes:
            rows.append(run_row(args, model, mode, model_dir, data_dir, env))
            print(markdown(rows[-1:]), flush=True)
    print()
    print(markdown(rows))
    for r in rows:
        print(f"{r['model']} {r['mode']}: {verdict(r)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.json.read_text()) if args.json.is_file() else []
    key = ("model", "mode", "max_eval_samples", "batch_size", "dtype", "child_env", "gradient_checkpointing")
    fresh = {tuple(r[k] for k in key) for r in rows}
    merged = [r for r in previous if tuple(r.get(k, "") for k in key) not in fresh] + rows
    args.json.write_text(json.dumps(merged, indent=2))
    print(f"rows in {args.json}")
    record.table(
        "main",
        results.table_from_markdown(
            markdown(rows),
            notes=f"Random weights with the public configurations; {args.unlearning_set_size} triggered images, "
            f"{args.steps} fine-tuning steps; wall: the whole `hf-tbar unlearn` process; peak RSS of that process.",
        ),
    )
    record.raw["rows"] = rows
    record.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
