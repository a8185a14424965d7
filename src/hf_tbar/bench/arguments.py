"""What the comparison harness runs: attacks, defenses, seeds, ablations and where the results go."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..attacks.base import TRIGGERS
from ..defenses import get_defense
from ..errors import ConfigError
from ..tbar.config import TBARConfig
from ..tbar.variants import VARIANTS

__all__ = ["DEFAULT_ATTACKS", "DEFAULT_DEFENSES", "BenchArguments"]

DEFAULT_ATTACKS = ["badnets", "blended", "wanet", "sig"]
DEFAULT_DEFENSES = ["tbar", "tbar-auto", "clean-finetune", "cleanclip", "tsbd"]


@dataclass
class BenchArguments:
    """What to compare, how often, and where to write the tables and the plot."""

    attacks: list[str] = field(
        default_factory=lambda: list(DEFAULT_ATTACKS),
        metadata={"help": "Attacks (embedded backdoored models)."},
    )
    defenses: list[str] = field(
        default_factory=lambda: list(DEFAULT_DEFENSES), metadata={"help": "Registered defenses to compare."}
    )
    seeds: int = field(
        default=3, metadata={"help": "Seeds per setting (0 .. seeds-1); tables give mean and std."}
    )
    target: int = field(default=0, metadata={"help": "The attacks' target class (the backdoors' recipe)."})
    set_sizes: list[int] = field(
        default_factory=lambda: [300],
        metadata={
            "help": "Ablation: images the defender gets (TBAR's unlearning set, the clean set of the others), "
            "e.g. 50 100 300 1000; capped at the train split."
        },
    )
    clean_shares: list[float] = field(
        default_factory=lambda: [0.0],
        metadata={
            "help": "Ablation: share of clean (true-label) images in TBAR's unlearning set, e.g. 0 0.25 0.5."
        },
    )
    scales: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Ablation: also score TBAR's vector negated at these fixed scales (scale sensitivity)."
        },
    )
    tbar_variant: str = field(
        default=TBARConfig.variant,
        metadata={
            "help": "TBAR variant: TBARConfig's default (repair-preserving), plain (the seed paper)..."
        },
    )
    steps: int | None = field(
        default=None,
        metadata={"help": "Override every defense's fine-tuning steps (quick runs); None: defaults."},
    )
    decree_steps: int | None = field(
        default=None, metadata={"help": "Override DECREE's maximum inversion steps; None: its default."}
    )
    force: bool = field(
        default=False,
        metadata={
            "help": "TBAR goes on with a model whose clean accuracy is near chance (tests on random models)."
        },
    )
    output_dir: str = field(default="outputs/bench", metadata={"help": "Folder of the tables and the plot."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attacks) - set(TRIGGERS))
        if unknown or not self.attacks:
            raise ConfigError(f"unknown attack(s) {unknown}; available: {sorted(TRIGGERS)}")
        if not self.defenses:
            raise ConfigError("give at least one defense")
        for name in self.defenses:
            get_defense(name)  # names the unknown one
        for name, value, low in (
            ("seeds", self.seeds, 1),
            ("target", self.target, 0),
            ("threads", self.threads, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("steps", "decree_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive int or None, got {value!r}")
        if not self.set_sizes or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.set_sizes
        ):
            raise ConfigError(f"set_sizes must be positive ints, got {self.set_sizes!r}")
        if not self.clean_shares or any(not 0 <= s < 1 for s in self.clean_shares):
            raise ConfigError(f"clean_shares must lie in [0, 1), got {self.clean_shares!r}")
        if self.tbar_variant not in VARIANTS:
            raise ConfigError(f"unknown tbar_variant {self.tbar_variant!r}; available: {sorted(VARIANTS)}")
        if any(not (math.isfinite(s) and s >= 0) for s in self.scales):
            raise ConfigError(f"scales must be finite and >= 0, got {self.scales!r}")
