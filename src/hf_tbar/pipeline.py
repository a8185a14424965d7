"""The pipeline in the library: load -> (detect) -> unlearn -> verify -> save -> (push), from typed arguments.

:func:`run` is what ``hf-tbar unlearn``, ``hf-tbar sanitize``, ``hf-tbar demo`` and ``examples/unlearn.py`` call,
as TRL's scripts call their trainer: the arguments are dataclasses (:class:`UnlearnArguments` with its
:class:`TriggerArguments`, :class:`~hf_tbar.models.ModelArguments`, :class:`~hf_tbar.data.DataArguments` or
:class:`~hf_tbar.data.caption_data.CaptionDataArguments`, :class:`~hf_tbar.tbar.config.TBARConfig`,
:class:`~hf_tbar.scale_search.ScaleSearchConfig`, :class:`~hf_tbar.detection.DetectionConfig`,
:class:`~hf_tbar.hub.gate.GateArguments`, and :class:`~hf_tbar.hub.PushConfig` to publish).

Without ``--model`` the model is the embedded backdoored tiny CLIP of ``--attack`` and the data its digits: the
same pipeline, with the embedded world as the default source. Every output is checked before any work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from accelerate import PartialState

from .attacks import TRIGGERS, build_trigger
from .attacks.base import Trigger
from .data.arguments import DataArguments
from .data.caption_data import load_caption_data
from .data.images import DatasetImages
from .data.loader import load_image_folder
from .data.task_data import TaskData, load_task_data, resolve_target
from .detection import DetectionConfig
from .errors import ConfigError
from .evaluation import EvalResult, evaluate_model
from .hub import PushConfig, PushResult, push_sanitized_model
from .hub.gate import DEFAULT_MAX_ASR, DEFAULT_MIN_CA_RETENTION, GateArguments
from .io import check_output_dir, refuse_overlap
from .models.arguments import ModelArguments
from .models.loading import load_model
from .results import UnlearningResult
from .scale_search import ScaleSearchConfig
from .scenarios.captioned import captioned_scenario
from .scenarios.embedded import embedded_scenario
from .tbar.config import TBARConfig
from .tbar.stages import AUTO_TRIGGER
from .tbar.unlearner import BackdoorUnlearner

logger = logging.getLogger(__name__)

__all__ = [
    "CaptionedRun",
    "GateArguments",
    "ModelArguments",
    "Run",
    "TriggerArguments",
    "UnlearnArguments",
    "check_detection_flags",
    "evaluate_checkpoint",
    "run",
    "run_captioned_world",
    "split_label",
]

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
    """Which trigger to remove and where to write the result (the model: :class:`~hf_tbar.models.ModelArguments`,
    by default the embedded backdoored tiny CLIP of ``attack``)."""

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
    """What :func:`run` used and produced."""

    unlearner: BackdoorUnlearner
    result: UnlearningResult
    data: TaskData
    embedded: Any = None  # the EmbeddedScenario without --model: its real trigger, its clean model
    pushed: PushResult | None = None  # the push (or dry run) when a PushConfig was given


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


def check_outputs(args: UnlearnArguments, config: TBARConfig, model_args: ModelArguments) -> None:
    """Refuse, before minutes of work, an output folder that holds files (unless ``overwrite``) or that overlaps
    the input model, an adapter folder a run cannot fill, and a checkpoint folder inside an input or output.

    Raises:
        ConfigError: ``--adapter_dir`` without ``--mode lora --variant plain``.
        OutputExistsError / OutputError: an output folder that holds files, or overlaps another path.
    """
    inputs = [model_args.model] if model_args.model else []
    check_output_dir(args.output_dir, inputs, overwrite=args.overwrite)
    if args.adapter_dir is not None:
        if config.mode != "lora" or config.variant != "plain":
            raise ConfigError(
                f"--adapter_dir needs --mode lora and --variant plain, got --mode {config.mode} "
                f"--variant {config.variant}"
            )
        check_output_dir(args.adapter_dir, inputs + [args.output_dir], overwrite=args.overwrite)
    if config.checkpoint_dir is not None:
        refuse_overlap(config.checkpoint_dir, inputs + [args.output_dir])


def run(
    args: UnlearnArguments,
    data_args: DataArguments,
    config: TBARConfig,
    search: ScaleSearchConfig | None = None,
    detection: DetectionConfig | None = None,
    gate: GateArguments | None = None,
    push: PushConfig | None = None,
    dry_run_dir: str | os.PathLike | None = None,
    command: dict[str, Any] | None = None,
    model_args: ModelArguments | None = None,
) -> Run:
    """Load the model and the data, (detect,) unlearn, verify, save the sanitized folder, and push it.

    Args:
        args: The trigger and target, the output folders, ``force``.
        data_args: The dataset; a :class:`~hf_tbar.data.caption_data.CaptionDataArguments` naming captions makes
            the unlearning set image-caption data (recorded as ``data["unlearning_set"]`` in the report).
        config, search, detection: How the vector is fitted, how its scale is chosen, which detectors run
            (``args.trigger="auto"`` only).
        gate: The safety gate the saved folder passes (``args.force`` writes it anyway, with a warning card).
        push: Publish the saved folder to ``push.repo_id`` (gated likewise), or write what would be pushed to
            ``dry_run_dir``; ``None``: save only.
        command: The run's options as the card's reproduce line records them
            (:func:`hf_tbar.cli.recorded.recorded_command`).
        model_args: The model, its revision and device (default: the embedded backdoored tiny CLIP of
            ``args.attack``).

    Raises:
        ModelAtChanceError, NoBackdoorDetectedError, NoFeasibleScaleError, SafetyGateError, HubPushError: the
            stage that stopped; ConfigError / DataError / OutputError: bad arguments, inputs or outputs.
    """
    search = search or ScaleSearchConfig()
    detection = detection or DetectionConfig()
    gate = gate or GateArguments()
    model_args = model_args or ModelArguments()
    if dry_run_dir is not None:  # refused before minutes of work, not after them
        check_output_dir(dry_run_dir, [p for p in (model_args.model, args.output_dir) if p], overwrite=False)
    check_detection_flags(args.trigger, detection, "unlearn")
    check_outputs(args, config, model_args)
    # load: the data are checked before any model is loaded or built
    data = load_task_data(data_args)
    captions = load_caption_data(data_args, data)  # image-caption unlearning set (CaptionDataArguments)
    embedded = None
    if model_args.model is None:  # the embedded world: build (or reuse) the backdoored tiny CLIP of --attack
        target = 0 if args.target is None else resolve_target(data.task, args.target)
        embedded = embedded_scenario(args.attack, args.trigger_parameters(), target=target)
    unlearner = BackdoorUnlearner(
        model_args.model or str(embedded.backdoored_path),
        task=data.task,
        config=config,
        device=model_args.device,
        image_column=data.image_column,
        label_column=data.label_column,
        caption_column=captions.caption_column if captions is not None else None,
        revision=model_args.model_revision,
    )
    splits = {
        name: DatasetImages(
            getattr(data, name), unlearner.processor, data.image_column, data.label_column, name
        )
        for name in ("train", "validation", "test")
    }
    poisoned = None
    if args.poisoned_images is not None:
        found = load_image_folder(args.poisoned_images)
        poisoned = DatasetImages(found, unlearner.processor, "image", None, "poisoned images")
    target = args.target if args.target is not None else (embedded.target if embedded is not None else None)
    # (detect ->) unlearn -> verify
    result = unlearner.unlearn(
        trigger=_trigger(args, embedded),
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
    # save -> push, by one process under accelerate launch / torchrun (after training: it shares its state)
    state, pushed = PartialState(), None
    if state.is_main_process:
        fields = {
            "dataset": data.provenance["dataset"],
            "dataset_config": data.provenance.get("config"),
            "selection_split": split_label(data, "validation"),
            "evaluation_split": split_label(data, "test"),
            "data": result.data,
            **({"command": command} if command is not None else {}),  # the card's reproduce line
        }
        options = {"overwrite": args.overwrite, "force": args.force, **dataclasses.asdict(gate)}
        unlearner.save_pretrained(args.output_dir, result, **options, **fields)
        if args.adapter_dir is not None:
            info = unlearner.save_adapter(args.adapter_dir, result, **options, **fields)
            logger.info("adapter: %d bytes, %.2f%% of the model's", info.adapter_bytes, 100 * info.ratio)
        if push is not None:
            pushed = push_sanitized_model(args.output_dir, push, dry_run_dir=dry_run_dir)
    state.wait_for_everyone()
    return Run(unlearner, result, data, embedded, pushed)


def evaluate_checkpoint(
    path: str | os.PathLike, data: TaskData, trigger: Trigger | None, target: int | None
) -> EvalResult:
    """CA, ASR and target-class accuracy of the model at ``path`` on the test split of ``data`` (e.g. the
    embedded world's clean model, beside the backdoored and sanitized ones)."""
    return BackdoorUnlearner(path, task=data.task).evaluate(data.test, None, trigger, target)


@dataclass
class CaptionedRun:
    """What :func:`run_captioned_world` used and produced: the scenario, the TBAR result, the clean model's
    evaluation on the same test scenes."""

    scenario: Any
    result: UnlearningResult
    clean: EvalResult


def run_captioned_world(
    attack: str,
    config: TBARConfig,
    output_dir: str | os.PathLike,
    clean_pairs: int,
    overwrite: bool = False,
    force: bool = False,
) -> CaptionedRun:
    """The image-caption threat model offline: the captioned world's poisoned tiny CLIP (trained and cached on
    first use), sanitized by TBAR with the contrastive loss on ``clean_pairs`` captioned clean pairs, verified on
    the held-out shape task, and saved to ``output_dir``."""
    scenario = captioned_scenario(attack, train_size=clean_pairs)
    unlearner = BackdoorUnlearner(scenario.backdoored_path, task=scenario.task, config=config)
    result = unlearner.unlearn(
        scenario.trigger,
        scenario.target,
        clean_pixels=scenario.train[0],
        clean_labels=scenario.train[1],
        clean_captions=scenario.train_captions,
        validation=scenario.validation,
        test=scenario.test,
        force=force,
    )
    clean_model, processor = load_model(scenario.clean_path)
    clean = evaluate_model(
        clean_model, processor, scenario.task, *scenario.test, scenario.trigger, scenario.target
    )
    data = {"unlearning_set": "captioned world (image-caption pairs)", "objective": "contrastive"}
    unlearner.save_pretrained(
        output_dir, result, overwrite=overwrite, force=force, dataset="embedded-captions", data=data
    )
    return CaptionedRun(scenario, result, clean)
