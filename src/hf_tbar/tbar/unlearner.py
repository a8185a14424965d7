"""BackdoorUnlearner: TBAR end to end on a transformers CLIPModel; it orchestrates the image reader, the vector
fitter with its objective, the variant, the scale selection and the verification, and holds no method of theirs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import torch
from transformers import PreTrainedModel

from ..attacks.base import Trigger
from ..data.embedded import TaskSpec
from ..data.task_data import resolve_target
from ..detection import DecreeConfig, DetectionConfig, ScanVerdict
from ..evaluation import EvalResult, evaluate_classifier
from ..io import refuse_overlap
from ..reporting.adapter_folder import save_adapter_folder
from ..reporting.publishing import push_result
from ..reporting.report import save_sanitized
from ..results import UnlearningResult
from ..scale_search import ScaleSearchConfig
from ..task_vector import TaskVector
from ..zeroshot import ZeroShotClassifier
from . import multi, stages
from .config import TBARConfig
from .fitter import FitLog, VectorFitter
from .inputs import ImageReader, Images, load_subject
from .measuring import detect_backdoor, select_scale, validation_set
from .objectives import FitContext, FitObjective
from .stages import timed
from .variants import negate

__all__ = ["BackdoorUnlearner"]


class BackdoorUnlearner:
    """Remove a backdoor from a CLIP model by trigger-vector negation (TBAR); the input model is never modified.

    Args:
        model: A :class:`~transformers.CLIPModel` (or ``SiglipModel``), or a local path / Hub id.
        processor: The model's processor (loaded with the model when a path is given).
        task: Class names and prompt templates of the zero-shot task the backdoor targets.
        config: Trigger fine-tuning settings and variant.
        device: Where evaluation runs; fine-tuning goes through Accelerate's device placement.
        revision: Branch, tag or commit of a Hub id ``model`` (default: main).
        image_column / label_column: Columns read when images are given as a ``datasets.Dataset``.
        caption_column: Column of captions of a clean dataset (the vectors are then fitted contrastively).
        objective: Objective of the fine-tunings on images without captions (default: the zero-shot head's
            cross-entropy); captioned images use :class:`~hf_tbar.tbar.contrastive.ContrastiveObjective`.

    Collaborators: ``images`` (:class:`~hf_tbar.tbar.inputs.ImageReader`) and ``fitter``
    (:class:`~hf_tbar.tbar.fitter.VectorFitter`, with the objective).

    Example: ``BackdoorUnlearner("path/to/clip", task=task).unlearn(BadNets(), 0, x, (x_val, y_val))``.
    """

    def __init__(
        self,
        model: PreTrainedModel | str | os.PathLike,
        processor=None,
        task: TaskSpec | None = None,
        config: TBARConfig | None = None,
        device: str | torch.device | None = None,
        image_column: str = "image",
        label_column: str = "label",
        caption_column: str | None = None,
        objective: FitObjective | None = None,
        revision: str | None = None,
    ) -> None:
        subject = load_subject(model, processor, task, device, revision)
        self.model, self.processor, self.device = subject.model, subject.processor, subject.device
        self.task, self.family, self.source = task, subject.family, subject.source
        self.image_size, self.head, self.config = subject.image_size, subject.head, config or TBARConfig()
        if self.config.checkpoint_dir is not None:  # training checkpoints must never land in the input model
            refuse_overlap(self.config.checkpoint_dir, [self.source])
        columns = (image_column, label_column, caption_column)
        self.images = ImageReader(self.processor, task.num_classes, self.image_size, *columns)
        context = FitContext(self.model, self.processor, self.head, task, self.config, self.device)
        self.fitter = VectorFitter(context, self.images, objective)

    # ------------------------------------------------------------------ building blocks
    def classifier(self, model: torch.nn.Module | None = None) -> ZeroShotClassifier:
        """Zero-shot classifier over ``model`` (default: the backdoored model) with the fixed text head."""
        return self.fitter.context.classifier(model)

    def resolve_target(self, target: int | str) -> int:
        """The class index of ``target``: an index, or a class name of the task (``"banana"``)."""
        return resolve_target(self.task, target)

    def apply(self, vector: TaskVector, scale: float) -> PreTrainedModel:
        """``theta_b - scale * vector`` as a new model (the backdoored model is left untouched)."""
        return vector.apply_to(self.model, -scale)

    def fit_trigger_vector(
        self, trigger=None, target=None, clean_pixels=None, triggered_pixels=None
    ) -> TaskVector:
        """The trigger vector: :meth:`~hf_tbar.tbar.fitter.VectorFitter.fit_trigger_vector`."""
        return self.fitter.fit_trigger_vector(trigger, target, clean_pixels, triggered_pixels)

    def fit_target_vector(self, clean_pixels: Images, labels: torch.Tensor | None, target: int) -> TaskVector:
        """The target-class vector: :meth:`~hf_tbar.tbar.fitter.VectorFitter.fit_target_vector`."""
        return self.fitter.fit_target_vector(clean_pixels, labels, target)

    def fit_repair_vector(self, trigger: Trigger, clean_pixels: Images, clean_labels=None) -> TaskVector:
        """The repair vector: :meth:`~hf_tbar.tbar.fitter.VectorFitter.fit_repair_vector`."""
        return self.fitter.fit_repair_vector(trigger, clean_pixels, clean_labels)

    def evaluate(
        self, pixels, labels=None, trigger=None, target=None, model=None, triggered=None
    ) -> EvalResult:
        """CA, ASR (``trigger`` stamped, or ``triggered`` images found as they are), target-class and per-class
        accuracy of ``model`` (default: the backdoored one) on ``pixels`` (with ``labels``), streamed."""
        target = None if target is None else self.resolve_target(target)
        clean = self.images.read(pixels if labels is None else (pixels, labels), "evaluation images")
        found = None if triggered is None else self.images.read(triggered, "poisoned images")
        return evaluate_classifier(self.classifier(model), clean, None, trigger, target, triggered=found)

    def detect(self, clean_pixels: Images, config: DetectionConfig | None = None, decree=None) -> ScanVerdict:
        """Judge the model with the detectors of ``config`` (see :func:`~hf_tbar.tbar.measuring.detect_backdoor`)."""
        config = config or DetectionConfig(detection_seed=self.config.seed)
        pool = self.images.read(clean_pixels, "clean images")
        return detect_backdoor(self.classifier(), self.processor, self.task, pool, config, decree)

    # ------------------------------------------------------------------ end to end
    def unlearn(
        self,
        trigger: Trigger | ScanVerdict | str | None,
        target: int | str | None,
        clean_pixels: Images | None,
        validation: Images | tuple,
        test: Images | tuple | None = None,
        clean_labels: torch.Tensor | None = None,
        search: ScaleSearchConfig | None = None,
        decree: DetectionConfig | DecreeConfig | None = None,
        force: bool = False,
        poisoned: Images | None = None,
        clean_captions: Sequence[str] | None = None,
    ) -> UnlearningResult:
        """Run TBAR: fit the vector of ``config.variant``, select its scale on ``validation``, verify on ``test``
        (default: ``validation``). Images: ``(pixels, labels)`` with ``[0, 1]`` pixels ``(N, 3, H, W)``, image
        sets or datasets; ``clean_captions`` (or ``caption_column``) make the objective contrastive.

        ``trigger`` is a :class:`~hf_tbar.attacks.Trigger`, ``"auto"`` (the detectors of ``decree`` invert one
        from the clean images; a :class:`~hf_tbar.detection.DecreeConfig` runs DECREE alone), a
        :class:`~hf_tbar.detection.ScanVerdict`, or ``None`` with ``poisoned`` images found as they are;
        ``target`` an index or class name (with ``"auto"``, ``None``: the detected one). ``force`` goes on past a
        model at chance and a model no detector flags.

        Raises:
            ModelAtChanceError, NoBackdoorDetectedError, NoFeasibleScaleError; DataError / ConfigError (bad inputs).
        """
        log, timings = FitLog(), {}
        clean = self.images.clean_set(clean_pixels, clean_labels, clean_captions)
        stages.check_request(trigger, target, clean, poisoned, self.config.variant)  # cheap mistakes first
        if isinstance(trigger, Trigger) or trigger is None:
            target = stages.checked_target(self.task, self.image_size, trigger, target)
        images = self.images.read(
            validation, "evaluation images"
        )  # decoded once, by the task check, if it fits
        checked = validation_set(images, self.task.num_classes, search, self.image_size, self.config.seed)
        stages.check_task(partial(checked.baseline, self.classifier()), self.task.num_classes, force, timings)
        found = self.images.found(poisoned, self.config.seed) if trigger is None else None
        # "auto" or a verdict: the trigger and target the detectors found
        scan = partial(self.detect, clean, *stages.detection_settings(decree, self.config.seed))
        detection, trigger, target = stages.removal(
            trigger, target, scan, force, self.task, self.image_size, timings
        )
        with timed(timings, "vector_fit_s"):
            negated = negate(self.config.variant, self.fitter.fits(trigger, target, clean, found, log))
        with timed(timings, "scale_search_s"):
            held_out = found and found.validation
            selection = select_scale(
                self.classifier(), negated, checked, trigger, target, self.task.classnames, search, held_out
            )
        sanitized = self.apply(negated, selection.scale)
        test_set = None if test is None else self.images.read(test, "test images")
        with timed(timings, "verification_s"):
            removed, held_out = (trigger, target), found and found.test
            verified = stages.verify(self.classifier(), checked, test_set, removed, sanitized, held_out)
        return stages.assemble_result(
            sanitized, negated, selection, verified, (trigger, target), self.config, found, detection, log,
            timings, search
        )  # fmt: skip

    def unlearn_many(self, pairs, clean_pixels, validation, test=None, search=None, grid=None, rounds=2):
        """Remove several backdoors at once: :func:`~hf_tbar.tbar.multi.unlearn_many`."""
        return multi.unlearn_many(
            self.fitter, self.classifier(), pairs, clean_pixels, validation, test, search, grid, rounds
        )

    # ------------------------------------------------------------------ publishing
    def save_pretrained(self, output_dir, result: UnlearningResult, **options) -> os.PathLike:
        """The sanitized CLIPModel folder with report, plot and card, behind the safety gate (``overwrite``,
        ``force``, ``max_asr``, ``min_ca_retention``, extra report fields): :func:`~hf_tbar.reporting.report.save_sanitized`."""
        return save_sanitized(output_dir, self, result, **options)

    def save_adapter(self, output_dir, result: UnlearningResult, **options):
        """The sanitization as a PEFT LoRA adapter of the backdoored model (``mode="lora"``, variant ``plain``):
        :func:`~hf_tbar.reporting.adapter_folder.save_adapter_folder`."""
        return save_adapter_folder(output_dir, self, result, **options)

    def push_to_hub(self, repo_id: str, result: UnlearningResult, dry_run_dir=None, **push_options):
        """Push the sanitized folder as one Hub commit: :func:`~hf_tbar.reporting.publishing.push_result`."""
        return push_result(self, repo_id, result, dry_run_dir, **push_options)
