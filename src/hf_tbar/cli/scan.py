"""``hf-tbar scan``: judge a CLIP model with the detectors and name the class a backdoor points to.

The clean images and the class names come from the same data arguments as the rest of the product
(:class:`~hf_tbar.data.DataArguments`: the embedded digits by default, or a Hub id, a local folder or files).
The class-conditional detectors judge the model against its own classes (no reference model); DECREE's absolute
threshold counts only where it was calibrated (:mod:`hf_tbar.detection`). A model whose clean accuracy on these
images is near chance is refused before any work (``--force`` to go on).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch

from ..data import DataArguments, TaskData, load_task_data, pixel_loader
from ..detection import DecreeConfig, DetectionConfig, InvertedTrigger, ScanVerdict, detect
from ..detection.inverted import INVERTED_TRIGGER_FILE
from ..errors import ConfigError, DataError
from ..evaluation import ensure_solves_task, evaluate_classifier
from ..hub.provenance import base_model_provenance
from ..io import atomic_output_dir, check_output_dir, write_json
from ..models.arguments import ModelArguments
from ..models.loading import load_model
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)

HELP = "Detect a backdoor (class-conditional trigger inversion, DECREE) and name the class it points to."

REPORT_FILE = "scan_report.json"
PICTURE_FILE = "inverted_trigger.png"

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass
class ScanArguments:
    """On which split of the data to scan, and where to write the report (the model: :class:`ScannedModel`)."""

    split: Split = field(
        default="validation",
        metadata={"help": "Split of the dataset (--dataset_name) the clean images come from."},
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": f"If set, write {REPORT_FILE}, each detector's inverted trigger (safetensors) and "
            f"{PICTURE_FILE} there (a new or empty folder, outside the model)."
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace --output_dir if it already holds files."}
    )
    force: bool = field(
        default=False,
        metadata={"help": "Scan even a model whose clean accuracy on these images is near chance."},
    )

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, got {self.split!r}")


@dataclass
class ScannedModel(ModelArguments):
    """The model to scan: :class:`~hf_tbar.models.ModelArguments` with ``--model`` required."""

    model: str = field(metadata={"help": "CLIP folder or Hub id to scan."})


DATACLASSES = (ScanArguments, DataArguments, DetectionConfig, DecreeConfig, ScannedModel)


def choose_rows(num_rows: int, num_images: int, seed: int) -> list[int]:
    """``min(num_images, num_rows)`` distinct row indices drawn at random (seeded), in increasing order."""
    chosen = np.random.default_rng(seed).permutation(num_rows)[:num_images]
    return sorted(int(i) for i in chosen)


def clean_pixels(
    data: TaskData, split: str, num_images: int, seed: int, processor
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Decode a seeded random subset of ``split`` with the model's processor: ``[0, 1]`` pixels, labels, rows.

    Args:
        data: The loaded task data.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        num_images: Images wanted; all of the split's when it holds fewer.
        seed: Seed of the subset.
        processor: The model's processor: only the chosen rows are decoded and resized with it.

    Returns:
        Pixels ``(N, 3, S, S)`` in ``[0, 1]`` at the model's size, their labels ``(N,)``, and the N chosen row
        indices of the split.

    Raises:
        DataError: the split holds fewer than 2 images (the detectors compare images).
    """
    dataset = getattr(data, split)
    name = data.provenance["dataset"]
    if len(dataset) < 2:
        raise DataError(
            f"split {split!r} of dataset {name!r} holds {len(dataset)} image(s); detection needs at least 2 "
            "clean images: choose another --split or a larger dataset"
        )
    rows = choose_rows(len(dataset), num_images, seed)
    if len(rows) < num_images:
        logger.info("split %r of %s holds %d images: using all of them", split, name, len(rows))
    loader = pixel_loader(
        dataset.select(rows), processor, image_column=data.image_column, label_column=data.label_column
    )
    batches = list(loader)
    return torch.cat([pixels for pixels, _ in batches]), torch.cat([labels for _, labels in batches]), rows


class ScanOutcome(NamedTuple):
    """What :func:`scan` found: the combined verdict, and the report (as written)."""

    verdict: ScanVerdict
    report: dict[str, Any]


def scan(
    args: ScanArguments,
    data_args: DataArguments,
    detection: DetectionConfig,
    decree: DecreeConfig | None = None,
    *,
    model_args: ModelArguments,
) -> ScanOutcome:
    """Load the model of ``model_args`` (on its device), then ``detection.detection_images`` clean images of ``args.split``; check that the model
    solves the task on them; run the detectors; write the report if ``args.output_dir`` is set.

    The report names the model by Hub id or folder base name and the dataset by its provenance (no local
    paths), and records each detector's statistic, threshold and where the threshold came from.

    Raises:
        ModelAtChanceError: the model's accuracy on the images is near chance (unless ``args.force``).
    """
    if args.output_dir is not None:  # refused before the scan, not after it
        inputs = [model_args.model, data_args.dataset_name]
        check_output_dir(args.output_dir, inputs, overwrite=args.overwrite)
    model, processor = load_model(model_args.model, **model_args.load_options())
    if model_args.device is not None:
        model = model.to(model_args.device)
    data = load_task_data(data_args)
    pixels, labels, rows = clean_pixels(
        data, args.split, detection.detection_images, data_args.data_seed, processor
    )
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, data.task), processor
    ).to(model.device)
    solves = evaluate_classifier(classifier, pixels, labels)
    if not args.force:
        ensure_solves_task(solves, data.task.num_classes, args.split)
    verdict = detect(model, processor, classifier, data.task, pixels, labels, detection, decree)
    _, model_source = base_model_provenance(
        model_args.model
    )  # a Hub id or a folder's base name, never a path
    files = {
        f"{f.detector}_trigger.safetensors": f.trigger for f in verdict.findings if f.trigger is not None
    }
    for finding in verdict.findings:
        if finding.trigger is not None:
            finding.trigger_file = f"{finding.detector}_trigger.safetensors"
    report = {
        "model": model_source,
        "dataset": data.provenance,
        "split": args.split,
        "num_images": len(pixels),
        "rows": rows,
        "clean_accuracy": solves.clean_accuracy,
        "chance_accuracy": 1 / data.task.num_classes,
        "detection": {
            **{k: v for k, v in dataclasses.asdict(detection).items()},
            "decree": detection.decree_config(decree).to_dict(),
        },
        **verdict.to_dict(),
    }
    if args.output_dir is not None:
        with atomic_output_dir(args.output_dir, overwrite=args.overwrite) as tmp:
            write_json(tmp / REPORT_FILE, report)
            for name, trigger in files.items():
                (tmp / name).write_bytes(trigger.public_files()[INVERTED_TRIGGER_FILE])
            winner = verdict.winner
            if winner is not None and isinstance(winner.trigger, InvertedTrigger):
                winner.trigger.save_png(tmp / PICTURE_FILE, title=f"{winner.detector}: class {winner.target}")
        logger.info("wrote %s and the inverted triggers to %s", REPORT_FILE, args.output_dir)
    return ScanOutcome(verdict, report)


def run(
    args: ScanArguments,
    data_args: DataArguments,
    detection: DetectionConfig,
    decree: DecreeConfig,
    model_args: ScannedModel,
) -> int:
    """Scan and print the verdict with every detector's statistic, threshold and its source."""
    verdict, report = scan(args, data_args, detection, decree, model_args=model_args)
    accuracy = f"{100 * report['clean_accuracy']:.1f}% (chance {100 * report['chance_accuracy']:.1f}%)"
    print(f"clean accuracy on the {report['num_images']} scanned images: {accuracy}")  # noqa: T201
    print(verdict.summary())  # noqa: T201 - console output of the CLI itself
    return 0
