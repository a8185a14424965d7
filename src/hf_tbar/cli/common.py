"""Shared pieces of the ``unlearn`` and ``demo`` sub-commands: the user's model and data, or the embedded ones.

With ``--model`` nothing embedded is built: the model is the user's, the data come from ``--dataset_name``
(a Hub id, a folder or files; :class:`~hf_tbar.data.DataArguments`), and everything is checked against the
model before any fine-tuning. Without ``--model`` the embedded backdoored tiny CLIP of ``--attack`` is used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from accelerate import PartialState

from ..attacks import TRIGGERS, build_trigger
from ..attacks.base import Trigger
from ..data.arguments import DataArguments
from ..data.caption_data import load_caption_data
from ..data.images import DatasetImages
from ..data.loader import load_image_folder
from ..data.task_data import TaskData, load_task_data, resolve_target
from ..detection import DetectionConfig
from ..errors import ConfigError
from ..evaluation import EvalResult
from ..hub.gate import DEFAULT_MAX_ASR, DEFAULT_MIN_CA_RETENTION
from ..io import check_output_dir, refuse_overlap
from ..scale_search import ScaleSearchConfig
from ..scenarios.embedded import embedded_scenario
from ..tbar.config import TBARConfig
from ..tbar.unlearner import AUTO_TRIGGER, BackdoorUnlearner, UnlearningResult
from .recorded import recorded_command

logger = logging.getLogger(__name__)

#: ``--trigger`` values besides the registered trigger names.
TRIGGER_MODES = ("known", AUTO_TRIGGER)


@dataclass
class TriggerArguments:
    """A trigger given by name and parameters, by the attacker's image, or by images found carrying it; and the
    attack's target class. Shared by the commands that stamp a trigger (``unlearn``, ``sanitize``, ``verify``)."""

    trigger: str | None = field(
        default=None,
        metadata={"help": "A trigger name (badnets, blended, wanet, sig, image-patch, blend-image)."},
    )
    attack_params: str = field(
        default="{}", metadata={"help": "Trigger parameters as JSON, e.g. '{\"alpha\": 0.2}'."}
    )
    trigger_image: str | None = field(
        default=None,
        metadata={
            "help": "Image file of an image-patch or blend-image trigger (e.g. the attacker's patch.png); "
            "without --trigger it means --trigger image-patch."
        },
    )
    trigger_position: str | None = field(
        default=None,
        metadata={
            "help": "image-patch position: bottom-right (default), top-left, top-right, bottom-left, center, "
            "random (per image, as CleanCLIP's BadNets) or 'x,y' in pixels."
        },
    )
    trigger_size: int | None = field(
        default=None,
        metadata={
            "help": "Patch side in pixels of the model input (badnets, image-patch); default: relative."
        },
    )
    poisoned_images: str | None = field(
        default=None,
        metadata={
            "help": "Folder of already-poisoned images found in the wild, used as they are (no trigger needed): "
            "the share of them classified as the target is the ASR."
        },
    )
    target: str | None = field(
        default=None,
        metadata={"help": "The attack's target class: an index or a class name."},
    )

    #: Whether ``--trigger_image`` without ``--trigger`` means ``--trigger image-patch``.
    image_means_patch = True

    def __post_init__(self) -> None:
        if self.image_means_patch and self.trigger_image is not None and self.trigger == type(self).trigger:
            self.trigger = "image-patch"  # --trigger left out
        if self.trigger is not None and self.trigger not in self.trigger_choices():
            raise ConfigError(
                f"--trigger must be one of {sorted(self.trigger_choices())}, got {self.trigger!r}"
            )
        if self.trigger_image is not None and self.trigger not in ("image-patch", "blend-image", None):
            raise ConfigError(
                f"--trigger_image needs --trigger image-patch or blend-image, got {self.trigger!r}"
            )
        self.trigger_parameters()

    def trigger_choices(self) -> set[str]:
        return set(TRIGGERS)

    def trigger_parameters(self) -> dict[str, Any]:
        """``--attack_params`` with ``--trigger_image/_position/_size`` folded in."""
        try:
            params = json.loads(self.attack_params)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--attack_params is not valid JSON: {self.attack_params!r} ({err})") from None
        if not isinstance(params, dict):
            raise ConfigError(f"--attack_params must be a JSON object, got {self.attack_params!r}")
        if self.trigger_image is not None:
            params["path"] = self.trigger_image
        if self.trigger_position is not None:
            position = self.trigger_position
            if "," in position:
                try:
                    position = [int(part) for part in position.split(",")]
                except ValueError:
                    raise ConfigError(
                        f"--trigger_position 'x,y' must be two integers, got {position!r}"
                    ) from None
            params["position"] = position
        if self.trigger_size is not None:
            params["patch_size" if self.trigger_name() == "badnets" else "size"] = self.trigger_size
        return params

    def trigger_name(self) -> str | None:
        return self.trigger

    def build(self) -> Trigger | None:
        """The trigger these arguments name (``None`` when none is named)."""
        name = self.trigger_name()
        return None if name is None else build_trigger(name, **self.trigger_parameters())


@dataclass
class UnlearnArguments(TriggerArguments):
    """What to sanitize, which trigger to remove, and where to write the result."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "Backdoored CLIP folder or Hub id. Default: the embedded backdoored tiny CLIP of --attack "
            "(built and cached on first use)."
        },
    )
    output_dir: str = field(default="outputs/sanitized", metadata={"help": "Folder of the sanitized model."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace --output_dir if it already holds files (refused otherwise, before any work)."
        },
    )
    adapter_dir: str | None = field(
        default=None,
        metadata={
            "help": "Also save the sanitization as a PEFT adapter of the backdoored model here (needs --mode "
            "lora and --variant plain): PeftModel.from_pretrained(backdoored, DIR) is the sanitized model."
        },
    )
    attack: str = field(
        default="badnets",
        metadata={
            "help": "Without --model: the embedded backdoored model to sanitize; with --trigger known, its "
            "trigger (with --model, the trigger of that name with --attack_params)."
        },
    )
    trigger: str = field(
        default="known",
        metadata={
            "help": "'known': the --attack trigger; a trigger name (badnets, blended, wanet, sig, image-patch, "
            "blend-image); 'auto': unknown, reverse-engineered by the detectors (see --detectors; the target is "
            "the class they point to unless --target)."
        },
    )
    force: bool = field(
        default=False,
        metadata={
            "help": "Go on past every refusal: a model whose clean accuracy is near chance, a model no detector "
            f"flags (--trigger auto), and the safety gate (verified ASR > {DEFAULT_MAX_ASR:.0%}% or CA retention "
            f"< {DEFAULT_MIN_CA_RETENTION:.0%}%; the card then warns)."
        },
    )

    def __post_init__(self) -> None:
        if self.poisoned_images is not None and self.trigger == AUTO_TRIGGER:
            raise ConfigError("--poisoned_images replaces the trigger: do not combine it with --trigger auto")
        super().__post_init__()

    def trigger_choices(self) -> set[str]:
        return {*TRIGGER_MODES, *TRIGGERS}

    def trigger_name(self) -> str:
        return self.attack if self.trigger == "known" else self.trigger


def check_detection_flags(trigger: str, detection: DetectionConfig, command: str) -> None:
    """Refuse detection flags on a run that does not detect (a trigger was given).

    Raises:
        ConfigError: naming the flags given.
    """
    if trigger == AUTO_TRIGGER:
        return
    default = DetectionConfig()
    given = [
        f"--{f.name}"
        for f in dataclasses.fields(default)
        if getattr(detection, f.name) != getattr(default, f.name)
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} configure the detectors, which only run with --trigger auto; this {command} run "
            f"has --trigger {trigger}: drop them, or use --trigger auto"
        )


@dataclass
class Run:
    """What ``run_tbar`` used and produced."""

    unlearner: BackdoorUnlearner
    result: UnlearningResult
    data: TaskData
    embedded: Any = None  # the EmbeddedScenario without --model: its real trigger, its clean model


def _trigger(args: UnlearnArguments, embedded: Any) -> Trigger | str | None:
    if args.poisoned_images is not None:
        return None
    if args.trigger == AUTO_TRIGGER:
        return AUTO_TRIGGER
    if args.trigger == "known" and embedded is not None:
        return embedded.trigger
    return build_trigger(args.trigger_name(), **args.trigger_parameters())


def split_label(data: TaskData, role: str) -> str:
    """The split that played ``role``, as the report states it: ``"test"``, or ``"test (carved from train)"``."""
    used = data.provenance["splits"][role]
    return f"{role} (carved from {used['split']})" if used.get("carved_from_train") else used["split"]


def run_tbar(
    args: UnlearnArguments,
    data_args: DataArguments,
    config: TBARConfig,
    search: ScaleSearchConfig | None = None,
    detection: DetectionConfig | None = None,
) -> Run:
    """Check every output, load the model and the data, run TBAR, save the sanitized folder.

    A :class:`~hf_tbar.data.caption_data.CaptionDataArguments` naming captions makes the unlearning set
    image-caption data (recorded as ``data["unlearning_set"]`` in the report).
    """
    search = search or ScaleSearchConfig()
    detection = detection or DetectionConfig()
    check_detection_flags(args.trigger, detection, "unlearn")
    inputs = [args.model] if args.model else []
    check_output_dir(args.output_dir, inputs, overwrite=args.overwrite)  # before minutes of work
    if args.adapter_dir is not None:
        if config.mode != "lora" or config.variant != "plain":
            raise ConfigError(
                f"--adapter_dir needs --mode lora and --variant plain, got --mode {config.mode} "
                f"--variant {config.variant}"
            )
        check_output_dir(args.adapter_dir, inputs + [args.output_dir], overwrite=args.overwrite)
    if config.checkpoint_dir is not None:
        refuse_overlap(config.checkpoint_dir, inputs + [args.output_dir])
    data = load_task_data(data_args)  # the data are checked before any model is loaded or built
    captions = load_caption_data(data_args, data)  # image-caption unlearning set (CaptionDataArguments)
    embedded = None
    if args.model is None:  # the embedded story: build (or reuse) the backdoored tiny CLIP of --attack
        target = 0 if args.target is None else resolve_target(data.task, args.target)
        embedded = embedded_scenario(args.attack, args.trigger_parameters(), target=target)
    model_source = args.model or str(embedded.backdoored_path)
    unlearner = BackdoorUnlearner(
        model_source,
        task=data.task,
        config=config,
        image_column=data.image_column,
        label_column=data.label_column,
        caption_column=captions.caption_column if captions is not None else None,
    )
    splits = {
        name: DatasetImages(
            getattr(data, name), unlearner.processor, data.image_column, data.label_column, name
        )
        for name in ("train", "validation", "test")
    }
    trigger = _trigger(args, embedded)
    poisoned = None
    if args.poisoned_images is not None:
        found = load_image_folder(args.poisoned_images)
        poisoned = DatasetImages(found, unlearner.processor, "image", None, "poisoned images")
    target = args.target if args.target is not None else (embedded.target if embedded is not None else None)
    result = unlearner.unlearn(
        trigger=trigger,
        target=target,
        clean_pixels=captions.images(unlearner.processor) if captions is not None else splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        search=search,
        decree=detection,
        force=args.force,
        poisoned=poisoned,
    )
    result.data.update(data.provenance)
    if captions is not None:  # the unlearning set: image-caption rows, fitted with the contrastive loss
        result.data["unlearning_set"] = {**captions.provenance, "target_captions": config.target_captions}
    state = PartialState()  # after training, so it shares the Accelerator's state
    if state.is_main_process:  # under accelerate launch / torchrun, one process writes the folder
        fields = {
            "dataset": data.provenance["dataset"],
            "dataset_config": data.provenance.get("config"),
            "selection_split": split_label(data, "validation"),
            "evaluation_split": split_label(data, "test"),
            "data": result.data,
            "command": recorded_command(
                args, data_args, config, search, detection
            ),  # the card's reproduce line
        }
        options = {"overwrite": args.overwrite, "force": args.force}
        unlearner.save_pretrained(args.output_dir, result, **options, **fields)
        if args.adapter_dir is not None:
            info = unlearner.save_adapter(args.adapter_dir, result, **options, **fields)
            logger.info("adapter: %d bytes, %.2f%% of the model's", info.adapter_bytes, 100 * info.ratio)
    state.wait_for_everyone()
    return Run(unlearner, result, data, embedded)


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def outcome_summary(result: UnlearningResult, num_classes: int) -> str:
    """One line of what a run achieved, saying what each figure measured: ASR before -> after (of the inverted
    trigger when the attack was unknown, of the found images when there is no trigger), and CA before -> after
    with the retention and the chance level beside them (a retention above 100% reads with its absolutes)."""
    if result.detection is not None:
        asr = "ASR of the inverted trigger (not the attacker's)"
    elif result.trigger is None:
        asr = "ASR of the held-out found poisoned images"
    else:
        asr = "ASR"
    before, after = result.before, result.after
    retention = "n/a" if result.ca_retention is None else f"{100 * result.ca_retention:.1f}%"
    return (
        f"{asr} {_pct(before.attack_success_rate)} -> {_pct(after.attack_success_rate)}, CA "
        f"{_pct(before.clean_accuracy)} -> {_pct(after.clean_accuracy)} (retention {retention}; chance "
        f"{100 / num_classes:.1f}%)"
    )


def format_table(rows: list[tuple[str, EvalResult]]) -> str:
    """A markdown table of CA / ASR / target-class accuracy per model."""
    lines = ["| model | CA | ASR | target-class acc |", "|---|---|---|---|"]
    for name, r in rows:
        asr = "-" if r.attack_success_rate is None else f"{100 * r.attack_success_rate:.1f}%"
        tacc = "-" if r.target_class_accuracy is None else f"{100 * r.target_class_accuracy:.1f}%"
        lines.append(f"| {name} | {100 * r.clean_accuracy:.1f}% | {asr} | {tacc} |")
    return "\n".join(lines)
