"""Weight disentanglement error between a clean task vector and TBAR's trigger vector, on the embedded model.

    python benchmarks/disentanglement.py --attack badnets --output_dir outputs/disentanglement

Base ``theta_0``: the backdoored tiny CLIP (``--base backdoored``, where TBAR negates) or its clean parent
(``--base clean``). ``tau_t``: fine-tuning ``theta_0`` on ``--set_size`` triggered train images labelled with
the target (TBAR's trigger vector); ``tau_c``: the same fine-tuning on as many clean train images with
their true labels. ``D_c``: the clean test split; ``D_t``: the triggered non-target test images. Writes
``disentanglement.png`` (heatmap) and ``disentanglement.json`` and prints the grid; the grid (table ``grid``)
also goes to results/disentanglement.json for the canonical run of results/runs.yaml.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_tbar import BackdoorUnlearner, TaskVector, TBARConfig, embedded_scenario, load_model
from hf_tbar.analysis import disentanglement_error, plot_disentanglement
from hf_tbar.bench import draw_clean_subset, results
from hf_tbar.defenses import CleanFinetuneConfig, DefenseData, run_defense


@dataclass
class DisentanglementArguments:
    attack: str = field(default="badnets", metadata={"help": "Embedded attack whose trigger vector is used."})
    target: int = field(default=0, metadata={"help": "The attack's target class."})
    base: str = field(default="backdoored", metadata={"help": "theta_0: 'backdoored' or 'clean' tiny CLIP."})
    set_size: int = field(default=300, metadata={"help": "Train images per fine-tuning (triggered / clean)."})
    steps: int = field(default=30, metadata={"help": "Fine-tuning steps of each vector."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate of each vector."})
    clean_scales: list[float] = field(
        default_factory=lambda: [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0],
        metadata={"help": "Grid of a_c."},
    )
    trigger_scales: list[float] = field(
        default_factory=lambda: [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0],
        metadata={"help": "Grid of a_t."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the data draw and the fine-tunings."})
    output_dir: str = field(default="outputs/disentanglement", metadata={"help": "Where the heatmap goes."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})

    def __post_init__(self) -> None:
        if self.base not in ("backdoored", "clean"):
            raise ValueError(f"base must be 'backdoored' or 'clean', got {self.base!r}")


def make_parser() -> HfArgumentParser:
    return HfArgumentParser((DisentanglementArguments, results.ResultsArguments))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    parsed = parser.parse_args_into_dataclasses(args=argv)
    record = results.start(__file__, parser, parsed, argv, ignore=("output_dir", "threads"))
    args = parsed[0]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    sc = embedded_scenario(args.attack, target=args.target)
    model, processor = load_model(sc.backdoored_path if args.base == "backdoored" else sc.clean_path)
    pixels, labels = draw_clean_subset(sc.train, args.set_size, args.seed)
    config = TBARConfig(
        steps=args.steps, learning_rate=args.learning_rate, unlearning_set_size=args.set_size, seed=args.seed
    )
    trigger_vector = BackdoorUnlearner(model, processor, sc.task, config).fit_trigger_vector(
        sc.trigger, sc.target, clean_pixels=pixels
    )
    tuned = run_defense(
        "clean-finetune",
        model,
        DefenseData(pixels, labels, sc.task, processor),
        CleanFinetuneConfig(steps=args.steps, learning_rate=args.learning_rate, seed=args.seed),
    ).model
    clean_vector = TaskVector.from_models(model, tuned)
    test_pixels, test_labels = sc.test
    triggered = sc.trigger(test_pixels[test_labels != sc.target])
    result = disentanglement_error(
        model,
        clean_vector,
        trigger_vector,
        args.clean_scales,
        args.trigger_scales,
        processor,
        sc.task,
        test_pixels,
        triggered,
    )
    out = Path(args.output_dir)
    title = f"{args.attack}: clean vs trigger vector on the {args.base} tiny CLIP"
    plot_disentanglement(result, out / "disentanglement.png", title=title)
    summary = {
        "args": vars(args),
        "cosine(clean, trigger)": clean_vector.cosine_similarity(trigger_vector),
        "norms": {"clean": clean_vector.norm(), "trigger": trigger_vector.norm()},
        **result.to_dict(),
    }
    (out / "disentanglement.json").write_text(json.dumps(summary, indent=2))
    print(result.to_markdown())
    print(
        f"cosine(tau_c, tau_t) = {summary['cosine(clean, trigger)']:.3f}; heatmap: {out / 'disentanglement.png'}"
    )
    record.table(
        "grid",
        results.table_from_markdown(
            result.to_markdown(),
            notes=f"Disentanglement error xi(a_c, a_t) on the {args.base} tiny CLIP, {args.attack}: rows a_c "
            f"(clean vector), columns a_t (trigger vector); {args.set_size} images and {args.steps} steps per "
            f"vector. cosine(tau_c, tau_t) = {summary['cosine(clean, trigger)']:.3f}.",
        ),
    )
    record.raw.update(summary)
    record.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
