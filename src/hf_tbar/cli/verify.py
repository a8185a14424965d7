"""``hf-tbar verify``: re-measure a sanitized folder on held-out data, and with ``--rebound`` check whether a
little fine-tuning brings its backdoor back.

The folder's ``tbar_report.json`` gives the trigger, the target class and the task; the images come from the
same data arguments as the other commands (:class:`~hf_tbar.data.DataArguments`: the embedded digits by
default). With ``--rebound``, :func:`hf_tbar.tbar.rebound.rebound` fine-tunes copies of the model for
``--rebound_steps`` steps on clean images and, separately, on the same images plus ``--poisoned_samples``
triggered ones, and reports CA / ASR after each (``--backdoored_model`` adds the same rows for the
backdoored model, for comparison).

Examples::

    hf-tbar verify --sanitized_dir outputs/sanitized
    hf-tbar verify --sanitized_dir outputs/sanitized --rebound --rebound_steps 20 --poisoned_samples 10 \\
        --backdoored_model me/clip-backdoored
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from datasets import Dataset

from ..attacks import Trigger, trigger_from_dict
from ..data import DataArguments, DatasetImages, TaskData, dataset_to_tensors, load_task_data
from ..data.embedded import TaskSpec
from ..data.loader import load_image_folder
from ..data.task_data import resolve_target
from ..errors import ConfigError, DataError, InputError
from ..evaluation import EvalResult, evaluate_model
from ..hub.gate import REPORT_NAME, load_report
from ..models.loading import load_model
from ..reporting.schema import TBARReport
from ..tbar.rebound import ReboundConfig, rebound
from .common import TriggerArguments, format_table
from .scan import choose_rows

logger = logging.getLogger(__name__)

HELP = "Re-measure a sanitized folder; --rebound: does a little fine-tuning bring its backdoor back?"

Split = Literal["validation", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass
class VerifyArguments:
    """Which sanitized folder to check, against what, and whether to run the rebound check."""

    sanitized_dir: str = field(
        metadata={"help": f"Sanitized model folder written by hf_tbar (with its {REPORT_NAME})."}
    )
    rebound: bool = field(
        default=False,
        metadata={
            "help": "Also fine-tune copies of the model briefly on clean images and on k poisoned samples, "
            "and report CA / ASR after each (see --rebound_steps, --poisoned_samples)."
        },
    )
    backdoored_model: str | None = field(
        default=None,
        metadata={"help": "Folder or Hub id of the backdoored model: the same rows for it, for comparison."},
    )
    split: Split = field(
        default="test", metadata={"help": "Split of the dataset (--dataset_name) CA and ASR are measured on."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.sanitized_dir, str) or not self.sanitized_dir.strip():
            raise ConfigError(f"sanitized_dir must name a folder, got {self.sanitized_dir!r}")
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, got {self.split!r}")


@dataclass
class RealTriggerArguments(TriggerArguments):
    """The trigger to measure ASR with: by default the one the report records; or the real trigger, given later
    (after an automatic run, whose report holds the inverted one)."""

    trigger: str | None = field(
        default=None,
        metadata={
            "help": "The real trigger's name (badnets, blended, wanet, sig, image-patch, blend-image), with "
            "--attack_params; default: the trigger the report records."
        },
    )
    trigger_image: str | None = field(
        default=None,
        metadata={
            "help": "The trigger's image file: of the recorded image trigger (the report keeps only its file name "
            "and sha256, which is checked), or with --trigger image-patch / blend-image a real one."
        },
    )
    target: str | None = field(
        default=None,
        metadata={"help": "The real attack's target class (index or name); default: the report's."},
    )
    image_means_patch = False


DATACLASSES = (VerifyArguments, RealTriggerArguments, DataArguments, ReboundConfig)


def report_trigger(report: TBARReport, folder: str, trigger_image: str | None = None) -> Trigger:
    """The trigger recorded in ``folder``'s report, rebuilt.

    A trigger the report names by a file in ``folder`` (an inverted trigger's ``inverted_trigger.safetensors``)
    is read from there; ``trigger_image`` gives the file of an image trigger (or replaces the folder's file).

    Raises:
        InputError: the report records no trigger (poisoned images used as found) or one that cannot be
            rebuilt (an image trigger without ``trigger_image``, a missing trigger file, a file whose sha256
            differs); names the folder.
    """
    where = Path(folder) / REPORT_NAME
    if report.trigger is None:
        raise InputError(
            f"{where} records no trigger (the poisoned images were used as found): there is nothing to stamp "
            "for ASR or for the poisoned rebound run"
        )
    file_name = report.trigger.get("file_name")
    beside = Path(folder) / str(file_name) if file_name else None
    overrides = {}
    if trigger_image is not None:
        overrides["path"] = trigger_image
    elif beside is not None and beside.is_file() and beside.name == file_name:
        overrides["path"] = str(beside)
    try:
        return trigger_from_dict(report.trigger, **overrides)
    except (ValueError, TypeError, OSError) as err:
        hint = " (pass --trigger_image FILE)" if "sha256" in report.trigger and not overrides else ""
        raise InputError(f"cannot rebuild the trigger recorded in {where}{hint}: {err}") from None


def report_task(report: TBARReport, data: TaskData, folder: str) -> TaskSpec:
    """The report's zero-shot task (the data's when the report has none), checked against the data's classes.

    Raises:
        DataError: the dataset's number of classes differs from the report's (names both).
    """
    task = report.task or data.task
    if task.num_classes != data.task.num_classes:
        raise DataError(
            f"{Path(folder) / REPORT_NAME} has {task.num_classes} classes but dataset "
            f"{data.provenance['dataset']!r} has {data.task.num_classes}: pass the dataset the model was "
            "sanitized on (--dataset_name)"
        )
    return task


def check_model(
    name: str,
    model_path: str,
    args: VerifyArguments,
    data: TaskData,
    data_args: DataArguments,
    task: TaskSpec,
    trigger: Trigger | None,
    target: int,
    config: ReboundConfig,
    found: Dataset | None = None,
) -> list[tuple[str, EvalResult]]:
    """Rows ``(label, CA / ASR)`` of one model: as loaded, and after each rebound run (``args.rebound``); with
    ``found`` images carrying the trigger, ASR is their share classified as ``target``."""
    model, processor = load_model(model_path)
    test = DatasetImages(
        getattr(data, args.split), processor, data.image_column, data.label_column, f"{args.split} images"
    )
    if not args.rebound:
        triggered = (
            DatasetImages(found, processor, "image", None, "poisoned images") if found is not None else None
        )
        return [
            (name, evaluate_model(model, processor, task, test, None, trigger, target, triggered=triggered))
        ]
    rows = choose_rows(len(data.train), config.clean_images, data_args.data_seed)
    clean_pixels, clean_labels = dataset_to_tensors(
        data.train.select(rows), processor, data.image_column, data.label_column
    )
    result = rebound(model, processor, task, clean_pixels, clean_labels, trigger, target, test, None, config)
    return result.rows(name)


def measured_trigger(
    report: TBARReport, folder: str, real: RealTriggerArguments
) -> tuple[Trigger | None, str]:
    """The trigger ASR is measured with and what it is, in words: the real one given later (``--trigger``), found
    images (``--poisoned_images``: no trigger object), or the one the report records."""
    if real.poisoned_images is not None:
        if real.trigger is not None:
            raise ConfigError(
                "give the real trigger (--trigger) or images carrying it (--poisoned_images), not both"
            )
        return None, f"poisoned images found in {Path(real.poisoned_images).name!r} (the real trigger)"
    if real.trigger is not None:
        trigger = real.build()
        return trigger, f"the real trigger {trigger.describe()}, given now"
    trigger = report_trigger(report, folder, real.trigger_image)
    what = "the inverted trigger the report records" if report.inverted_trigger else "the report's trigger"
    return trigger, f"{what}, {trigger.describe()}"


def run(
    args: VerifyArguments, real: RealTriggerArguments, data_args: DataArguments, config: ReboundConfig
) -> int:
    """Read the report, rebuild (or take) the trigger, print CA / ASR of each model (and after each rebound run)."""
    report = load_report(args.sanitized_dir)  # InputError naming the folder when it has no report
    trigger, what = measured_trigger(report, args.sanitized_dir, real)
    if trigger is None and args.rebound:
        raise ConfigError("--rebound stamps a trigger on clean images: give --trigger, not --poisoned_images")
    if report.inverted_trigger and real.trigger is None and real.poisoned_images is None:
        logger.warning(
            "the report's trigger was reverse-engineered by a detector: ASR is measured with it; pass the real "
            "trigger (--trigger, --trigger_image or --poisoned_images) to measure that"
        )
    data = load_task_data(data_args)
    task = report_task(report, data, args.sanitized_dir)
    if real.target is not None:
        target = resolve_target(task, real.target)
    else:
        target = task.check_label(report.target_class, "the report's target_class")
    models = [("sanitized", args.sanitized_dir)]
    if args.backdoored_model is not None:
        models.insert(0, ("backdoored", args.backdoored_model))
    found = load_image_folder(real.poisoned_images) if real.poisoned_images is not None else None
    rows = []
    for name, path in models:
        rows += check_model(name, path, args, data, data_args, task, trigger, target, config, found)
    lines = [
        f"ASR of {what}; target class {target} ({task.classnames[target]!r}), {args.split} split of "
        f"{data.provenance['dataset']!r}"
    ]
    if args.rebound:
        n, k = min(config.clean_images, len(data.train)), config.poisoned_samples
        kind = "target-class" if trigger.clean_label else "non-target"
        lines.append(
            f"rebound: {config.steps} steps of {config.batch_size} at lr {config.learning_rate:g} (seed "
            f"{config.seed}) on {n} clean train images; the poisoned run adds {k} triggered copies of {k} "
            f"{kind} ones labelled {target} (poisoned share {k / (n + k):.1%})"
        )
    print("\n".join([*lines, format_table(rows)]))  # noqa: T201 - console output of the CLI itself
    return 0
