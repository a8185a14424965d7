"""Shared pieces of the ``unlearn`` and ``demo`` sub-commands."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from accelerate import PartialState

from ..config import TBARConfig
from ..embedded import embedded_scenario
from ..errors import ConfigError
from ..evaluation import EvalResult
from ..io import check_output_dir, refuse_overlap
from ..scale_search import ScaleSearchConfig
from ..unlearner import AUTO_TRIGGER, BackdoorUnlearner, UnlearningResult

logger = logging.getLogger(__name__)

TRIGGER_MODES = ("known", AUTO_TRIGGER)


@dataclass
class UnlearnArguments:
    """What to sanitize and where to write it."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "Backdoored CLIP folder or Hub id. Default: the embedded backdoored tiny CLIP for --attack."
        },
    )
    output_dir: str = field(default="outputs/sanitized", metadata={"help": "Folder of the sanitized model."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace --output_dir if it already holds files (refused otherwise, before any work)."
        },
    )
    dataset: str = field(
        default="digits", metadata={"help": "Embedded dataset giving the task and the clean images."}
    )
    attack: str = field(
        default="badnets",
        metadata={
            "help": "The attack (badnets, blended, wanet, sig): its trigger with --trigger known, and the "
            "embedded backdoored model when --model is not given."
        },
    )
    trigger: str = field(
        default="known",
        metadata={
            "help": "'known': unlearn --attack's trigger; 'auto': the trigger is unknown, reverse-engineer one "
            "with DECREE from clean images (the target is estimated unless --target is given)."
        },
    )
    attack_params: str = field(
        default="{}", metadata={"help": "Trigger parameters as JSON, e.g. '{\"alpha\": 0.2}'."}
    )
    target: int | None = field(
        default=None,
        metadata={
            "help": "The attack's target class index (default: 0 with --trigger known; estimated with auto)."
        },
    )
    ca_threshold: float = field(
        default=0.95, metadata={"help": "Keep validation CA >= this x the backdoored CA."}
    )
    target_threshold: float | None = field(
        default=0.8,
        metadata={"help": "Keep validation target-class accuracy >= this x the backdoored one (None: off)."},
    )
    max_scale: float = field(default=3.0, metadata={"help": "Largest negation scale searched."})

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGER_MODES:
            raise ConfigError(f"--trigger must be one of {TRIGGER_MODES}, got {self.trigger!r}")
        try:
            params = json.loads(self.attack_params)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--attack_params is not valid JSON: {self.attack_params!r} ({err})") from None
        if not isinstance(params, dict):
            raise ConfigError(f"--attack_params must be a JSON object, got {self.attack_params!r}")
        self.search_config()

    def search_config(self) -> ScaleSearchConfig:
        return ScaleSearchConfig(
            ca_threshold=self.ca_threshold, target_threshold=self.target_threshold, max_scale=self.max_scale
        )


def run_tbar(
    args: UnlearnArguments, config: TBARConfig
) -> tuple[BackdoorUnlearner, UnlearningResult, object]:
    """Load the model and the embedded data, run TBAR, save the sanitized folder."""
    known = args.trigger == "known"
    inputs = [args.model] if args.model else []
    check_output_dir(args.output_dir, inputs, overwrite=args.overwrite)  # before minutes of work
    if config.checkpoint_dir is not None:
        refuse_overlap(config.checkpoint_dir, inputs + [args.output_dir])
    scenario = embedded_scenario(
        args.attack, json.loads(args.attack_params), target=0 if args.target is None else args.target
    )
    model_source = args.model or str(scenario.backdoored_path)
    unlearner = BackdoorUnlearner(model_source, task=scenario.task, config=config)
    result = unlearner.unlearn(
        trigger=scenario.trigger if known else AUTO_TRIGGER,
        target=scenario.target if known else args.target,
        clean_pixels=scenario.train[0],
        clean_labels=scenario.train[1],
        validation=scenario.validation,
        test=scenario.test,
        search=args.search_config(),
    )
    state = PartialState()  # after training, so it shares the Accelerator's state
    if state.is_main_process:  # under accelerate launch / torchrun, one process writes the folder
        unlearner.save_pretrained(args.output_dir, result, overwrite=args.overwrite, dataset=args.dataset)
    state.wait_for_everyone()
    return unlearner, result, scenario


def format_table(rows: list[tuple[str, EvalResult]]) -> str:
    """A markdown table of CA / ASR / target-class accuracy per model."""
    lines = ["| model | CA | ASR | target-class acc |", "|---|---|---|---|"]
    for name, r in rows:
        asr = "-" if r.attack_success_rate is None else f"{100 * r.attack_success_rate:.1f}%"
        tacc = "-" if r.target_class_accuracy is None else f"{100 * r.target_class_accuracy:.1f}%"
        lines.append(f"| {name} | {100 * r.clean_accuracy:.1f}% | {asr} | {tacc} |")
    return "\n".join(lines)
