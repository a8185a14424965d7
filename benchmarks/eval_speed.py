"""Evaluation at the speed of the forward pass: images per second of hf_tbar's evaluation against a bare forward
pass of the vision tower, at the same batch size, on the same images.

Generates once (cached, deterministic) an imagefolder of ``--images`` 256x256 RGB JPEGs in 10 classes, builds a
random CLIP with the real ViT-B/32 configuration (``--model b32``; ``small224`` for a quick run), and measures,
in this one process, one after the other:

- ``bare forward``: the images decoded beforehand into one tensor; only the normalisation and the vision tower
  (with its projection) run, ``--batch_size`` images at a time. The ceiling.
- ``decode only``: reading the images through the model's processor, nothing else (what the forward pass has to
  hide).
- ``evaluate, clean``: :func:`hf_tbar.evaluation.evaluate_classifier` streaming the images from the dataset
  (each batch decoded, then forwarded), CA only.
- ``evaluate, clean, 1 loader worker``: the same with a DataLoader worker process decoding the next batches
  while the model runs (``DatasetImages(num_workers=1)``), to show what overlapping buys on these cores.
- ``evaluate, triggered``: CA and BadNets ASR (the 16 px patch stamped on every non-target image, each forwarded
  a second time); images/s counts every image forwarded.
- ``search candidate``: one candidate scale of the scale search, on the
  :class:`~hf_tbar.tbar.validation.ValidationSet` that decoded and stamped the images once (clean and
  triggered forwarded).

Target: every ``evaluate`` row at least 80% of the bare forward pass (``vs bare`` column). Run it with the two
cores to itself. Results: markdown on stdout; results/eval_speed.json for the canonical run.

    python benchmarks/eval_speed.py                     # b32, 384 images
    python benchmarks/eval_speed.py --model small224    # quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clip_shapes import ALL_ARCHITECTURES, CLASSNAMES, build_random_clip, write_imagefolder

from hf_tbar.bench import results

ROOT = Path(__file__).resolve().parent.parent
TARGET_CLASS = 0
SPEED_TARGET = 0.8


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ALL_ARCHITECTURES), default="b32")
    parser.add_argument("--images", type=int, default=384, help="Images evaluated per row.")
    parser.add_argument("--batch_size", type=int, default=128, help="Images per forward pass (every row).")
    parser.add_argument("--image_size", type=int, default=256, help="Side of the generated JPEGs (> 224).")
    parser.add_argument("--work_dir", type=Path, default=ROOT / "outputs/benchmarks/eval_speed")
    return results.add_results_arguments(parser)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv, ignore=("work_dir",))
    import torch

    from hf_tbar.attacks import build_trigger
    from hf_tbar.data import DataArguments, load_task_data
    from hf_tbar.data.arguments import DEFAULT_TEMPLATES
    from hf_tbar.data.images import DatasetImages
    from hf_tbar.evaluation import evaluate_classifier
    from hf_tbar.models.loading import load_model
    from hf_tbar.tbar.validation import ValidationSet
    from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head, encode_images

    work = args.work_dir.resolve()
    data_dir = write_imagefolder(
        work / f"images{args.image_size}-{args.images}", {"train": 100, "test": args.images}, args.image_size
    )
    data = load_task_data(DataArguments(dataset_name=str(data_dir)))
    model_dir = build_random_clip(args.model, work / "models" / args.model, [*CLASSNAMES, *DEFAULT_TEMPLATES])
    model, processor = load_model(model_dir)
    model.eval()
    head = build_zero_shot_head(model, processor.tokenizer, data.task)
    classifier = ZeroShotClassifier.from_processor(model, head, processor)
    images = DatasetImages(data.test, processor, data.image_column, data.label_column, "test images")

    worker = DatasetImages(
        data.test, processor, data.image_column, data.label_column, "test images", num_workers=1
    )
    trigger = build_trigger("badnets", patch_size=16)
    count = len(images)
    triggered = int((images.labels != TARGET_CLASS).sum())
    print(f"{args.model}: {count} images ({triggered} non-target), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip

    decode_s, (pixels, _) = timed(lambda: images.tensors(args.batch_size))
    mean, std = classifier.mean, classifier.std

    @torch.no_grad()
    def bare():
        for start in range(0, count, args.batch_size):
            encode_images(model, (pixels[start : start + args.batch_size] - mean) / std)

    bare()  # warm-up: the first pass allocates
    rows = []

    def row(name: str, seconds: float, forwarded: int) -> None:
        rows.append(
            {"mode": name, "forwarded": forwarded, "seconds": seconds, "images_per_s": forwarded / seconds}
        )
        print(f"{name}: {forwarded} images in {seconds:.1f} s ({forwarded / seconds:.1f}/s)", flush=True)

    row("bare forward", timed(bare)[0], count)
    row("decode only", decode_s, count)
    bs = args.batch_size
    row("evaluate, clean", timed(lambda: evaluate_classifier(classifier, images, batch_size=bs))[0], count)
    row(
        "evaluate, clean, 1 loader worker",
        timed(lambda: evaluate_classifier(classifier, worker, batch_size=bs))[0],
        count,
    )
    seconds = timed(lambda: evaluate_classifier(classifier, images, None, trigger, TARGET_CLASS, bs))[0]
    row("evaluate, triggered", seconds, count + triggered)
    checked = ValidationSet(images, data.task.num_classes, batch_size=bs)
    checked.baseline(classifier)
    checked.arm(trigger, TARGET_CLASS)
    before = checked.forwarded
    seconds = timed(lambda: checked.counts(classifier, 0))[0]
    row("search candidate (decoded and stamped once)", seconds, checked.forwarded - before)

    ceiling = rows[0]["images_per_s"]
    lines = [
        "| mode | images forwarded | wall s | images/s | vs bare forward | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        r["vs_bare"] = r["images_per_s"] / ceiling
        evaluated = r["mode"].startswith(("evaluate", "search"))
        verdict = "-" if not evaluated else ("ok" if r["vs_bare"] >= SPEED_TARGET else "MISSED")
        if r["mode"].endswith("loader worker"):
            verdict = "(option)"
        lines.append(
            f"| {r['mode']} | {r['forwarded']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | "
            f"{100 * r['vs_bare']:.0f}% | {verdict} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    notes = (
        f"{args.model}, {count} images of {args.image_size} px JPEG, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads; target: evaluate rows >= {100 * SPEED_TARGET:.0f}% of the bare forward"
    )
    record.table("main", results.table_from_markdown(table, notes=notes))
    record.raw.update({"rows": rows, "model": args.model, "images": count, "batch_size": args.batch_size})
    record.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
