"""The image-caption setting on the embedded captioned world: contrastive pretraining, poisoned contrastive
training, and the defences, all scored zero-shot on a held-out task (which shape; target "triangle").

1. The clean tiny CLIP is pretrained with CLIP's InfoNCE on generated image-caption pairs (cached) and its
   zero-shot accuracy is reported on the held-out tasks (shape, colour, digit) that no caption labels.
2. With ``--attacks``, each attack poisons 1% of 20,000 fresh pairs (trigger + a caption naming the target)
   in a continued contrastive training of both towers (cached), and every defence is run on the poisoned
   model: TBAR (plain and a variant; contrastive loss on captioned triggered images, or the zero-shot
   head's cross-entropy), clean fine-tuning, CleanCLIP on clean pairs (at TBAR's budget and at its usual
   one) and TSBD. Per row: zero-shot CA, ASR, target-class accuracy and CA retention on the shape task,
   the colour and digit tasks' accuracy (what else the model still knows), images and optimizer steps.
3. With ``--heatmap DIR``, the weight-disentanglement error of the contrastive trigger vector against a
   clean contrastive vector, for the first attack.

    python benchmarks/caption_embedded.py                                     # part 1 only
    python benchmarks/caption_embedded.py --attacks badnets blended wanet sig --heatmap outputs/caption

Tables ``zero_shot``, ``defences`` (with ``--attacks``) and ``disentanglement`` (with ``--heatmap``) go to
results/caption_embedded.json (or results/caption_pretrain_1000.json: see results/runs.yaml).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from hf_tbar.bench import results
from hf_tbar.data.captioned import HELD_OUT_TASKS
from hf_tbar.defenses import DefenseData, TBARDefenseConfig, get_defense
from hf_tbar.evaluation import evaluate_model
from hf_tbar.metrics import ca_retention
from hf_tbar.models.loading import load_model
from hf_tbar.scale_search import NoFeasibleScaleError
from hf_tbar.scenarios.captioned import captioned_scenario
from hf_tbar.training.captioned import CaptionPretrainConfig, captioned_clip_path, zero_shot_accuracies

#: (row label, defence, clean images it gets, config overrides); TBAR's rows get 300 triggered images. The
#: variant's rows fit 100 steps instead of TBAR's default 30 (its repair vector needs them here).
DEFENCES = [
    ("TBAR plain, contrastive", "tbar", 300, {"variant": "plain"}),
    ("TBAR plain, cross-entropy", "tbar", 300, {"variant": "plain", "use_captions": False}),
    ("TBAR repair-preserving, contrastive", "tbar", 300, {"variant": "repair-preserving", "steps": 100}),
    (
        "TBAR repair-preserving, cross-entropy",
        "tbar",
        300,
        {"variant": "repair-preserving", "steps": 100, "use_captions": False},
    ),
    ("clean fine-tuning", "clean-finetune", 300, {}),
    ("CleanCLIP", "cleanclip", 300, {}),
    ("CleanCLIP, usual budget", "cleanclip", 20000, {"steps": 1000}),
    ("TSBD", "tsbd", 300, {}),
]


def _config(name: str, seed: int, overrides: dict):
    config_class = get_defense(name).config_class
    if issubclass(config_class, TBARDefenseConfig):
        use_captions = overrides.pop("use_captions", True)
        base = config_class()
        tbar = replace(base.tbar, seed=seed, **overrides)
        return replace(base, tbar=tbar, use_captions=use_captions)
    return replace(config_class(), seed=seed, **overrides)


def _score(model, processor, scenario, before_ca: float | None) -> dict:
    result = evaluate_model(
        model, processor, scenario.task, *scenario.test, scenario.trigger, scenario.target
    )
    others = zero_shot_accuracies(model, processor, count=1000)
    return {
        "clean_accuracy": result.clean_accuracy,
        "attack_success_rate": result.attack_success_rate,
        "target_class_accuracy": result.target_class_accuracy,
        "ca_retention": ca_retention(result.clean_accuracy, before_ca) if before_ca is not None else None,
        "colour_accuracy": others["colour"],
        "digit_accuracy": others["digit"],
    }


def benchmark_attack(
    attack: str, seed: int, train_size: int, defences: list[str] | None = None
) -> list[dict]:
    """The clean and backdoored rows of ``attack``, then one row per defence of :data:`DEFENCES` whose
    defence name is in ``defences`` (all of them when ``None``)."""
    scenario = captioned_scenario(attack, train_size=train_size)
    clean, processor = load_model(scenario.clean_path)
    backdoored, _ = load_model(scenario.backdoored_path)
    rows = [{"attack": attack, "model": "clean", **_score(clean, processor, scenario, None)}]
    before = _score(backdoored, processor, scenario, None)
    rows.append({"attack": attack, "model": "backdoored", **before})
    for label, name, size, overrides in DEFENCES:
        if defences is not None and name not in defences:
            continue
        order = torch.randperm(len(scenario.train[1]), generator=torch.Generator().manual_seed(seed))[:size]
        defense = get_defense(name)
        data = DefenseData(
            scenario.train[0][order],
            scenario.train[1][order],
            scenario.task,
            processor,
            trigger=scenario.trigger if defense.needs_trigger else None,
            target=scenario.target if defense.needs_trigger else None,
            validation=scenario.validation,
            clean_captions=[scenario.train_captions[i] for i in order.tolist()],
        )
        start = time.perf_counter()
        try:
            result = defense(backdoored, data, _config(name, seed, dict(overrides)))
        except NoFeasibleScaleError as err:
            rows.append({"attack": attack, "model": label, "status": str(err).splitlines()[0]})
            continue
        scored = _score(result.model, processor, scenario, before["clean_accuracy"])
        rows.append(
            {
                "attack": attack,
                "model": label,
                **scored,
                "clean_images": result.clean_images_used,
                "triggered_images": result.triggered_images_used,
                "steps": result.finetune_steps,
                "scale": result.details.get("scale"),
                "wall_s": time.perf_counter() - start,
            }
        )
        logging.info("%s", rows[-1])
    return rows


def heatmap(attack: str, seed: int, output_dir: Path) -> str:
    """Disentanglement error of the contrastive trigger vector against a clean contrastive vector."""
    from hf_tbar import BackdoorUnlearner, TaskVector, TBARConfig
    from hf_tbar.analysis import disentanglement_error, plot_disentanglement
    from hf_tbar.data.images import TensorImages
    from hf_tbar.defenses import CleanCLIPConfig, run_defense

    scenario = captioned_scenario(attack)
    model, processor = load_model(scenario.backdoored_path)
    pixels, labels = scenario.train[0][:300], scenario.train[1][:300]
    captions = scenario.train_captions[:300]
    unlearner = BackdoorUnlearner(model, processor, scenario.task, TBARConfig(seed=seed))
    trigger_vector = unlearner.fit_trigger_vector(
        scenario.trigger, scenario.target, clean_pixels=TensorImages(pixels, labels, captions=captions)
    )
    clean_config = CleanCLIPConfig(
        steps=30, batch_size=32, seed=seed, self_supervised_weight=0.0, train_text_tower=False
    )
    data = DefenseData(pixels, labels, scenario.task, processor, clean_captions=captions)
    clean_vector = TaskVector.from_models(model, run_defense("cleanclip", model, data, clean_config).model)
    test_pixels, test_labels = scenario.test
    grid = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    result = disentanglement_error(
        model,
        clean_vector,
        trigger_vector,
        grid,
        grid,
        processor,
        scenario.task,
        test_pixels,
        scenario.trigger(test_pixels[test_labels != scenario.target]),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    title = f"{attack}, captioned world: clean contrastive vs trigger vector"
    plot_disentanglement(result, output_dir / "disentanglement.png", title=title)
    cosine = clean_vector.cosine_similarity(trigger_vector)
    (output_dir / "disentanglement.json").write_text(
        json.dumps({"cosine": cosine, **result.to_dict()}, indent=2)
    )
    return (
        result.to_markdown()
        + f"\n\ncosine(tau_c, tau_t) = {cosine:.3f}; heatmap: {output_dir / 'disentanglement.png'}"
    )


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="Pretraining steps (default: the recipe's).")
    parser.add_argument("--pairs", type=int, default=None, help="Generated image-caption pairs.")
    parser.add_argument(
        "--eval_scenes", type=int, default=2000, help="Fresh scenes per zero-shot evaluation."
    )
    parser.add_argument("--attacks", nargs="*", default=[], help="Attacks to poison with and defend against.")
    parser.add_argument(
        "--defences",
        nargs="*",
        default=None,
        choices=sorted({name for _, name, _, _ in DEFENCES}),
        help="Only these defences' rows (default: all); with no name, only the clean and backdoored rows.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the defenders' data draw and training.")
    parser.add_argument(
        "--train_size", type=int, default=20000, help="Clean captioned scenes the defenders draw from."
    )
    parser.add_argument("--heatmap", type=Path, default=None, help="Folder of the disentanglement heatmap.")
    parser.add_argument("--output", type=Path, default=None, help="JSON file of every row.")
    return results.add_results_arguments(parser)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv, ignore=("output",))
    logging.basicConfig(level=logging.WARNING)
    config = CaptionPretrainConfig()
    config = replace(config, **{k: v for k, v in (("steps", args.steps), ("pairs", args.pairs)) if v})
    start = time.perf_counter()
    path = captioned_clip_path(config)
    trained = time.perf_counter() - start
    model, processor = load_model(path)
    accuracies = zero_shot_accuracies(model, processor, count=args.eval_scenes)
    out = [
        f"captioned tiny CLIP ({config.pairs} pairs, {config.steps} steps of {config.batch_size}): "
        f"{trained:.0f} s (0 when cached)\n",
        "| held-out task | classes | chance | zero-shot accuracy |\n|---|---|---|---|",
    ]
    for name, task in HELD_OUT_TASKS.items():
        out.append(
            f"| {name} | {task.num_classes} | {100 / task.num_classes:.1f}% | {100 * accuracies[name]:.1f}% |"
        )
    print("\n".join(out), flush=True)  # noqa: T201
    record.table(
        "zero_shot",
        results.table_from_markdown(
            "\n".join(out[1:]),
            notes=f"The captioned tiny CLIP ({config.pairs} pairs, {config.steps} steps of {config.batch_size}) "
            f"asked zero-shot on {args.eval_scenes} fresh scenes per task; no caption was a label for these tasks.",
        ),
    )
    record.raw.update({"pretrain": config, "pretrain_s": trained, "zero_shot": accuracies})
    rows = []
    for attack in args.attacks:
        rows += benchmark_attack(attack, args.seed, args.train_size, args.defences)
    if rows:
        table = [
            "\n| attack | model | CA | ASR | target-class acc. | CA retention | colour | digit "
            "| clean images | triggered images | steps |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            if "status" in row:
                table.append(f"| {row['attack']} | {row['model']} | {row['status']} |||||||||")
                continue
            table.append(
                f"| {row['attack']} | {row['model']} | {_pct(row['clean_accuracy'])} "
                f"| {_pct(row['attack_success_rate'])} | {_pct(row['target_class_accuracy'])} "
                f"| {_pct(row['ca_retention'])} | {_pct(row['colour_accuracy'])} | {_pct(row['digit_accuracy'])} "
                f"| {row.get('clean_images', '-')} | {row.get('triggered_images', '-')} | {row.get('steps', '-')} |"
            )
        print("\n".join(table), flush=True)  # noqa: T201
        record.table(
            "defences",
            results.table_from_markdown(
                "\n".join(table),
                notes="Zero-shot on the held-out shape task (target: triangle); colour and digit: the other "
                "held-out tasks' accuracy after each defence.",
            ),
        )
        record.raw["rows"] = rows
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2))
    if args.heatmap and args.attacks:
        text = heatmap(args.attacks[0], args.seed, args.heatmap)
        print("\n" + text)  # noqa: T201
        cosine = next(line for line in text.splitlines() if line.startswith("cosine"))
        record.table(
            "disentanglement",
            results.table_from_markdown(
                text,
                notes=f"{args.attacks[0]}: disentanglement error xi(a_c, a_t), rows a_c (clean contrastive "
                f"vector), columns a_t (contrastive trigger vector). {cosine.split(';')[0]}.",
            ),
        )
    record.write()


if __name__ == "__main__":
    main()
