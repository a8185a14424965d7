"""TBAR benchmark on the embedded data: per attack, full and LoRA, every registered variant,
plus clean fine-tuning with the same data budget.

    python benchmarks/tbar_embedded.py [--attacks badnets ...] [--modes full lora] [--variants plain repair ...]

Reports test-split CA, ASR, target-class accuracy, CA retention, unlearning-set size and wall time.
The scale is chosen on the validation split (CA >= 0.95 x backdoored, target-class acc >= 0.8 x).
Writes tables ``runs`` (as printed) and ``by_attack`` (CA / ASR / target-class accuracy per method and
attack) to results/tbar_embedded.json, or results/tbar_embedded_900.json for the larger-budget run of
results/runs.yaml, or results/tbar_glyphs.json for the run in the glyph world (64 px Greek capitals, where no
default of hf_tbar was chosen: ``--world glyphs``; see results/README.md).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time

import torch
from torch.utils.data import TensorDataset

from hf_tbar import BackdoorUnlearner, ScaleSearchConfig, TBARConfig
from hf_tbar.attacks import TRIGGERS
from hf_tbar.bench import results
from hf_tbar.scenarios import world_scenario
from hf_tbar.tbar.variants import VARIANTS
from hf_tbar.training.backdoor import classification_loss, vision_parameters
from hf_tbar.training.loop import run_training
from hf_tbar.training.recipes import WORLD_ATTACK_RECIPES


def clean_finetune(
    unlearner: BackdoorUnlearner, pixels: torch.Tensor, labels: torch.Tensor, config: TBARConfig
):
    """Baseline: fine-tune the vision tower on the same number of *clean*, correctly labelled images."""
    work = copy.deepcopy(unlearner.model)
    params = vision_parameters(work)
    run_training(
        unlearner.classifier(work),
        params,
        TensorDataset(pixels, labels),
        classification_loss,
        config.finetune_config(),
        desc="clean fine-tuning",
    )
    return work.eval()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--attacks", nargs="+", default=["badnets", "blended", "wanet", "sig"], choices=sorted(TRIGGERS)
    )
    parser.add_argument(
        "--world",
        default="digits",
        choices=sorted(WORLD_ATTACK_RECIPES),
        help="Embedded world (models, data).",
    )
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--target-threshold", type=float, default=0.8)
    parser.add_argument(
        "--steps", type=int, default=TBARConfig.steps, help="Fine-tuning steps of each vector."
    )
    parser.add_argument(
        "--unlearning-set-size", type=int, default=TBARConfig.unlearning_set_size, help="Triggered images."
    )
    parser.add_argument(
        "--preserve-set-size",
        type=int,
        default=TBARConfig.preserve_set_size,
        help="Clean target-class images of the *-preserving variants.",
    )
    return results.add_results_arguments(parser)


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def pivot(records: list[dict], attacks: list[str]) -> results.Table:
    """Methods as rows, attacks as columns, cells ``CA / ASR / target-class accuracy`` in %."""
    cells: dict[str, dict[str, str]] = {}
    for r in records:
        cell = (
            "no feasible scale"
            if r["status"] != "ok"
            else " / ".join(
                f"{100 * r[key]:.1f}"
                for key in ("clean_accuracy", "attack_success_rate", "target_class_accuracy")
            )
        )
        cells.setdefault(r["method"], {})[r["attack"]] = cell
    rows = [[method, *(by.get(a, "-") for a in attacks)] for method, by in cells.items()]
    return results.Table(
        ["method", *attacks],
        rows,
        notes="Cells: CA / ASR / target-class accuracy in %, on the test split.",
    )


def method_label(mode: str, variant: str) -> str:
    return f"TBAR {mode if mode == 'full' else 'LoRA'}, {variant}"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv)
    logging.basicConfig(level=logging.WARNING)
    header = "| attack | defence | CA | ASR | target acc | CA retention | images | scale | time s |\n|---|---|---|---|---|---|---|---|---|"
    rows = []
    records = []
    search = ScaleSearchConfig(target_threshold=args.target_threshold)
    for attack in args.attacks:
        sc = world_scenario(args.world, attack)
        base = BackdoorUnlearner(sc.backdoored_path, task=sc.task)
        before = base.evaluate(*sc.test, sc.trigger, sc.target)
        rows.append(
            f"| {attack} | none (backdoored) | {fmt(before.clean_accuracy)} | {fmt(before.attack_success_rate)} | "
            f"{fmt(before.target_class_accuracy)} | 100.0% | 0 | - | - |"
        )
        records.append({"attack": attack, "method": "backdoored", "status": "ok", **before.to_dict()})
        print(rows[-1], flush=True)
        for mode in args.modes:
            for variant in args.variants:
                config = TBARConfig(
                    mode=mode,
                    variant=variant,
                    learning_rate=1e-4 if mode == "full" else 1e-3,
                    steps=args.steps,
                    unlearning_set_size=args.unlearning_set_size,
                    preserve_set_size=args.preserve_set_size,
                )
                unlearner = BackdoorUnlearner(sc.backdoored_path, task=sc.task, config=config)
                start = time.perf_counter()
                method = {
                    "attack": attack,
                    "method": method_label(mode, variant),
                    "mode": mode,
                    "variant": variant,
                }
                try:
                    r = unlearner.unlearn(
                        sc.trigger,
                        sc.target,
                        sc.train[0],
                        sc.validation,
                        sc.test,
                        clean_labels=sc.train[1],
                        search=search,
                    )
                except ValueError as err:
                    rows.append(
                        f"| {attack} | TBAR {mode} {variant} | no qualifying scale: {str(err).splitlines()[0]} |"
                    )
                    records.append({**method, "status": f"no qualifying scale: {str(err).splitlines()[0]}"})
                    print(rows[-1], flush=True)
                    continue
                images = r.unlearning_set_size + (
                    config.preserve_set_size if variant.endswith("preserving") else 0
                )
                elapsed = time.perf_counter() - start
                rows.append(
                    f"| {attack} | TBAR {mode} {variant} | {fmt(r.after.clean_accuracy)} | {fmt(r.after.attack_success_rate)} | "
                    f"{fmt(r.after.target_class_accuracy)} | {fmt(r.ca_retention)} | {images} | {r.selection.scale:.2f} | "
                    f"{elapsed:.0f} |"
                )
                records.append(
                    {
                        **method,
                        "status": "ok",
                        **r.after.to_dict(),
                        "ca_retention": r.ca_retention,
                        "images": images,
                        "scale": r.selection.scale,
                        "wall_s": elapsed,
                    }
                )
                print(rows[-1], flush=True)
        config = TBARConfig(steps=args.steps, unlearning_set_size=args.unlearning_set_size)
        start = time.perf_counter()
        order = torch.randperm(len(sc.train[1]), generator=torch.Generator().manual_seed(0))[
            : config.unlearning_set_size
        ]
        tuned = clean_finetune(base, sc.train[0][order], sc.train[1][order], config)
        after = base.evaluate(*sc.test, sc.trigger, sc.target, model=tuned)
        elapsed = time.perf_counter() - start
        rows.append(
            f"| {attack} | clean fine-tuning | {fmt(after.clean_accuracy)} | {fmt(after.attack_success_rate)} | "
            f"{fmt(after.target_class_accuracy)} | {fmt(after.clean_accuracy / before.clean_accuracy)} | "
            f"{config.unlearning_set_size} | - | {elapsed:.0f} |"
        )
        records.append(
            {
                "attack": attack,
                "method": "clean fine-tuning",
                "status": "ok",
                **after.to_dict(),
                "ca_retention": after.clean_accuracy / before.clean_accuracy,
                "images": config.unlearning_set_size,
                "wall_s": elapsed,
            }
        )
        print(rows[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(rows))
    record.table(
        "runs",
        results.table_from_markdown(
            header + "\n" + "\n".join(rows),
            notes=f"Test split, target-class threshold {args.target_threshold:g}, {args.steps} fine-tuning "
            f"steps, {args.unlearning_set_size} triggered images (+ {args.preserve_set_size} clean "
            "target-class images for the *-preserving variants); images: what each run used.",
        ),
    )
    record.table("by_attack", pivot(records, args.attacks))
    record.raw["rows"] = records
    record.write()


if __name__ == "__main__":
    main()
