"""One small Accelerate training loop shared by pretraining, backdooring and trigger fine-tuning.

It runs unchanged in one process or under ``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed ZeRO-2),
and can save Accelerate checkpoints every N steps and resume from them exactly (see :mod:`.checkpoints`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import ConfigError
from .arguments import FinetuneConfig
from .batches import BatchStream
from .checkpoints import RunCheckpoints, describe_run

logger = logging.getLogger(__name__)


def _schedule(config: FinetuneConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def plateaued(losses: list[float], window: int, tolerance: float, min_loss: float) -> bool:
    """Whether a loss curve has flattened: with ``window`` > 0 and at least two windows of losses, the mean of
    the last ``window`` losses is below ``min_loss``, or fell by less than ``tolerance`` (relative) from the mean
    of the ``window`` before. Windows smooth the noise of single batches.

    Args:
        losses: Loss per optimizer step, oldest first.
        window: Steps per window (0: never plateaued).
        tolerance: Relative fall, in ``[0, 1)``.
        min_loss: An absolute level counted as converged.
    """
    if window <= 0 or len(losses) < 2 * window:
        return False
    last = sum(losses[-window:]) / window
    before = sum(losses[-2 * window : -window]) / window
    return last < min_loss or before - last < tolerance * abs(before)


def run_training(
    module: nn.Module,
    parameters: list[nn.Parameter],
    dataset: Dataset,
    compute_loss: Callable[[nn.Module, tuple], torch.Tensor],
    config: FinetuneConfig,
    desc: str = "training",
    accelerator: Accelerator | None = None,
    stop_when: Callable[[int, float], bool] | None = None,
    optimizer_factory: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> list[float]:
    """Train ``parameters`` of ``module`` for ``config.steps`` optimizer steps, or fewer once the loss has
    plateaued (``config.plateau_window``, see :func:`plateaued`); returns the loss per step.

    The module is trained in place. Under ``accelerate launch`` / ``torchrun`` each process sees its
    shard of every global batch and gradients are averaged, so the global batch is
    ``batch_size x num_processes x gradient_accumulation_steps``: with the same seed, ``N`` processes
    of ``batch_size`` B follow the same trajectory as one process of ``batch_size`` ``N x B`` (the shuffle
    is drawn from one seeded generator shared by all processes, process ``i`` takes the ``i``-th slice
    of each global batch, and the LR schedule advances once per optimizer step whatever ``N``).
    The returned losses are averaged over processes.

    Under FSDP, whose parameters stay sharded over the processes, a copy of ``module`` is trained and
    the gathered full weights are loaded back into ``module`` on every process at the end; DeepSpeed
    ZeRO-2 keeps full parameters on each process and trains ``module`` itself.

    With ``config.checkpoint_dir``, the state (weights, optimizer, LR schedule, RNGs, data position) is
    saved every ``config.checkpoint_steps`` steps and after the last one; with ``config.resume`` a run
    continues from its newest checkpoint and ends exactly where an uninterrupted run would.

    Args:
        module: What the loss is computed through (wrapped by ``accelerator.prepare``).
        parameters: The trainable parameters; everything else should have ``requires_grad=False``.
        dataset: Map-style dataset of tensors (e.g. a ``TensorDataset``).
        compute_loss: ``(prepared_module, batch) -> scalar loss``.
        config: Optimisation settings.
        desc: Progress-bar label.
        stop_when: Optional ``(steps_done, step_loss) -> bool`` called after every optimizer step;
            ``True`` ends training early (e.g. once clean accuracy has collapsed). It must give the
            same answer on every process.
        optimizer_factory: Optional ``parameters -> optimizer`` replacing the default AdamW
            (``config.learning_rate``, ``config.weight_decay``); the schedule scales its learning rates.
    """
    if len(dataset) == 0:
        raise ValueError("cannot train on an empty dataset")
    if not parameters:
        raise ValueError("no trainable parameters were given")
    accelerator = accelerator or Accelerator(
        # Exactly gradient_accumulation_steps micro-batches per optimizer step, across epoch ends too: with
        # sync_with_dataloader, Accelerate also steps at the end of each epoch, which shifts every later
        # step off the loop's count (and a checkpoint would drop the gradients pending at its step).
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        mixed_precision=config.mixed_precision,
        **_tracking(config),
    )
    _check_launch(accelerator)
    if config.report_to:
        accelerator.init_trackers(re.sub(r"[^A-Za-z0-9_.-]+", "-", desc).strip("-") or "training")
    set_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=min(config.batch_size, len(dataset)),
        shuffle=True,
        drop_last=len(dataset) >= config.batch_size,
        generator=generator,
    )
    sharded = accelerator.distributed_type == DistributedType.FSDP
    trained, parameters = _fsdp_copy(module, parameters) if sharded else (module, parameters)
    if optimizer_factory is None:
        optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = optimizer_factory(parameters)
    # Not prepared: Accelerate would step it num_processes times per optimizer step (and DeepSpeed once
    # more); it is stepped here once per optimizer step and checkpointed with the run's state.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    checkpoints = None
    if config.checkpoint_dir is not None:
        run = describe_run(config, module, dataset, accelerator.num_processes)
        checkpoints = RunCheckpoints(config, accelerator, run)
    prepared, optimizer, loader = accelerator.prepare(trained, optimizer, loader)
    # FSDP clips over the whole prepared model (only the trainable parameters have gradients).
    clipped = list(prepared.parameters()) if sharded else parameters
    batches = BatchStream(loader, generator, accelerator.skip_first_batches)
    losses: list[float] = checkpoints.restore(batches, scheduler) if checkpoints else []
    prepared.train()
    bar = tqdm(  # disable=None: quiet when the output is not a terminal (logs, CI), one bar per machine
        total=config.steps,
        initial=len(losses),
        desc=desc,
        disable=None if accelerator.is_local_main_process else True,
        leave=False,
    )

    def done() -> bool:
        return len(losses) >= config.steps or plateaued(
            losses, config.plateau_window, config.plateau_tolerance, config.plateau_min_loss
        )

    started, first_step = time.perf_counter(), len(losses)
    stopped_early = False
    while not done():
        step_loss = 0.0
        for _ in range(config.gradient_accumulation_steps):
            with accelerator.accumulate(prepared):
                loss = compute_loss(prepared, next(batches))
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(clipped, config.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not optimizer.step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += _process_mean(accelerator, loss) / config.gradient_accumulation_steps
        losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}")
        finished = done()
        if len(losses) % config.logging_steps == 0 or finished:
            logger.info(
                "%s: step %d/%d, loss %.4f, %.2f s/step",
                desc,
                len(losses),
                config.steps,
                step_loss,
                (time.perf_counter() - started) / max(1, len(losses) - first_step),
            )
            if config.report_to:
                lr = scheduler.get_last_lr()[0]
                accelerator.log({"loss": step_loss, "learning_rate": lr}, step=len(losses))
        if checkpoints is not None and (finished or checkpoints.due(len(losses))):
            checkpoints.save(len(losses), losses, batches, scheduler)
        if stop_when is not None and stop_when(len(losses), step_loss):
            stopped_early = True
            break
    bar.close()
    if config.report_to:
        accelerator.end_training()
    prepared.eval()
    if sharded:
        _load_full_weights(prepared, module)
    accelerator.wait_for_everyone()
    if len(losses) < config.steps and not stopped_early:
        logger.info(
            "%s: stopped at step %d of at most %d: the loss plateaued (mean %.4f over the last %d steps)",
            desc,
            len(losses),
            config.steps,
            sum(losses[-config.plateau_window :]) / config.plateau_window,
            config.plateau_window,
        )
    else:
        logger.info("%s: %d steps, final loss %.4f", desc, len(losses), losses[-1])
    return losses


def _tracking(config: FinetuneConfig) -> dict:
    """``Accelerator`` arguments of ``config.report_to`` (none without trackers).

    Raises:
        ConfigError: a tracker named in ``report_to`` is not installed.
    """
    if not config.report_to:
        return {}
    from accelerate.tracking import get_available_trackers

    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    missing = [name for name in config.report_to if name != "all" and name not in available]
    if missing:
        raise ConfigError(
            f"report_to: {', '.join(missing)} is not installed (pip install {' '.join(missing)}); "
            f"installed trackers: {sorted(available) or 'none'}"
        )
    return {"log_with": list(config.report_to), "project_dir": config.logging_dir or "runs"}


def _fsdp_copy(module: nn.Module, parameters: list[nn.Parameter]) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of ``module`` for FSDP to shard in place, and the copy's counterparts of ``parameters``."""
    names = {id(param): name for name, param in module.named_parameters()}
    if any(id(param) not in names for param in parameters):
        raise ValueError("every trainable parameter must belong to the module")
    copy_ = copy.deepcopy(module)
    copied = dict(copy_.named_parameters())
    return copy_, [copied[names[id(param)]] for param in parameters]


def _load_full_weights(prepared: nn.Module, module: nn.Module) -> None:
    """Gather the FSDP-sharded trained weights (a collective: every process calls it) into ``module``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(prepared, options=StateDictOptions(full_state_dict=True))
    module.load_state_dict(state)


def _check_launch(accelerator: Accelerator) -> None:
    """Refuse to run one independent copy per process when a launcher started several."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"launched with WORLD_SIZE={launched} but Accelerate runs a single process (no usable device "
            "backend): each process would train on its own. On CPU, set ACCELERATE_USE_CPU=1 or use "
            "`accelerate launch --cpu`; and create no PartialState before the first Accelerator."
        )


def _process_mean(accelerator: Accelerator, loss: torch.Tensor) -> float:
    """The loss averaged over processes (each computed it on its slice of the global batch)."""
    loss = loss.detach().float()
    if accelerator.num_processes > 1:
        loss = accelerator.reduce(loss, reduction="mean")
    return loss.item()
