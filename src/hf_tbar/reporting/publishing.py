"""Writing a TBAR result: the sanitized folder (behind the safety gate) and the Hub push.

:class:`Publishing` is a mixin of :class:`~hf_tbar.BackdoorUnlearner`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..hub import PushConfig, push_sanitized_model
from ..hub.gate import DEFAULT_MAX_ASR, DEFAULT_MIN_CA_RETENTION
from ..results import UnlearningResult
from .adapter_folder import save_adapter_folder
from .report import save_sanitized


class Publishing:
    """``save_pretrained`` and ``push_to_hub`` (mixin of ``BackdoorUnlearner``)."""

    def save_pretrained(
        self,
        output_dir: str | os.PathLike,
        result: UnlearningResult,
        overwrite: bool = False,
        force: bool = False,
        max_asr: float = DEFAULT_MAX_ASR,
        min_ca_retention: float = DEFAULT_MIN_CA_RETENTION,
        **report_fields,
    ) -> Path:
        """Save the sanitized model as a plain CLIPModel folder with ``tbar_report.json``, the scale plot and a
        model card (``README.md``), behind the same safety gate as a push.

        The folder is written atomically: on failure nothing is left at ``output_dir``.

        Args:
            force: Save even if the verified ASR is above ``max_asr`` or the CA retention below
                ``min_ca_retention``; the card then opens with a warning.
            **report_fields: Extra top-level entries of the report (e.g. ``data=`` provenance).

        Raises:
            SafetyGateError: the model fails the gate and ``force`` is False.
            OutputExistsError: ``output_dir`` holds files and ``overwrite`` is False.
            OutputError: ``output_dir`` is, is inside, or contains the folder the model came from.
        """
        return save_sanitized(
            output_dir,
            self,
            result,
            overwrite=overwrite,
            force=force,
            max_asr=max_asr,
            min_ca_retention=min_ca_retention,
            **report_fields,
        )

    def save_adapter(
        self,
        output_dir: str | os.PathLike,
        result: UnlearningResult,
        overwrite: bool = False,
        force: bool = False,
        max_asr: float = DEFAULT_MAX_ASR,
        min_ca_retention: float = DEFAULT_MIN_CA_RETENTION,
        **report_fields,
    ):
        """Save the sanitization as a PEFT LoRA adapter for the *backdoored* model (``mode="lora"`` and the
        ``plain`` variant): ``PeftModel.from_pretrained(backdoored, output_dir)`` gives the sanitized model and
        ``.unload()`` the backdoored one back. The folder also holds ``tbar_report.json`` and an adapter card
        (``library_name: peft``, ``base_model``: the backdoored model's Hub id when it came from the Hub).

        Same safety gate, atomic write and errors as :meth:`save_pretrained`; returns the
        :class:`~hf_tbar.reporting.negation_adapter.AdapterInfo` (bytes of the adapter against the full model's).

        Raises:
            ConfigError: the trigger vector was not fitted as LoRA factors (``mode="full"``, or a variant that
                combines several vectors).
        """
        return save_adapter_folder(
            output_dir,
            self,
            result,
            overwrite=overwrite,
            force=force,
            max_asr=max_asr,
            min_ca_retention=min_ca_retention,
            **report_fields,
        )

    def push_to_hub(
        self,
        repo_id: str,
        result: UnlearningResult,
        dry_run_dir: str | os.PathLike | None = None,
        **push_options,
    ):
        """Save the sanitized model to a temporary folder and push it (card, report, plot) as one Hub commit.

        Args:
            repo_id: Target repository, e.g. ``"me/clip-sanitized"``.
            result: The output of :meth:`unlearn`.
            dry_run_dir: Write exactly what would be pushed here instead of pushing.
            **push_options: Fields of :class:`~hf_tbar.hub.PushConfig` (``private``, ``revision``, ``create_pr``,
                ``commit_message``, ``token``, ``max_asr``, ``min_ca_retention``, ``force``). ``private`` is
                ``None`` by default: no visibility is sent, so a new repository gets the Hub's (or the
                organisation's) default; pass ``private=True`` or ``False`` to choose.

        Returns:
            The :class:`~hf_tbar.hub.PushResult`. The safety gate refuses a model whose verified ASR or CA
            retention misses its threshold unless ``force=True``.
        """
        import tempfile

        config = PushConfig(repo_id=repo_id, dry_run=dry_run_dir is not None, **push_options)
        with tempfile.TemporaryDirectory(prefix="hf_tbar-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "sanitized", result, force=True)
            return push_sanitized_model(folder, config, dry_run_dir=dry_run_dir)
