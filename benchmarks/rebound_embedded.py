"""Rebound check on the embedded benchmark: does a little fine-tuning bring a removed backdoor back?

    python benchmarks/rebound_embedded.py [--attack badnets] [--defenses tbar tsbd ...] [--rebound-steps 20]

The backdoored tiny CLIP (and, as a control, its clean parent) and every defence of the harness (run as
``hf-tbar bench`` runs them: ``--set-size`` clean train images per defence, TBAR with its known trigger and
``--tbar-variant``) are each fine-tuned for ``--rebound-steps`` steps (a) on clean train images with their
true labels and (b) on the same images plus ``--poisoned-samples`` triggered copies labelled with the target
(:func:`hf_tbar.tbar.rebound.rebound`). Prints a markdown table of ASR / CA on the test split after each, and
writes it (table ``main``) to results/rebound_embedded.json for the canonical run of results/runs.yaml.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import torch

from hf_tbar.attacks import TRIGGERS
from hf_tbar.bench import results
from hf_tbar.bench.arguments import DEFAULT_DEFENSES
from hf_tbar.bench.harness import BenchRun, draw_clean_subset
from hf_tbar.defenses import DEFENSES, DefenseData, get_defense
from hf_tbar.evaluation import EvalResult
from hf_tbar.models.loading import load_model
from hf_tbar.scale_search import NoFeasibleScaleError
from hf_tbar.scenarios.embedded import embedded_scenario
from hf_tbar.tbar.rebound import ReboundConfig, rebound
from hf_tbar.tbar.variants import VARIANTS


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", default="badnets", choices=sorted(TRIGGERS))
    parser.add_argument("--defenses", nargs="+", default=list(DEFAULT_DEFENSES), choices=sorted(DEFENSES))
    parser.add_argument("--set-size", type=int, default=300, help="images each defence gets")
    parser.add_argument("--defense-steps", type=int, default=None, help="defences' steps (None: defaults)")
    parser.add_argument("--decree-steps", type=int, default=None, help="DECREE's steps (None: default)")
    parser.add_argument("--tbar-variant", default="repair-preserving", choices=sorted(VARIANTS))
    parser.add_argument("--rebound-steps", type=int, default=ReboundConfig.steps)
    parser.add_argument("--poisoned-samples", type=int, default=ReboundConfig.poisoned_samples)
    parser.add_argument("--clean-images", type=int, default=ReboundConfig.clean_images)
    parser.add_argument("--learning-rate", type=float, default=ReboundConfig.learning_rate)
    parser.add_argument("--seed", type=int, default=0)
    return results.add_results_arguments(parser)


def cell(scored: EvalResult) -> str:
    return f"{100 * scored.attack_success_rate:.1f} / {100 * scored.clean_accuracy:.1f}"


def defended_models(args, scenario, model, processor) -> list[tuple[str, torch.nn.Module | None]]:
    """``(label, sanitized model or None when the defence found no feasible scale)`` per defence."""
    pixels, labels = draw_clean_subset(scenario.train, args.set_size, args.seed)
    # as the harness: only the defences that need the trigger are told it (and the target)
    blind = DefenseData(pixels, labels, scenario.task, processor, validation=scenario.validation)
    told = dataclasses.replace(blind, trigger=scenario.trigger, target=scenario.target)
    out = []
    for name in args.defenses:
        defense = get_defense(name)
        data = told if defense.needs_trigger else blind
        run = BenchRun(args.seed, len(labels), 0.0, args.defense_steps, args.decree_steps, args.tbar_variant)
        label = f"{name} ({args.tbar_variant})" if name.startswith("tbar") else name
        try:
            out.append((label, defense(model, data, defense.config_class.for_run(run)).model))
        except NoFeasibleScaleError:
            out.append((label, None))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    scenario = embedded_scenario(args.attack)
    backdoored, processor = load_model(scenario.backdoored_path)
    clean, _ = load_model(scenario.clean_path)
    config = ReboundConfig(
        steps=args.rebound_steps,
        learning_rate=args.learning_rate,
        poisoned_samples=args.poisoned_samples,
        clean_images=args.clean_images,
        seed=args.seed,
    )
    models = [("clean model (never backdoored)", clean), ("backdoored", backdoored)]
    models += defended_models(args, scenario, backdoored, processor)
    k, n, steps = config.poisoned_samples, config.clean_images, config.steps
    rows = [
        f"| model | after sanitizing | + {steps} clean steps | + {steps} steps with {k} poisoned |",
        "|---|---|---|---|",
    ]
    raw = []
    for name, model in models:
        if model is None:
            rows.append(f"| {name} | no feasible scale | - | - |")
            raw.append({"model": name, "status": "no feasible scale"})
            continue
        train, test = scenario.train, scenario.test
        result = rebound(
            model, processor, scenario.task, *train, scenario.trigger, scenario.target, *test, config
        )
        scores = (result.before, result.after_clean, result.after_poisoned)
        rows.append(f"| {name} | " + " | ".join(cell(scored) for scored in scores) + " |")
        raw.append(
            {"model": name, "status": "ok", **dict(zip(("before", "after_clean", "after_poisoned"), scores))}
        )
        print(rows[-1], flush=True)
    kind = "target-class" if scenario.trigger.clean_label else "non-target"
    steps_note = "default steps" if args.defense_steps is None else f"{args.defense_steps} steps each"
    notes = (
        f"ASR / CA in % on the {len(scenario.test[1])}-image test split, {args.attack}, seed {args.seed}. "
        f"Defences: {args.set_size} train images each, {steps_note}. Rebound: {steps} steps of "
        f"{config.batch_size} at lr {config.learning_rate:g} on {n} clean train images; the poisoned run "
        f"adds {k} triggered copies of {k} {kind} ones labelled {scenario.target} "
        f"({k / (n + k):.1%} of the set)."
    )
    print(f"\n{notes} Total {time.perf_counter() - start:.0f} s.\n")
    print("\n".join(rows))
    record.table("main", results.table_from_markdown("\n".join(rows), notes=notes))
    record.raw["rows"] = raw
    record.write()


if __name__ == "__main__":
    main()
