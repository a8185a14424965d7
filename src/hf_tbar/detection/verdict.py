"""One verdict from several detectors: what each measured, against which threshold, where the threshold came
from, which class it points to, on how many images, in how long; and the combined answer.

:class:`Finding` is one detector's outcome, :class:`ScanVerdict` the set of them. The verdict is "backdoored"
when a detector whose threshold *counts* flags the model: a self-relative threshold (the MAD anomaly index over
the model's own classes) always counts; an absolute one (DECREE's PL1) counts only when the user set it (a
threshold does not carry from one model to another). The inverted trigger used for removal is the winning
finding's: the counted flag whose trigger sends the most clean images to its class, then the one furthest
past its threshold (as a ratio).
Both round-trip through JSON (``to_dict`` / ``from_dict``), the triggers by reference (``trigger_file``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..attacks.base import Trigger

__all__ = ["Finding", "ScanVerdict"]

Direction = Literal["above", "below"]


@dataclass
class Finding:
    """One detector's outcome.

    Attributes:
        detector: Its registered name (``"class-patch"``, ``"class-perturbation"``, ``"decree"``).
        statistic: What was measured, in words (e.g. ``"MAD anomaly index of the smallest patch"``).
        value: The statistic's value (``None`` when it could not be computed, see ``note``).
        threshold: The threshold it is compared with.
        direction: ``"above"`` (flag when value > threshold) or ``"below"`` (flag when value < threshold).
        threshold_source: Where the threshold came from, in words.
        calibrated: Whether a benchmark in the repository measured this detector's false-positive and detection
            rates on this kind of model (see :mod:`hf_tbar.detection.calibration`).
        counts: Whether this finding counts toward the verdict (self-relative, calibrated or user-set).
        flagged: The threshold comparison.
        target: The class it points to (``None`` when it points nowhere).
        target_name: That class's name.
        num_images: Clean images it used.
        seconds: Its wall time.
        note: Anything the reader must know (e.g. why no statistic could be computed).
        per_class: Per-class sizes, for the class-conditional detectors.
        trigger_success: Share of the detection images outside ``target``'s class that the inverted trigger
            sends to ``target`` (measured by :func:`~hf_tbar.detection.detect`; ``None`` without a trigger).
        trigger_file: The file its inverted trigger was saved to, when saved.
        trigger: The inverted trigger (not serialised; see ``trigger_file``).
    """

    detector: str
    statistic: str
    value: float | None
    threshold: float
    direction: Direction
    threshold_source: str
    calibrated: bool
    counts: bool
    flagged: bool
    target: int | None = None
    target_name: str | None = None
    num_images: int = 0
    seconds: float = 0.0
    note: str | None = None
    per_class: dict[str, float] | None = None
    trigger_success: float | None = None
    trigger_file: str | None = None
    trigger: Trigger | None = field(default=None, repr=False, compare=False)

    @property
    def margin(self) -> float:
        """How far past the threshold the value lies, as a ratio (> 1 when flagged); 0 without a value."""
        if self.value is None or not math.isfinite(self.threshold) or self.threshold <= 0:
            return 0.0
        if self.direction == "above":
            return self.value / self.threshold
        return self.threshold / self.value if self.value > 0 else math.inf

    def summary(self) -> str:
        """One line: ``detector: statistic value vs threshold -> flagged (threshold source) -> class``."""
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        comparison = ">" if self.direction == "above" else "<"
        outcome = "flagged" if self.flagged else "not flagged"
        if not self.counts:
            outcome += ", indicative only"
        target = (
            ""
            if self.target is None
            else f"; points to class {self.target}" + (f" ({self.target_name!r})" if self.target_name else "")
        )
        if self.trigger_success is not None:
            target += f", its trigger sends {100 * self.trigger_success:.0f}% there"
        note = f" [{self.note}]" if self.note else ""
        return (
            f"{self.detector}: {self.statistic} {value} (flag if {comparison} {self.threshold:g}; "
            f"{self.threshold_source}) -> {outcome}{target}; {self.num_images} images, {self.seconds:.0f} s{note}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trigger"}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Finding:
        names = {f.name for f in dataclasses.fields(cls)} - {"trigger"}
        unknown = sorted(set(payload) - names)
        if unknown:
            raise ValueError(f"a detector finding has unknown key(s) {unknown}")
        return cls(**payload)


@dataclass
class ScanVerdict:
    """The combined verdict of the detectors that ran.

    Attributes:
        findings: One per detector, in the order they ran.
        num_classes: Classes of the task the class-conditional detectors judged.
        warnings: What makes this verdict less reliable than its calibration (e.g. fewer images than the
            detectors were measured with), one sentence each.
    """

    findings: list[Finding]
    num_classes: int
    warnings: list[str] = field(default_factory=list)

    @property
    def counted(self) -> list[Finding]:
        return [f for f in self.findings if f.counts]

    @property
    def is_backdoored(self) -> bool:
        """Whether a finding that counts flags the model."""
        return any(f.flagged for f in self.counted)

    @property
    def winner(self) -> Finding | None:
        """The counted flag whose inverted trigger works best (its trigger and class are used for removal).

        Among the counted flags, the one whose trigger sends the largest share of clean images to its class
        (``trigger_success``), then the one furthest past its threshold: TBAR fine-tunes on the inverted
        trigger, and a trigger at the edge of working (a minimal perturbation that sends 10% of held-out
        images) yields a trigger vector that removes little. Without a counted flag, the finding (of any kind)
        chosen the same way, or ``None`` when none points to a class.
        """
        flagged = [f for f in self.counted if f.flagged and f.target is not None]
        pool = flagged or [f for f in self.findings if f.target is not None and f.trigger is not None]
        return max(
            pool,
            key=lambda f: (-1.0 if f.trigger_success is None else f.trigger_success, f.margin),
            default=None,
        )

    @property
    def target(self) -> int | None:
        winner = self.winner
        return None if winner is None else winner.target

    @property
    def trigger(self) -> Trigger | None:
        winner = self.winner
        return None if winner is None else winner.trigger

    @property
    def verdict(self) -> str:
        """``"backdoored"`` or ``"not flagged"``."""
        return "backdoored" if self.is_backdoored else "not flagged"

    def summary(self) -> str:
        """A multi-line text: the verdict, then one line per detector."""
        winner = self.winner
        head = f"verdict: {self.verdict}"
        if self.is_backdoored and winner is not None:
            head += f" (by {winner.detector}; target class {winner.target}"
            head += f" {winner.target_name!r})" if winner.target_name else ")"
        if not self.counted:
            head += (
                " - no detector that counts ran (DECREE's absolute threshold counts only when you set it: "
                "--detection_threshold)"
            )
        return "\n".join(
            [head, *(f"  {f.summary()}" for f in self.findings), *(f"  warning: {w}" for w in self.warnings)]
        )

    def to_dict(self) -> dict[str, Any]:
        winner = self.winner
        return {
            "verdict": self.verdict,
            "backdoored": self.is_backdoored,
            "winner": None if winner is None else winner.detector,
            "target": self.target,
            "num_classes": self.num_classes,
            "findings": [f.to_dict() for f in self.findings],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ScanVerdict:
        """Read :meth:`to_dict`'s output back (the derived keys are recomputed, never trusted)."""
        return cls(
            findings=[Finding.from_dict(f) for f in payload["findings"]],
            num_classes=int(payload["num_classes"]),
            warnings=list(payload.get("warnings", [])),
        )
