"""Shared console pieces of the sub-commands that run the pipeline (``unlearn``, ``sanitize``, ``demo``): the
outcome line and the metrics table. The pipeline itself and its argument dataclasses are
:mod:`hf_tbar.pipeline`."""

from __future__ import annotations

from ..data.caption_data import CaptionDataArguments
from ..detection import DetectionConfig
from ..evaluation import EvalResult
from ..hub.gate import GateArguments
from ..models.arguments import ModelArguments
from ..pipeline import (
    TRIGGER_MODES,
    Run,
    TriggerArguments,
    UnlearnArguments,
    check_detection_flags,
    split_label,
)
from ..results import UnlearningResult
from ..scale_search import ScaleSearchConfig
from ..tbar.config import TBARConfig

# The argument dataclasses live with the pipeline (:mod:`hf_tbar.pipeline`); their CLI names stay importable here.
__all__ = [
    "PIPELINE_DATACLASSES",
    "TRIGGER_MODES",
    "Run",
    "TriggerArguments",
    "UnlearnArguments",
    "check_detection_flags",
    "format_table",
    "outcome_summary",
    "split_label",
]


#: The pipeline's argument dataclasses after a command's own (``unlearn``, ``sanitize``): the data, the fine-tuning,
#: the scale search, the detectors, then the model and the gate's thresholds, as TRL's scripts parse
#: ``ModelConfig`` last.
PIPELINE_DATACLASSES = (
    CaptionDataArguments,
    TBARConfig,
    ScaleSearchConfig,
    DetectionConfig,
    ModelArguments,
    GateArguments,
)


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
