"""Talking to the Hub during a push: the one error every failure becomes, naming the endpoint really used."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from huggingface_hub import constants as hf_constants

from ..errors import HfTbarError
from .config import PushConfig


class HubPushError(HfTbarError, RuntimeError):
    """Talking to the Hub failed (no token, network error, refused request or commit); ``hf-tbar`` exit status 4.

    The local folder is untouched. The message is one line and never holds the token.

    Attributes:
        repo_id: The repository that was pushed to.
        step: What was being done: ``"authenticate"``, ``"create_repo"``, ``"create_branch"`` or ``"commit"``.
    """

    exit_code = 4

    def __init__(self, message: str, repo_id: str, step: str) -> None:
        super().__init__(" ".join(line.strip() for line in str(message).splitlines() if line.strip()))
        self.repo_id = repo_id
        self.step = step


def hub_endpoint(config: PushConfig) -> str:
    """The Hub endpoint a push really talks to: ``config.endpoint``, else ``$HF_ENDPOINT`` or huggingface.co."""
    return config.endpoint or hf_constants.ENDPOINT


@contextlib.contextmanager
def hub_step(step: str, config: PushConfig, token: str | None) -> Iterator[None]:
    """Turn any failure while talking to the Hub into a :class:`HubPushError` naming the repo and the cause."""
    try:
        yield
    except Exception as error:  # every failure of this step is reported the same way
        cause = f"{type(error).__name__}: {error}"
        if token:
            cause = cause.replace(token, "***")
        raise HubPushError(
            f"pushing to the Hub repo {config.repo_id!r} at {hub_endpoint(config)} failed at step '{step}': {cause}",
            repo_id=config.repo_id,
            step=step,
        ) from error
