"""``hf-tbar demo``: the whole story offline on the embedded default (tiny CLIP, digits, BadNets)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .. import pipeline
from ..data.arguments import DataArguments
from ..detection import DetectionConfig
from ..reporting.report import PLOT_FILE, REPORT_FILE
from ..scale_search import ScaleSearchConfig
from ..tbar.config import TBARConfig
from .common import UnlearnArguments, format_table
from .demo_captions import run_captions
from .recorded import recorded_command

HELP = "Offline demo: build a tiny CLIP, backdoor it, remove the backdoor with TBAR, write a report."


@dataclass
class DemoArguments:
    world: Literal["digits", "captions"] = field(
        default="digits",
        metadata={
            "help": "'digits': the tiny CLIP of the bundled digits, backdoored by fine-tuning (seconds); "
            "'captions': a tiny CLIP pretrained on image-caption pairs and poisoned through 1%% of them, "
            "sanitized with the contrastive loss (about 10 minutes the first time, cached after)."
        },
    )
    attack: str = field(default="badnets", metadata={"help": "Attack to implant and remove."})
    output_dir: str = field(
        default="outputs/demo", metadata={"help": "Where the sanitized model and report go."}
    )
    variant: str = field(
        default="repair-preserving",
        metadata={"help": "TBAR variant: plain, target-preserving, repair or repair-preserving."},
    )
    mode: str = field(default="full", metadata={"help": "Trigger fine-tuning: full or lora."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace --output_dir if it holds files; a folder holding an earlier demo's report is "
            "always replaced."
        },
    )
    force: bool = field(
        default=False,
        metadata={
            "help": "Go on past the refusals (a model at chance, the safety gate), as unlearn's --force."
        },
    )


DATACLASSES = (DemoArguments,)


def run(demo: DemoArguments) -> int:
    if demo.world == "captions":
        return run_captions(demo)
    start = time.perf_counter()
    earlier_demo = (Path(demo.output_dir) / REPORT_FILE).is_file()
    args = UnlearnArguments(
        output_dir=demo.output_dir,
        attack=demo.attack,
        overwrite=demo.overwrite or earlier_demo,
        force=demo.force,
    )
    data_args, config = DataArguments(), TBARConfig(variant=demo.variant, mode=demo.mode)
    search, detection = ScaleSearchConfig(), DetectionConfig()
    command = recorded_command(args, data_args, config, search, detection)
    done = pipeline.run(args, data_args, config, search, detection, command=command)
    result, scenario, test = done.result, done.embedded, done.data.test
    clean = pipeline.evaluate_checkpoint(scenario.clean_path, done.data, scenario.trigger, scenario.target)
    print(
        f"\nEmbedded demo: {scenario.trigger.describe(image_size=done.unlearner.image_size[0])} -> class "
        f"{scenario.target} ({done.data.task.classnames[scenario.target]}), test split of {len(test)} digits\n"
    )
    print(
        format_table(
            [
                ("clean tiny CLIP", clean),
                ("backdoored", result.before),
                (f"TBAR {demo.variant}, {demo.mode} (scale {result.selection.scale:.2f})", result.after),
            ]
        )
    )
    retention = "n/a" if result.ca_retention is None else f"{100 * result.ca_retention:.1f}%"
    print(
        f"\nCA retention {retention}, unlearning set {result.unlearning_set_size} triggered "
        f"images, scale chosen on validation among {result.selection.evaluations - 1} candidates at a cost of "
        f"{result.selection.cost:.1f} full-validation evaluations ({result.selection.strategy} search)"
    )
    print(
        f"Report: {demo.output_dir}/{REPORT_FILE}  Card: {demo.output_dir}/README.md  Plot: "
        f"{demo.output_dir}/{PLOT_FILE}  ({time.perf_counter() - start:.0f}s)"
    )
    return 0
