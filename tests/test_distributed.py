"""Trigger fine-tuning on 2 CPU processes (torchrun, gloo) matches one process with the same global batch.

Why the two runs should agree: Accelerate gives each of the N processes a DataLoader whose shuffle is
drawn from the same seeded generator (synchronised from rank 0 at every epoch), and process ``i`` takes
the ``i``-th per-process batch of each group of N (``BatchSamplerShard``). So N processes of
``batch_size`` B see, at every step, exactly the N x B images one process of ``batch_size`` N x B sees,
provided the dataset splits into whole global batches (32 images here). DDP averages the per-process
mean losses' gradients, which is the gradient of the mean over the global batch. The LR schedule is
stepped once per optimizer step by the loop itself (Accelerate's prepared scheduler would step it N times
per step), and the model is the same seeded copy on every process. What differs is the order of float
additions (two 8-image means then an all-reduce, against one 16-image mean): gradients agree to float32
rounding, and AdamW's ``m / sqrt(v)`` turns rounding-level differences in near-zero gradient entries into
differences of up to the learning rate per step on those entries. Hence the tolerance on the relative
norm of the difference (measured: 6e-4 for full fine-tuning, 2e-7 for LoRA), far below what a real
mistake gives (same per-process batch in one process: 0.24 and 0.32).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import distributed_worker as worker
from hf_tbar import TaskVector

TESTS = Path(__file__).parent
NUM_PROCESSES = 2
TOLERANCE = 5e-3


def relative_difference(a: TaskVector, b: TaskVector) -> float:
    assert set(a.vector) == set(b.vector)
    difference = sum(float(((a.vector[k] - b.vector[k]) ** 2).sum()) for k in b.vector)
    norm = sum(float((t**2).sum()) for t in b.vector.values())
    return (difference / norm) ** 0.5


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",  # gloo ranks on CPU (the Accelerator reads it)
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",  # a rank that crashes prints every thread's Python stack into the log
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={NUM_PROCESSES}",
    ]
    command += [str(TESTS / "distributed_worker.py"), str(tmp_path)]
    process = subprocess.Popen(
        command, env=env, cwd=TESTS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        # The single-process references, computed while the ranks start up.
        pixels = worker.unlearning_set()
        references = {
            name: worker.fit(dict(settings, batch_size=NUM_PROCESSES * settings["batch_size"]), pixels)
            for name, settings in worker.RUNS.items()
        }
        output, _ = process.communicate(timeout=300)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    log = output.decode(errors="replace")
    assert process.returncode == 0, log[-5000:]
    world = json.loads((tmp_path / "world.json").read_text())
    assert world["num_processes"] == NUM_PROCESSES
    # The FSDP path of the loop (train a sharded copy, gather it back) on 2 CPU ranks, see the worker.
    assert world["fsdp_gather_matches"]

    for name, reference in references.items():
        distributed = TaskVector.load(tmp_path / f"{name}.safetensors")
        assert relative_difference(distributed, reference) < TOLERANCE, name
        assert any(bool(t.abs().max() > 0) for t in distributed.vector.values())

    # Each rank saved its RNG state; the interrupted-then-resumed run equals the uninterrupted one exactly.
    (run,) = (tmp_path / "checkpoints").glob("run-*")
    (checkpoint,) = run.glob("step-*")
    assert {f"random_states_{rank}.pkl" for rank in range(NUM_PROCESSES)} <= {
        p.name for p in checkpoint.iterdir()
    }
    full = TaskVector.load(tmp_path / "full.safetensors")
    resumed = TaskVector.load(tmp_path / "full-resumed.safetensors")
    assert all(torch.equal(full.vector[k], resumed.vector[k]) for k in full.vector)


def test_a_multi_process_launch_that_accelerate_runs_as_one_process_is_refused(monkeypatch):
    # torchrun on a CPU-only machine without ACCELERATE_USE_CPU: every rank would train on its own.
    if "WORLD_SIZE" in os.environ:
        pytest.skip("the test session itself runs under a launcher")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=1"):
        worker.fit(worker.RUNS["full"], worker.unlearning_set())


EXAMPLES = TESTS.parent / "examples" / "accelerate"


@pytest.mark.parametrize(
    ("name", "distributed_type"),
    [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")],
)
def test_example_accelerate_configs_load(name, distributed_type):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(EXAMPLES / f"{name}.yaml")  # raises on unknown keys
    assert str(config.distributed_type).endswith(distributed_type)
    assert config.mixed_precision == "no" and not config.use_cpu
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "CLIPEncoderLayer"
        from transformers.models.clip import modeling_clip

        assert hasattr(modeling_clip, "CLIPEncoderLayer")
    if name == "deepspeed_zero2":
        assert config.deepspeed_config["zero_stage"] == 2
