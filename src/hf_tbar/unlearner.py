"""BackdoorUnlearner: TBAR end to end on a transformers CLIPModel.

1. build an unlearning set (triggered images labelled with the attack's target),
2. fine-tune a copy of the vision tower on it (full or LoRA) -> trigger vector ``tau``,
3. optionally transform ``tau`` (target-preserving variant),
4. pick ``alpha`` on validation data, 5. return ``theta_b - alpha * tau``, verified on held-out data.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch.utils.data import TensorDataset
from transformers import CLIPModel

from .attacks.base import Trigger
from .config import TBARConfig
from .data.embedded import TaskSpec
from .data.pixels import validate_labels, validate_pixels
from .detection import DecreeConfig, DecreeResult, TargetEstimate, estimate_target, invert_trigger
from .errors import DataError, HfTbarError
from .evaluation import EvalResult, evaluate_classifier
from .io import refuse_overlap
from .scale_search import ScaleSearchConfig, ScaleSelection, search_scale
from .task_vector import TaskVector
from .tiny_clip import load_clip
from .training.backdoor import classification_loss, vision_parameters
from .training.loop import run_training
from .variants import VARIANTS, VectorFits
from .zeroshot import ZeroShotClassifier, build_zero_shot_head

logger = logging.getLogger(__name__)

#: Pass as ``trigger`` to :meth:`BackdoorUnlearner.unlearn` when the trigger is unknown (DECREE inverts one).
AUTO_TRIGGER = "auto"


class NoBackdoorDetectedError(HfTbarError, ValueError):
    """DECREE did not flag the model, so an unknown-trigger run has nothing to remove."""

    exit_code = 7

    def __init__(self, detection: Detection) -> None:
        self.detection = detection
        super().__init__(
            f"DECREE did not flag the model: PL1 {detection.decree.pl1:.4f} is not below the threshold "
            f"{detection.decree.threshold} (similarity {detection.decree.similarity:.3f}). Nothing to remove; "
            "pass the trigger explicitly if you know it, or force=True to unlearn the inverted trigger anyway."
        )


@dataclass
class Detection:
    """What DECREE found when the trigger was unknown: the inverted trigger and the class it drives to."""

    decree: DecreeResult
    target: TargetEstimate
    num_images: int

    def to_dict(self) -> dict:
        return {
            "decree": self.decree.to_dict(),
            "target_estimate": self.target.to_dict(),
            "num_images": self.num_images,
        }


@dataclass
class UnlearningResult:
    """Everything a TBAR run produced: the sanitized model, the vector, the scale search and metrics."""

    model: CLIPModel
    vector: TaskVector
    selection: ScaleSelection
    before: EvalResult
    after: EvalResult
    trigger: Trigger
    target: int
    config: TBARConfig
    unlearning_set_size: int
    timings: dict[str, float] = field(default_factory=dict)
    detection: Detection | None = None

    @property
    def ca_retention(self) -> float:
        return (
            self.after.clean_accuracy / self.before.clean_accuracy
            if self.before.clean_accuracy
            else float("nan")
        )


def make_unlearning_set(
    clean_pixels: torch.Tensor,
    trigger: Trigger,
    target: int,
    size: int,
    seed: int = 0,
    true_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp ``trigger`` on ``size`` clean images drawn without replacement (all of them if fewer)
    and label every one ``target`` (the seed paper's pure triggered set), or, given ``true_labels``
    (the labels of ``clean_pixels``), keep each image's true label (the repair set). The same seed
    draws the same images either way.

    Returns:
        ``(pixels (n, 3, H, W) in [0, 1], labels (n,))``.
    """
    validate_pixels(clean_pixels, "clean images")
    if len(clean_pixels) == 0:
        raise DataError("the unlearning set is empty: no clean images to stamp the trigger on")
    if size > len(clean_pixels):
        logger.warning(
            "the unlearning set was asked to hold %d images but only %d clean images were given: using %d",
            size,
            len(clean_pixels),
            len(clean_pixels),
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(clean_pixels), generator=generator)[: min(size, len(clean_pixels))]
    chosen = clean_pixels[order]
    triggered = trigger(chosen)
    if torch.equal(triggered, chosen):
        raise DataError(
            f"the trigger {trigger.describe()} left every image unchanged: the set carries no trigger"
        )
    if true_labels is not None:
        return triggered, true_labels[order].long()
    return triggered, torch.full((len(triggered),), int(target), dtype=torch.long)


class BackdoorUnlearner:
    """Remove a backdoor from a CLIP model by trigger-vector negation (TBAR).

    Args:
        model: A :class:`~transformers.CLIPModel`, or a local path / Hub id loaded with ``from_pretrained``.
        processor: The model's :class:`~transformers.CLIPProcessor` (loaded with the model when a path is given).
        task: Class names and prompt templates of the zero-shot task the backdoor targets.
        config: Trigger fine-tuning settings and variant.
        device: Where evaluation runs; fine-tuning goes through Accelerate's device placement.

    The input model is never modified: fine-tuning and negation work on copies.

    Example:
        ```python
        >>> unlearner = BackdoorUnlearner("path/to/backdoored-clip", task=task)
        >>> result = unlearner.unlearn(trigger=BadNets(), target=0, clean_pixels=x_clean,
        ...                            validation=(x_val, y_val), test=(x_test, y_test))
        >>> unlearner.save_pretrained("sanitized-clip", result)
        ```
    """

    def __init__(
        self,
        model: CLIPModel | str | os.PathLike,
        processor=None,
        task: TaskSpec | None = None,
        config: TBARConfig | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            self.source = str(model)
            model, loaded_processor = load_clip(model)
            processor = processor or loaded_processor
        if not isinstance(model, CLIPModel):
            raise TypeError(f"BackdoorUnlearner needs a transformers CLIPModel, got {type(model).__name__}")
        if not hasattr(self, "source"):
            self.source = getattr(model, "name_or_path", "") or "in-memory"
        if processor is None:
            raise DataError(
                "a CLIPProcessor is needed (pass processor=..., or a checkpoint path that includes one)"
            )
        if task is None:
            raise DataError(
                "the zero-shot task (class names and templates) is needed: pass task=TaskSpec(...)"
            )
        # Under accelerate launch / torchrun each process evaluates on its own GPU.
        local_gpu = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device or (local_gpu if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.task = task
        self.config = config or TBARConfig()
        if self.config.checkpoint_dir is not None:  # training checkpoints must never land in the input model
            refuse_overlap(self.config.checkpoint_dir, [self.source])
        self.head = build_zero_shot_head(self.model, processor.tokenizer, task)

    # ------------------------------------------------------------------ building blocks
    def classifier(self, model: torch.nn.Module | None = None) -> ZeroShotClassifier:
        """Zero-shot classifier over ``model`` (default: the backdoored model) with the fixed text head."""
        return ZeroShotClassifier.from_processor(
            model if model is not None else self.model, self.head, self.processor
        ).to(self.device)

    def _finetune_vector(self, pixels: torch.Tensor, labels: torch.Tensor, desc: str) -> TaskVector:
        """Fine-tune a copy of the vision tower on ``(pixels, labels)``; return the weight difference."""
        cfg = self.config
        work = copy.deepcopy(self.model)
        if cfg.mode == "lora":
            for param in work.parameters():
                param.requires_grad_(False)
            pattern = r".*vision_model\..*\.(" + "|".join(cfg.lora_target_modules) + r")$"
            lora = LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=pattern
            )
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                work = get_peft_model(work, lora)
            params = [p for p in work.parameters() if p.requires_grad]
        else:
            params = vision_parameters(work)
        run_training(
            self.classifier(work),
            params,
            TensorDataset(pixels, labels),
            classification_loss,
            cfg.finetune_config(),
            desc=desc,
        )
        if cfg.mode == "lora":
            return TaskVector.from_peft_model(work, metadata={"mode": "lora"})
        return TaskVector.from_models(self.model, work, metadata={"mode": "full"})

    def fit_trigger_vector(
        self,
        trigger: Trigger | None = None,
        target: int | None = None,
        clean_pixels: torch.Tensor | None = None,
        triggered_pixels: torch.Tensor | None = None,
    ) -> TaskVector:
        """Step 2-3 of TBAR: fine-tune on triggered images labelled ``target``; ``tau = theta_t - theta_b``.

        Give either ``clean_pixels`` and a ``trigger`` to stamp on them (``config.unlearning_set_size``
        images are drawn), or ``triggered_pixels`` that already carry the trigger.

        Raises:
            ValueError: target out of range, empty set, or a set that carries no trigger.
        """
        target = self.task.check_label(target)
        if triggered_pixels is None:
            if trigger is None or clean_pixels is None:
                raise DataError("give clean_pixels and a trigger to stamp, or triggered_pixels")
            triggered_pixels, labels = make_unlearning_set(
                clean_pixels, trigger, target, self.config.unlearning_set_size, self.config.seed
            )
        else:
            validate_pixels(triggered_pixels, "triggered images")
            if len(triggered_pixels) == 0:
                raise DataError("the unlearning set is empty")
            labels = torch.full((len(triggered_pixels),), target, dtype=torch.long)
        vector = self._finetune_vector(
            triggered_pixels, labels, desc=f"trigger fine-tuning ({self.config.mode})"
        )
        vector.metadata.update(
            {
                "kind": "trigger",
                "target": target,
                "unlearning_set_size": len(labels),
                "trigger": trigger.to_dict() if trigger else None,
            }
        )
        return vector

    def fit_target_vector(self, clean_pixels: torch.Tensor, labels: torch.Tensor, target: int) -> TaskVector:
        """A "target-class" vector: the same fine-tuning on up to ``config.preserve_set_size`` *clean* images of ``target``."""
        target = self.task.check_label(target)
        pool = clean_pixels[labels == target][: self.config.preserve_set_size]
        if len(pool) == 0:
            raise DataError(f"no clean image of the target class {target} to fit a target-class vector")
        vector = self._finetune_vector(
            pool, torch.full((len(pool),), target, dtype=torch.long), desc="target-class fine-tuning"
        )
        vector.metadata.update({"kind": "target-class", "target": target, "images": len(pool)})
        return vector

    def fit_repair_vector(
        self, trigger: Trigger, clean_pixels: torch.Tensor, clean_labels: torch.Tensor
    ) -> TaskVector:
        """A "repair" vector: the same fine-tuning on the same triggered images, each labelled with its
        *true* class (the ``repair`` variant moves along it)."""
        validate_pixels(clean_pixels, "clean images")
        if len(clean_labels) != len(clean_pixels):
            raise DataError(f"got {len(clean_pixels)} clean images but {len(clean_labels)} labels")
        validate_labels(clean_labels, self.task.num_classes, "clean labels")
        pixels, labels = make_unlearning_set(
            clean_pixels,
            trigger,
            0,
            self.config.unlearning_set_size,
            self.config.seed,
            true_labels=clean_labels,
        )
        vector = self._finetune_vector(pixels, labels, desc=f"repair fine-tuning ({self.config.mode})")
        vector.metadata.update(
            {"kind": "repair", "unlearning_set_size": len(labels), "trigger": trigger.to_dict()}
        )
        return vector

    def apply(self, vector: TaskVector, scale: float) -> CLIPModel:
        """``theta_b - scale * vector`` as a new model (the backdoored model is left untouched)."""
        return vector.apply_to(self.model, -scale)

    def evaluate(
        self,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        trigger: Trigger | None = None,
        target: int | None = None,
        model: CLIPModel | None = None,
    ) -> EvalResult:
        """CA, ASR, target-class and per-class accuracy of ``model`` (default: the backdoored one)."""
        if target is not None:
            target = self.task.check_label(target)
        return evaluate_classifier(self.classifier(model), pixels, labels, trigger, target)

    def select_scale(
        self,
        vector: TaskVector,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        trigger: Trigger,
        target: int,
        search: ScaleSearchConfig | None = None,
    ) -> ScaleSelection:
        """Step 5: the scale with the lowest validation ASR subject to the accuracy constraints.

        One working copy of the model is re-weighted in place per candidate scale; the text head is
        computed once.
        """
        work = copy.deepcopy(self.model)
        base = {k: v.detach().clone() for k, v in work.state_dict().items() if k in vector}

        def evaluate(scale: float):
            state = work.state_dict()
            with torch.no_grad():
                for name, tensor in base.items():
                    state[name].copy_(tensor)
            vector.apply_to(work, -scale, in_place=True)
            result = self.evaluate(pixels, labels, trigger, target, model=work)
            return result.clean_accuracy, result.attack_success_rate, result.target_class_accuracy

        selection = search_scale(evaluate, search)
        logger.info(
            "selected scale %.3f after %d evaluations (validation CA %.1f%%, ASR %.1f%%)",
            selection.scale,
            selection.evaluations,
            100 * selection.best.clean_accuracy,
            100 * selection.best.attack_success_rate,
        )
        return selection

    def detect(
        self, clean_pixels: torch.Tensor, config: DecreeConfig | None = None, num_images: int = 256
    ) -> Detection:
        """Unknown trigger: invert one with DECREE on up to ``num_images`` clean images (a seeded random
        subset), give the verdict, and estimate the target class it drives the zero-shot classifier to.

        Raises:
            ValueError: fewer than two clean images, or images of the wrong size for the model.
        """
        config = config or DecreeConfig(seed=self.config.seed)
        validate_pixels(clean_pixels, "clean images")
        generator = torch.Generator().manual_seed(config.seed)
        chosen = clean_pixels[torch.randperm(len(clean_pixels), generator=generator)[:num_images]]
        decree = invert_trigger(self.model, self.processor, chosen, config)
        estimate = estimate_target(self.classifier(), chosen, decree.trigger)
        logger.info(
            "DECREE: PL1 %.4f -> %s; estimated target %d (%.0f%% of stamped images)",
            decree.pl1,
            "backdoored" if decree.is_backdoored else "not flagged",
            estimate.target,
            100 * estimate.flip_share,
        )
        return Detection(decree=decree, target=estimate, num_images=len(chosen))

    # ------------------------------------------------------------------ end to end
    def unlearn(
        self,
        trigger: Trigger | str,
        target: int | None,
        clean_pixels: torch.Tensor,
        validation: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        clean_labels: torch.Tensor | None = None,
        search: ScaleSearchConfig | None = None,
        decree: DecreeConfig | None = None,
        force: bool = False,
    ) -> UnlearningResult:
        """Run TBAR: fit the trigger vector, apply the variant, select the scale, verify.

        Args:
            trigger: The known trigger, or ``"auto"`` when it is unknown: DECREE inverts one from
                ``clean_pixels`` (see :meth:`detect`) and TBAR unlearns the inverted trigger.
            target: The attack's target class; with ``trigger="auto"`` it may be ``None`` (estimated).
            clean_pixels: Clean ``[0, 1]`` images to build the unlearning set from.
            validation: ``(pixels, labels)`` used to select the scale.
            test: Held-out ``(pixels, labels)`` for the before/after verification (default: validation).
            clean_labels: Labels of ``clean_pixels``; needed by the target-preserving variant.
            search: Scale-search constraints.
            decree: DECREE settings for ``trigger="auto"``.
            force: With ``trigger="auto"``, unlearn the inverted trigger even if DECREE does not flag the model.

        Raises:
            NoBackdoorDetectedError: ``trigger="auto"`` and DECREE did not flag the model (unless ``force``).
        """
        timings: dict[str, float] = {}
        detection = None
        if clean_labels is not None:
            validate_labels(clean_labels, self.task.num_classes, "clean labels")
        if isinstance(trigger, str):
            if trigger != AUTO_TRIGGER:
                raise DataError(f"trigger must be a Trigger object or {AUTO_TRIGGER!r}, got {trigger!r}")
            start = time.perf_counter()
            detection = self.detect(clean_pixels, decree)
            timings["detection_s"] = time.perf_counter() - start
            if not detection.decree.is_backdoored and not force:
                raise NoBackdoorDetectedError(detection)
            trigger = detection.decree.trigger
            target = detection.target.target if target is None else target
        if target is None:
            raise DataError("target is required when the trigger is known")
        target = self.task.check_label(target)

        def labels_for(what: str) -> torch.Tensor:
            if clean_labels is None:
                raise DataError(f"variant {self.config.variant!r} needs clean_labels to {what}")
            return clean_labels

        fits = VectorFits(
            trigger=functools.cache(
                lambda: self.fit_trigger_vector(trigger, target, clean_pixels=clean_pixels)
            ),
            target_class=functools.cache(
                lambda: self.fit_target_vector(clean_pixels, labels_for("find target-class images"), target)
            ),
            repair=functools.cache(
                lambda: self.fit_repair_vector(
                    trigger, clean_pixels, labels_for("label the triggered images")
                )
            ),
        )
        start = time.perf_counter()
        negated = VARIANTS[self.config.variant](fits)
        negated.metadata = {**negated.metadata, "variant": self.config.variant}
        timings["vector_fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        selection = self.select_scale(negated, *validation, trigger, target, search)
        timings["scale_search_s"] = time.perf_counter() - start
        sanitized = self.apply(negated, selection.scale)
        test_pixels, test_labels = test if test is not None else validation
        before = self.evaluate(test_pixels, test_labels, trigger, target)
        after = self.evaluate(test_pixels, test_labels, trigger, target, model=sanitized)
        logger.info("before: %s | after: %s", before.summary(), after.summary())
        return UnlearningResult(
            model=sanitized,
            vector=negated,
            selection=selection,
            before=before,
            after=after,
            trigger=trigger,
            target=target,
            config=self.config,
            unlearning_set_size=int(negated.metadata["unlearning_set_size"]),
            timings=timings,
            detection=detection,
        )

    def save_pretrained(
        self,
        output_dir: str | os.PathLike,
        result: UnlearningResult,
        overwrite: bool = False,
        **report_fields,
    ) -> Path:
        """Save the sanitized model as a plain CLIPModel folder plus ``tbar_report.json`` and the scale plot.

        The folder is written atomically: on failure nothing is left at ``output_dir``.

        Raises:
            OutputExistsError: ``output_dir`` holds files and ``overwrite`` is False.
            OutputError: ``output_dir`` is, is inside, or contains the folder the model came from.
        """
        from .report import save_sanitized

        return save_sanitized(output_dir, self, result, overwrite=overwrite, **report_fields)

    def push_to_hub(
        self,
        repo_id: str,
        result: UnlearningResult,
        dry_run_dir: str | os.PathLike | None = None,
        **push_options,
    ):
        """Save the sanitized model to a temporary folder and push it (card, report, plot) as one Hub commit.

        Args:
            repo_id: Target repository, e.g. ``"me/clip-sanitized"``.
            result: The output of :meth:`unlearn`.
            dry_run_dir: Write exactly what would be pushed here instead of pushing.
            **push_options: Fields of :class:`~hf_tbar.hub.PushConfig`: ``private`` (``None``, the default,
                sends no visibility and the Hub's or organisation's default applies; ``True`` / ``False`` for a
                private / public new repository), ``revision``, ``create_pr``, ``commit_message``, ``token``,
                ``max_asr``, ``min_ca_retention``, ``force``.

        Returns:
            The :class:`~hf_tbar.hub.PushResult`. The safety gate refuses a model whose verified ASR or CA
            retention misses its threshold unless ``force=True``.
        """
        import tempfile

        from .hub import PushConfig, push_sanitized_model

        config = PushConfig(repo_id=repo_id, dry_run=dry_run_dir is not None, **push_options)
        with tempfile.TemporaryDirectory(prefix="hf_tbar-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "sanitized", result)
            return push_sanitized_model(folder, config, dry_run_dir=dry_run_dir)
