"""Two backdoors in one model, removed at once: one trigger vector each, scales chosen jointly.

The embedded tiny CLIP is fine-tuned once on a training split poisoned twice: BadNets (10%) driving to class
0 and Blended (10%) driving to class 1 (the Blended recipe's 600 steps at 2e-4). TBAR then fits one vector per
attack (the seed paper's plain trigger vector, and hf_tbar's repair-preserving variant) (300 triggered images each, the defaults) and chooses the two negation scales by a
coordinate search on validation data (CA >= 0.95 x the backdoored CA), and the result is verified on the
test split with each trigger. Target (issue): both ASRs <= 5% with CA retention >= 95%.

    python benchmarks/multi_backdoor.py --variants plain repair-preserving
    python benchmarks/multi_backdoor.py --variants plain repair-preserving --steps 30 100

One row per variant and step count (table ``main``), written to results/multi_backdoor.json for the
canonical run of results/runs.yaml.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from hf_tbar import BackdoorUnlearner, TBARConfig, embedded_scenario
from hf_tbar.attacks import poison_dataset
from hf_tbar.bench import results
from hf_tbar.data import load_embedded_dataset
from hf_tbar.io import atomic_output_dir
from hf_tbar.models.loading import load_model
from hf_tbar.training.backdoor import BackdoorConfig, backdoor_clip
from hf_tbar.training.cache import cached_checkpoint
from hf_tbar.training.pretrain import PretrainConfig, pretrained_clip_path

ATTACKS = (("badnets", 0), ("blended", 1))


def recipes() -> list[BackdoorConfig]:
    """The two attacks' recipes (seeds differ so that the poisoned rows differ)."""
    return [
        BackdoorConfig.for_attack(attack, target=target, seed=i) for i, (attack, target) in enumerate(ATTACKS)
    ]


def two_backdoor_model() -> Path:
    """The clean tiny CLIP fine-tuned on a split poisoned by both attacks, cached by its recipe and code
    (:func:`hf_tbar.training.cache.cached_checkpoint`: a folder from another recipe or older code is rebuilt)."""
    pretrain = PretrainConfig()
    first, second = recipes()

    def build(folder: Path) -> None:
        dataset, task = load_embedded_dataset(pretrain.dataset, image_size=pretrain.architecture.image_size)
        train = poison_dataset(
            dataset["train"], first.trigger(), first.target, first.poison_rate, seed=first.seed
        )
        model, processor = load_model(pretrained_clip_path(pretrain))
        # backdoor_clip poisons with the second trigger and fine-tunes on rows carrying either
        backdoor_clip(model, processor, task, train.remove_columns("poisoned"), second)
        with atomic_output_dir(folder) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)

    side = pretrain.architecture.image_size
    recipe = {
        "kind": "two-backdoors",
        "clean": pretrain.cache_key(),
        "backdoors": [config.to_dict(image_size=side) for config in (first, second)],
    }
    return cached_checkpoint("multi-backdoored", recipe, build)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set_size", type=int, default=300, help="Triggered images per trigger vector.")
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[30],
        help="Fine-tuning steps of each vector (TBAR's 30); several values: one run each.",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["plain", "repair-preserving"],
        help="Vector variants (hf_tbar.tbar.variants).",
    )
    return results.add_results_arguments(parser)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv, ignore=("work_dir",))
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    path = two_backdoor_model()
    built = time.perf_counter() - start
    base = embedded_scenario("badnets")  # the embedded splits (its models are not used)
    pairs = [(recipe.trigger(), recipe.target) for recipe in recipes()]
    names = [trigger.name for trigger, _ in pairs]
    columns = ["variant", "steps", *(f"{name} ASR (scale)" for name in names), "CA", "CA retention"]
    columns.append("target-class acc " + " / ".join(str(target) for _, target in pairs))
    rows, raw = [], []
    for variant in args.variants:
        for steps in args.steps:
            config = TBARConfig(unlearning_set_size=args.set_size, variant=variant, steps=steps)
            unlearner = BackdoorUnlearner(path, task=base.task, config=config)
            start = time.perf_counter()
            result = unlearner.unlearn_many(pairs, base.train, base.validation, base.test)
            elapsed = time.perf_counter() - start
            print(f"\nvariant {variant}, {steps} steps:\n{result.table()}")  # noqa: T201
            print(  # noqa: T201
                f"CA {100 * result.before[0].clean_accuracy:.1f}% -> {100 * result.after[0].clean_accuracy:.1f}% "
                f"(retention {100 * result.ca_retention:.1f}%), {result.evaluations} validation evaluations, "
                f"{elapsed:.0f} s (model built in {built:.0f} s); target-class accuracy after: "
                + ", ".join(
                    f"class {t}: {100 * r.target_class_accuracy:.1f}%"
                    for t, r in zip(result.targets, result.after)
                )
            )
            if not rows:
                before = [_pct(r.attack_success_rate) for r in result.before]
                tca = " / ".join(_pct(r.target_class_accuracy) for r in result.before)
                rows.append(["backdoored", "-", *before, _pct(result.before[0].clean_accuracy), "-", tca])
            asr = [f"{_pct(r.attack_success_rate)} ({s:.2f})" for r, s in zip(result.after, result.scales)]
            tca = " / ".join(_pct(r.target_class_accuracy) for r in result.after)
            rows.append(
                [
                    variant,
                    str(steps),
                    *asr,
                    _pct(result.after[0].clean_accuracy),
                    _pct(result.ca_retention),
                    tca,
                ]
            )
            raw.append(
                {
                    "variant": variant,
                    "steps": steps,
                    "targets": result.targets,
                    "scales": result.scales,
                    "before": result.before,
                    "after": result.after,
                    "ca_retention": result.ca_retention,
                    "evaluations": result.evaluations,
                    "warnings": result.warnings,
                    "wall_s": elapsed,
                }
            )
    record.table(
        "main",
        results.Table(
            columns,
            rows,
            notes=f"{args.set_size} triggered images per trigger vector; scales chosen jointly on the validation "
            f"split; test split ({len(base.test[1])} images).",
        ),
    )
    record.raw.update({"rows": raw, "model_build_s": built})
    record.write()


if __name__ == "__main__":
    main()
