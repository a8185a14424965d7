"""Resumable training: Accelerate checkpoints of one run, saved every N steps and restored exactly.

Layout under ``checkpoint_dir``::

    run-<fingerprint>/          one folder per training run (config, data, weights, processes)
        run.json                what the fingerprint was computed from
        step-000010/            accelerator.save_state (weights as safetensors, optimizer, RNG states)
            hf_tbar_state.json  step, losses so far, LR scheduler and data position

A run is identified by a fingerprint of its optimisation settings, the number of processes, its data
(tensor datasets are hashed) and the module's starting weights, so two fine-tunings sharing a folder
(the trigger and the target-class vector of one TBAR run) never resume from each other's state.
A checkpoint is written to ``step-N.partial`` and renamed when every process has finished writing it:
an interrupted save leaves no folder that looks complete. Accelerate loads the optimizer, scheduler and
RNG files with ``torch.load(weights_only=True)``, so a tampered checkpoint cannot run code: a file that
does not load that way is refused with a :class:`CheckpointLoadError` naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import load
from accelerate.utils.constants import RNG_STATE_NAME
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..errors import InputError
from .arguments import NOT_COMPUTED, FinetuneConfig
from .batches import BatchStream

logger = logging.getLogger(__name__)

STATE_NAME = "hf_tbar_state.json"
RUN_NAME = "run.json"
_STEP = re.compile(r"step-(\d{6,})")
# The checkpointing and logging options do not change what is computed, so they are left out of a run's
# fingerprint.
CHECKPOINT_OPTIONS: tuple[str, ...] = NOT_COMPUTED


class CheckpointLoadError(InputError):
    """A training checkpoint file is refused: it does not load as plain tensors (tampered or corrupted)."""


def _refusal(file: Path, checkpoint: Path, err: BaseException) -> CheckpointLoadError:
    # Never the loader's own text: torch's suggests retrying with an unsafe setting.
    return CheckpointLoadError(
        f"refused {file}: it is not a plain tensor checkpoint, so it was not loaded ({type(err).__name__}; "
        f"the file is tampered or corrupted). Remove {checkpoint} to resume from an earlier checkpoint, "
        "or train from the start"
    )


def _unreadable_file(checkpoint: Path) -> Path | None:
    """The first file of ``checkpoint`` that does not load as plain tensors, with the loaders resume uses."""
    for file in sorted(checkpoint.iterdir()):
        if not file.is_file() or file.suffix not in (".bin", ".pkl", ".pt", ".pth", ".safetensors"):
            continue
        try:
            if file.suffix == ".safetensors":
                load_file(file)
            else:
                load(file, map_location="cpu")
        except Exception:
            return file
    return None


def _tensor_digest(tensors: list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in tensors:
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(data.tobytes())
    return digest.hexdigest()


def _dataset_digest(dataset: Dataset) -> str | None:
    if isinstance(dataset, TensorDataset):
        return _tensor_digest([(str(i), t) for i, t in enumerate(dataset.tensors)])
    return getattr(dataset, "_fingerprint", None)  # a datasets.Dataset's own fingerprint, if any


def describe_run(config: FinetuneConfig, module: nn.Module, dataset: Dataset, num_processes: int) -> dict:
    """What identifies a training run: settings, processes, data and starting weights (hashed)."""
    settings = {k: v for k, v in asdict(config).items() if k not in CHECKPOINT_OPTIONS}
    tensors = sorted([*module.named_parameters(), *module.named_buffers()], key=lambda item: item[0])
    return {
        "config": settings,
        "num_processes": num_processes,
        "dataset_size": len(dataset),
        "dataset_sha256": _dataset_digest(dataset),
        "weights_sha256": _tensor_digest(tensors),
        "trainable": sorted(name for name, p in module.named_parameters() if p.requires_grad),
    }


class RunCheckpoints:
    """Save and restore the Accelerate checkpoints of one training run.

    Args:
        config: The run's settings (``checkpoint_dir``, ``checkpoint_steps``, ``keep_checkpoints``,
            ``resume``).
        accelerator: The accelerator that prepared the module, optimizer and data loader (and nothing else).
        run: :func:`describe_run` of this run, computed before training.
    """

    def __init__(self, config: FinetuneConfig, accelerator: Accelerator, run: dict) -> None:
        self.config = config
        self.accelerator = accelerator
        self.run = run
        self.fingerprint = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:16]
        self.root = Path(config.checkpoint_dir).expanduser().resolve()
        self.folder = self.root / f"run-{self.fingerprint}"

    # ------------------------------------------------------------------ reading
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints of this run, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if _STEP.fullmatch(p.name) and (p / STATE_NAME).is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))

    def restore(self, batches: BatchStream, scheduler: Any) -> list[float]:
        """Load the newest checkpoint of this run, if any; return the per-step losses it had reached.

        Raises:
            FileExistsError: this run has checkpoints but ``config.resume`` is False.
            ValueError: the checkpoint's state file does not belong to this run.
            CheckpointLoadError: a file of the checkpoint does not load as plain tensors (names the file).
        """
        found = self.checkpoints()
        if not found:
            if self.config.resume:
                others = sorted(p.name for p in self.root.glob("run-*")) if self.root.is_dir() else []
                logger.warning(
                    "no checkpoint of this run in %s%s: training from the start",
                    self.root,
                    f" (other runs there: {others})" if others else "",
                )
            return []
        latest = found[-1]
        if not self.config.resume:
            raise FileExistsError(
                f"{latest} holds a checkpoint of this very run: pass resume=True (--resume) to continue it, "
                f"or remove {self.folder}"
            )
        state = json.loads((latest / STATE_NAME).read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{latest / STATE_NAME} belongs to run {state.get('fingerprint')!r}, not this one"
            )
        logger.info("resuming from %s (step %d of %d)", latest, state["step"], self.config.steps)
        # Accelerate only logs a random-state file it cannot load and carries on with other RNG states:
        # check it first (with the same weights_only loader), so that a resume is exact or fails.
        rng_file = latest / f"{RNG_STATE_NAME}_{self.accelerator.process_index}.pkl"
        if not rng_file.is_file():
            raise CheckpointLoadError(f"cannot resume from {latest}: {rng_file.name} is missing")
        try:
            load(rng_file)
        except Exception as err:
            raise _refusal(rng_file, latest, err) from None
        try:
            self.accelerator.load_state(str(latest))
        except Exception as err:
            unreadable = _unreadable_file(latest)
            if unreadable is None:
                raise
            raise _refusal(unreadable, latest, err) from None
        scheduler.load_state_dict(state["scheduler"])
        batches.load_state_dict(state["batches"])
        return [float(x) for x in state["losses"]]

    # ------------------------------------------------------------------ writing
    def due(self, step: int) -> bool:
        """Whether a checkpoint is saved after optimizer step ``step`` (1-based): every N, and the last."""
        return step % self.config.checkpoint_steps == 0 or step == self.config.steps

    def save(self, step: int, losses: list[float], batches: BatchStream, scheduler: Any) -> Path:
        """Save the state after ``step`` optimizer steps as ``step-N`` (atomically); prune old ones.

        Every process must call it (each writes its RNG state).
        """
        accelerator = self.accelerator
        final = self.folder / f"step-{step:06d}"
        partial = final.with_name(final.name + ".partial")
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)  # left by a save that was interrupted
            partial.mkdir(parents=True)
            run_file = self.folder / RUN_NAME
            if not run_file.is_file():
                run_file.write_text(json.dumps(self.run, indent=2, default=str) + "\n")
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {
                "fingerprint": self.fingerprint,
                "step": step,
                "losses": losses,
                "scheduler": scheduler.state_dict(),
                "batches": batches.state_dict(),
            }
            (partial / STATE_NAME).write_text(json.dumps(state) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            for old in self.checkpoints()[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("saved checkpoint %s", final)
        accelerator.wait_for_everyone()
        return final
