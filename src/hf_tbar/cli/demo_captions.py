"""``hf-tbar demo --world captions``: the image-caption threat model offline (CleanCLIP's and BadCLIP's):
a tiny CLIP pretrained contrastively on generated image-caption pairs, poisoned by contrastive training on
1% of pairs that carry the trigger and a caption naming the target, then sanitized by TBAR fitted with the
contrastive loss on 300 captioned triggered images; zero-shot CA and ASR on the held-out shape task."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .. import pipeline
from ..reporting.report import PLOT_FILE, REPORT_FILE
from ..tbar.config import TBARConfig
from .common import format_table

logger = logging.getLogger(__name__)

#: The defender's captioned clean pairs (TBAR draws its 300 triggered images from them).
CLEAN_PAIRS = 1000


def run_captions(demo) -> int:
    """The captions world of :class:`~hf_tbar.cli.demo.DemoArguments` (trains and caches its two models on
    first use: about 10 minutes on 2 CPU cores)."""
    start = time.perf_counter()
    config = TBARConfig(variant=demo.variant, mode=demo.mode)  # fine-tuning until the loss plateaus
    overwrite = demo.overwrite or (Path(demo.output_dir) / REPORT_FILE).is_file()
    done = pipeline.run_captioned_world(
        demo.attack, config, demo.output_dir, CLEAN_PAIRS, overwrite=overwrite, force=demo.force
    )
    scenario, result, clean = done.scenario, done.result, done.clean
    target = scenario.task.classnames[scenario.target]
    print(  # noqa: T201
        f"\nCaptioned demo: {scenario.trigger.describe()} with captions naming '{target}', 1% of the pairs of "
        f"a contrastive training; zero-shot on the shape task, {len(scenario.test[1])} test scenes\n"
    )
    rows = [
        ("clean captioned tiny CLIP", clean),
        ("poisoned", result.before),
        (f"TBAR {demo.variant}, contrastive (scale {result.selection.scale:.2f})", result.after),
    ]
    print(format_table(rows))  # noqa: T201
    retention = "n/a" if result.ca_retention is None else f"{100 * result.ca_retention:.1f}%"
    print(  # noqa: T201
        f"\nCA retention {retention}, unlearning set {result.unlearning_set_size} captioned triggered images\n"
        f"Report: {demo.output_dir}/{REPORT_FILE}  Card: {demo.output_dir}/README.md  Plot: "
        f"{demo.output_dir}/{PLOT_FILE}  ({time.perf_counter() - start:.0f}s)"
    )
    return 0
