"""What a TBAR run returns: the sanitized model with its vector, scale search and before/after metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import CLIPModel

from .attacks.base import Trigger
from .detection import ScanVerdict
from .errors import HfTbarError
from .evaluation import EvalResult
from .hub.gate import gate_failures
from .metrics import ca_retention, loss_did_not_fall
from .scale_search import ScaleSelection
from .task_vector import TaskVector
from .tbar.config import TBARConfig


class NoBackdoorDetectedError(HfTbarError, ValueError):
    """No detector that counts flagged the model, so an unknown-trigger run has nothing to remove. The message
    is one line; ``details`` holds every detector's finding (the CLI prints it above the error line)."""

    exit_code = 7

    def __init__(self, verdict: ScanVerdict) -> None:
        self.detection = verdict
        self.details = verdict.summary()
        ran = ", ".join(f.detector for f in verdict.findings)
        super().__init__(
            f"no detector flagged the model ({ran}; the findings are above). Nothing to remove; pass the trigger "
            "explicitly if you know it, or force=True (--force) to unlearn the inverted trigger anyway."
        )


@dataclass
class UnlearningResult:
    """Everything a TBAR run produced: the sanitized model, the vector, the scale search and metrics.

    ``trigger`` is ``None`` when the unlearning set was made of poisoned images found as they are; ASR is
    then their held-out share classified as the target. ``data`` records the dataset, splits and sizes
    evaluated (provenance), ``losses`` the loss per step of each fine-tuning (by its label), ``finetune_steps`` its
    optimizer steps, ``finetune_clean_images`` the clean images (with their true class) the fine-tunings consumed,
    ``warnings`` what looked wrong.
    """

    model: CLIPModel
    vector: TaskVector
    selection: ScaleSelection
    before: EvalResult
    after: EvalResult
    trigger: Trigger | None
    target: int
    config: TBARConfig
    unlearning_set_size: int
    timings: dict[str, float] = field(default_factory=dict)
    detection: ScanVerdict | None = None
    data: dict = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    finetune_steps: dict[str, int] = field(default_factory=dict)
    finetune_clean_images: int = 0

    @property
    def ca_retention(self) -> float | None:
        """CA after / CA before on the verification split (:func:`hf_tbar.metrics.ca_retention`: ``None`` when
        the backdoored CA is 0)."""
        return ca_retention(self.after.clean_accuracy, self.before.clean_accuracy)


def run_warnings(result: UnlearningResult, max_scale: float) -> list[str]:
    """What looks wrong in a finished run: a fine-tuning loss that did not fall, a scale at the search's bound
    ``max_scale``, and a verified ASR or CA retention that misses the publication gate's defaults."""
    messages = [
        f"{desc}: the loss did not fall ({losses[0]:.3f} -> {losses[-1]:.3f}): raise learning_rate or steps"
        for desc, losses in result.losses.items()
        if loss_did_not_fall(losses)
    ]
    if result.selection.scale >= max_scale * (1 - 1e-6):
        messages.append(
            f"the chosen scale {result.selection.scale:.2f} is the search's bound (max_scale {max_scale}): the "
            "vector may be too weak (raise learning_rate, steps or max_scale)"
        )
    return messages + gate_failures(result.before, result.after)
