"""The model a command loads, as typed arguments: :class:`ModelArguments` (TRL's ``ModelConfig`` for hf_tbar)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["ModelArguments"]


@dataclass
class ModelArguments:
    """Which image-text model a command loads (a local folder or a Hub id, at a revision) and where it runs.

    Shared by the commands that load a model (``unlearn``, ``sanitize``, ``scan``) and by
    :func:`hf_tbar.pipeline.run`; the model is always loaded through :func:`~hf_tbar.models.load_model`
    (safetensors only, no remote code).

    Raises:
        ConfigError: an empty model name, a revision without a model, or a device torch does not know.
    """

    model: str | None = field(
        default=None,
        metadata={
            "help": "Backdoored CLIP folder or Hub id. Default: the embedded backdoored tiny CLIP of --attack "
            "(built and cached on first use)."
        },
    )
    model_revision: str | None = field(
        default=None,
        metadata={"help": "Branch, tag or commit of a Hub --model to load (default: main)."},
    )
    device: str | None = field(
        default=None,
        metadata={
            "help": "Where the model runs (cpu, cuda, cuda:1, ...); default: this process's GPU under torchrun, "
            "else the first GPU, else the CPU."
        },
    )

    def __post_init__(self) -> None:
        for name in ("model", "model_revision", "device"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"--{name} must be a non-empty string, got {value!r}")
        if self.model_revision is not None and self.model is None:
            raise ConfigError("--model_revision needs --model (the Hub id it is a revision of)")
        if self.device is not None:
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(
                    f"--device must be a torch device such as cpu, cuda or cuda:1, got {self.device!r}"
                ) from None

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~hf_tbar.models.load_model` these arguments set (none by default)."""
        return {} if self.model_revision is None else {"revision": self.model_revision}
