"""Training routines: a generic Accelerate loop, the embedded pretraining, backdooring."""

from .loop import FinetuneConfig, run_training

__all__ = ["FinetuneConfig", "run_training"]
