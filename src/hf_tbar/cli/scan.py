"""``hf-tbar scan``: detect a backdoor in a CLIP image encoder with DECREE and estimate its target class.

The clean images and the class names come from the same data arguments as the rest of the product
(:class:`~hf_tbar.data.DataArguments`: the embedded digits by default, or a Hub id, a local folder or files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch

from ..data import DataArguments, TaskData, load_task_data, pixel_loader
from ..detection import DecreeConfig, DecreeResult, TargetEstimate, estimate_target, invert_trigger
from ..errors import ConfigError, DataError
from ..hub.provenance import base_model_provenance
from ..io import atomic_output_dir, check_output_dir, write_json
from ..loading import load_clip
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)

HELP = "Detect a backdoor with DECREE (trigger inversion from clean images) and estimate its target class."

REPORT_FILE = "decree_scan.json"
PICTURE_FILE = "decree_trigger.png"

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass
class ScanArguments:
    """What to scan, on which split of the data, and where to write the report."""

    model: str = field(metadata={"help": "CLIP folder or Hub id to scan."})
    split: Split = field(
        default="validation",
        metadata={"help": "Split of the dataset (--dataset_name) the clean images come from."},
    )
    num_images: int = field(
        default=256,
        metadata={"help": "Clean images used: a random subset of the split, seeded by --data_seed (>= 2)."},
    )
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
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, got {self.split!r}")
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int) or self.num_images < 2:
            raise ConfigError(
                f"num_images must be an int >= 2 (DECREE compares pairs), got {self.num_images!r}"
            )


DATACLASSES = (ScanArguments, DataArguments, DecreeConfig)


def choose_rows(num_rows: int, num_images: int, seed: int) -> list[int]:
    """``min(num_images, num_rows)`` distinct row indices drawn at random (seeded), in increasing order."""
    chosen = np.random.default_rng(seed).permutation(num_rows)[:num_images]
    return sorted(int(i) for i in chosen)


def clean_pixels(
    data: TaskData, split: str, num_images: int, seed: int, processor
) -> tuple[torch.Tensor, list[int]]:
    """Decode a seeded random subset of ``split`` with the model's processor: ``[0, 1]`` pixels and the rows.

    Args:
        data: The loaded task data.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        num_images: Images wanted; all of the split's when it holds fewer.
        seed: Seed of the subset (``DataArguments.data_seed``).
        processor: The model's processor: only the chosen rows are decoded and resized with it.

    Returns:
        Pixels ``(N, 3, S, S)`` in ``[0, 1]`` at the model's size, and the N chosen row indices of the split.

    Raises:
        DataError: the split holds fewer than 2 images (DECREE compares pairs).
    """
    dataset = getattr(data, split)
    name = data.provenance["dataset"]
    if len(dataset) < 2:
        raise DataError(
            f"split {split!r} of dataset {name!r} holds {len(dataset)} image(s); DECREE needs at least 2 "
            "clean images: choose another --split or a larger dataset"
        )
    rows = choose_rows(len(dataset), num_images, seed)
    if len(rows) < num_images:
        logger.info("split %r of %s holds %d images: using all of them", split, name, len(rows))
    loader = pixel_loader(dataset.select(rows), processor, image_column=data.image_column, label_column=None)
    return torch.cat([pixels for pixels, _ in loader]), rows


class ScanOutcome(NamedTuple):
    """What :func:`scan` found: DECREE's result, the estimated target, and the report (as written)."""

    result: DecreeResult
    estimate: TargetEstimate
    report: dict[str, Any]


def scan(args: ScanArguments, data_args: DataArguments, config: DecreeConfig) -> ScanOutcome:
    """Load the model, then ``args.num_images`` clean images of ``args.split``; invert a trigger, estimate
    the target among the dataset's classes, and write the report if ``args.output_dir`` is set.

    The report names the model by Hub id or folder base name and the dataset by its provenance (no local
    paths), and records the verdict's calibration.
    """
    if args.output_dir is not None:  # refused before the scan, not after it
        check_output_dir(args.output_dir, [args.model, data_args.dataset_name], overwrite=args.overwrite)
    model, processor = load_clip(args.model)
    data = load_task_data(data_args)
    pixels, rows = clean_pixels(data, args.split, args.num_images, data_args.data_seed, processor)
    result = invert_trigger(model, processor, pixels, config)
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, data.task), processor
    )
    estimate = estimate_target(classifier, pixels, result.trigger)
    _, model_source = base_model_provenance(args.model)  # a Hub id or a folder's base name, never a path
    report = {
        "model": model_source,
        "dataset": data.provenance,
        "split": args.split,
        "num_images": len(pixels),
        "rows": rows,
        "verdict": result.verdict,
        "calibration": result.calibration,
        "calibration_note": result.calibration_note,
        "config": config.to_dict(),
        "decree": result.to_dict(include_trigger=True),
        "target": {**estimate.to_dict(), "class_name": data.task.classnames[estimate.target]},
    }
    if args.output_dir is not None:
        with atomic_output_dir(args.output_dir, overwrite=args.overwrite) as tmp:
            write_json(tmp / REPORT_FILE, report)
            result.trigger.save_png(
                tmp / PICTURE_FILE, title=f"DECREE: PL1 {result.pl1:.4f}, target {estimate.target}"
            )
        logger.info("wrote %s and %s to %s", REPORT_FILE, PICTURE_FILE, args.output_dir)
    return ScanOutcome(result, estimate, report)


def run(args: ScanArguments, data_args: DataArguments, config: DecreeConfig) -> int:
    """Scan and print the verdict (with its calibration, in words when uncalibrated) and the target."""
    result, estimate, report = scan(args, data_args, config)
    lines = [
        f"verdict: {result.verdict} - PL1 {result.pl1:.4f} vs threshold {result.threshold}, similarity "
        f"{result.similarity:.4f}, {result.steps} steps, thresholds calibration: {result.calibration}",
    ]
    if result.calibration_note:
        lines.append(f"note: {result.calibration_note}.")
    lines.append(
        f"estimated target class: {estimate.target} ({report['target']['class_name']!r}; "
        f"{100 * estimate.flip_share:.1f}% of triggered images sent there, "
        f"{100 * estimate.clean_share:.1f}% of clean ones)"
    )
    print("\n".join(lines))  # noqa: T201 - console output of the CLI itself
    return 0
