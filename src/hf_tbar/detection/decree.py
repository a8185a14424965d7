"""DECREE (Feng et al., CVPR 2023): trigger inversion and backdoor detection on a CLIP image encoder.

From unlabelled clean images only, DECREE searches for the smallest mask ``m`` and a pattern ``p``
such that the stamped images ``x' = (1 - m) x + m p`` all land on (nearly) the same embedding. A
backdoored encoder has such a shortcut - its trigger - while a clean encoder needs to overwrite most
of the image. The normalised mask norm ``PL1 = |m|_1 / (H W 3)`` is the detection statistic.

:class:`DecreeConfig` and :class:`DecreeResult` live in :mod:`.decree_config` and are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.pixels import normalize_pixels, validate_pixels
from ..models import family_of
from .decree_config import UNCALIBRATED, DecreeConfig, DecreeResult, calibration_for
from .inverted import InvertedTrigger, logit_to_unit, unit_to_logit

logger = logging.getLogger(__name__)


# --- adaptive lambda ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LambdaState:
    """Weight of the mask penalty and the runs of consecutive steps above / below the cosine threshold."""

    value: float
    above: int = 0
    below: int = 0


def update_lambda(
    state: LambdaState,
    succeeded: bool,
    multiplier: float = 5.0,
    patience: int = 5,
    min_value: float = 1e-7,
    max_value: float = 1e5,
) -> LambdaState:
    """DECREE's lambda schedule, one step: a pure function of the previous state and this step's outcome.

    After ``patience`` consecutive successful steps (similarity above the threshold) lambda is multiplied
    by ``multiplier`` (shrink the mask harder); after ``patience`` consecutive failures it is divided
    (let the mask grow). The run that triggered a change restarts from zero. Lambda stays within
    ``[min_value, max_value]``: a change that would leave the range is skipped.
    """
    above, below = (state.above + 1, 0) if succeeded else (0, state.below + 1)
    value = state.value
    if above >= patience:
        value = value * multiplier if value * multiplier <= max_value else value
        above = 0
    elif below >= patience:
        value = value / multiplier if value / multiplier >= min_value else value
        below = 0
    return LambdaState(value=value, above=above, below=below)


# --- encoders -------------------------------------------------------------------------------------

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


def image_encoder(model: nn.Module) -> tuple[ImageEncoder, int]:
    """The L2-normalised image encoder of ``model`` and its input side in pixels.

    Accepts a model of any registered family (``CLIPModel``, ``SiglipModel``, possibly PEFT/Accelerate-
    wrapped) or CLIP's vision half :class:`~transformers.CLIPVisionModelWithProjection`.

    Raises:
        TypeError: the model has no registered image encoder (e.g. a ``CLIPTextModel``).
    """
    try:
        family = family_of(model)
    except TypeError:
        raise TypeError(
            f"DECREE needs an image encoder (CLIPModel, CLIPVisionModelWithProjection or SiglipModel), got "
            f"{type(model).__name__}, which has no vision tower"
        ) from None
    return family.image_encoder(model)


def check_clean_pixels(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """Validate clean ``[0, 1]`` images ``(B, 3, H, W)`` for a model that reads ``image_size`` px squares.

    Raises:
        TypeError: not a floating-point tensor (names the dtype).
        ValueError: fewer than 2 images, wrong shape or size (names both sizes), values outside ``[0, 1]``.
    """
    validate_pixels(pixels, "clean_pixels")
    if pixels.shape[0] < 2:
        raise ValueError(
            f"DECREE needs at least 2 clean images (its loss compares pairs), got {pixels.shape[0]}"
        )
    if tuple(pixels.shape[-2:]) != (image_size, image_size):
        height, width = pixels.shape[-2:]
        raise ValueError(
            f"clean_pixels are {height}x{width} px but the model reads {image_size}x{image_size} px images; "
            "resize them with the model's image processor"
        )
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"clean_pixels must be un-normalised pixels in [0, 1], got values in [{low:.4g}, {high:.4g}]"
        )
    return pixels


# --- inversion ------------------------------------------------------------------------------------


def mean_pairwise_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over all ordered pairs ``i != j`` of L2-normalised embeddings ``(B, D)``, B >= 2."""
    gram = embeddings @ embeddings.T
    count = embeddings.shape[0]
    return (gram.sum() - gram.diagonal().sum()) / (count * (count - 1))


def _batches(count: int, batch_size: int, generator: torch.Generator):
    """Endless index batches of exactly ``batch_size``: reshuffled every epoch, incomplete tails dropped."""
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


class _FrozenModel:
    """Context manager: eval mode and ``requires_grad=False`` on every parameter, both restored on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for param, _ in self.flags:
            param.requires_grad_(False)
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for param, flag in self.flags:
            param.requires_grad_(flag)
        self.model.train(self.training)


def invert_trigger(
    model: nn.Module, processor, clean_pixels: torch.Tensor, config: DecreeConfig | None = None
) -> DecreeResult:
    """Reverse-engineer a trigger of ``model``'s image encoder with DECREE, and give the detection verdict.

    The model is frozen during the search and left unmodified (its ``requires_grad`` flags and
    train/eval mode are restored); only the mask and pattern logits are optimised.

    Args:
        model: A CLIP model with a vision tower (see :func:`image_encoder`).
        processor: Its ``CLIPProcessor`` or image processor (for the mean/std normalisation).
        clean_pixels: Unlabelled clean images ``(N, 3, S, S)`` in ``[0, 1]``, ``N >= 2``, at the model's
            input side ``S``. They stay on their device; batches move to the model's device.
        config: Optimisation and detection settings.

    Returns:
        A :class:`DecreeResult` holding the trigger with the smallest mask among the steps whose
        similarity reached ``config.cosine_threshold``, its PL1 and the verdict.
    """
    config = config or DecreeConfig()
    encode, image_size = image_encoder(model)
    check_clean_pixels(clean_pixels, image_size)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else clean_pixels.device
    model_dtype = first.dtype if first is not None else torch.float32

    generator = torch.Generator().manual_seed(config.seed)
    mask_logit = unit_to_logit(torch.rand((image_size, image_size), generator=generator), config.eps)
    pattern_logit = unit_to_logit(torch.rand((3, image_size, image_size), generator=generator), config.eps)
    mask_logit = mask_logit.to(device).requires_grad_(True)
    pattern_logit = pattern_logit.to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=config.learning_rate, betas=(0.5, 0.9))

    batch_size = min(config.batch_size, clean_pixels.shape[0])
    batches = _batches(clean_pixels.shape[0], batch_size, generator)
    lam = LambdaState(config.init_lambda)
    best: tuple[torch.Tensor, torch.Tensor, float, float, int] | None = None
    stale, steps_run = 0, 0
    mask = pattern = None
    similarity_value = float("nan")

    with (
        _FrozenModel(model),
        tqdm(
            range(config.steps),
            desc="DECREE inversion",
            leave=False,
            disable=None,  # quiet unless a terminal
        ) as progress,
    ):
        for step in progress:
            batch = clean_pixels[next(batches)].to(device=device, dtype=torch.float32)
            mask = logit_to_unit(mask_logit, config.eps)
            pattern = logit_to_unit(pattern_logit, config.eps)
            stamped = (1.0 - mask) * batch + mask * pattern
            embeddings = encode(normalize_pixels(stamped, processor).to(model_dtype)).float()
            similarity = mean_pairwise_cosine(embeddings)
            mask_l1 = 3.0 * mask.sum()
            loss = -similarity + lam.value * mask_l1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            steps_run = step + 1
            similarity_value, l1_value = float(similarity.detach()), float(mask_l1.detach())
            succeeded = similarity_value >= config.cosine_threshold
            if succeeded and (best is None or l1_value < best[2]):
                best = (mask.detach().clone(), pattern.detach().clone(), l1_value, similarity_value, step)
                stale = 0
            elif succeeded:
                stale += 1  # only successful steps count: failing ones are still searching
            lam = update_lambda(
                lam,
                succeeded,
                config.lambda_multiplier,
                config.lambda_patience,
                config.min_lambda,
                config.max_lambda,
            )
            progress.set_postfix(
                cos=f"{similarity_value:.4f}",
                pl1=f"{l1_value / (3 * image_size**2):.4f}",
                lam=f"{lam.value:.1e}",
            )
            if best is not None and stale >= config.early_stop_patience:
                logger.info(
                    "DECREE: early stop at step %d (%d successful steps without a smaller mask)", step, stale
                )
                break

    if best is None:
        logger.warning(
            "DECREE: no step reached the cosine threshold %.4f in %d steps (last similarity %.4f); "
            "reporting the last trigger, the encoder is not flagged",
            config.cosine_threshold,
            steps_run,
            similarity_value,
        )
        best = (
            mask.detach(),
            pattern.detach(),
            float(3.0 * mask.detach().sum()),
            similarity_value,
            steps_run - 1,
        )
    best_mask, best_pattern, best_l1, best_similarity, best_step = best
    trigger = InvertedTrigger(
        mask=best_mask.cpu().clamp(0, 1), pattern=best_pattern.cpu().clamp(0, 1), seed=config.seed
    )
    found = best_similarity >= config.cosine_threshold
    pl1 = best_l1 / (3 * image_size**2)
    result = DecreeResult(
        trigger=trigger,
        mask_l1=best_l1,
        pl1=pl1,
        similarity=best_similarity,
        found=found,
        is_backdoored=bool(found and pl1 < config.detection_threshold),
        threshold=float(config.detection_threshold),
        steps=steps_run,
        best_step=best_step,
        final_lambda=lam.value,
        calibration=calibration_for(model, config),
    )
    logger.info(
        "DECREE: PL1 %.4f (threshold %.3f), similarity %.4f, %d steps -> %s",
        pl1,
        config.detection_threshold,
        best_similarity,
        steps_run,
        result.verdict,
    )
    if result.calibration == UNCALIBRATED:
        logger.warning("DECREE verdict uncalibrated: %s", result.calibration_note)
    return result
