"""DECREE's settings (:class:`DecreeConfig`), its outcome (:class:`DecreeResult`) and the calibration its
verdict rests on.

The default thresholds (cosine 0.6, PL1 0.01) were fitted on hf_tbar's embedded tiny CLIP only. A verdict is
``"embedded-tiny-clip"`` when those defaults meet that model, ``"paper"`` with :meth:`DecreeConfig.paper`,
``"user"`` when the caller set a threshold, and ``"uncalibrated"`` (only indicative) otherwise.

The embedded tiny CLIP is recognised by the recipe file hf_tbar writes into every model it trains (world
``digits@32``, :func:`~hf_tbar.detection.calibration.model_world`), never by its architecture alone: a model of
the same shape trained on other data is another kind of model, on which the thresholds were never measured.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ConfigError
from .calibration import model_world
from .inverted import InvertedTrigger

#: Calibrations a verdict can rest on (:attr:`DecreeResult.calibration`).
EMBEDDED_CALIBRATION = "embedded-tiny-clip"
USER_CALIBRATION = "user"
PAPER_CALIBRATION = "paper"
UNCALIBRATED = "uncalibrated"
CALIBRATIONS = (EMBEDDED_CALIBRATION, USER_CALIBRATION, PAPER_CALIBRATION, UNCALIBRATED)

#: The kind of model the default thresholds were fitted on (:attr:`hf_tbar.training.PretrainConfig.world`).
EMBEDDED_WORLD = "digits@32"
#: Default thresholds, fitted on the embedded tiny CLIP (see :class:`DecreeConfig`).
DEFAULT_COSINE_THRESHOLD = 0.6
DEFAULT_DETECTION_THRESHOLD = 0.01

#: What an uncalibrated verdict means, in words (printed by ``hf-tbar scan`` and written in its report).
UNCALIBRATED_NOTE = (
    f"the DECREE thresholds (cosine {DEFAULT_COSINE_THRESHOLD}, PL1 {DEFAULT_DETECTION_THRESHOLD}) were "
    "calibrated on hf_tbar's embedded tiny CLIP only, not on this model: the verdict is indicative. Set "
    "--cosine_threshold and --detection_threshold from a model of this kind known to be clean, or use the "
    "paper's 0.99 / 0.1 for foundation-size encoders"
)


class _PresetThreshold(float):
    """A threshold a preset filled in (``source`` names it): the mark travels with the value, through
    ``dataclasses.replace`` and copies; a plain float is one the caller set."""

    source = USER_CALIBRATION


class _DefaultThreshold(_PresetThreshold):
    source = EMBEDDED_CALIBRATION


class _PaperThreshold(_PresetThreshold):
    source = PAPER_CALIBRATION


def _positive_int(value: Any, what: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")


def _positive_float(value: Any, what: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")


@dataclass
class DecreeConfig:
    """Settings of DECREE's trigger inversion and of the detection rule (paper defaults unless noted).

    The two thresholds default to values calibrated on the embedded 0.8M-parameter CLIP (32 px digits): there
    even the true BadNets trigger only brings the embeddings to a mean cosine of ~0.75, so the paper's 0.99
    is reached by none of the real triggers and every encoder - clean or not - collapses under a small
    universal adversarial mask (PL1 0.05-0.09). At 0.6 the clean encoder needs PL1 ~0.016 and the backdoored
    ones 0.004-0.008. For foundation-size encoders use :meth:`paper`. Thresholds left at ``None`` resolve to
    0.6 / 0.01; :attr:`threshold_source` tells those defaults, :meth:`paper`'s and the caller's values apart.
    """

    steps: int = field(default=1000, metadata={"help": "Maximum optimisation steps (one batch per step)."})
    batch_size: int = field(
        default=64, metadata={"help": "Clean images per step (>= 2: the loss is pairwise)."}
    )
    learning_rate: float = field(
        default=0.1, metadata={"help": "Adam learning rate on the mask/pattern logits."}
    )
    init_lambda: float = field(default=1e-3, metadata={"help": "Initial weight of the mask L1 penalty."})
    lambda_multiplier: float = field(
        default=5.0, metadata={"help": "Factor lambda is multiplied/divided by."}
    )
    lambda_patience: int = field(
        default=5,
        metadata={"help": "Consecutive steps above/below the cosine threshold before lambda changes."},
    )
    min_lambda: float = field(default=1e-7, metadata={"help": "Lambda is not divided below this value."})
    max_lambda: float = field(default=1e5, metadata={"help": "Lambda is not multiplied above this value."})
    cosine_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Mean pairwise cosine similarity a trigger must reach to count as found. Unset: 0.6, "
            "calibrated on hf_tbar's embedded tiny CLIP only; the paper uses 0.99 for foundation-size "
            "encoders."
        },
    )
    early_stop_patience: int = field(
        default=50,
        metadata={
            "help": "Stop once this many successful steps since the last improvement found no smaller mask."
        },
    )
    detection_threshold: float | None = field(
        default=None,
        metadata={
            "help": "PL1 below this flags the encoder as backdoored. Unset: 0.01, calibrated on hf_tbar's "
            "embedded tiny CLIP only (with cosine 0.6); the paper uses 0.1 (with 0.99)."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the mask/pattern initialisation and batch order."}
    )
    eps: float = field(
        default=1e-7, metadata={"help": "Keeps tanh(.) / (2 - eps) + 0.5 strictly inside (0, 1)."}
    )

    def __post_init__(self) -> None:
        if self.cosine_threshold is None:
            self.cosine_threshold = _DefaultThreshold(DEFAULT_COSINE_THRESHOLD)
        if self.detection_threshold is None:
            self.detection_threshold = _DefaultThreshold(DEFAULT_DETECTION_THRESHOLD)
        _positive_int(self.steps, "steps")
        _positive_int(self.batch_size, "batch_size", minimum=2)
        _positive_int(self.lambda_patience, "lambda_patience")
        _positive_int(self.early_stop_patience, "early_stop_patience")
        _positive_int(self.seed, "seed", minimum=0)
        for name in ("learning_rate", "init_lambda", "min_lambda", "max_lambda"):
            _positive_float(getattr(self, name), name)
        _positive_float(self.lambda_multiplier, "lambda_multiplier")
        if self.lambda_multiplier <= 1:
            raise ConfigError(f"lambda_multiplier must be > 1, got {self.lambda_multiplier}")
        if not self.min_lambda <= self.init_lambda <= self.max_lambda:
            raise ConfigError(
                f"init_lambda {self.init_lambda} must lie in [min_lambda, max_lambda] = [{self.min_lambda}, {self.max_lambda}]"
            )
        if not (-1.0 < self.cosine_threshold <= 1.0):
            raise ConfigError(f"cosine_threshold must be in (-1, 1], got {self.cosine_threshold}")
        if not (0.0 < self.detection_threshold <= 1.0):
            raise ConfigError(f"detection_threshold must be in (0, 1], got {self.detection_threshold}")
        if not (0.0 < self.eps < 1.0):
            raise ConfigError(f"eps must be in (0, 1), got {self.eps}")

    @classmethod
    def paper(cls, **overrides: Any) -> DecreeConfig:
        """The paper's calibration for foundation-size CLIP encoders: cosine threshold 0.99, PL1 threshold 0.1."""
        presets = {"cosine_threshold": _PaperThreshold(0.99), "detection_threshold": _PaperThreshold(0.1)}
        return cls(**{**presets, **overrides})

    @property
    def threshold_source(self) -> str:
        """Where both thresholds come from: ``"embedded-tiny-clip"`` (the defaults), ``"paper"``
        (:meth:`paper`), or ``"user"`` as soon as the caller set either of them."""
        sources = {
            getattr(value, "source", USER_CALIBRATION)
            for value in (self.cosine_threshold, self.detection_threshold)
        }
        return sources.pop() if len(sources) == 1 else USER_CALIBRATION

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON/YAML-safe values (the resolved thresholds as plain floats)."""
        return {
            key: float(value) if isinstance(value, _PresetThreshold) else value
            for key, value in dataclasses.asdict(self).items()
        }


def calibration_for(model: nn.Module, config: DecreeConfig) -> str:
    """The calibration that a verdict of ``config``'s thresholds on ``model`` rests on (:data:`CALIBRATIONS`).

    ``"user"`` or ``"paper"`` when the thresholds come from the caller or :meth:`DecreeConfig.paper`; with the
    default thresholds, ``"embedded-tiny-clip"`` on a model of the embedded digits world (its recipe file says
    so: :func:`~hf_tbar.detection.calibration.model_world`) and ``"uncalibrated"`` on any other model, whatever
    its architecture.
    """
    source = config.threshold_source
    if source != EMBEDDED_CALIBRATION:
        return source
    return EMBEDDED_CALIBRATION if model_world(model) == EMBEDDED_WORLD else UNCALIBRATED


@dataclass
class DecreeResult:
    """Outcome of :func:`~hf_tbar.detection.invert_trigger`.

    Attributes:
        trigger: The inverted trigger: the smallest successful one, or the last one if none succeeded.
        mask_l1: ``|m|_1`` over the mask's three colour channels, ``3 * sum(m)``.
        pl1: ``mask_l1 / (H W 3)``, in ``[0, 1]``.
        similarity: Mean pairwise cosine similarity of the stamped batch for that trigger.
        found: Whether any step reached ``cosine_threshold``.
        is_backdoored: The threshold comparison, ``found and pl1 < threshold`` (see :attr:`verdict`).
        threshold: The PL1 detection threshold used.
        steps: Optimisation steps run (early stopping may end before ``config.steps``).
        best_step: Step (0-based) at which ``trigger`` was recorded.
        final_lambda: Lambda when the run ended.
        calibration: What the thresholds were calibrated on, one of :data:`CALIBRATIONS`.
    """

    trigger: InvertedTrigger
    mask_l1: float
    pl1: float
    similarity: float
    found: bool
    is_backdoored: bool
    threshold: float
    steps: int
    best_step: int
    final_lambda: float
    calibration: str = UNCALIBRATED

    @property
    def verdict(self) -> str:
        """``"backdoored"`` / ``"not flagged"``, followed by ``" (uncalibrated)"`` when the default thresholds
        were applied to a model they were not calibrated on."""
        verdict = "backdoored" if self.is_backdoored else "not flagged"
        return f"{verdict} ({UNCALIBRATED})" if self.calibration == UNCALIBRATED else verdict

    @property
    def calibration_note(self) -> str | None:
        """:data:`UNCALIBRATED_NOTE` for an uncalibrated verdict, else ``None``."""
        return UNCALIBRATED_NOTE if self.calibration == UNCALIBRATED else None

    def to_dict(self, include_trigger: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary with ``verdict`` and ``calibration_note``; ``include_trigger`` adds the
        full trigger (mask and pattern lists)."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trigger"
        }
        out["verdict"] = self.verdict
        out["calibration_note"] = self.calibration_note
        out["trigger"] = self.trigger.to_dict() if include_trigger else self.trigger.describe()
        return out
