"""Backdoor defenses behind one interface, for side-by-side comparison with TBAR.

``DEFENSES`` maps a name to a :class:`Defense`; each takes the backdoored ``CLIPModel``, the
:class:`DefenseData` it may use and its own config dataclass, and returns a :class:`DefenseResult`
(sanitized model plus the clean/triggered images, fine-tuning steps and wall time it consumed).

Registered: ``tbar`` (known trigger), ``tbar-decree`` (DECREE-inverted trigger), ``tbar-auto`` (the trigger
of every detector's combined verdict), ``clean-finetune``,
``cleanclip`` and ``tsbd``. A new defense is one :func:`register_defense` call on its function; its config
class is a :class:`DefenseConfig` (``for_run`` for the benchmark harness, ``quick`` for the contract test).
"""

from .base import (
    DEFENSES,
    Defense,
    DefenseConfig,
    DefenseData,
    DefenseResult,
    get_defense,
    register_defense,
    run_defense,
    zero_shot_classifier,
)
from .cleanclip import CleanCLIPConfig, caption_pairs, contrastive_loss
from .finetune import CleanFinetuneConfig
from .gradient_norm import (
    activeness_aware_loss,
    combine_gradients,
    perturbation,
    surrogate_loss,
    two_point_gradient,
)
from .reinit import neuron_weight_change, rank_neurons, reinit_masks, zero_weights
from .tbar import TBARAutoConfig, TBARDecreeConfig, TBARDefenseConfig, mixed_unlearning_set, run_tbar
from .tsbd import TSBDConfig, candidate_weights, unlearn_clean

__all__ = [
    "DEFENSES",
    "CleanCLIPConfig",
    "CleanFinetuneConfig",
    "Defense",
    "DefenseConfig",
    "DefenseData",
    "DefenseResult",
    "TBARAutoConfig",
    "TBARDecreeConfig",
    "TBARDefenseConfig",
    "TSBDConfig",
    "activeness_aware_loss",
    "candidate_weights",
    "caption_pairs",
    "combine_gradients",
    "contrastive_loss",
    "get_defense",
    "mixed_unlearning_set",
    "neuron_weight_change",
    "perturbation",
    "rank_neurons",
    "register_defense",
    "reinit_masks",
    "run_defense",
    "run_tbar",
    "surrogate_loss",
    "two_point_gradient",
    "unlearn_clean",
    "zero_shot_classifier",
    "zero_weights",
]
