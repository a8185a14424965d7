"""Publishing sanitized models on the Hugging Face Hub: model cards and a gated, single-commit push.

A sanitized folder is a plain ``CLIPModel`` checkpoint plus ``tbar_report.json`` (a
:class:`~hf_tbar.reporting.schema.TBARReport`: the removal recipe, the scale sweep and the metrics before and after
removal) and optionally ``tbar_scale_sweep.png``.
:func:`build_model_card` renders the report as a model card; :func:`push_sanitized_model` checks the report
against a safety gate, stages the folder with its card and pushes it as one commit.

Modules: :mod:`.gate` (reading the report, and the safety gate), :mod:`.staging` (the folder that is pushed:
CLIP only, searched for the token), :mod:`.push` (the push itself), :mod:`.remote` (Hub errors), :mod:`.card`
(the card's metadata and rendering), :mod:`.card_text` (the report in words) and :mod:`.provenance` (the base
model, named without local paths).
"""

from ..reporting.schema import TBARReport
from .card import build_model_card, describe_trigger
from .gate import as_report
from .provenance import base_model_provenance, hub_model_id
from .push import (
    HubPushError,
    PushConfig,
    PushResult,
    SafetyGateError,
    check_safety_gate,
    load_report,
    prepare_push_folder,
    push_sanitized_model,
)

__all__ = [
    "HubPushError",
    "PushConfig",
    "PushResult",
    "SafetyGateError",
    "TBARReport",
    "as_report",
    "base_model_provenance",
    "build_model_card",
    "check_safety_gate",
    "describe_trigger",
    "hub_model_id",
    "load_report",
    "prepare_push_folder",
    "push_sanitized_model",
]
