"""Model cards for sanitized CLIP checkpoints, rendered from ``tbar_report.json`` and a packaged Jinja template."""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from .provenance import hub_model_id, report_provenance

__all__ = ["build_model_card", "card_context", "describe_trigger", "hub_model_id", "reproduce_command"]

logger = logging.getLogger(__name__)

#: Tags every sanitized model carries on the Hub.
CARD_TAGS: tuple[str, ...] = ("hf_tbar", "backdoor-removal", "clip", "tbar")
#: Extra tag of a model pushed past the safety gate with ``force``, so such models can be filtered out.
FORCED_TAG = "tbar-safety-gate-forced"
#: Task of the model-index results and of the pipeline tag.
PIPELINE_TAG = "zero-shot-image-classification"
#: Largest number of classes whose per-class accuracy is listed on the card.
MAX_PER_CLASS_ROWS = 50
TEMPLATE_NAME = "model_card.md"

_TRIGGER_SOURCES = {
    "known": "the known trigger of the attack",
    "decree": "a trigger reverse-engineered with DECREE (the attack was unknown)",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: Any) -> str:
    """A fraction in ``[0, 1]`` as a percentage with one decimal, ``n/a`` when missing."""
    return f"{100 * value:.1f}%" if _is_number(value) else "n/a"


def _points(before: Any, after: Any) -> str:
    """Change between two fractions, in percentage points."""
    if not (_is_number(before) and _is_number(after)):
        return "n/a"
    return f"{100 * (after - before):+.1f} pts"


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if not (_is_number(numerator) and _is_number(denominator)) or denominator == 0:
        return None
    return numerator / denominator


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return f"<{len(value)} values>"
    if isinstance(value, dict):
        return f"<{len(value)} entries>"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe_trigger(trigger: dict[str, Any] | None) -> str:
    """One line naming a serialised trigger and its scalar parameters, e.g. ``badnets (patch_size=3, seed=0)``.

    List-valued parameters (an inverted mask, a pattern) are summarised by their length.
    """
    if not trigger:
        return "unknown trigger"
    name = str(trigger.get("name", "unnamed"))
    params = ", ".join(f"{key}={_format_value(value)}" for key, value in trigger.items() if key != "name")
    return f"{name} ({params})" if params else name


def _class_name(report: dict[str, Any], index: Any) -> str | None:
    classnames = (report.get("task") or {}).get("classnames") or []
    if isinstance(index, int) and 0 <= index < len(classnames):
        return str(classnames[index])
    return None


def reproduce_command(report: dict[str, Any], output_dir: str = "sanitized") -> str:
    """The ``hf-tbar unlearn`` line that re-runs the recorded recipe on the recorded base model.

    Flag names follow :class:`hf_tbar.config.TBARConfig`; settings missing from the report are left out. A local
    base model is written ``path/to/<folder name>``: the report never records where it was on disk.
    """
    recipe = report.get("recipe") or {}
    trigger = report.get("trigger") or {}
    lora = recipe.get("lora") or {}
    hub_id, source = report_provenance(report)
    model = hub_id or (f"path/to/{source['name']}" if source["kind"] == "local" else None)
    args: list[tuple[str, Any]] = [
        ("--model", model),
        ("--dataset", report.get("dataset")),
        ("--attack", trigger.get("name")),
        (
            "--attack_params",
            json.dumps({k: v for k, v in trigger.items() if k != "name"}) if trigger else None,
        ),
        ("--target", report.get("target_class")),
        ("--mode", recipe.get("mode")),
        ("--variant", recipe.get("variant")),
        ("--steps", recipe.get("steps")),
        ("--learning_rate", recipe.get("learning_rate")),
        ("--batch_size", recipe.get("batch_size")),
        ("--unlearning_set_size", recipe.get("unlearning_set_size")),
        ("--lora_r", lora.get("r")),
        ("--lora_alpha", lora.get("alpha")),
        ("--seed", recipe.get("seed")),
        ("--output_dir", output_dir),
    ]
    words = ["hf-tbar", "unlearn"]
    for flag, value in args:
        if value is not None:
            words += [flag, shlex.quote(_format_value(value))]
    return " ".join(words)


def build_eval_results(report: dict[str, Any]) -> list[EvalResult]:
    """Model-index entries for clean accuracy and attack success rate, before and after removal.

    Values are fractions in ``[0, 1]``; a metric missing from the report is left out.
    """
    dataset = str(report.get("dataset") or "custom")
    split = report.get("evaluation_split")
    metrics = (
        ("accuracy", "clean_accuracy", "Clean accuracy"),
        ("attack_success_rate", "attack_success_rate", "Attack success rate"),
    )
    results = []
    for stage, label in (("before", "backdoored model, before TBAR"), ("after", "after TBAR")):
        values = report.get(stage) or {}
        for metric_type, key, pretty in metrics:
            value = values.get(key)
            if not _is_number(value):
                continue
            results.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    task_name="Zero-shot image classification",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=str(split) if split else None,
                    metric_type=metric_type,
                    metric_name=f"{pretty} ({label})",
                    metric_value=round(float(value), 6),
                )
            )
    return results


def _sweep_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    selected = report.get("scale")
    rows = []
    for point in report.get("sweep") or []:
        scale = point.get("scale")
        rows.append(
            {
                "scale": _format_value(scale) if scale is not None else "n/a",
                "clean_accuracy": _pct(point.get("clean_accuracy")),
                "attack_success_rate": _pct(point.get("attack_success_rate")),
                "target_class_accuracy": _pct(point.get("target_class_accuracy")),
                "selected": _is_number(scale) and _is_number(selected) and math.isclose(scale, selected),
            }
        )
    return rows


def _metric_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    before, after = report.get("before") or {}, report.get("after") or {}
    target = report.get("target_class")
    target_name = _class_name(report, target)
    if target is None:
        target_label = "Target-class accuracy"
    else:
        target_label = f"Target-class accuracy (class {target}" + (
            f", `{target_name}`)" if target_name else ")"
        )
    rows = []
    for key, label in (
        ("clean_accuracy", "Clean accuracy (CA)"),
        ("attack_success_rate", "Attack success rate (ASR)"),
        ("target_class_accuracy", target_label),
    ):
        rows.append(
            {
                "name": label,
                "before": _pct(before.get(key)),
                "after": _pct(after.get(key)),
                "change": _points(before.get(key), after.get(key)),
            }
        )
    return rows


def _per_class_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    before = (report.get("before") or {}).get("per_class_accuracy") or []
    after = (report.get("after") or {}).get("per_class_accuracy") or []
    count = max(len(before), len(after))
    if count == 0 or count > MAX_PER_CLASS_ROWS:
        return []
    rows = []
    for index in range(count):
        b = before[index] if index < len(before) else None
        a = after[index] if index < len(after) else None
        rows.append(
            {
                "index": str(index),
                "name": _class_name(report, index) or "",
                "before": _pct(b),
                "after": _pct(a),
                "change": _points(b, a),
            }
        )
    return rows


def _selection_text(report: dict[str, Any]) -> str:
    selection = report.get("selection") or {}
    if not selection:
        return "The report records no scale-selection rule."
    split = selection.get("split") or "a held-out"
    constraints = []
    if _is_number(selection.get("ca_threshold")):
        constraints.append(
            f"clean accuracy at least {_pct(selection['ca_threshold'])} of the backdoored model's"
        )
    if _is_number(selection.get("target_threshold")):
        constraints.append(
            f"target-class accuracy at least {_pct(selection['target_threshold'])} of the backdoored model's"
        )
    text = f"The scale was chosen on the `{split}` split as the one with the lowest ASR"
    return text + (" subject to " + " and ".join(constraints) if constraints else "") + "."


def _evaluation_text(report: dict[str, Any]) -> str:
    dataset, split = report.get("dataset"), report.get("evaluation_split")
    count = (report.get("after") or {}).get("num_examples") or (report.get("before") or {}).get(
        "num_examples"
    )
    if not dataset and not split:
        return "not recorded"
    text = str(dataset or "unrecorded dataset") + (f", `{split}` split" if split else "")
    return text + (f", {count} images" if count else "")


def _lora_text(recipe: dict[str, Any]) -> str | None:
    lora = recipe.get("lora")
    if not lora:
        return None
    return ", ".join(
        f"{key}={'/'.join(map(str, value)) if isinstance(value, list) else _format_value(value)}"
        for key, value in lora.items()
    )


def template_path() -> Path:
    """Path of the packaged Jinja template of the model card."""
    return Path(str(resources.files("hf_tbar").joinpath("templates", TEMPLATE_NAME)))


def card_context(
    report: dict[str, Any],
    repo_id: str | None = None,
    forced: bool = False,
    gate_failures: Sequence[str] = (),
    plot_path: str | None = None,
) -> dict[str, Any]:
    """The variables the model-card template is rendered with (all strings, numbers already formatted)."""
    recipe = report.get("recipe") or {}
    before, after = report.get("before") or {}, report.get("after") or {}
    base_hub_id, base_source = report_provenance(report)
    retention = _ratio(after.get("clean_accuracy"), before.get("clean_accuracy"))
    asr_before, asr_after = before.get("attack_success_rate"), after.get("attack_success_rate")
    asr_reduction = _ratio(
        asr_before - asr_after if _is_number(asr_before) and _is_number(asr_after) else None, asr_before
    )
    target = report.get("target_class")
    versions = report.get("versions") or {}
    task = report.get("task") or {}
    return {
        "model_title": repo_id.split("/")[-1] if repo_id else "TBAR-sanitized CLIP",
        "repo_id": repo_id,
        "load_id": repo_id or "path/to/this/folder",
        "base_model_hub_id": base_hub_id,
        "base_model_kind": base_source["kind"],
        "base_model_local_name": base_source["name"] if base_source["kind"] == "local" else None,
        "trigger_text": describe_trigger(report.get("trigger")),
        "trigger_source_text": _TRIGGER_SOURCES.get(
            report.get("trigger_source"), str(report.get("trigger_source") or "an unrecorded source")
        ),
        "target_class": target if target is not None else "n/a",
        "target_class_name": _class_name(report, target),
        "mode_text": {"full": "full fine-tuning of the vision tower", "lora": "LoRA on the vision tower"}.get(
            recipe.get("mode"), str(recipe.get("mode") or "n/a")
        ),
        "lora_text": _lora_text(recipe),
        "variant": recipe.get("variant") or "plain",
        "steps": _format_value(recipe.get("steps")) if recipe.get("steps") is not None else "n/a",
        "learning_rate": _format_value(recipe.get("learning_rate"))
        if recipe.get("learning_rate") is not None
        else "n/a",
        "batch_size": _format_value(recipe.get("batch_size"))
        if recipe.get("batch_size") is not None
        else "n/a",
        "unlearning_set_size": _format_value(recipe.get("unlearning_set_size"))
        if recipe.get("unlearning_set_size") is not None
        else "n/a",
        "scale": _format_value(report.get("scale")) if report.get("scale") is not None else "n/a",
        "sweep_rows": _sweep_rows(report),
        "selection_text": _selection_text(report),
        "metric_rows": _metric_rows(report),
        "per_class_rows": _per_class_rows(report),
        "ca_retention": _pct(retention),
        "asr_reduction": _pct(asr_reduction),
        "evaluation_text": _evaluation_text(report),
        "plot_path": plot_path,
        "versions": [(str(name), str(version)) for name, version in versions.items() if version is not None],
        "hf_tbar_version": report.get("hf_tbar_version")
        or versions.get("hf_tbar")
        or "(version not recorded)",
        "reproduce_command": reproduce_command(report),
        "classnames": [str(name) for name in task.get("classnames") or []],
        "prompt_template": (task.get("templates") or ["a photo of a {}."])[0],
        "forced": bool(forced),
        "gate_failures": list(gate_failures),
    }


def build_model_card(
    report: dict[str, Any],
    repo_id: str | None = None,
    forced: bool = False,
    gate_failures: Sequence[str] = (),
    plot_path: str | None = None,
) -> ModelCard:
    """The model card (``README.md``) of a sanitized CLIP, from its ``tbar_report.json``.

    Args:
        report: The parsed ``tbar_report.json`` (see :func:`hf_tbar.report.build_report`). Missing or
            ``null`` keys render as ``n/a``.
        repo_id: The Hub repository the card is written for; names the model and the loading snippet.
        forced: The model was pushed past the safety gate with ``force``: the card opens with a warning and
            carries the ``tbar-safety-gate-forced`` tag.
        gate_failures: The safety-gate messages to list in that warning.
        plot_path: Path of the CA/ASR-against-scale plot relative to the card, or ``None`` when there is none.

    Returns:
        A :class:`~huggingface_hub.ModelCard` whose metadata holds ``library_name``, ``pipeline_tag``, the tags,
        ``base_model`` (only when the base model came from the Hub, never a local path) and a ``model-index``
        with clean accuracy and attack success rate before and after removal.
    """
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict parsed from tbar_report.json, got {type(report).__name__}")
    if repo_id is not None:
        validate_repo_id(repo_id)
    base_model, base_source = report_provenance(report)
    if base_model is None and base_source["kind"] == "local":
        logger.info(
            "base model folder %r is not on the Hub: the card names it in its text only", base_source["name"]
        )
    eval_results = build_eval_results(report)
    model_name = repo_id.split("/")[-1] if repo_id else "tbar-sanitized-clip"
    tags = list(CARD_TAGS) + ([FORCED_TAG] if forced else [])
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        tags=tags,
        pipeline_tag=PIPELINE_TAG,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    context = card_context(
        report, repo_id=repo_id, forced=forced, gate_failures=gate_failures, plot_path=plot_path
    )
    return ModelCard.from_template(card_data, template_path=str(template_path()), **context)
