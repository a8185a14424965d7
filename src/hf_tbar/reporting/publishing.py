"""Publishing a TBAR result on the Hub: the sanitized folder written to a temporary place, then pushed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..hub import PushConfig, PushResult, push_sanitized_model
from ..results import UnlearningResult
from .report import save_sanitized


def push_result(
    unlearner: Any,
    repo_id: str,
    result: UnlearningResult,
    dry_run_dir: str | os.PathLike | None = None,
    **push_options: Any,
) -> PushResult:
    """Save the sanitized model of ``result`` to a temporary folder and push it (card, report, plot) as one Hub
    commit, or write exactly what would be pushed to ``dry_run_dir``.

    Args:
        unlearner: The :class:`~hf_tbar.BackdoorUnlearner` that produced ``result`` (its source, processor,
            model family and task go into the folder and the report).
        push_options: Fields of :class:`~hf_tbar.hub.PushConfig` (``private``, ``revision``, ``create_pr``,
            ``commit_message``, ``token``, ``max_asr``, ``min_ca_retention``, ``force``).

    Raises:
        SafetyGateError: the verified ASR or CA retention misses its threshold and ``force`` is not set.
    """
    config = PushConfig(repo_id=repo_id, dry_run=dry_run_dir is not None, **push_options)
    with tempfile.TemporaryDirectory(prefix="hf_tbar-push-") as tmp:
        folder = save_sanitized(Path(tmp) / "sanitized", unlearner, result, force=True)
        return push_sanitized_model(folder, config, dry_run_dir=dry_run_dir)
