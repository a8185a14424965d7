"""Model cards for sanitized CLIP checkpoints, rendered from a :class:`~hf_tbar.reporting.schema.TBARReport` and a
packaged Jinja template: the metadata (tags, base model, ``model-index``) here, the text in :mod:`.card_text`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from ..metrics import finite
from ..models import MODEL_FAMILIES
from ..reporting.schema import TBARReport
from .card_text import (
    class_name,
    describe_trigger,
    evaluation_text,
    recipe_texts,
    report_rows,
    reproduce_command,
    selection_text,
)
from .gate import as_report
from .provenance import hub_model_id, report_provenance
from .reproduce import reproduce_notes

__all__ = ["build_model_card", "card_context", "describe_trigger", "hub_model_id", "reproduce_command"]

logger = logging.getLogger(__name__)

#: Tags every sanitized model carries on the Hub.
#: The tags of a sanitized CLIP's card; another family's card has its ``model_type`` in place of ``"clip"``.
CARD_TAGS: tuple[str, ...] = ("hf_tbar", "backdoor-removal", "clip", "tbar")
#: Extra tag of a model pushed past the safety gate with ``force``, so such models can be filtered out.
FORCED_TAG = "tbar-safety-gate-forced"
#: Task of the model-index results and of the pipeline tag.
PIPELINE_TAG = "zero-shot-image-classification"
TEMPLATE_NAME = "model_card.md"

#: The model-index entries: (metric type, field of the evaluation, name).
_EVAL_METRICS = (
    ("accuracy", "clean_accuracy", "Clean accuracy"),
    ("attack_success_rate", "attack_success_rate", "Attack success rate"),
)


def build_eval_results(report: TBARReport) -> list[EvalResult]:
    """Model-index entries for clean accuracy and attack success rate, before and after removal.

    Values are fractions in ``[0, 1]``; a metric missing from the report is left out.
    """
    dataset, split = str(report.dataset or "custom"), report.evaluation_split
    results = []
    for scored, label in ((report.before, "backdoored model, before TBAR"), (report.after, "after TBAR")):
        for metric_type, key, pretty in _EVAL_METRICS:
            value = finite(getattr(scored, key))
            if value is not None:
                results.append(
                    EvalResult(
                        task_type=PIPELINE_TAG,
                        task_name="Zero-shot image classification",
                        dataset_type=dataset,
                        dataset_name=dataset,
                        dataset_split=str(split) if split else None,
                        metric_type=metric_type,
                        metric_name=f"{pretty} ({label})",
                        metric_value=round(value, 6),
                    )
                )
    return results


def _family(model_type: str) -> dict[str, str]:
    """The display name and transformers classes of a registered family (a plain name when unknown)."""
    family = MODEL_FAMILIES.get(model_type)
    if family is None:
        return {"name": model_type, "model_class": "AutoModel", "processor_class": "AutoProcessor"}
    return {
        "name": family.display_name,
        "model_class": family.model_class.__name__,
        "processor_class": family.processor_class.__name__,
    }


def template_path() -> Path:
    """Path of the packaged Jinja template of the model card."""
    return Path(str(resources.files("hf_tbar").joinpath("templates", TEMPLATE_NAME)))


def card_context(
    report: TBARReport | Mapping[str, Any],
    repo_id: str | None = None,
    forced: bool = False,
    gate_failures: Sequence[str] = (),
    plot_path: str | None = None,
) -> dict[str, Any]:
    """The variables the model-card template is rendered with (all strings, numbers already formatted)."""
    report = as_report(report)
    base_hub_id, base_source = report_provenance(report)
    task = report.task
    family = _family(report.model_type)
    return {
        "model_title": repo_id.split("/")[-1] if repo_id else f"TBAR-sanitized {family['name']}",
        "family_name": family["name"],
        "model_class": family["model_class"],
        "processor_class": family["processor_class"],
        "repo_id": repo_id,
        "load_id": repo_id or "path/to/this/folder",
        "base_model_hub_id": base_hub_id,
        "base_model_kind": base_source["kind"],
        "base_model_local_name": base_source["name"] if base_source["kind"] == "local" else None,
        "target_class": report.target_class,
        "target_class_name": class_name(report, report.target_class),
        **recipe_texts(report),
        **report_rows(report),
        "selection_text": selection_text(report),
        "evaluation_text": evaluation_text(report),
        "plot_path": plot_path,
        "versions": [(str(name), str(ver)) for name, ver in report.versions.items() if ver is not None],
        "hf_tbar_version": report.hf_tbar_version
        or report.versions.get("hf_tbar")
        or "(version not recorded)",
        "reproduce_command": reproduce_command(report),
        "reproduce_notes": reproduce_notes(report),
        "classnames": [str(name) for name in task.classnames] if task else [],
        "prompt_template": task.templates[0] if task else "a photo of {}.",
        "forced": bool(forced),
        "gate_failures": list(gate_failures),
    }


def build_model_card(
    report: TBARReport | Mapping[str, Any],
    repo_id: str | None = None,
    forced: bool = False,
    gate_failures: Sequence[str] = (),
    plot_path: str | None = None,
) -> ModelCard:
    """The model card (``README.md``) of a sanitized model (CLIP, SigLIP), from its report.

    Args:
        report: The run's :class:`~hf_tbar.reporting.schema.TBARReport`, or the parsed ``tbar_report.json`` (read
            with :meth:`~hf_tbar.reporting.schema.TBARReport.from_dict`). Optional keys that are missing or
            ``null`` render as ``n/a``.
        repo_id: The Hub repository the card is written for; names the model and the loading snippet.
        forced: The model was pushed past the safety gate with ``force``: the card opens with a warning and
            carries the ``tbar-safety-gate-forced`` tag.
        gate_failures: The safety-gate messages to list in that warning.
        plot_path: Path of the CA/ASR-against-scale plot relative to the card, or ``None`` when there is none.

    Returns:
        A :class:`~huggingface_hub.ModelCard` whose metadata holds ``library_name``, ``pipeline_tag``, the tags,
        ``base_model`` (only when the base model came from the Hub, never a local path) and a ``model-index``
        with clean accuracy and attack success rate before and after removal.

    Raises:
        InputError: ``report`` is a dict that is not a valid report (names the key).
    """
    report = as_report(report)
    if repo_id is not None:
        validate_repo_id(repo_id)
    base_model, base_source = report_provenance(report)
    if base_model is None and base_source["kind"] == "local":
        logger.info(
            "base model folder %r is not on the Hub: the card names it in its text only", base_source["name"]
        )
    card_data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        tags=[report.model_type if tag == "clip" else tag for tag in CARD_TAGS]
        + ([FORCED_TAG] if forced else []),
        pipeline_tag=PIPELINE_TAG,
        model_name=repo_id.split("/")[-1] if repo_id else "tbar-sanitized-clip",
        eval_results=build_eval_results(report) or None,
    )
    context = card_context(report, repo_id, forced, gate_failures, plot_path)
    return ModelCard.from_template(card_data, template_path=str(template_path()), **context)
