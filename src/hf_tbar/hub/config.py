"""Where and how to publish a sanitized model, and the safety gate it must pass first: :class:`PushConfig`, the
gate's thresholds inherited from :class:`~hf_tbar.hub.gate.GateArguments` (their one home)."""

from __future__ import annotations

from dataclasses import dataclass, field

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import ConfigError
from .gate import GateArguments

__all__ = ["PushConfig"]


@dataclass(kw_only=True)
class PushConfig(GateArguments):
    """Where and how to publish a sanitized model, and the safety gate it must pass first (``max_asr``,
    ``min_ca_retention``: :class:`~hf_tbar.hub.gate.GateArguments`). Its own fields are keyword-only."""

    repo_id: str = field(
        metadata={"help": "Hub repository to push to, `namespace/name` (created if missing)."}
    )
    private: bool | None = field(
        default=None,
        metadata={
            "help": "Create a new repository as private (--private) or public (--public); if neither is given no "
            "visibility is sent and the Hub applies your or your organisation's default. Existing repos keep "
            "theirs.",
            # A bare `--private` means True although the default is None (HfArgumentParser only does this for
            # bool fields with a bool default).
            "nargs": "?",
            "const": True,
        },
    )
    revision: str | None = field(
        default=None,
        metadata={
            "help": "Branch to commit to, or with --create_pr the branch the pull request targets; a missing "
            "branch is first created from main (refs/pr/N is used as it is); if not given: main."
        },
    )
    create_pr: bool = field(
        default=False,
        metadata={"help": "Open a pull request (against --revision, default main) instead of committing."},
    )
    commit_message: str | None = field(
        default=None, metadata={"help": "Commit title; default: one summarising ASR and CA retention."}
    )
    token: str | None = field(
        default=None,
        repr=False,
        metadata={
            "help": "Hub token with write access; default: $HF_TOKEN or the token saved by `hf auth login`. "
            "Never printed; the push is refused if any staged file holds it."
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
    adapter: bool = field(
        default=False,
        metadata={
            "help": "The folder is a negation adapter (hf-tbar unlearn --adapter_dir): push it as a PEFT adapter "
            "of the backdoored model, with a card whose library_name is peft."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.repo_id, str) or not self.repo_id:
            raise ConfigError(
                f"PushConfig.repo_id must be a non-empty `namespace/name` string, got {self.repo_id!r}"
            )
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as error:
            raise ConfigError(
                f"PushConfig.repo_id {self.repo_id!r} is not a valid Hub repo id: {error}"
            ) from None
        if self.private is not None and not isinstance(self.private, bool):
            raise ConfigError(f"PushConfig.private must be None or a bool, got {self.private!r}")
        for name in ("create_pr", "force", "dry_run"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"PushConfig.{name} must be a bool, got {getattr(self, name)!r}")
        super().__post_init__()  # the gate's thresholds: fractions in [0, 1]
        for name in ("revision", "commit_message"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"PushConfig.{name} must be None or a non-empty string, got {value!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            # The value itself is never echoed: it may be a secret.
            raise ConfigError("PushConfig.token must be None or a non-empty string")
        if self.endpoint is not None:
            if not isinstance(self.endpoint, str) or not self.endpoint.startswith(("http://", "https://")):
                raise ConfigError(f"PushConfig.endpoint must be an http(s) URL, got {self.endpoint!r}")
            self.endpoint = self.endpoint.rstrip("/")
