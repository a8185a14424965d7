"""The sanitized-model folder: weights, processor, ``tbar_report.json`` and the scale plot."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from ..data.pixels import image_size_of
from ..hub.card import build_model_card
from ..hub.gate import DEFAULT_MAX_ASR, DEFAULT_MIN_CA_RETENTION, SafetyGateError, check_safety_gate
from ..hub.provenance import base_model_provenance
from ..io import atomic_output_dir, refuse_overlap, write_json
from ..metrics import chance_accuracy
from ..scale_search import SweepPoint
from ..version import __version__
from .schema import REPORT_FILE, SCHEMA_VERSION, TBARReport

logger = logging.getLogger(__name__)

__all__ = [
    "CARD_FILE",
    "PLOT_FILE",
    "REPORT_FILE",
    "TBARReport",
    "build_report",
    "plot_sweep",
    "save_sanitized",
    "write_trigger_files",
]
PLOT_FILE = "tbar_scale_sweep.png"
CARD_FILE = "README.md"


def package_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import accelerate
    import peft
    import torch
    import transformers

    return {
        "hf_tbar": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def build_report(unlearner, result, **extra) -> TBARReport:
    """The :class:`~hf_tbar.reporting.schema.TBARReport` of a TBAR run.

    ``extra`` holds further top-level keys (``dataset``, ``dataset_config``, ``data``, or any other, kept in
    ``TBARReport.extra``); ``selection_split`` and ``evaluation_split`` name the splits used. Values are
    normalised as ``tbar_report.json`` stores them (tuples as lists, paths as strings), so the report equals
    the one read back from its file.

    The base model is recorded without local paths: ``base_model`` is its Hub id, or ``None`` when it was
    not loaded from the Hub, and ``base_model_source`` is ``{"kind": "hub" | "local" | "in-memory", "name":
    <Hub id, folder base name or None>}`` (see :func:`hf_tbar.hub.provenance.base_model_provenance`).
    """
    cfg = result.config
    base_model, base_model_source = base_model_provenance(unlearner.source)
    height, width = image_size_of(unlearner.processor)
    trigger = _public_trigger(unlearner, result)
    if trigger is None:
        trigger_source = "found"  # poisoned images found as they are: no trigger object
    else:
        trigger_source = "inverted" if result.detection is not None else "known"
    payload = {
        "schema_version": SCHEMA_VERSION,
        "hf_tbar_version": package_versions()["hf_tbar"],
        "base_model": base_model,
        "base_model_source": base_model_source,
        "model_type": unlearner.family.model_type,
        "task": unlearner.task.to_dict(),
        "target_class": result.target,
        "trigger": trigger.public_dict() if trigger is not None else None,
        "trigger_description": (
            result.trigger.describe(image_size=height)
            if trigger is not None
            else "poisoned images found as they are (ASR: their held-out share classified as the target)"
        ),
        "image_size": [height, width],
        "trigger_source": trigger_source,
        "detection": result.detection.to_dict() if result.detection is not None else None,
        "recipe": {
            "mode": cfg.mode,
            "steps": cfg.steps,
            "learning_rate": cfg.learning_rate,
            "batch_size": cfg.batch_size,
            "unlearning_set_size": result.unlearning_set_size,
            "variant": cfg.variant,
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "target_modules": cfg.lora_target_modules}
            if cfg.mode == "lora"
            else None,
            "seed": cfg.seed,
            "preserve_set_size": cfg.preserve_set_size,
        },
        "scale": result.selection.scale,
        "sweep": [asdict(p) for p in result.selection.sweep],
        "selection": {
            "split": extra.pop("selection_split", "validation"),
            "ca_threshold": result.selection.config.ca_threshold,
            "target_threshold": result.selection.config.target_threshold,
            "evaluations": result.selection.evaluations,
            "max_scale": result.selection.config.max_scale,
            "strategy": result.selection.strategy,
            "cost": result.selection.cost,
        },
        "evaluation_split": extra.pop("evaluation_split", "test"),
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
        "chance_accuracy": chance_accuracy(unlearner.task.num_classes),
        "timings_s": result.timings,
        "finetuning_losses": result.losses,
        "warnings": result.warnings,
        "versions": package_versions(),
        **extra,
    }
    return TBARReport.from_dict(json.loads(json.dumps(payload, default=str)), source="the new report")


def _public_trigger(unlearner, result):
    """The run's trigger as the report describes it: input-relative sizes fixed for the model's input."""
    if result.trigger is None:
        return None
    return result.trigger.resolved(*image_size_of(unlearner.processor))


def write_trigger_files(folder: str | os.PathLike, unlearner, result) -> list[str]:
    """Write the files the report's trigger description names (an inverted trigger's mask and pattern,
    :meth:`~hf_tbar.attacks.Trigger.public_files`) into ``folder``; returns their names."""
    trigger = _public_trigger(unlearner, result)
    files = trigger.public_files() if trigger is not None else {}
    for name, data in files.items():
        (Path(folder) / name).write_bytes(data)
    return sorted(files)


def plot_sweep(
    sweep: list[SweepPoint], scale: float, path: str | os.PathLike, title: str = "TBAR scale sweep"
) -> Path:
    """Plot CA, ASR and target-class accuracy (validation, %) against the negation scale; mark the chosen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(sweep, key=lambda p: p.scale)
    xs = [p.scale for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [100 * p.clean_accuracy for p in points], "o-", label="clean accuracy")
    ax.plot(xs, [100 * p.attack_success_rate for p in points], "s-", label="attack success rate")
    if all(p.target_class_accuracy is not None for p in points):
        ax.plot(xs, [100 * p.target_class_accuracy for p in points], "^--", label="target-class accuracy")
    ax.axvline(scale, color="grey", linestyle=":", label=f"chosen scale {scale:.2f}")
    ax.set_xlabel("scale alpha  (theta_b - alpha * tau)")
    ax.set_ylabel("% (validation)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def gated_report(unlearner, result, force: bool, max_asr: float, min_ca_retention: float, **extra):
    """The run's report and the safety-gate failures it shows, refused unless ``force``.

    Raises:
        SafetyGateError: the gate fails and ``force`` is False.
    """
    report = build_report(unlearner, result, **extra)
    failures = check_safety_gate(report, max_asr, min_ca_retention)
    if failures and not force:
        raise SafetyGateError(failures, action="save")
    return report, failures


def save_sanitized(
    output_dir: str | os.PathLike,
    unlearner,
    result,
    overwrite: bool = False,
    force: bool = False,
    max_asr: float = DEFAULT_MAX_ASR,
    min_ca_retention: float = DEFAULT_MIN_CA_RETENTION,
    **extra,
) -> Path:
    """Write the sanitized CLIP folder atomically: model, processor, report, plot, model card (README.md) and
    the files the report's trigger names (``inverted_trigger.safetensors`` after an unknown-trigger run).

    The same safety gate as a push applies: a model whose verified ASR is above ``max_asr`` or whose CA
    retention is below ``min_ca_retention`` is refused unless ``force`` (the card then opens with a warning).

    Raises:
        SafetyGateError: the gate fails and ``force`` is False (nothing is written).
        OutputError: ``output_dir`` is, is inside, or contains the folder the backdoored model came from.
        OutputExistsError: ``output_dir`` holds files and ``overwrite`` is False.
    """
    refuse_overlap(output_dir, [unlearner.source])
    report, failures = gated_report(unlearner, result, force, max_asr, min_ca_retention, **extra)
    card = build_model_card(report, forced=bool(failures), gate_failures=failures, plot_path=PLOT_FILE)
    with atomic_output_dir(output_dir, overwrite=overwrite) as tmp:
        result.model.save_pretrained(tmp, safe_serialization=True)
        unlearner.processor.save_pretrained(tmp)
        write_json(tmp / REPORT_FILE, report.to_dict())
        write_trigger_files(tmp, unlearner, result)
        plot_sweep(report.sweep, report.scale, tmp / PLOT_FILE)
        card.save(tmp / CARD_FILE)
    logger.info("sanitized model written to %s", output_dir)
    return Path(output_dir)
