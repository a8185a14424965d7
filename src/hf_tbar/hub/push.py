"""Publish a sanitized CLIP folder on the Hub: safety gate, staging folder with a model card, one commit."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..io import atomic_output_dir
from .card import build_model_card

logger = logging.getLogger(__name__)

REPORT_NAME = "tbar_report.json"
PLOT_NAME = "tbar_scale_sweep.png"
CARD_NAME = "README.md"

#: Files of a sanitized folder that are pushed (top level only). Anything else (stray logs, pickled ``.bin``
#: weights, an old README, dotfiles) stays local; the card is always regenerated from the report.
PUSHED_FILE_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    REPORT_NAME,
    PLOT_NAME,
)
#: Staged files scanned for the token before anything is pushed (weights and images are not text).
_TEXT_SUFFIXES = (".json", ".md", ".txt", ".jinja", ".yaml", ".yml")


class SafetyGateError(RuntimeError):
    """The sanitized model fails the safety gate and ``force`` was not set.

    Attributes:
        failures: One human-readable message per failed check.
    """

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        lines = "\n".join(f"  - {message}" for message in self.failures)
        super().__init__(
            "refusing to push: the sanitized model fails the safety gate:\n"
            f"{lines}\n"
            "Pass force=True (--force) to push anyway; the model card will then open with a warning."
        )


class HubPushError(RuntimeError):
    """Talking to the Hub failed (network error, refused request or commit). The local folder is untouched.

    Attributes:
        repo_id: The repository that was pushed to.
        step: What was being done: ``"authenticate"``, ``"create_repo"``, ``"create_branch"`` or ``"commit"``.
    """

    def __init__(self, message: str, repo_id: str, step: str) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.step = step


@dataclass
class PushConfig:
    """Where and how to publish a sanitized model, and the safety gate it must pass first."""

    repo_id: str = field(
        metadata={"help": "Hub repository to push to, `namespace/name` (created if missing)."}
    )
    private: bool = field(
        default=False, metadata={"help": "Create the repository as private (new repos only)."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Branch to commit to (created if missing); default: the main branch."}
    )
    create_pr: bool = field(
        default=False, metadata={"help": "Open a pull request instead of committing directly."}
    )
    commit_message: str | None = field(
        default=None, metadata={"help": "Commit title; default: one summarising ASR and CA retention."}
    )
    token: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "Hub token with write access; default: $HF_TOKEN or the token saved by `hf auth login`."
        },
    )
    max_asr: float = field(
        default=0.10,
        metadata={"help": "Safety gate: largest attack success rate after removal, a fraction in [0, 1]."},
    )
    min_ca_retention: float = field(
        default=0.90,
        metadata={
            "help": "Safety gate: smallest clean accuracy after / before removal, a fraction in [0, 1]."
        },
    )
    force: bool = field(
        default=False, metadata={"help": "Push even if the safety gate fails; the model card then says so."}
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Build the folder that would be pushed, without any network access."}
    )
    endpoint: str | None = field(
        default=None, metadata={"help": "Hub endpoint URL; default: $HF_ENDPOINT or https://huggingface.co."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.repo_id, str) or not self.repo_id:
            raise ValueError(
                f"PushConfig.repo_id must be a non-empty `namespace/name` string, got {self.repo_id!r}"
            )
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as error:
            raise ValueError(
                f"PushConfig.repo_id {self.repo_id!r} is not a valid Hub repo id: {error}"
            ) from None
        for name in ("private", "create_pr", "force", "dry_run"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"PushConfig.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("max_asr", "min_ca_retention"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"PushConfig.{name} must be a fraction in [0, 1], got {value!r}")
        for name in ("revision", "commit_message"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"PushConfig.{name} must be None or a non-empty string, got {value!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            # The value itself is never echoed: it may be a secret.
            raise ValueError("PushConfig.token must be None or a non-empty string")
        if self.endpoint is not None:
            if not isinstance(self.endpoint, str) or not self.endpoint.startswith(("http://", "https://")):
                raise ValueError(f"PushConfig.endpoint must be an http(s) URL, got {self.endpoint!r}")
            self.endpoint = self.endpoint.rstrip("/")


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


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def check_safety_gate(
    report: dict[str, Any], max_asr: float = 0.10, min_ca_retention: float = 0.90
) -> list[str]:
    """Check a sanitized model's report against the push thresholds.

    Args:
        report: The parsed ``tbar_report.json``; uses ``after.attack_success_rate`` and the ``clean_accuracy``
            of ``before`` and ``after`` (fractions in ``[0, 1]``).
        max_asr: Largest acceptable attack success rate after removal.
        min_ca_retention: Smallest acceptable clean accuracy after removal divided by clean accuracy before.

    Returns:
        One message per failed check, saying what failed and by how much (empty when the gate passes).
        A metric missing from the report is a failure: an unverified model is not published silently.
    """
    for name, value in (("max_asr", max_asr), ("min_ca_retention", min_ca_retention)):
        if _fraction(value) is None or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    before, after = report.get("before") or {}, report.get("after") or {}
    failures = []

    asr = _fraction(after.get("attack_success_rate"))
    if asr is None:
        failures.append(
            "the report has no attack success rate after removal (after.attack_success_rate): "
            "the removal of the backdoor cannot be checked"
        )
    elif asr > max_asr:
        failures.append(
            f"ASR after removal {asr:.1%} exceeds the maximum {max_asr:.1%} by {100 * (asr - max_asr):.1f} points"
        )

    ca_before, ca_after = _fraction(before.get("clean_accuracy")), _fraction(after.get("clean_accuracy"))
    if ca_before is None or ca_after is None:
        failures.append(
            "the report lacks the clean accuracy before or after removal (before/after.clean_accuracy): "
            "CA retention cannot be checked"
        )
    elif ca_before <= 0.0:
        failures.append(
            f"the backdoored model's clean accuracy is {ca_before:.1%}: CA retention is undefined"
        )
    else:
        retention = ca_after / ca_before
        if retention < min_ca_retention:
            failures.append(
                f"CA retention {retention:.1%} (clean accuracy {ca_after:.1%} after removal, {ca_before:.1%} before) "
                f"is below the minimum {min_ca_retention:.1%} by {100 * (min_ca_retention - retention):.1f} points"
            )
    return failures


def load_report(sanitized_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``tbar_report.json`` from a sanitized folder.

    Raises:
        FileNotFoundError: the folder or its report is missing.
        ValueError: the report is not a JSON object.
    """
    folder = Path(sanitized_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"sanitized folder {folder} does not exist or is not a folder")
    path = folder / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {REPORT_NAME}: is it a folder written by hf_tbar?")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(report).__name__}")
    return report


def _pushed_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    kept = [p for p in files if any(fnmatch.fnmatch(p.name, pattern) for pattern in PUSHED_FILE_PATTERNS)]
    skipped = sorted(p.name for p in files if p not in kept)
    if skipped:
        logger.info("not pushing files outside the checkpoint: %s", ", ".join(skipped))
    return kept


def _check_checkpoint(folder: Path, files: list[Path]) -> None:
    names = {p.name for p in files}
    if "config.json" not in names:
        raise ValueError(f"{folder} is not a model checkpoint: it has no config.json")
    if not any(name.endswith(".safetensors") for name in names):
        raise ValueError(f"{folder} has no safetensors weights (pickle .bin checkpoints are never pushed)")


def _assert_token_absent(folder: Path, token: str | None) -> None:
    if not token:
        return
    needle = token.encode()
    for path in folder.iterdir():
        if path.suffix in _TEXT_SUFFIXES and needle in path.read_bytes():
            raise ValueError(f"refusing to push: {path.name} contains the Hub token")


def prepare_push_folder(
    sanitized_dir: str | os.PathLike, staging_dir: str | os.PathLike, config: PushConfig
) -> list[str]:
    """Write, atomically, exactly the folder that would be pushed: the checkpoint files and a fresh model card.

    The safety gate is evaluated here only to word the card: a model that fails it gets the "forced" warning
    when ``config.force`` is set. Refusing the push is :func:`push_sanitized_model`'s job.

    Args:
        sanitized_dir: A folder written by hf_tbar: a CLIP checkpoint (safetensors) plus ``tbar_report.json``
            and optionally ``tbar_scale_sweep.png``. Only read.
        staging_dir: The folder to write; must not exist yet (or be empty) and must not overlap ``sanitized_dir``.
        config: The push settings (repo id for the card, gate thresholds, ``force``).

    Returns:
        The sorted file names written to ``staging_dir``.

    Raises:
        FileNotFoundError: ``sanitized_dir`` or its report is missing.
        FileExistsError: ``staging_dir`` exists and is not empty.
        ValueError: ``sanitized_dir`` is not a safetensors checkpoint, or the folders overlap.
    """
    source = Path(sanitized_dir).expanduser().resolve()
    target = Path(staging_dir).expanduser().resolve()
    report = load_report(source)
    if target == source or source in target.parents or target in source.parents:
        raise ValueError(f"staging folder {target} must not overlap the sanitized folder {source}")
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise FileExistsError(f"staging folder {target} already exists and is not empty")
        target.rmdir()
    files = _pushed_files(source)
    _check_checkpoint(source, files)

    failures = check_safety_gate(report, config.max_asr, config.min_ca_retention)
    forced = bool(failures) and config.force
    card = build_model_card(
        report,
        repo_id=config.repo_id,
        forced=forced,
        gate_failures=failures if forced else (),
        plot_path=PLOT_NAME if (source / PLOT_NAME).is_file() else None,
    )
    with atomic_output_dir(target, overwrite=False) as tmp:
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        card.save(tmp / CARD_NAME)
        _assert_token_absent(tmp, config.token)
        written = sorted(p.name for p in tmp.iterdir())
    logger.info("staged %d files for %s in %s", len(written), config.repo_id, target)
    return written


def _default_commit_message(report: dict[str, Any], forced: bool) -> str:
    before, after = report.get("before") or {}, report.get("after") or {}
    asr_before, asr_after = (
        _fraction(before.get("attack_success_rate")),
        _fraction(after.get("attack_success_rate")),
    )
    ca_before, ca_after = _fraction(before.get("clean_accuracy")), _fraction(after.get("clean_accuracy"))
    parts = []
    if asr_before is not None and asr_after is not None:
        parts.append(f"ASR {asr_before:.1%} -> {asr_after:.1%}")
    if ca_before and ca_after is not None:
        parts.append(f"CA retention {ca_after / ca_before:.1%}")
    message = "Upload TBAR-sanitized CLIP" + (f" ({', '.join(parts)})" if parts else "")
    return message + (" [forced past safety gate]" if forced else "")


@contextlib.contextmanager
def _hub_step(step: str, config: PushConfig, token: str | None) -> Iterator[None]:
    """Turn any failure while talking to the Hub into a :class:`HubPushError` naming the repo and the cause."""
    try:
        yield
    except Exception as error:  # every failure of this step is reported the same way
        cause = f"{type(error).__name__}: {error}"
        if token:
            cause = cause.replace(token, "***")
        endpoint = config.endpoint or "the default Hub endpoint"
        raise HubPushError(
            f"pushing to the Hub repo {config.repo_id!r} ({endpoint}) failed at step '{step}': {cause}",
            repo_id=config.repo_id,
            step=step,
        ) from error


def _resolve_token(config: PushConfig) -> str:
    token = config.token
    if token is None:
        with _hub_step("authenticate", config, None):
            token = get_token()
    if not token:
        raise HubPushError(
            f"no Hugging Face token to push to {config.repo_id!r}: set $HF_TOKEN, run `hf auth login`, "
            "or pass token=... (--token)",
            repo_id=config.repo_id,
            step="authenticate",
        )
    return token


def push_sanitized_model(
    sanitized_dir: str | os.PathLike, config: PushConfig, dry_run_dir: str | os.PathLike | None = None
) -> PushResult:
    """Check, stage and publish a sanitized CLIP folder as one commit on the Hub.

    Steps: the safety gate (unless ``config.force``); a staging folder with the checkpoint, report, plot and a
    generated ``README.md`` model card; then, unless ``config.dry_run``, ``create_repo(exist_ok=True)``, the
    branch ``config.revision`` if needed, and a single ``create_commit`` with every file (weights go through
    LFS / Xet as the Hub decides). ``sanitized_dir`` is only read, whatever happens.

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
        ValueError: ``dry_run_dir`` given without ``config.dry_run``, or a folder that is not a checkpoint.
    """
    if dry_run_dir is not None and not config.dry_run:
        raise ValueError(f"dry_run_dir={str(dry_run_dir)!r} needs config.dry_run=True")
    report = load_report(sanitized_dir)
    failures = check_safety_gate(report, config.max_asr, config.min_ca_retention)
    if failures and not config.force:
        raise SafetyGateError(failures)
    forced = bool(failures)
    if forced:
        logger.warning("pushing past the safety gate (force=True): %s", "; ".join(failures))

    if config.dry_run:
        if dry_run_dir is not None:
            files = prepare_push_folder(sanitized_dir, dry_run_dir, config)
            output_dir = Path(dry_run_dir).expanduser().resolve()
        else:
            with tempfile.TemporaryDirectory(prefix="hf_tbar_push_") as tmp:
                files = prepare_push_folder(sanitized_dir, Path(tmp) / "repo", config)
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
    commit_message = config.commit_message or _default_commit_message(report, forced)
    with tempfile.TemporaryDirectory(prefix="hf_tbar_push_") as tmp:
        staging = Path(tmp) / "repo"
        files = prepare_push_folder(sanitized_dir, staging, config)
        api = HfApi(endpoint=config.endpoint, token=token)
        with _hub_step("create_repo", config, token):
            repo_url = api.create_repo(
                config.repo_id, private=config.private, exist_ok=True, repo_type="model"
            )
        if config.revision is not None and not config.create_pr:
            with _hub_step("create_branch", config, token):
                api.create_branch(config.repo_id, branch=config.revision, repo_type="model", exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staging / name)) for name in files
        ]
        logger.info("pushing %d files to %s (%s)", len(files), config.repo_id, repo_url)
        with _hub_step("commit", config, token):
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
