"""The common interface of backdoor defenses: what a defense may use, what it returns, and the registry.

A defense is a function ``(model, data, config) -> DefenseResult`` registered under a name with
:func:`register_defense`, together with its config dataclass. :class:`Defense` (the registry entry)
checks the inputs, hands the function a private copy of the model, and times the run, so that
defenses are compared on what they consumed (images, fine-tuning steps, wall time) as well as on
clean accuracy and attack success rate.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import CLIPModel

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.pixels import validate_pixels
from ..errors import ConfigError
from ..models import family_of
from ..task_vector import TaskVector
from ..tbar.captions import check_captions
from ..zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DefenseData:
    """Everything a defense is allowed to use besides the model.

    Args:
        clean_pixels: The defender's clean ``[0, 1]`` images ``(N, 3, H, W)`` at the model's resolution.
        clean_labels: Their true labels ``(N,)``.
        task: Class names and prompt templates of the zero-shot task.
        processor: The model's ``CLIPProcessor`` (tokenizer and normalisation constants).
        trigger: The attack's trigger, when the defender knows it (TBAR with a known trigger).
        target: The attack's target class, known together with the trigger.
        validation: Held-out clean ``(pixels, labels)`` a defense may use for model selection
            (TBAR's scale search). It must not overlap the test data the defense is scored on.
        clean_captions: One caption per clean image (image-caption data), or ``None``; defenses that can
            use captions (CleanCLIP, TBAR's contrastive route) then do.

    Raises:
        ValueError: empty or mismatched tensors, labels or target out of the task's range, or a
            trigger given without a target (names the offending value).
    """

    clean_pixels: torch.Tensor
    clean_labels: torch.Tensor
    task: TaskSpec
    processor: Any
    trigger: Trigger | None = None
    target: int | None = None
    validation: Split | None = None
    clean_captions: list[str] | None = None

    def __post_init__(self) -> None:
        _check_split(self.clean_pixels, self.clean_labels, self.task, "clean")
        if self.clean_captions is not None:
            self.clean_captions = check_captions(self.clean_captions, "clean captions")
            if len(self.clean_captions) != len(self.clean_labels):
                raise ValueError(
                    f"{len(self.clean_labels)} clean images but {len(self.clean_captions)} captions"
                )
        if self.validation is not None:
            _check_split(*self.validation, self.task, "validation")
        if self.trigger is not None and not isinstance(self.trigger, Trigger):
            raise TypeError(f"trigger must be a hf_tbar Trigger, got {type(self.trigger).__name__}")
        if self.target is not None:
            self.target = self.task.check_label(self.target)
        if (self.trigger is None) != (self.target is None):
            raise ConfigError("give the trigger and the target class together (or neither)")

    @property
    def num_clean(self) -> int:
        return int(self.clean_labels.shape[0])


def _check_split(pixels: torch.Tensor, labels: torch.Tensor, task: TaskSpec, what: str) -> None:
    validate_pixels(pixels, f"{what} images")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
        raise TypeError(f"{what} labels must be an integer tensor of shape (N,)")
    if len(pixels) != len(labels):
        raise ValueError(f"{len(pixels)} {what} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError(f"the {what} data is empty")
    if int(labels.min()) < 0 or int(labels.max()) >= task.num_classes:
        raise ValueError(
            f"{what} labels must lie in [0, {task.num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
        )


@dataclass
class DefenseResult:
    """A sanitized model and what producing it consumed.

    Attributes:
        model: The sanitized :class:`~transformers.CLIPModel` (eval mode, a new object).
        defense: Registered name of the defense that produced it.
        clean_images_used: Correctly labelled clean images the defense trained on.
        triggered_images_used: Images carrying a (known or reverse-engineered) trigger it trained on.
        finetune_steps: Optimizer steps spent fine-tuning model weights (all stages together).
        validation_images_used: Held-out clean images used for model selection (e.g. TBAR's scale search).
        wall_time_s: Wall-clock seconds of the whole defense, in seconds.
        vector: For arithmetic defenses (TBAR), the vector that was negated: ``model = base - scale * vector``.
        details: JSON-serialisable extras (chosen scale, DECREE statistics, neurons reinitialised, ...).
    """

    model: CLIPModel
    defense: str = ""
    clean_images_used: int = 0
    triggered_images_used: int = 0
    finetune_steps: int = 0
    validation_images_used: int = 0
    wall_time_s: float = 0.0
    vector: TaskVector | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model and the vector."""
        return {
            "defense": self.defense,
            "clean_images_used": self.clean_images_used,
            "triggered_images_used": self.triggered_images_used,
            "finetune_steps": self.finetune_steps,
            "validation_images_used": self.validation_images_used,
            "wall_time_s": self.wall_time_s,
            "details": dict(self.details),
        }


def zero_shot_classifier(model: torch.nn.Module, data: DefenseData) -> ZeroShotClassifier:
    """The zero-shot classifier of ``model`` for ``data.task``, its head built from the model's text tower."""
    head = build_zero_shot_head(model, data.processor.tokenizer, data.task)
    return ZeroShotClassifier.from_processor(model, head, data.processor).to(head.device)


DefenseFn = Callable[[CLIPModel, DefenseData, Any], DefenseResult]


class DefenseConfig:
    """What every defense's config class provides (a mixin: no fields), checked by :func:`register_defense`.

    ``for_run(run)`` builds the config of one benchmark run (``run`` has ``seed``, ``steps`` (``None``: the
    defense's default), ``set_size``, ``tbar_variant``, ``clean_share`` and ``decree_steps``), and ``quick()`` a
    few-step config for the defense-contract test. The defaults suit fine-tuning defenses built on
    :class:`~hf_tbar.training.FinetuneConfig`.
    """

    @classmethod
    def for_run(cls, run: Any) -> DefenseConfig:
        return cls(seed=run.seed, **({"steps": run.steps} if run.steps else {}))

    @classmethod
    def quick(cls) -> DefenseConfig:
        return cls(steps=2, batch_size=8, learning_rate=1e-2)


@dataclass(frozen=True)
class Defense:
    """A registered defense: its function, its config class and what data it requires.

    Calling it runs the defense on a deep copy of ``model`` (the input is never modified) under a
    forked RNG state (the caller's random streams are left as they were), and fills in
    :attr:`DefenseResult.defense` and :attr:`DefenseResult.wall_time_s`.
    """

    name: str
    fn: DefenseFn
    config_class: type
    needs_trigger: bool = False
    needs_validation: bool = False

    @property
    def description(self) -> str:
        """First line of the defense function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""

    def __call__(self, model: CLIPModel, data: DefenseData, config: Any = None) -> DefenseResult:
        try:
            family_of(model)
        except TypeError:
            raise TypeError(
                f"defense {self.name!r} needs a transformers CLIPModel or SiglipModel, got {type(model).__name__}"
            ) from None
        if not isinstance(data, DefenseData):
            raise TypeError(f"defense {self.name!r} needs a DefenseData, got {type(data).__name__}")
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"defense {self.name!r} takes a {self.config_class.__name__}, got {type(config).__name__}"
            )
        if self.needs_trigger and data.trigger is None:
            raise ValueError(f"defense {self.name!r} needs the trigger and target: pass them in DefenseData")
        if self.needs_validation and data.validation is None:
            raise ValueError(f"defense {self.name!r} needs validation data: pass DefenseData(validation=...)")
        start = time.perf_counter()
        with torch.random.fork_rng():
            result = self.fn(copy.deepcopy(model), data, config)
        result.model.eval()
        for param in result.model.parameters():
            param.requires_grad_(True)
        result.defense = self.name
        result.wall_time_s = time.perf_counter() - start
        logger.info(
            "%s: %d clean + %d triggered images, %d fine-tuning steps, %.1f s",
            self.name,
            result.clean_images_used,
            result.triggered_images_used,
            result.finetune_steps,
            result.wall_time_s,
        )
        return result


DEFENSES: dict[str, Defense] = {}


def register_defense(
    name: str, config_class: type, needs_trigger: bool = False, needs_validation: bool = False
) -> Callable[[DefenseFn], DefenseFn]:
    """Decorator registering ``fn(model, data, config) -> DefenseResult`` as the defense ``name``.

    The function receives a private deep copy of the model and may modify it in place.

    Args:
        name: Registry key, e.g. ``"tsbd"``.
        config_class: Its config dataclass, a :class:`DefenseConfig`; ``config_class()`` must give the
            defaults.
        needs_trigger: The defense requires ``DefenseData.trigger`` and ``target``.
        needs_validation: The defense requires ``DefenseData.validation``.
    """

    if not (isinstance(config_class, type) and issubclass(config_class, DefenseConfig)):
        raise TypeError(
            f"defense {name!r}: its config class must be a DefenseConfig (for_run and quick), got {config_class!r}"
        )

    def wrap(fn: DefenseFn) -> DefenseFn:
        if name in DEFENSES:
            raise ValueError(f"a defense named {name!r} is already registered")
        DEFENSES[name] = Defense(name, fn, config_class, needs_trigger, needs_validation)
        return fn

    return wrap


def get_defense(name: str) -> Defense:
    """The registered defense ``name``.

    Raises:
        ValueError: no such defense (the message names it and lists the available ones).
    """
    try:
        return DEFENSES[name]
    except KeyError:
        raise ValueError(f"unknown defense {name!r}; available: {sorted(DEFENSES)}") from None


def run_defense(name: str, model: CLIPModel, data: DefenseData, config: Any = None) -> DefenseResult:
    """Run the registered defense ``name`` (default config when ``config`` is None) on ``model``.

    Example:
        ```python
        >>> data = DefenseData(x_clean, y_clean, task, processor, trigger=BadNets(), target=0,
        ...                    validation=(x_val, y_val))
        >>> result = run_defense("tbar", backdoored_model, data)
        >>> result.model, result.triggered_images_used, result.wall_time_s
        ```
    """
    return get_defense(name)(model, data, config)
