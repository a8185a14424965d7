"""Checkpointed trigger fine-tuning: an interrupted run resumes from its last Accelerate checkpoint and
ends with the same trigger vector, bit for bit, as an uninterrupted one."""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

import pytest
import torch

import hf_tbar.tbar.fitter as unlearner_module
from hf_tbar import BackdoorUnlearner, TaskVector, TBARConfig
from hf_tbar.data import TaskSpec
from hf_tbar.errors import InputError
from hf_tbar.training.checkpoints import STATE_NAME, CheckpointLoadError
from hf_tbar.training.loop import FinetuneConfig, run_training

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.",))
# 20 images, micro-batches of 8 (2 full batches an epoch, the rest dropped), accumulation 2: an optimizer
# step is one epoch, so resuming crosses epoch boundaries and restores the shuffle generator.
SETTINGS = dict(
    steps=6, batch_size=8, gradient_accumulation_steps=2, learning_rate=1e-3, warmup_steps=2, seed=3
)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, injected after a given optimizer step."""


def interrupt_after(step: int, seen: list[int]):
    def stop_when(steps_done: int, loss: float) -> bool:
        seen.append(steps_done)
        if steps_done == step:
            raise Interrupted(f"after step {step}")
        return False

    return stop_when


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def fit(micro_clip, pixels, mode: str = "full", **config) -> TaskVector:
    model, processor = micro_clip
    config = TBARConfig(mode=mode, **{**SETTINGS, **config})
    unlearner = BackdoorUnlearner(model, processor, task=TASK, config=config, device="cpu")
    return unlearner.fit_trigger_vector(target=1, triggered_pixels=pixels)


def assert_same(a: TaskVector, b: TaskVector) -> None:
    assert set(a.vector) == set(b.vector)
    for name, tensor in a.vector.items():
        assert torch.equal(tensor, b.vector[name]), name


def run_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("run-*"))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_interrupted_fine_tuning_resumes_to_the_same_vector(micro_clip, pixels, tmp_path, monkeypatch, mode):
    reference = fit(micro_clip, pixels, mode)
    ckpt = tmp_path / "ckpt"
    options = dict(checkpoint_dir=str(ckpt), checkpoint_steps=2, keep_checkpoints=2)

    seen: list[int] = []
    monkeypatch.setattr(
        unlearner_module, "run_training", functools.partial(run_training, stop_when=interrupt_after(5, seen))
    )
    with pytest.raises(Interrupted):
        fit(micro_clip, pixels, mode, **options)
    assert seen == [1, 2, 3, 4, 5]
    (run,) = run_dirs(ckpt)
    # Steps 2 and 4 were saved; 5 was not reached by a save. keep_checkpoints=2 keeps both.
    assert sorted(p.name for p in run.iterdir()) == ["run.json", "step-000002", "step-000004"]
    assert json.loads((run / "step-000004" / STATE_NAME).read_text())["step"] == 4
    assert (run / "step-000004" / "model.safetensors").is_file()

    seen.clear()
    monkeypatch.setattr(
        unlearner_module, "run_training", functools.partial(run_training, stop_when=interrupt_after(-1, seen))
    )
    resumed = fit(micro_clip, pixels, mode, resume=True, **options)
    assert seen == [5, 6], "the resumed run must start after the last checkpoint (step 4)"
    assert_same(resumed, reference)
    # keep_checkpoints=2: the final checkpoint (step 6) and step 4 remain.
    assert sorted(p.name for p in run.iterdir()) == ["run.json", "step-000004", "step-000006"]

    # Resuming a finished run trains nothing and gives the same vector again.
    seen.clear()
    again = fit(micro_clip, pixels, mode, resume=True, **options)
    assert seen == [] and run_dirs(ckpt) == [run]
    assert_same(again, reference)


def test_checkpointing_does_not_change_the_result(micro_clip, pixels, tmp_path):
    reference = fit(micro_clip, pixels)
    checkpointed = fit(micro_clip, pixels, checkpoint_dir=str(tmp_path), checkpoint_steps=1)
    assert_same(checkpointed, reference)
    (run,) = run_dirs(tmp_path)
    assert [p.name for p in run.glob("step-*")] == ["step-000006"]  # keep_checkpoints=1
    assert not list(run.glob("*.partial"))


def test_existing_checkpoint_needs_resume_and_other_runs_are_kept_apart(micro_clip, pixels, tmp_path):
    fit(micro_clip, pixels, checkpoint_dir=str(tmp_path))
    with pytest.raises(FileExistsError, match="pass resume=True"):
        fit(micro_clip, pixels, checkpoint_dir=str(tmp_path))
    # Another learning rate (or other data, weights, process count) is another run: its own folder,
    # trained from the start even with resume=True.
    other = fit(micro_clip, pixels, checkpoint_dir=str(tmp_path), resume=True, learning_rate=5e-4)
    assert len(run_dirs(tmp_path)) == 2
    assert_same(other, fit(micro_clip, pixels, learning_rate=5e-4))
    fit(micro_clip, pixels[:16], checkpoint_dir=str(tmp_path))
    assert len(run_dirs(tmp_path)) == 3


def test_an_interrupted_save_leaves_no_checkpoint_that_looks_complete(
    micro_clip, pixels, tmp_path, monkeypatch
):
    from accelerate import Accelerator

    save_state = Accelerator.save_state

    def interrupted_save(self, output_dir, **kwargs):
        save_state(self, output_dir, **kwargs)  # the files are written ...
        raise KeyboardInterrupt  # ... but Ctrl-C comes before the checkpoint is published

    monkeypatch.setattr(Accelerator, "save_state", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        fit(micro_clip, pixels, checkpoint_dir=str(tmp_path), checkpoint_steps=2)
    (run,) = run_dirs(tmp_path)
    assert [p.name for p in run.glob("step-*")] == ["step-000002.partial"]
    monkeypatch.undo()
    # resume finds no complete checkpoint: it trains from the start, replaces the partial folder.
    resumed = fit(micro_clip, pixels, checkpoint_dir=str(tmp_path), checkpoint_steps=2, resume=True)
    assert_same(resumed, fit(micro_clip, pixels))
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000006"]


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_tampered_checkpoint_is_never_unpickled_and_is_refused_naming_the_file(
    micro_clip, pixels, tmp_path
):
    fit(micro_clip, pixels, checkpoint_dir=str(tmp_path / "ckpt"), steps=2, checkpoint_steps=1)
    (checkpoint,) = run_dirs(tmp_path / "ckpt")[0].glob("step-*")
    marker = tmp_path / "pwned"
    code = pickle.dumps({"state": _CreatesFile(str(marker))})  # loads only with weights_only=False
    noise = bytes(range(256)) * 8
    for name in ("optimizer.bin", "random_states_0.pkl"):
        assert (checkpoint / name).is_file()
        original = (checkpoint / name).read_bytes()
        for payload in (code, noise):
            (checkpoint / name).write_bytes(payload)
            with pytest.raises(CheckpointLoadError) as caught:
                fit(micro_clip, pixels, checkpoint_dir=str(tmp_path / "ckpt"), steps=2, resume=True)
            message = str(caught.value)
            assert f"refused {checkpoint / name}: it is not a plain tensor checkpoint" in message
            assert "weights_only=False" not in message
            assert isinstance(caught.value, InputError) and caught.value.exit_code == 5
            assert not marker.exists(), f"unpickling {name} ran code"
        (checkpoint / name).write_bytes(original)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(checkpoint_steps=0), "checkpoint_steps must be a positive int"),
        (dict(keep_checkpoints=0), "keep_checkpoints must be a positive int"),
        (dict(resume=True), "resume=True needs a checkpoint_dir"),
        (dict(checkpoint_dir=""), "checkpoint_dir must be a folder path"),
        (dict(checkpoint_dir="ckpt", resume="yes"), "resume must be True or False"),
    ],
)
def test_checkpoint_settings_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(**changes)
    with pytest.raises(ValueError, match=message):
        TBARConfig(**changes)
