"""The negated trigger vector as a PEFT LoRA adapter: reversible sanitization, about 1% of the model's bytes.

In ``mode="lora"`` the trigger vector is ``tau = scaling * B @ A`` per adapted layer. Negating and scaling it
goes into **one** factor only: ``B' = -alpha * B`` (scaling both factors by ``-alpha`` would give
``alpha**2 * B @ A``, an addition: the pitfall of negative weights in PEFT's ``add_weighted_adapter``). The
adapter then loads on the *backdoored* model with ``PeftModel.from_pretrained`` to give
``theta_b - alpha * tau``, and ``unload()`` gives the backdoored weights back bit for bit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from ..errors import ConfigError
from ..io import atomic_output_dir
from ..models.working_copy import working_copy

logger = logging.getLogger(__name__)

__all__ = [
    "AdapterInfo",
    "LowRank",
    "load_negation_adapter",
    "low_rank_of",
    "save_negation_adapter",
    "write_negation_adapter",
]

_PREFIX = "base_model.model."
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class LowRank:
    """The LoRA factors a trigger vector was fitted as.

    Attributes:
        config: The ``LoraConfig`` keyword arguments of the fit (``r``, ``lora_alpha``, ``lora_dropout``,
            ``target_modules`` as the regex that chose the layers).
        factors: Module name -> ``(A, B)``: ``A`` of shape ``(r, in_features)``, ``B`` of ``(out_features, r)``.
    """

    config: dict
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class AdapterInfo:
    """What :func:`save_negation_adapter` wrote: where, and its size against the full model's (bytes)."""

    path: Path
    adapter_bytes: int
    model_bytes: int

    @property
    def ratio(self) -> float:
        """Adapter bytes / full model bytes."""
        return self.adapter_bytes / self.model_bytes


def low_rank_of(peft_model: torch.nn.Module, config: LoraConfig, adapter_name: str = "default") -> LowRank:
    """The trained ``(A, B)`` of every LoRA layer of ``peft_model`` (detached float32 copies on CPU)."""
    factors = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            a = module.lora_A[adapter_name].weight.detach().float().cpu().clone()
            b = module.lora_B[adapter_name].weight.detach().float().cpu().clone()
            factors[name.removeprefix(_PREFIX)] = (a, b)
    kwargs = {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": config.target_modules,
    }
    return LowRank(config=kwargs, factors=factors)


def save_negation_adapter(
    model: PreTrainedModel,
    low_rank: LowRank,
    scale: float,
    output_dir: str | os.PathLike,
    base_model_id: str | None = None,
    overwrite: bool = False,
) -> AdapterInfo:
    """Write ``-scale * tau`` as a PEFT LoRA adapter folder for the backdoored ``model``, atomically (see
    :func:`write_negation_adapter`; nothing is left at ``output_dir`` on failure).

    Raises:
        OutputExistsError: ``output_dir`` holds files and ``overwrite`` is False.
    """
    with atomic_output_dir(output_dir, overwrite=overwrite) as tmp:
        info = write_negation_adapter(model, low_rank, scale, tmp, base_model_id)
    return AdapterInfo(Path(output_dir), info.adapter_bytes, info.model_bytes)


def write_negation_adapter(
    model: PreTrainedModel,
    low_rank: LowRank,
    scale: float,
    folder: Path,
    base_model_id: str | None = None,
) -> AdapterInfo:
    """Write ``-scale * tau`` as a PEFT LoRA adapter (``adapter_config.json``, ``adapter_model.safetensors``)
    into the existing ``folder``.

    Args:
        model: The backdoored model the adapter is for (only read; its tensors are shared, not copied).
        low_rank: The trigger vector's factors (:attr:`~hf_tbar.TaskVector.low_rank`).
        scale: The negation scale alpha (dimensionless, >= 0).
        folder: The folder to write into.
        base_model_id: The backdoored model's Hub id, written as ``base_model_name_or_path``; ``None`` for a
            model that is not on the Hub (a local path is never written).

    Raises:
        ConfigError: ``scale`` is negative or not finite, or ``low_rank`` has no factor.
    """
    if not (isinstance(scale, (int, float)) and torch.isfinite(torch.tensor(float(scale))) and scale >= 0):
        raise ConfigError(f"the negation scale must be a finite number >= 0, got {scale!r}")
    if not low_rank.factors:
        raise ConfigError("the trigger vector has no LoRA factor to write as an adapter")
    work = working_copy(model, share_vision=True)
    work.name_or_path = work.config._name_or_path = base_model_id or ""  # never a local path
    config = LoraConfig(**low_rank.config)
    peft_model = get_peft_model(work, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_model_id
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                key = name.removeprefix(_PREFIX)
                if key not in low_rank.factors:
                    raise ConfigError(f"the adapter layer {key!r} has no fitted factor (another model?)")
                a, b = low_rank.factors[key]
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(-float(scale) * b)  # sign and scale: one factor only
    folder = Path(folder)
    peft_model.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's template card; hf_tbar writes its own
    adapter_bytes = (folder / ADAPTER_WEIGHTS).stat().st_size
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    logger.info(
        "negation adapter: %d bytes, %.2f%% of the model's", adapter_bytes, 100 * adapter_bytes / model_bytes
    )
    return AdapterInfo(folder, adapter_bytes, model_bytes)


def load_negation_adapter(model: PreTrainedModel, adapter_dir: str | os.PathLike) -> PeftModel:
    """The backdoored ``model`` with the negation adapter applied (``.unload()`` gives ``model`` back).

    Raises:
        ConfigError: the adapter's layers or shapes do not fit ``model`` (another architecture).
    """
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as error:
        raise ConfigError(
            f"adapter {adapter_dir} does not fit this {type(model).__name__}: {error}"
        ) from error
