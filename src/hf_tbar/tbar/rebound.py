"""The rebound check: does a sanitized model regain its backdoor after a little fine-tuning?

A defence can leave a model that *looks* clean (low ASR) while the backdoor's features stay one short
fine-tuning away ("superficial safety"). :func:`rebound` fine-tunes two private copies of the vision tower
for a few steps:

- **clean**: on clean images with their true labels (what a downstream user would do);
- **poisoned**: on the same clean images plus ``k`` triggered copies of ``k`` of them labelled with the
  target (an attacker with a handful of poisoned samples). The poisoned share of that set is
  ``k / (n + k)`` for ``n`` clean images; batches are drawn from the mixed set at random.

and reports clean accuracy (CA) and attack success rate (ASR) before and after each. The input model is
never modified.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.images import ImageSet
from ..data.pixels import validate_labels, validate_pixels
from ..errors import ConfigError, DataError
from ..evaluation import EvalResult, evaluate_classifier
from ..models.working_copy import grad_flags_kept, working_copy
from ..training.arguments import FinetuneConfig
from ..training.backdoor import classification_loss, vision_parameters
from ..training.loop import run_training
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head

__all__ = ["ReboundConfig", "ReboundResult", "poisoned_mix", "rebound"]

logger = logging.getLogger(__name__)


@dataclass
class ReboundConfig(FinetuneConfig):
    """The few fine-tuning steps of the rebound check; the same settings for the clean and the poisoned run.

    The defaults match the scale of the defences' own fine-tuning on the embedded benchmark (TBAR: 30 steps
    of 32 at 1e-4): a short, ordinary fine-tuning, not an attack budget.
    """

    steps: int = field(
        default=20,
        metadata={"help": "Optimizer steps of each rebound fine-tuning.", "aliases": ["--rebound_steps"]},
    )
    batch_size: int = field(
        default=32,
        metadata={"help": "Images per micro-batch and process.", "aliases": ["--rebound_batch_size"]},
    )
    learning_rate: float = field(
        default=1e-4,
        metadata={
            "help": "Peak AdamW learning rate of the rebound fine-tuning.",
            "aliases": ["--rebound_lr"],
        },
    )
    poisoned_samples: int = field(
        default=10,
        metadata={
            "help": "k: triggered images (labelled with the target) added to the clean images of the "
            "poisoned rebound run."
        },
    )
    clean_images: int = field(
        default=200,
        metadata={"help": "Clean images (true labels) each rebound run fine-tunes on: a seeded subset."},
    )

    def __post_init__(self) -> None:
        for name, flag in (
            ("steps", "--rebound_steps"),
            ("poisoned_samples", "--poisoned_samples"),
            ("clean_images", "--clean_images"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} ({flag}) must be an int >= 1, got {value!r}")
        super().__post_init__()


@dataclass
class ReboundResult:
    """CA and ASR of a model as given, and after each rebound fine-tuning (shares in ``[0, 1]``).

    Attributes:
        before: The input model.
        after_clean: After ``steps`` steps on clean images with their true labels.
        after_poisoned: After ``steps`` steps on the clean images plus ``poisoned_samples`` triggered ones.
        clean_images: Clean images each run trained on.
        poisoned_samples: Triggered images added in the poisoned run (labelled with the target).
        steps: Optimizer steps of each run.
        losses: Training loss per step, ``{"clean": [...], "poisoned": [...]}``.
    """

    before: EvalResult
    after_clean: EvalResult
    after_poisoned: EvalResult
    clean_images: int
    poisoned_samples: int
    steps: int
    losses: dict[str, list[float]] = field(default_factory=dict)

    @property
    def asr_rebound(self) -> dict[str, float | None]:
        """ASR gained by each run, in shares (``after - before``; ``None`` without an ASR)."""
        base = self.before.attack_success_rate
        out: dict[str, float | None] = {}
        for name, scored in (("clean", self.after_clean), ("poisoned", self.after_poisoned)):
            asr = scored.attack_success_rate
            out[name] = None if base is None or asr is None else asr - base
        return out

    def rows(self, name: str) -> list[tuple[str, EvalResult]]:
        """``(label, metrics)`` for ``name`` as given and after each run (for a CA / ASR table)."""
        return [
            (name, self.before),
            (f"{name} + {self.steps} clean steps", self.after_clean),
            (f"{name} + {self.steps} steps with {self.poisoned_samples} poisoned", self.after_poisoned),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.to_dict(),
            "after_clean": self.after_clean.to_dict(),
            "after_poisoned": self.after_poisoned.to_dict(),
            "clean_images": self.clean_images,
            "poisoned_samples": self.poisoned_samples,
            "steps": self.steps,
            "asr_rebound": self.asr_rebound,
            "losses": {key: list(value) for key, value in self.losses.items()},
        }


def poisoned_mix(
    clean_pixels: torch.Tensor, clean_labels: torch.Tensor, trigger: Trigger, target: int, k: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean images followed by ``k`` triggered copies of ``k`` of them, labelled ``target``.

    The ``k`` images are drawn (seeded) among the non-target images, or among the target-class images for a
    clean-label trigger (``trigger.clean_label``, e.g. SIG), whose poisoned samples keep their true label.

    Returns:
        Pixels ``(n + k, 3, H, W)`` in ``[0, 1]`` and labels ``(n + k,)``.

    Raises:
        DataError: fewer than ``k`` images to stamp (names the count and the class condition).
    """
    eligible = clean_labels == target if trigger.clean_label else clean_labels != target
    pool = torch.nonzero(eligible).flatten()
    if len(pool) < k:
        kind = (
            f"of the target class {target}" if trigger.clean_label else f"outside the target class {target}"
        )
        raise DataError(
            f"poisoned_samples is {k} but the clean images hold only {len(pool)} image(s) {kind} to stamp"
        )
    chosen = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:k]]
    stamped = trigger(clean_pixels[chosen])
    labels = torch.full((k,), int(target), dtype=clean_labels.dtype)
    return torch.cat([clean_pixels, stamped]), torch.cat([clean_labels, labels])


def _finetuned(
    model: torch.nn.Module,
    head: torch.Tensor,
    processor,
    dataset: TensorDataset,
    config: ReboundConfig,
    desc: str,
) -> tuple[ZeroShotClassifier, list[float]]:
    """A copy of ``model`` (frozen tensors shared) whose vision tower was fine-tuned on ``dataset``; the losses."""
    with grad_flags_kept(model):
        copied = working_copy(model)
        params = vision_parameters(copied)
        classifier = ZeroShotClassifier.from_processor(copied, head, processor).to(head.device)
        losses = run_training(
            classifier, params, dataset, classification_loss, config.finetune_config(), desc=desc
        )
    classifier.eval()
    return classifier, losses


def rebound(
    model: torch.nn.Module,
    processor,
    task: TaskSpec,
    clean_pixels: torch.Tensor,
    clean_labels: torch.Tensor,
    trigger: Trigger,
    target: int,
    test_pixels: torch.Tensor | ImageSet,
    test_labels: torch.Tensor | None = None,
    config: ReboundConfig | None = None,
) -> ReboundResult:
    """Fine-tune copies of ``model`` briefly on clean data and on k poisoned samples; score each copy.

    Both runs start from ``model`` and share its zero-shot head (the text tower is frozen). The caller's
    random states (torch, numpy, Python) are restored afterwards; ``model`` (weights and ``requires_grad``
    flags, train/eval mode) is untouched.

    Args:
        model: A model of a registered family (``CLIPModel``, ``SiglipModel``): the sanitized (or any) model.
        processor: Its processor (tokenizer and normalisation constants).
        task: Class names and prompt templates of the zero-shot head.
        clean_pixels: Clean ``[0, 1]`` images ``(N, 3, H, W)`` at the model's resolution; a seeded subset
            of ``config.clean_images`` of them is used.
        clean_labels: Their true labels ``(N,)``.
        trigger: The attack's trigger, stamped on the poisoned samples and on the test images (ASR).
        target: The attack's target class.
        test_pixels: Held-out clean images ``(M, 3, H, W)`` with ``test_labels`` ``(M,)``, or an
            :class:`~hf_tbar.data.ImageSet` carrying its labels (streamed).
        test_labels: Labels of ``test_pixels`` when it is a tensor.
        config: Steps, batch size, learning rate, ``k`` and the number of clean images; defaults when None.

    Returns:
        CA / ASR on the test images before, after the clean run and after the poisoned run.

    Raises:
        DataError: unusable images or labels, or fewer than ``k`` images to stamp.
        ConfigError: a bad target.
    """
    config = ReboundConfig() if config is None else config
    if not isinstance(trigger, Trigger):
        raise ConfigError(f"the rebound check needs a hf_tbar Trigger, got {type(trigger).__name__}")
    target = task.check_label(target)
    validate_pixels(clean_pixels, "rebound clean images")
    validate_labels(clean_labels, task.num_classes, "rebound clean labels")
    if len(clean_pixels) != len(clean_labels) or len(clean_labels) == 0:
        raise DataError(
            f"rebound clean images: {len(clean_pixels)} images and {len(clean_labels)} labels "
            "(need as many labels as images, at least one)"
        )
    order = torch.randperm(len(clean_labels), generator=torch.Generator().manual_seed(config.seed))
    order = order[: config.clean_images]
    pixels, labels = clean_pixels[order], clean_labels[order]
    mixed = poisoned_mix(pixels, labels, trigger, target, config.poisoned_samples, config.seed)
    head = build_zero_shot_head(model, processor.tokenizer, task)

    def score(classifier: ZeroShotClassifier) -> EvalResult:
        return evaluate_classifier(classifier, test_pixels, test_labels, trigger, target)

    was_training = model.training
    with _restored_rng():
        before = score(ZeroShotClassifier.from_processor(model, head, processor).to(head.device).eval())
        model.train(was_training)  # scoring switches the wrapped model's mode
        clean, clean_losses = _finetuned(
            model, head, processor, TensorDataset(pixels, labels), config, "rebound: clean"
        )
        poisoned, poisoned_losses = _finetuned(
            model, head, processor, TensorDataset(*mixed), config, "rebound: poisoned"
        )
        result = ReboundResult(
            before=before,
            after_clean=score(clean),
            after_poisoned=score(poisoned),
            clean_images=len(labels),
            poisoned_samples=config.poisoned_samples,
            steps=config.steps,
            losses={"clean": clean_losses, "poisoned": poisoned_losses},
        )
    logger.info(
        "rebound (%d steps, %d clean images, %d poisoned): ASR %s -> %s (clean), %s (poisoned)",
        config.steps,
        len(labels),
        config.poisoned_samples,
        _share(before.attack_success_rate),
        _share(result.after_clean.attack_success_rate),
        _share(result.after_poisoned.attack_success_rate),
    )
    return result


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


@contextlib.contextmanager
def _restored_rng() -> Iterator[None]:
    """Restore torch's, numpy's and Python's random states on exit (the training loop seeds all three)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
