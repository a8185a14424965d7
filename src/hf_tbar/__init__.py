"""hf_tbar: remove backdoors from CLIP models by trigger-vector arithmetic (TBAR).

```python
>>> from hf_tbar import BackdoorUnlearner, BadNets
>>> unlearner = BackdoorUnlearner("path/to/backdoored-clip", task=task)
>>> result = unlearner.unlearn(BadNets(), target=0, clean_pixels=x, validation=(x_val, y_val))
>>> unlearner.save_pretrained("sanitized-clip", result)
```
"""

import warnings

from .attacks import SIG, BadNets, Blended, Trigger, WaNet, build_trigger, register_trigger
from .data import DataArguments, TaskSpec, load_task_data, register_data_source
from .defenses import register_defense, run_defense
from .detection import DecreeConfig, invert_trigger
from .errors import HfTbarError
from .evaluation import evaluate_model
from .hub import PushConfig, push_sanitized_model
from .models import (
    ModelFamily,
    TinyCLIPConfig,
    build_tiny_clip,
    load_model,
    register_model_family,
    save_clip,
)
from .reporting.schema import TBARReport
from .results import UnlearningResult
from .scale_search import ScaleSearchConfig
from .scenarios.embedded import embedded_scenario
from .task_vector import TaskVector
from .tbar.config import TBARConfig
from .tbar.unlearner import BackdoorUnlearner
from .tbar.variants import register_variant
from .version import __version__ as __version__

__all__ = [
    "SIG",
    "BackdoorUnlearner",
    "BadNets",
    "Blended",
    "DataArguments",
    "DecreeConfig",
    "HfTbarError",
    "ModelFamily",
    "PushConfig",
    "ScaleSearchConfig",
    "TBARConfig",
    "TBARReport",
    "TaskSpec",
    "TaskVector",
    "TinyCLIPConfig",
    "Trigger",
    "UnlearningResult",
    "WaNet",
    "build_tiny_clip",
    "build_trigger",
    "embedded_scenario",
    "evaluate_model",
    "invert_trigger",
    "load_model",
    "load_task_data",
    "push_sanitized_model",
    "register_data_source",
    "register_defense",
    "register_model_family",
    "register_trigger",
    "register_variant",
    "run_defense",
    "save_clip",
]


def __getattr__(name: str):
    """``load_clip``, the name of :func:`load_model` from before model families (deprecated: warns)."""
    if name == "load_clip":
        warnings.warn(
            "hf_tbar.load_clip is deprecated and will be removed: use hf_tbar.load_model (it loads every "
            "registered model family)",
            DeprecationWarning,
            stacklevel=2,
        )
        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
