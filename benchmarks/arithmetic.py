"""Benchmark streaming task arithmetic against the naive load-subtract-save path, a file copy and a bare interpreter.

Builds random-weight checkpoints with the real architectures of openai/clip-vit-base-patch32 (default) and
openai/clip-vit-large-patch14, then runs each measurement in a fresh subprocess that reports its own wall
and CPU time (of the operation only, imports excluded) and peak RSS (``ru_maxrss``). Every child imports
the same modules, so the "baseline" row is the interpreter + imports cost shared by all. Paths: "copy"
copies the base folder (``shutil.copytree``: in-kernel ``sendfile``), "write" writes as many bytes from a
16 MiB buffer with plain ``write()`` calls (no preallocation, unlike the streaming writer: on ext4 it
can be the slowest of the three), "streaming" is :func:`hf_tbar.streaming.stream_task_arithmetic`, "naive" loads both models with
``CLIPModel.from_pretrained``, subtracts and calls ``save_pretrained``.

    python benchmarks/arithmetic.py                      # ViT-B/32, one unsharded checkpoint
    python benchmarks/arithmetic.py --models b32 l14 --max-shard-size 2GB 200MB

Tables ``paths`` (every path, as printed) and ``summary`` (streaming against the others, per checkpoint) go to
results/arithmetic.json for the canonical run of results/runs.yaml, results/custom/ otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from clip_shapes import ARCHITECTURES, clip_config  # benchmarks/clip_shapes.py (on sys.path when run)
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

from hf_tbar.streaming import parse_size, stream_task_arithmetic

PATHS = ("baseline", "copy", "write", "streaming", "naive")
# Runs the measured child from a fresh small interpreter: ru_maxrss survives fork + exec, so a child forked
# straight from this (large) process would report this process's peak instead of its own.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
SCALE = 0.5
MIB = 2**20


def build_pair(config: CLIPConfig, base: Path, finetuned: Path, max_shard_size: str, seed: int = 0) -> None:
    """Write a random base checkpoint and a perturbed "fine-tuned" copy, shard by shard.

    The model is only instantiated on the ``meta`` device (names and shapes); tensors are drawn one shard
    at a time and saved with ``safetensors.torch.save_file``, in transformers' sharded layout.
    """
    with torch.device("meta"):
        layout = {name: (t.shape, t.dtype) for name, t in CLIPModel(config).state_dict().items()}
    max_bytes = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    size = 0
    for name, (shape, dtype) in layout.items():
        nbytes = math.prod(shape) * dtype.itemsize
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    generator = torch.Generator().manual_seed(seed)
    for folder in (base, finetuned):
        folder.mkdir(parents=True)
        config.save_pretrained(folder)
    for file_name, shard in zip(names, shards):
        base_tensors, tuned_tensors = {}, {}
        for name in shard:
            shape, dtype = layout[name]
            weights = torch.randn(shape, generator=generator, dtype=dtype).mul_(0.02)
            base_tensors[name] = weights
            tuned_tensors[name] = weights + torch.randn(shape, generator=generator, dtype=dtype).mul_(1e-3)
        save_file(base_tensors, base / file_name, metadata={"format": "pt"})
        save_file(tuned_tensors, finetuned / file_name, metadata={"format": "pt"})
        del base_tensors, tuned_tensors
    if len(shards) > 1:
        weight_map = {name: file_name for file_name, shard in zip(names, shards) for name in shard}
        total = sum(math.prod(s) * d.itemsize for s, d in layout.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        for folder in (base, finetuned):
            (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def run_child(path: str, base: Path, finetuned: Path, output: Path, max_shard_size: str) -> dict:
    """Body of one measurement subprocess: do ``path`` once, return wall and CPU seconds, peak RSS in MiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if path == "copy":
        shutil.copytree(base, output)
    elif path == "write":
        remaining = weight_bytes(base)[0]
        buffer = memoryview(bytearray(16 * MIB))
        output.mkdir()
        with open(output / "model.safetensors", "wb") as file:
            while remaining > 0:
                remaining -= file.write(buffer[: min(remaining, len(buffer))])
    elif path == "streaming":
        stream_task_arithmetic(base, finetuned, output, SCALE, max_shard_size=max_shard_size, progress=False)
    elif path == "naive":
        model = CLIPModel.from_pretrained(base)
        tuned = CLIPModel.from_pretrained(finetuned).state_dict()
        with torch.no_grad():
            for name, weights in model.state_dict().items():
                if weights.is_floating_point():
                    weights.sub_(SCALE * (tuned[name] - weights))
        del tuned
        model.save_pretrained(output, max_shard_size=max_shard_size)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu0,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def measure(path: str, base: Path, finetuned: Path, output: Path, max_shard_size: str) -> dict:
    """Run one measurement in a fresh interpreter and parse its JSON report.

    Dirty pages left by the previous measurement are flushed first (``os.sync``), so that their writeback
    does not land in this one's time.
    """
    os.sync()
    command = [sys.executable, "-S", "-c", LAUNCHER, sys.executable, __file__, "--child", path]
    command += ["--child-args", str(base), str(finetuned), str(output)]
    command += ["--max-shard-size", max_shard_size]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path} child failed:\n{done.stderr[-4000:]}")
    shutil.rmtree(output, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def weight_bytes(folder: Path) -> tuple[int, int]:
    """Total and largest size of the ``.safetensors`` files of ``folder``, in bytes."""
    sizes = [p.stat().st_size for p in folder.glob("*.safetensors")]
    return sum(sizes), max(sizes)


def bench(model: str, max_shard_size: str, workdir: Path, repeat: int) -> list[dict]:
    """Build one checkpoint pair and measure every path; return one row per path."""
    folder = workdir / f"{model}-{max_shard_size}"
    base, finetuned = folder / "base", folder / "finetuned"
    build_pair(clip_config(model), base, finetuned, max_shard_size)
    total, largest = weight_bytes(base)
    runs: dict[str, list[dict]] = {path: [] for path in PATHS}
    for _ in range(repeat):  # interleaved, so that a slow spell of the machine hits every path alike
        for path in PATHS:
            runs[path].append(measure(path, base, finetuned, folder / "out", max_shard_size))
    results = {
        path: {
            "wall_s": min(r["wall_s"] for r in runs[path]),
            "cpu_s": min(r["cpu_s"] for r in runs[path]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[path]),
        }
        for path in PATHS
    }
    shutil.rmtree(folder, ignore_errors=True)
    baseline = results["baseline"]["peak_rss_mib"]
    rows = []
    for path in PATHS:
        r = results[path]
        rows.append(
            {
                "model": ARCHITECTURES[model]["hub_id"].split("/")[-1],
                "size_mib": total / MIB,
                "shard": max_shard_size,
                "largest_shard_mib": largest / MIB,
                "path": path,
                "wall_s": r["wall_s"],
                "cpu_s": r["cpu_s"],
                "peak_rss_mib": r["peak_rss_mib"],
                "wall_vs_copy": r["wall_s"] / results["copy"]["wall_s"],
                "rss_vs_shard_plus_base": r["peak_rss_mib"] / (largest / MIB + baseline),
                "extra_rss_vs_shard": (r["peak_rss_mib"] - baseline) / (largest / MIB),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    header = (
        "| model | size MiB | shard size (largest MiB) | path | wall s | CPU s | peak RSS MiB | wall / copy "
        "| RSS / (largest shard + baseline) | (RSS - baseline) / largest shard |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size_mib']:.0f} | {r['shard']} ({r['largest_shard_mib']:.0f}) | {r['path']} "
            f"| {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mib']:.0f} | {r['wall_vs_copy']:.2f} "
            f"| {r['rss_vs_shard_plus_base']:.2f} | {r['extra_rss_vs_shard']:.2f} |"
        )
    return "\n".join(lines)


def make_parser(child: bool = False) -> argparse.ArgumentParser:
    """The arguments; ``child``: those of a measured child (no results arguments, nothing more imported)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(ARCHITECTURES), default=["b32"])
    parser.add_argument(
        "--max-shard-size",
        nargs="+",
        default=["2GB"],
        help="Shard size(s) of inputs and outputs, e.g. 2GB 200MB.",
    )
    parser.add_argument("--repeat", type=int, default=1, help="Runs per path (min wall, max RSS reported).")
    parser.add_argument("--workdir", type=Path, default=None, help="Scratch folder (default: a temp folder).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows to this JSON file.")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--child-args", nargs=3, type=Path, help=argparse.SUPPRESS)
    if child:
        return parser
    from hf_tbar.bench import results

    return results.add_results_arguments(parser)


def summary_table(rows: list[dict]):
    """Per checkpoint: streaming wall / peak RSS against load-subtract-save and a copy of the bytes."""
    from hf_tbar.bench import results

    by_setting: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_setting.setdefault((r["model"], r["shard"]), {})[r["path"]] = r
    out = []
    for (model, shard), paths in by_setting.items():
        stream, naive, copy = paths["streaming"], paths["naive"], paths["copy"]
        out.append(
            [
                f"{model} ({stream['size_mib']:.0f} MiB)",
                f"{shard} (largest {stream['largest_shard_mib']:.0f} MiB)",
                f"{stream['wall_s']:.2f} s / {stream['peak_rss_mib']:.0f} MiB",
                f"{naive['wall_s']:.2f} s / {naive['peak_rss_mib']:.0f} MiB",
                f"{copy['wall_s']:.2f} s",
                f"{stream['wall_vs_copy']:.2f}",
                f"{stream['extra_rss_vs_shard']:.2f}",
                f"{paths['baseline']['peak_rss_mib']:.0f} MiB",
            ]
        )
    return results.Table(
        [
            "model (weights)",
            "max shard size",
            "streaming wall / peak RSS",
            "load-subtract-save",
            "copy of the bytes",
            "streaming / copy",
            "(RSS - interpreter) / largest shard",
            "interpreter with imports",
        ],
        out,
        notes="Targets: (RSS - interpreter) / largest shard <= 1.3, streaming within 2x the wall time of a copy.",
    )


def main(argv: list[str] | None = None) -> int:
    child = "--child" in (sys.argv[1:] if argv is None else argv)
    parser = make_parser(child)
    args = parser.parse_args(argv)
    if args.child:
        base, finetuned, output = args.child_args
        print(json.dumps(run_child(args.child, base, finetuned, output, args.max_shard_size[0])))
        return 0
    from hf_tbar.bench import results

    record = results.start(__file__, parser, args, argv, ignore=("workdir", "json"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hf_tbar-bench-"))
    rows = []
    try:
        for model in args.models:
            for shard in args.max_shard_size:
                rows += bench(model, shard, workdir, args.repeat)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(markdown(rows))
    for r in rows:
        if r["path"] == "streaming":
            ok_rss = r["extra_rss_vs_shard"] <= 1.3
            ok_wall = r["wall_vs_copy"] <= 2.0
            print(
                f"\n{r['model']} @ {r['shard']}: streaming (RSS - baseline) / largest shard = "
                f"{r['extra_rss_vs_shard']:.2f} (target <= 1.3: {'ok' if ok_rss else 'MISSED'}); "
                f"wall / copy = {r['wall_vs_copy']:.2f} (target <= 2: {'ok' if ok_wall else 'MISSED'})"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    record.table(
        "paths",
        results.table_from_markdown(
            markdown(rows),
            notes=f"Best wall time and CPU time of {args.repeat} run(s) per path, each in a fresh process; "
            "baseline: the interpreter with the same imports.",
        ),
    )
    record.table("summary", summary_table(rows))
    record.raw["rows"] = rows
    record.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
