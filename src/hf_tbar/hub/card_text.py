"""A report in words: the formatted numbers, table rows and sentences of the model card (the command that
reproduces the run is :mod:`.reproduce`'s). Fractions in ``[0, 1]`` are shown as percentages; anything missing
reads ``n/a``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..metrics import finite
from ..reporting.schema import Recipe, TBARReport
from .reproduce import reproduce_command

__all__ = [
    "class_name",
    "describe_trigger",
    "evaluation_text",
    "recipe_texts",
    "report_rows",
    "reproduce_command",
    "selection_text",
]

#: Largest number of classes whose per-class accuracy is listed on the card.
MAX_PER_CLASS_ROWS = 50

_TRIGGER_SOURCES = {
    "known": "the known trigger of the attack",
    "decree": "a trigger reverse-engineered with DECREE (the attack was unknown)",
    "inverted": "a trigger reverse-engineered by a detector (the attack was unknown)",
}
_MODES = {"full": "full fine-tuning of the vision tower", "lora": "LoRA on the vision tower"}
_METRICS = (
    ("clean_accuracy", "Clean accuracy (CA)"),
    ("attack_success_rate", "Attack success rate (ASR)"),
    ("target_class_accuracy", None),  # labelled with the target class
)


def pct(value: Any) -> str:
    """A fraction in ``[0, 1]`` as a percentage with one decimal, ``n/a`` when missing."""
    return f"{100 * value:.1f}%" if finite(value) is not None else "n/a"


def points(before: Any, after: Any) -> str:
    """Change between two fractions, in percentage points."""
    if finite(before) is None or finite(after) is None:
        return "n/a"
    return f"{100 * (after - before):+.1f} pts"


def format_value(value: Any) -> str:
    """A recorded value as the card shows it: floats with ``%g``, lists and dicts by their length."""
    if isinstance(value, list):
        return f"<{len(value)} values>"
    if isinstance(value, dict):
        return f"<{len(value)} entries>"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def value_or_na(value: Any) -> str:
    """:func:`format_value`, or ``n/a`` for a value the report does not record."""
    return "n/a" if value is None else format_value(value)


def describe_trigger(trigger: Mapping[str, Any] | None) -> str:
    """One line naming a serialised trigger and its scalar parameters, e.g. ``badnets (patch_size=3, seed=0)``.

    List-valued parameters (an inverted mask, a pattern) are summarised by their length.
    """
    if not trigger:
        return "unknown trigger"
    name = str(trigger.get("name", "unnamed"))
    params = ", ".join(f"{key}={format_value(value)}" for key, value in trigger.items() if key != "name")
    return f"{name} ({params})" if params else name


def class_name(report: TBARReport, index: int | None) -> str | None:
    """The name of class ``index`` in the report's task, ``None`` when it has none."""
    classnames = report.task.classnames if report.task else ()
    return str(classnames[index]) if index is not None and 0 <= index < len(classnames) else None


def detection_text(report: TBARReport) -> str:
    """Which detector found the removed trigger, and its statistic, in words (``"DECREE"`` for old reports)."""
    detection = report.detection or {}
    if report.trigger_source == "decree" or "decree" in detection and "findings" not in detection:
        return "DECREE"
    winner = detection.get("winner")
    for finding in detection.get("findings", []):
        if finding.get("detector") == winner:
            value = finding.get("value")
            shown = "n/a" if value is None else f"{value:.3g}"
            return f"{winner}: {finding.get('statistic')} {shown}"
    return str(winner or "a detector")


def metric_rows(report: TBARReport) -> list[dict[str, str]]:
    """CA, ASR and target-class accuracy before and after removal, with the change in points; the ASR row says
    "inverted trigger" when the attack was unknown (the rates are the reverse-engineered trigger's)."""
    target, name = report.target_class, class_name(report, report.target_class)
    target_label = f"Target-class accuracy (class {target}" + (f", `{name}`)" if name else ")")
    asr_label = "Attack success rate (ASR, inverted trigger)" if report.inverted_trigger else None
    return [
        {
            "name": (asr_label if key == "attack_success_rate" and asr_label else label) or target_label,
            "before": pct(getattr(report.before, key)),
            "after": pct(getattr(report.after, key)),
            "change": points(getattr(report.before, key), getattr(report.after, key)),
        }
        for key, label in _METRICS
    ]


def per_class_rows(report: TBARReport) -> list[dict[str, str]]:
    """Accuracy per class before and after (none past :data:`MAX_PER_CLASS_ROWS` classes)."""
    before, after = report.before.per_class_accuracy, report.after.per_class_accuracy
    count = max(len(before), len(after))
    if count > MAX_PER_CLASS_ROWS:
        return []
    rows = []
    for index in range(count):
        b = before[index] if index < len(before) else None
        a = after[index] if index < len(after) else None
        name = class_name(report, index) or ""
        rows.append(
            {"index": str(index), "name": name, "before": pct(b), "after": pct(a), "change": points(b, a)}
        )
    return rows


def selection_text(report: TBARReport) -> str:
    """The sentence saying on which split and under which constraints the scale was chosen."""
    selection = report.selection
    if selection is None:
        return "The report records no scale-selection rule."
    constraints = [
        f"{what} at least {pct(threshold)} of the backdoored model's"
        for what, threshold in (
            ("clean accuracy", selection.ca_threshold),
            ("target-class accuracy", selection.target_threshold),
        )
        if finite(threshold) is not None
    ]
    text = f"The scale was chosen on the `{selection.split or 'a held-out'}` split as the one with the lowest ASR"
    return text + (" subject to " + " and ".join(constraints) if constraints else "") + "."


def evaluation_text(report: TBARReport) -> str:
    """The dataset, split and number of images the metrics were measured on."""
    dataset, split = report.dataset, report.evaluation_split
    if not dataset and not split:
        return "not recorded"
    count = report.after.num_examples or report.before.num_examples
    text = str(dataset or "unrecorded dataset") + (f", `{split}` split" if split else "")
    return text + (f", {count} images" if count else "")


def recipe_texts(report: TBARReport) -> dict[str, str | None]:
    """The removal recipe in words: the trigger, its source, the fine-tuning and its settings, the scale."""
    recipe = report.recipe or Recipe()
    lora = recipe.lora
    return {
        "trigger_text": describe_trigger(report.trigger),
        "trigger_source_text": _TRIGGER_SOURCES.get(
            report.trigger_source, str(report.trigger_source or "an unrecorded source")
        ),
        "inverted_trigger": report.inverted_trigger,
        "detection_text": detection_text(report),
        "mode_text": _MODES.get(recipe.mode, str(recipe.mode or "n/a")),
        "lora_text": ", ".join(
            f"{key}={'/'.join(map(str, value)) if isinstance(value, list) else format_value(value)}"
            for key, value in vars(lora).items()
        )
        if lora
        else None,
        "variant": recipe.variant or "plain",
        "steps": value_or_na(recipe.steps),
        "learning_rate": value_or_na(recipe.learning_rate),
        "batch_size": value_or_na(recipe.batch_size),
        "unlearning_set_size": value_or_na(recipe.unlearning_set_size),
        "scale": value_or_na(report.scale),
    }


def report_rows(report: TBARReport) -> dict[str, Any]:
    """The card's tables (metrics, per-class accuracy, scale sweep) and its two summary figures."""
    asr_before, asr_after = (
        finite(report.before.attack_success_rate),
        finite(report.after.attack_success_rate),
    )
    asr_reduction = (asr_before - asr_after) / asr_before if asr_before and asr_after is not None else None
    return {
        "metric_rows": metric_rows(report),
        "per_class_rows": per_class_rows(report),
        "sweep_rows": [
            {
                "scale": format_value(point.scale),
                "clean_accuracy": pct(point.clean_accuracy),
                "attack_success_rate": pct(point.attack_success_rate),
                "target_class_accuracy": pct(point.target_class_accuracy),
                "selected": math.isclose(point.scale, report.scale),
            }
            for point in report.sweep
        ],
        "ca_retention": pct(report.ca_retention),
        "asr_reduction": pct(asr_reduction),
    }
