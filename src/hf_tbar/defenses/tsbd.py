"""TSBD (Lin et al., NeurIPS 2024): Two-Stage Backdoor Defense from clean data only.

Stage 1, *NWC-based backdoor reinitialisation*: unlearn a copy of the model on clean data by gradient
ascent until its clean accuracy collapses to about chance; the neurons whose weights moved most
(neuron weight change, NWC) are the backdoor-related ones (the seed's observation 1: clean- and
poison-unlearning weight changes correlate). In the *original* model, zero the ``weight_ratio`` share
of the weights that changed most inside the top ``neuron_ratio`` neurons.

Stage 2, *activeness-aware fine-tuning*: fine-tune on the clean data with the two-point gradient
``(1 - a) grad L(theta) + a grad L(theta + r g/||g||)``, a gradient-norm penalty that keeps the
(more active) backdoor neurons from being revived (observation 2).

For a ViT a neuron is an output row of a linear layer (attention projections, MLP layers and the
visual projection by default). As in the authors' code, neurons of all chosen layers are ranked
together and the weights to reset are chosen from the pooled changes of the selected neurons.

Stage 1 uses SGD with momentum (as the authors do), not the library's AdamW: Adam normalises each
weight's step, so after a few ascent steps every weight has moved by about ``lr`` and the NWC measures
a neuron's fan-in rather than how strongly the unlearning pulls on it. On the embedded BadNets model
the AdamW ranking left 53% ASR where the SGD ranking removes the backdoor (same ratios).
"""

from __future__ import annotations

import copy
import logging
import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import TensorDataset
from transformers import CLIPModel

from ..training.backdoor import classification_loss, vision_parameters
from ..training.loop import FinetuneConfig, run_training
from .base import DefenseConfig, DefenseData, DefenseResult, register_defense, zero_shot_classifier
from .gradient_norm import activeness_aware_loss
from .reinit import reinit_masks, zero_weights

logger = logging.getLogger(__name__)

DEFAULT_LAYERS = r"vision_model\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)|visual_projection"


@dataclass
class TSBDConfig(FinetuneConfig, DefenseConfig):
    """TSBD's two stages. The :class:`~hf_tbar.training.FinetuneConfig` fields drive stage 2."""

    steps: int = field(default=60, metadata={"help": "Stage 2: activeness-aware fine-tuning steps."})
    batch_size: int = field(default=32, metadata={"help": "Images per micro-batch (both stages)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Stage 2: peak AdamW learning rate."})
    unlearn_steps: int = field(
        default=200, metadata={"help": "Stage 1: most gradient-ascent steps (stops once accuracy collapses)."}
    )
    unlearn_learning_rate: float = field(default=1e-2, metadata={"help": "Stage 1: SGD learning rate."})
    unlearn_momentum: float = field(default=0.9, metadata={"help": "Stage 1: SGD momentum."})
    unlearn_stop_accuracy: float | None = field(
        default=None,
        metadata={
            "help": "Stage 1 stops once clean accuracy is <= this (default: about chance, 1.5 / number of classes; "
            "exactly 1 / C is often never reached, a collapsed model predicting one class scores its share)."
        },
    )
    probe_images: int = field(
        default=256,
        metadata={"help": "Stage 1: clean images on which the accuracy is checked after each step."},
    )
    neuron_ratio: float = field(
        default=0.05, metadata={"help": "Share of neurons (output rows) selected by NWC, in (0, 1]."}
    )
    weight_ratio: float = field(
        default=0.7,
        metadata={"help": "Share of the selected neurons' weights zero-reinitialised (m), in (0, 1]."},
    )
    layer_pattern: str = field(
        default=DEFAULT_LAYERS,
        metadata={
            "help": "Regex (full match) of the linear layers whose output rows are the candidate neurons."
        },
    )
    radius: float = field(default=0.05, metadata={"help": "Stage 2: perturbation radius r."})
    alpha: float = field(
        default=0.7, metadata={"help": "Stage 2: weight a of the perturbed gradient, in [0, 1]."}
    )
    per_tensor_norm: bool = field(
        default=False,
        metadata={
            "help": "Stage 2: normalise the perturbation per tensor (authors' code) rather than globally."
        },
    )

    @classmethod
    def quick(cls) -> TSBDConfig:
        return cls(
            steps=2,
            batch_size=8,
            learning_rate=1e-2,
            unlearn_steps=3,
            unlearn_stop_accuracy=0.0,
            probe_images=8,
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            isinstance(self.unlearn_steps, bool)
            or not isinstance(self.unlearn_steps, int)
            or self.unlearn_steps < 1
        ):
            raise ValueError(f"unlearn_steps must be a positive int, got {self.unlearn_steps!r}")
        if (
            isinstance(self.probe_images, bool)
            or not isinstance(self.probe_images, int)
            or self.probe_images < 1
        ):
            raise ValueError(f"probe_images must be a positive int, got {self.probe_images!r}")
        if not (math.isfinite(self.unlearn_learning_rate) and self.unlearn_learning_rate > 0):
            raise ValueError(f"unlearn_learning_rate must be positive, got {self.unlearn_learning_rate}")
        if not 0 <= self.unlearn_momentum < 1:
            raise ValueError(f"unlearn_momentum must be in [0, 1), got {self.unlearn_momentum}")
        if self.unlearn_stop_accuracy is not None and not 0 <= self.unlearn_stop_accuracy < 1:
            raise ValueError(
                f"unlearn_stop_accuracy must be in [0, 1) or None, got {self.unlearn_stop_accuracy}"
            )
        for name in ("neuron_ratio", "weight_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"radius must be positive, got {self.radius}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        try:
            re.compile(self.layer_pattern)
        except re.error as err:
            raise ValueError(f"layer_pattern {self.layer_pattern!r} is not a valid regex: {err}") from None

    def unlearn_config(self) -> FinetuneConfig:
        """Stage 1's optimisation settings (``unlearn_steps`` is a cap: the ascent stops once accuracy collapses)."""
        return FinetuneConfig(
            steps=self.unlearn_steps,
            batch_size=self.batch_size,
            learning_rate=self.unlearn_learning_rate,
            max_grad_norm=self.max_grad_norm,
            seed=self.seed,
        )


def candidate_weights(model: nn.Module, pattern: str) -> dict[str, nn.Parameter]:
    """``"<module>.weight"`` of every linear layer whose name fully matches ``pattern``.

    Raises:
        ValueError: no layer matches (names the pattern).
    """
    regex = re.compile(pattern)
    weights = {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and regex.fullmatch(name)
    }
    if not weights:
        raise ValueError(f"layer_pattern {pattern!r} matches no linear layer of the model")
    return weights


def unlearn_clean(model: CLIPModel, data: DefenseData, config: TSBDConfig) -> tuple[CLIPModel, int, float]:
    """Stage 1's clean unlearning: gradient ascent on a copy until probe accuracy <= the stop accuracy.

    Returns:
        ``(unlearned copy, steps taken, final probe accuracy)``.
    """
    work = copy.deepcopy(model)
    params = vision_parameters(work)
    classifier = zero_shot_classifier(work, data)
    stop = config.unlearn_stop_accuracy
    stop = 1.5 / data.task.num_classes if stop is None else stop
    probe = data.clean_pixels[: config.probe_images], data.clean_labels[: config.probe_images]
    accuracy = [float("nan")]

    def collapsed(steps: int, loss: float) -> bool:
        accuracy[0] = (classifier.predict(probe[0]).cpu() == probe[1]).double().mean().item()
        return accuracy[0] <= stop

    losses = run_training(
        classifier,
        params,
        TensorDataset(data.clean_pixels, data.clean_labels),
        lambda module, batch: -classification_loss(module, batch),
        config.unlearn_config(),
        desc="TSBD clean unlearning",
        stop_when=collapsed,
        optimizer_factory=lambda params: torch.optim.SGD(
            params, lr=config.unlearn_learning_rate, momentum=config.unlearn_momentum
        ),
    )
    if accuracy[0] > stop:
        logger.warning(
            "TSBD: clean accuracy only fell to %.1f%% (stop at %.1f%%) in %d unlearning steps",
            100 * accuracy[0],
            100 * stop,
            len(losses),
        )
    return work, len(losses), accuracy[0]


@register_defense("tsbd", TSBDConfig)
def tsbd(model: CLIPModel, data: DefenseData, config: TSBDConfig) -> DefenseResult:
    """TSBD: NWC-based zero reinitialisation from clean unlearning, then activeness-aware fine-tuning."""
    unlearned, unlearn_steps, unlearned_accuracy = unlearn_clean(model, data, config)
    original = candidate_weights(model, config.layer_pattern)
    changed = candidate_weights(unlearned, config.layer_pattern)
    deltas = {name: (changed[name] - weight).detach().cpu() for name, weight in original.items()}
    del unlearned
    masks = reinit_masks(deltas, config.neuron_ratio, config.weight_ratio)
    zeroed = zero_weights(original, masks)
    neurons = sum(int(mask.any(dim=1).sum()) for mask in masks.values())
    logger.info("TSBD: zeroed %d weights in %d neurons", zeroed, neurons)

    params = vision_parameters(model)
    losses = run_training(
        zero_shot_classifier(model, data),
        params,
        TensorDataset(data.clean_pixels, data.clean_labels),
        activeness_aware_loss(
            classification_loss, params, config.radius, config.alpha, config.per_tensor_norm
        ),
        config,
        desc="TSBD activeness-aware fine-tuning",
    )
    return DefenseResult(
        model=model,
        clean_images_used=data.num_clean,
        finetune_steps=unlearn_steps + len(losses),
        details={
            "unlearn_steps": unlearn_steps,
            "unlearned_accuracy": unlearned_accuracy,
            "reinitialised_weights": zeroed,
            "reinitialised_neurons": neurons,
            "finetune_gradient_evaluations": 2 * len(losses),
        },
    )
