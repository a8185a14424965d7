"""Peak memory of the streamed evaluation must be flat in dataset size: CA + BadNets ASR on 256, 1,000 and 10,000
images.

Generates once (cached, deterministic) an imagefolder of 10,000 256x256 RGB JPEGs in 10 procedurally varied
classes (``test/`` split; a 100-image ``train/`` split that the data loader requires), then, each in a FRESH
subprocess (started from a small launcher interpreter, so ``ru_maxrss`` is that run's own peak), evaluates a
224 px CLIP through the whole streamed path: :func:`hf_tbar.data.load_task_data` with
``max_eval_samples=N`` (a seeded stratified subset of ``test``), :class:`hf_tbar.data.images.DatasetImages`
(decoded and resized batch by batch by the model's processor) and
:func:`hf_tbar.evaluation.evaluate_classifier` (``EVAL_BATCH_SIZE`` images per batch; clean accuracy, and the
BadNets 16 px patch stamped on the non-target images for the ASR). Per run: evaluation wall time, images/s
(dataset images; each non-target one is also forwarded triggered), peak RSS (``getrusage(RUSAGE_SELF)
.ru_maxrss`` inside the child), the peak before the evaluation (interpreter + model + data set-up), the peak
during the evaluation alone (``VmHWM`` after resetting it with ``/proc/self/clear_refs``) and the anonymous /
file-backed RSS at the end (``/proc/self/status``); and the ratio peak(10k) / peak(256) (target: <= 1.05).

``--model b32`` (default): a random CLIP with the real ViT-B/32 configuration; ``small224``: 224 px, patch 32,
a tiny tower, for a quick run. The smaller runs of each model go first; when their throughput says the 10k run
would take longer than ``--max_minutes`` (20), that run is skipped (row marked) and the comparison is made
with ``--fallback_model`` (small224) instead. Results: markdown on stdout, JSON in
``outputs/benchmarks/eval_memory.json``; images, models and the datasets cache under ``--work_dir``.

    python benchmarks/eval_memory.py                        # b32 (10k skipped on a slow CPU) + small224
    python benchmarks/eval_memory.py --model small224       # quick

The table (``main``) also goes to results/eval_memory.json for the canonical run of results/runs.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from clip_shapes import ALL_ARCHITECTURES, CLASSNAMES, build_random_clip, peak_rss_line, write_imagefolder

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0
RATIO_TARGET = 1.05


def status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``RssAnon``, ``RssFile``...) in MiB, or NaN."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` (``/proc/self/clear_refs`` 5), so that it then holds the peak RSS of the
    evaluation alone (``ru_maxrss`` is not reset). False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_child(model_dir: Path, data_dir: Path, size: int) -> dict:
    """Body of one measured subprocess: load, then evaluate CA + ASR on ``size`` streamed images."""
    start = time.perf_counter()
    from hf_tbar.attacks import build_trigger
    from hf_tbar.data import DataArguments, load_task_data
    from hf_tbar.data.images import DatasetImages
    from hf_tbar.evaluation import EVAL_BATCH_SIZE, evaluate_classifier
    from hf_tbar.models.loading import load_model
    from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head

    model, processor = load_model(model_dir)
    data = load_task_data(DataArguments(dataset_name=str(data_dir), max_eval_samples=size))
    images = DatasetImages(data.test, processor, data.image_column, data.label_column, "test images")
    head = build_zero_shot_head(model, processor.tokenizer, data.task)
    classifier = ZeroShotClassifier.from_processor(model, head, processor)
    trigger = build_trigger("badnets", patch_size=16)
    setup_s = time.perf_counter() - start
    before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reset = reset_peak()
    start = time.perf_counter()
    result = evaluate_classifier(
        classifier, images, trigger=trigger, target=TARGET, batch_size=EVAL_BATCH_SIZE
    )
    wall = time.perf_counter() - start
    return {
        "images": result.num_examples,
        "triggered": int((images.labels != TARGET).sum()),
        "clean_accuracy": result.clean_accuracy,
        "attack_success_rate": result.attack_success_rate,
        "setup_s": setup_s,
        "eval_s": wall,
        "images_per_s": result.num_examples / wall,
        "peak_before_eval_mib": before_mib,
        # ru_maxrss follows VmHWM, which reset_peak lowered: the run's peak is the larger of the two phases
        "peak_rss_mib": max(before_mib, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "eval_peak_mib": status_mib("VmHWM") if reset else float("nan"),
        "rss_anon_end_mib": status_mib("RssAnon"),
        "rss_file_end_mib": status_mib("RssFile"),
    }


def measure(model: str, model_dir: Path, data_dir: Path, size: int, env: dict) -> dict:
    """Run one evaluation in a fresh interpreter (via the small launcher) and parse its JSON line."""
    command = [sys.executable, "-S", "-c", peak_rss_line(), sys.executable, __file__, "--child", str(size)]
    command += ["--child_dirs", str(model_dir), str(data_dir)]
    print(f"evaluating {model} on {size} images ...", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{model} @ {size} failed:\n{done.stderr[-4000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.update({"model": model, "size": size, "process_wall_s": time.perf_counter() - start})
    return row


def markdown(rows: list[dict], ratios: dict[str, float]) -> str:
    small, large = min(r["size"] for r in rows), max(r["size"] for r in rows)
    lines = [
        "| model | N images | eval wall s | images/s | peak RSS MiB | peak before eval MiB | peak during eval MiB "
        f"| RssAnon / RssFile at end MiB | peak({large}) / peak({small}) | note |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(
                f"| {r['model']} | {r['size']} | - | - | - | - | - | - | - | skipped: estimated "
                f"{r['estimated_min']:.0f} min > {r['max_minutes']:.0f} min |"
            )
            continue
        ratio = ratios.get(r["model"]) if r["size"] == large else None
        shown = "-" if ratio is None else f"{ratio:.3f} ({'ok' if ratio <= RATIO_TARGET else 'MISSED'})"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['eval_s']:.1f} | {r['images_per_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['peak_before_eval_mib']:.0f} | {r['eval_peak_mib']:.0f} "
            f"| {r['rss_anon_end_mib']:.0f} / {r['rss_file_end_mib']:.0f} | {shown} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


def make_parser(child: bool = False) -> argparse.ArgumentParser:
    """The arguments; ``child``: those of a measured child, which must not import hf_tbar before its clock."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ALL_ARCHITECTURES), default="b32")
    parser.add_argument("--fallback_model", choices=sorted(ALL_ARCHITECTURES), default="small224")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1000, 10000], help="Images per run.")
    parser.add_argument("--image_size", type=int, default=256, help="Side of the generated JPEGs (> 224).")
    parser.add_argument("--max_minutes", type=float, default=20.0, help="Skip a run estimated to be longer.")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "outputs/benchmarks/eval_memory")
    parser.add_argument("--json", type=Path, default=ROOT / "outputs/benchmarks/eval_memory.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child_dirs", nargs=2, type=Path, help=argparse.SUPPRESS)
    if child:
        return parser
    from hf_tbar.bench import results

    return results.add_results_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    child = "--child" in (sys.argv[1:] if argv is None else argv)
    parser = make_parser(child)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(*args.child_dirs, args.child)))
        return 0
    from hf_tbar.bench import results

    record = results.start(__file__, parser, args, argv, ignore=("work_dir", "json"))
    work = args.work_dir.resolve()
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-datasets-cache")  # here and in every child
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    sizes = sorted(set(args.sizes))
    small, large = sizes[0], sizes[-1]
    print(f"images: {large} test + 100 train, {args.image_size} px JPEG (generated once) ...", flush=True)
    data_dir = write_imagefolder(
        work / f"images{args.image_size}-{large}", {"train": 100, "test": large}, size=args.image_size
    )
    from hf_tbar.data import DataArguments, load_task_data
    from hf_tbar.data.arguments import DEFAULT_TEMPLATES

    load_task_data(DataArguments(dataset_name=str(data_dir)))  # build the datasets cache outside the runs
    corpus = [*CLASSNAMES, *DEFAULT_TEMPLATES]
    rows: list[dict] = []
    compared = None
    for model in dict.fromkeys([args.model, args.fallback_model]):
        model_dir = build_random_clip(model, work / "models" / model, corpus)
        for size in sizes[:-1]:
            rows.append(measure(model, model_dir, data_dir, size, env))
        first = rows[-1]
        estimated_min = (first["setup_s"] + first["eval_s"] * large / first["size"]) / 60
        if estimated_min > args.max_minutes:
            rows.append(
                {"model": model, "size": large, "skipped": True, "estimated_min": estimated_min}
                | {"max_minutes": args.max_minutes}
            )
            first["note"] = f"{large} skipped (est. {estimated_min:.0f} min)"
            print(f"{model}: {large} images estimated at {estimated_min:.0f} min: skipped", flush=True)
            continue
        rows.append(measure(model, model_dir, data_dir, large, env))
        compared = model
        break  # the comparison is made: no fallback needed
    ratios = {}
    for model in {r["model"] for r in rows}:
        done = {r["size"]: r for r in rows if r["model"] == model and not r.get("skipped")}
        if small in done and large in done:
            ratios[model] = done[large]["peak_rss_mib"] / done[small]["peak_rss_mib"]
    print()
    print(markdown(rows, ratios))
    notes = []
    for model, ratio in ratios.items():
        verdict = "ok" if ratio <= RATIO_TARGET else "MISSED"
        notes.append(
            f"{model}: peak RSS {large} / {small} images = {ratio:.3f} (target <= {RATIO_TARGET}: {verdict})"
        )
        print(f"\n{notes[-1]}")
    if compared != args.model:
        notes.append(
            f"note: the {small}/{large} comparison uses {compared}; {args.model} ran at {small} only"
        )
        print(notes[-1])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "ratios": ratios, "ratio_target": RATIO_TARGET}, indent=2))
    print(f"rows in {args.json}")
    record.table("main", results.table_from_markdown(markdown(rows, ratios), notes="; ".join(notes) or None))
    record.raw.update({"rows": rows, "ratios": ratios, "ratio_target": RATIO_TARGET})
    record.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
