"""Publish a sanitized CLIP folder on the Hub: safety gate, staging folder with a model card, one commit."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token

from ..errors import ConfigError
from .config import PushConfig
from .gate import (
    REPORT_NAME,
    SafetyGateError,
    check_safety_gate,
    default_commit_message,
    load_report,
)
from .remote import HubPushError, hub_endpoint, hub_step
from .staging import (
    CARD_NAME,
    PLOT_NAME,
    PUSHED_FILE_PATTERNS,
    available_token,
    prepare_push_folder,
    stage_folder,
)

__all__ = [
    "CARD_NAME",
    "PLOT_NAME",
    "PUSHED_FILE_PATTERNS",
    "REPORT_NAME",
    "HubPushError",
    "PushConfig",
    "PushResult",
    "SafetyGateError",
    "check_safety_gate",
    "load_report",
    "prepare_push_folder",
    "push_sanitized_model",
]

logger = logging.getLogger(__name__)


@dataclass
class PushResult:
    """What :func:`push_sanitized_model` did.

    Attributes:
        repo_id: The target repository.
        files: Paths (relative to the repository root) of the files pushed, or that would be pushed.
        dry_run: Nothing was sent to the Hub.
        forced: The model failed the safety gate and was pushed (or staged) anyway.
        gate_failures: The safety-gate messages (empty when the gate passed).
        output_dir: Where a dry run wrote the folder, if it was asked to.
        repo_url: URL of the repository (pushes only).
        commit_url: URL of the commit (pushes only).
        commit_oid: Hash of the commit (pushes only).
        pr_url: URL of the pull request, when ``create_pr`` was set.
    """

    repo_id: str
    files: list[str]
    dry_run: bool
    forced: bool = False
    gate_failures: list[str] = field(default_factory=list)
    output_dir: Path | None = None
    repo_url: str | None = None
    commit_url: str | None = None
    commit_oid: str | None = None
    pr_url: str | None = None


def _resolve_token(config: PushConfig) -> str:
    """The token of a real push: ``config.token``, else ``$HF_TOKEN`` or the saved login (never logged)."""
    token = config.token
    if token is None:
        with hub_step("authenticate", config, None):
            token = get_token()
    if not token:
        raise HubPushError(
            f"no Hugging Face token to push to {config.repo_id!r} at {hub_endpoint(config)}: set $HF_TOKEN, "
            "run `hf auth login`, or pass token=... (--token)",
            repo_id=config.repo_id,
            step="authenticate",
        )
    return token


def _needs_branch(revision: str | None) -> bool:
    return revision is not None and not revision.startswith("refs/")


def push_sanitized_model(
    sanitized_dir: str | os.PathLike, config: PushConfig, dry_run_dir: str | os.PathLike | None = None
) -> PushResult:
    """Check, stage and publish a sanitized CLIP folder as one commit on the Hub.

    Steps: the safety gate (unless ``config.force``); the token, resolved once (``config.token``, else
    ``$HF_TOKEN`` or the saved login; a dry run uses it when there is one); a staging folder with the
    checkpoint, report, plot and a generated ``README.md`` model card, refused if the folder is not a CLIP
    checkpoint or if any staged file holds the token; then, unless ``config.dry_run``,
    ``create_repo(exist_ok=True)`` (with a visibility only when ``config.private`` is set), the branch
    ``config.revision`` when missing (also with ``create_pr``: the pull request targets it), and a single
    ``create_commit`` with every file. ``sanitized_dir`` is only read, whatever happens.

    Args:
        sanitized_dir: Folder written by hf_tbar (CLIP checkpoint + ``tbar_report.json``).
        config: Target repository, commit options, token, gate thresholds, ``force`` and ``dry_run``.
        dry_run_dir: With ``config.dry_run``, write the staged folder here (must not exist or be empty);
            without it a dry run only returns the file list.

    Returns:
        A :class:`PushResult` with the file list and, for a real push, the commit and pull-request URLs.

    Raises:
        SafetyGateError: the model fails the gate and ``config.force`` is not set.
        HubPushError: no token, a network error, or the Hub refused the repository, branch or commit.
        InputError: the folder has no report, its report is malformed or of a newer schema (naming the key),
            it is not a CLIP safetensors checkpoint, or a file holds the token.
        ModelLoadError: the weights do not load as a ``CLIPModel``.
        ConfigError: ``dry_run_dir`` given without ``config.dry_run``.
    """
    if dry_run_dir is not None and not config.dry_run:
        raise ConfigError(f"dry_run_dir={str(dry_run_dir)!r} needs config.dry_run=True")
    source = Path(sanitized_dir).expanduser().resolve()
    report = load_report(source)
    failures = check_safety_gate(report, config.max_asr, config.min_ca_retention)
    if failures and not config.force:
        raise SafetyGateError(failures)
    forced = bool(failures)
    if forced:
        logger.warning("pushing past the safety gate (force=True): %s", "; ".join(failures))

    if config.dry_run:
        token = available_token(config)
        if dry_run_dir is not None:
            output_dir = Path(dry_run_dir).expanduser().resolve()
            files = stage_folder(source, output_dir, config, token)
        else:
            with tempfile.TemporaryDirectory(prefix="hf_tbar_push_") as tmp:
                files = stage_folder(source, Path(tmp) / "repo", config, token)
            output_dir = None
        logger.info("dry run: would push %d files to %s: %s", len(files), config.repo_id, ", ".join(files))
        return PushResult(
            repo_id=config.repo_id,
            files=files,
            dry_run=True,
            forced=forced,
            gate_failures=failures,
            output_dir=output_dir,
        )

    token = _resolve_token(config)
    commit_message = config.commit_message or default_commit_message(report, forced)
    with tempfile.TemporaryDirectory(prefix="hf_tbar_push_") as tmp:
        staging = Path(tmp) / "repo"
        files = stage_folder(source, staging, config, token)
        api = HfApi(endpoint=config.endpoint, token=token)
        visibility = {} if config.private is None else {"private": config.private}
        with hub_step("create_repo", config, token):
            repo_url = api.create_repo(config.repo_id, exist_ok=True, repo_type="model", **visibility)
        if _needs_branch(config.revision):
            with hub_step("create_branch", config, token):
                api.create_branch(config.repo_id, branch=config.revision, repo_type="model", exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staging / name)) for name in files
        ]
        logger.info("pushing %d files to %s (%s)", len(files), config.repo_id, repo_url)
        with hub_step("commit", config, token):
            commit = api.create_commit(
                config.repo_id,
                operations,
                commit_message=commit_message,
                repo_type="model",
                revision=config.revision,
                create_pr=config.create_pr,
            )
    logger.info("pushed %s: %s", config.repo_id, commit.pr_url or commit.commit_url)
    return PushResult(
        repo_id=config.repo_id,
        files=files,
        dry_run=False,
        forced=forced,
        gate_failures=failures,
        repo_url=str(repo_url),
        commit_url=commit.commit_url,
        commit_oid=commit.oid,
        pr_url=commit.pr_url,
    )
