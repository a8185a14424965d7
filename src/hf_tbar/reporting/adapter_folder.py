"""The adapter folder of a LoRA TBAR run: the PEFT negation adapter, its report and its card."""

from __future__ import annotations

import logging
import os

from ..errors import ConfigError
from ..hub.card import build_model_card
from ..hub.card_adapter import adapter_card
from ..hub.gate import DEFAULT_MAX_ASR, DEFAULT_MIN_CA_RETENTION
from ..hub.provenance import base_model_provenance
from ..io import atomic_output_dir, refuse_overlap, write_json
from .negation_adapter import AdapterInfo, write_negation_adapter
from .report import CARD_FILE, REPORT_FILE, gated_report, write_trigger_files

logger = logging.getLogger(__name__)


def save_adapter_folder(
    output_dir: str | os.PathLike,
    unlearner,
    result,
    overwrite: bool = False,
    force: bool = False,
    max_asr: float = DEFAULT_MAX_ASR,
    min_ca_retention: float = DEFAULT_MIN_CA_RETENTION,
    **extra,
) -> AdapterInfo:
    """Write the negation adapter, ``tbar_report.json`` and the adapter card into ``output_dir`` atomically,
    behind the safety gate (see :meth:`hf_tbar.BackdoorUnlearner.save_adapter`)."""
    low_rank = result.vector.low_rank
    if low_rank is None:
        raise ConfigError(
            f"no adapter to save: the trigger vector was fitted in mode {result.config.mode!r} with variant "
            f"{result.config.variant!r}; an adapter needs mode='lora' and variant='plain'"
        )
    refuse_overlap(output_dir, [unlearner.source])
    report, failures = gated_report(unlearner, result, force, max_asr, min_ca_retention, **extra)
    base_model_id, _ = base_model_provenance(unlearner.source)
    card = build_model_card(report, forced=bool(failures), gate_failures=failures)
    card = adapter_card(card, unlearner.family.model_class.__name__, base_model_id, None)
    with atomic_output_dir(output_dir, overwrite=overwrite) as tmp:
        info = write_negation_adapter(unlearner.model, low_rank, result.selection.scale, tmp, base_model_id)
        write_json(
            tmp / REPORT_FILE,
            {**report.to_dict(), "adapter": {"bytes": info.adapter_bytes, "model_bytes": info.model_bytes}},
        )
        write_trigger_files(tmp, unlearner, result)
        card.save(tmp / CARD_FILE)
    logger.info("negation adapter written to %s (%.2f%% of the model's bytes)", output_dir, 100 * info.ratio)
    return AdapterInfo(type(info.path)(output_dir), info.adapter_bytes, info.model_bytes)
