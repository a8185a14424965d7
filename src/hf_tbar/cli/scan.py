"""``hf-tbar scan``: detect a backdoor in a CLIP image encoder with DECREE and estimate its target class."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..data.embedded import load_embedded_dataset
from ..data.pixels import dataset_to_tensors
from ..detection import DecreeConfig, DecreeResult, TargetEstimate, estimate_target, invert_trigger
from ..errors import ConfigError
from ..io import atomic_output_dir, check_output_dir, write_json
from ..tiny_clip import load_clip
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)

HELP = "Detect a backdoor with DECREE (trigger inversion from clean images) and estimate its target class."

REPORT_FILE = "decree_scan.json"
PICTURE_FILE = "decree_trigger.png"


@dataclass
class ScanArguments:
    """What to scan, on which clean images, and where to write the report."""

    model: str = field(metadata={"help": "CLIP folder or Hub id to scan."})
    dataset: str = field(
        default="digits", metadata={"help": "Embedded dataset giving clean images and class names."}
    )
    split: str = field(default="validation", metadata={"help": "Split the clean images come from."})
    num_images: int = field(default=256, metadata={"help": "Clean images used (the first N of the split)."})
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": f"If set, write {REPORT_FILE} and {PICTURE_FILE} there (a new or empty folder, outside the model)."
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace --output_dir if it already holds files."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int) or self.num_images < 2:
            raise ConfigError(
                f"num_images must be an int >= 2 (DECREE compares pairs), got {self.num_images!r}"
            )


DATACLASSES = (ScanArguments, DecreeConfig)


def scan(args: ScanArguments, config: DecreeConfig) -> tuple[DecreeResult, TargetEstimate]:
    """Load the model and ``args.num_images`` clean images, invert a trigger, estimate the target."""
    if args.output_dir is not None:  # refused before the scan, not after it
        check_output_dir(args.output_dir, [args.model], overwrite=args.overwrite)
    model, processor = load_clip(args.model)
    image_size = int(model.config.vision_config.image_size)
    dataset, task = load_embedded_dataset(args.dataset, image_size=image_size)
    if args.split not in dataset:
        raise ValueError(f"dataset {args.dataset!r} has no split {args.split!r}; splits: {sorted(dataset)}")
    split = dataset[args.split]
    rows = split.select(range(min(args.num_images, len(split))))
    pixels, _ = dataset_to_tensors(rows, processor)
    result = invert_trigger(model, processor, pixels, config)
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, task), processor
    )
    estimate = estimate_target(classifier, pixels, result.trigger)
    if args.output_dir is not None:
        report = {
            "model": args.model,
            "dataset": args.dataset,
            "split": args.split,
            "num_images": len(pixels),
            "config": config.to_dict(),
            "decree": result.to_dict(include_trigger=True),
            "target": {**estimate.to_dict(), "class_name": task.classnames[estimate.target]},
        }
        with atomic_output_dir(args.output_dir, overwrite=args.overwrite) as tmp:
            write_json(tmp / REPORT_FILE, report)
            result.trigger.save_png(
                tmp / PICTURE_FILE, title=f"DECREE: PL1 {result.pl1:.4f}, target {estimate.target}"
            )
        logger.info("wrote %s and %s to %s", REPORT_FILE, PICTURE_FILE, args.output_dir)
    return result, estimate


def run(args: ScanArguments, config: DecreeConfig) -> int:
    result, estimate = scan(args, config)
    verdict = "BACKDOORED" if result.is_backdoored else "not flagged"
    lines = [
        f"verdict: {verdict} (PL1 {result.pl1:.4f} vs threshold {result.threshold}; "
        f"similarity {result.similarity:.4f}, {result.steps} steps)",
        f"estimated target class: {estimate.target} ({100 * estimate.flip_share:.1f}% of triggered images sent there, "
        f"{100 * estimate.clean_share:.1f}% of clean ones)",
    ]
    print("\n".join(lines))  # noqa: T201 - console output of the CLI itself
    return 0
