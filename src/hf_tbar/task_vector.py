"""Task vectors: weight differences between two models, as a small value object (pure tensor maths).

``tau = theta_finetuned - theta_base`` over floating-point tensors only (integer buffers such as
``position_ids`` are skipped). Vectors add, negate, scale, project, and apply to a model:
``theta_base + scale * tau``. TBAR removes a backdoor with ``theta_b - alpha * tau_trigger``.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import InputError
from .io import atomic_output_file

_METADATA_KEY = "hf_tbar"


def _check_scalar(value: float, what: str = "scale") -> float:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    return float(value)


class TaskVector:
    """A mapping ``parameter name -> delta tensor`` with vector-space operations.

    Args:
        vector: Parameter name -> floating-point delta tensor. Tensors are checked to be finite.
        metadata: Free-form JSON-serialisable description (recipe, trigger, ...), kept through
            save/load; arithmetic results carry an empty metadata dict.

    Raises:
        ValueError: a non-float or non-finite tensor (names it).
    """

    def __init__(self, vector: Mapping[str, torch.Tensor], metadata: dict | None = None) -> None:
        for name, tensor in vector.items():
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise InputError(f"task vector entry {name!r} is not a floating-point tensor")
            if not torch.isfinite(tensor).all():
                raise InputError(f"task vector entry {name!r} contains NaN or Inf")
        self.vector: dict[str, torch.Tensor] = dict(vector)
        self.metadata: dict = dict(metadata or {})
        #: The LoRA factors the vector was fitted as (:class:`hf_tbar.reporting.negation_adapter.LowRank`), or ``None``; kept by
        #: the vector as fitted only (sums and projections are not low-rank in those factors).
        self.low_rank = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_state_dicts(
        cls,
        base: Mapping[str, torch.Tensor],
        finetuned: Mapping[str, torch.Tensor],
        metadata: dict | None = None,
    ) -> TaskVector:
        """``finetuned - base`` over the floating-point tensors both state dicts hold.

        Raises:
            ValueError: the key sets differ, or a tensor's shape or dtype differs (names the first one).
        """
        missing = sorted(set(base) ^ set(finetuned))
        if missing:
            side = "fine-tuned" if missing[0] in base else "base"
            raise InputError(
                f"tensor {missing[0]!r} is missing from the {side} model ({len(missing)} mismatching keys)"
            )
        vector = {}
        for name, b in base.items():
            f = finetuned[name]
            if b.shape != f.shape:
                raise InputError(
                    f"tensor {name!r} has shape {tuple(b.shape)} in the base and {tuple(f.shape)} in the fine-tuned model"
                )
            if b.dtype != f.dtype:
                raise InputError(
                    f"tensor {name!r} has dtype {b.dtype} in the base and {f.dtype} in the fine-tuned model"
                )
            if b.is_floating_point():
                vector[name] = (f.detach().float() - b.detach().float()).to(b.dtype).cpu()
        return cls(vector, metadata)

    @classmethod
    def from_models(cls, base: nn.Module, finetuned: nn.Module, metadata: dict | None = None) -> TaskVector:
        """``finetuned - base`` over two models of the same architecture."""
        return cls.from_state_dicts(base.state_dict(), finetuned.state_dict(), metadata)

    @classmethod
    def from_peft_model(
        cls, peft_model: nn.Module, adapter_name: str = "default", metadata: dict | None = None
    ) -> TaskVector:
        """The merged low-rank delta ``scaling * B @ A`` of every LoRA layer, keyed by the base model's
        weight names; no full copy of the model is built.

        Raises:
            ValueError: the model holds no LoRA layer for ``adapter_name``.
        """
        from peft.tuners.lora import LoraLayer

        vector = {}
        for name, module in peft_model.named_modules():
            if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
                key = name.removeprefix("base_model.model.") + ".weight"
                vector[key] = module.get_delta_weight(adapter_name).detach().float().cpu()
        if not vector:
            raise InputError(f"the model has no LoRA layer for adapter {adapter_name!r}")
        return cls(vector, metadata)

    # ----------------------------------------------------------------- algebra
    def _check_compatible(self, other: TaskVector) -> None:
        if not isinstance(other, TaskVector):
            raise TypeError(f"expected a TaskVector, got {type(other).__name__}")
        mismatch = sorted(set(self.vector) ^ set(other.vector))
        if mismatch:
            raise InputError(f"task vectors differ in their tensors, first mismatch: {mismatch[0]!r}")
        for name, tensor in self.vector.items():
            if tensor.shape != other.vector[name].shape:
                raise InputError(
                    f"tensor {name!r} has shape {tuple(tensor.shape)} and {tuple(other.vector[name].shape)} in the two vectors"
                )

    def __add__(self, other: TaskVector) -> TaskVector:
        self._check_compatible(other)
        return TaskVector({k: v + other.vector[k] for k, v in self.vector.items()})

    def __radd__(self, other) -> TaskVector:
        if isinstance(other, (int, float)) and other == 0:  # so that sum([...]) works
            return self
        return self.__add__(other)

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self + (-other)

    def __neg__(self) -> TaskVector:
        return TaskVector({k: -v for k, v in self.vector.items()}, self.metadata)

    def __mul__(self, scalar: float) -> TaskVector:
        scalar = _check_scalar(scalar, "scalar")
        return TaskVector({k: v * scalar for k, v in self.vector.items()})

    __rmul__ = __mul__

    def __len__(self) -> int:
        return len(self.vector)

    def __contains__(self, name: str) -> bool:
        return name in self.vector

    def keys(self) -> Iterable[str]:
        return self.vector.keys()

    def dot(self, other: TaskVector) -> float:
        """Inner product over all tensors."""
        self._check_compatible(other)
        return sum(float((v.double() * other.vector[k].double()).sum()) for k, v in self.vector.items())

    def norm(self) -> float:
        """Euclidean norm over all tensors."""
        return math.sqrt(sum(float(v.double().pow(2).sum()) for v in self.vector.values()))

    def cosine_similarity(self, other: TaskVector) -> float:
        """Cosine of the angle between the two flattened vectors (0 when one is zero)."""
        denom = self.norm() * other.norm()
        return self.dot(other) / denom if denom > 0 else 0.0

    def project_out(self, direction: TaskVector, per_tensor: bool = True) -> TaskVector:
        """Remove the component of ``self`` along ``direction`` (``self``'s metadata is kept).

        Args:
            direction: The vector whose direction is removed (e.g. a clean target-class vector).
            per_tensor: Project each tensor separately (``t - <t,d>/<d,d> d`` per tensor) rather
                than the whole flattened vector at once.
        """
        self._check_compatible(direction)
        if not per_tensor:
            denom = direction.dot(direction)
            coef = self.dot(direction) / denom if denom > 0 else 0.0
            return TaskVector((self - direction * coef).vector, self.metadata)
        out = {}
        for name, t in self.vector.items():
            d = direction.vector[name].to(t.dtype)
            denom = float((d.double() * d.double()).sum())
            coef = float((t.double() * d.double()).sum()) / denom if denom > 0 else 0.0
            out[name] = t - coef * d
        return TaskVector(out, self.metadata)

    # ----------------------------------------------------------------- application
    @torch.no_grad()
    def apply_to(self, model: nn.Module, scale: float = 1.0, in_place: bool = False) -> nn.Module:
        """Return ``model`` with ``theta + scale * tau`` (a copy unless ``in_place``).

        A zero scale leaves every weight bit-identical. Tensors are combined in float32 and cast
        back to each parameter's dtype.

        Raises:
            ValueError: non-finite scale, or a tensor of the vector that the model lacks or shapes differently.
        """
        scale = _check_scalar(scale)
        target = model if in_place else copy.deepcopy(model)
        if scale == 0.0:
            return target
        state = target.state_dict()
        for name, delta in self.vector.items():
            if name not in state:
                raise InputError(f"the model has no tensor {name!r} that the task vector holds")
            param = state[name]
            if param.shape != delta.shape:
                raise InputError(
                    f"tensor {name!r} has shape {tuple(param.shape)} in the model and {tuple(delta.shape)} in the vector"
                )
            param.copy_((param.float() + scale * delta.to(param.device).float()).to(param.dtype))
        return target

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save as a safetensors file; ``metadata`` goes into the file header as JSON."""
        path = Path(path)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.vector.items()}
        metadata = {"format": "pt", _METADATA_KEY: json.dumps(self.metadata, default=str)}
        with atomic_output_file(path) as tmp:  # on error or Ctrl-C: no partial file, no temporary
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TaskVector:
        """Load a vector saved by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no task vector file at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
                vector = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise InputError(f"{path} is not a readable safetensors task vector: {err}") from err
        return cls(vector, json.loads(header.get(_METADATA_KEY, "{}")))

    def __repr__(self) -> str:
        return f"TaskVector({len(self.vector)} tensors, norm={self.norm():.4g})"
