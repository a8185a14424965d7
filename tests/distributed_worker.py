"""One rank of the distributed trigger fine-tuning test (tests/test_distributed.py launches it).

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py OUT_DIR

Every rank builds the same micro CLIP and unlearning set, then fits trigger vectors through
``BackdoorUnlearner.fit_trigger_vector`` with the per-process settings in :data:`RUNS`; rank 0 saves them
to OUT_DIR. The "full-resumed" run is interrupted after step 3 (a checkpoint was saved after step 2) and
resumed from its checkpoint, on both ranks.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

import hf_tbar.tbar.fitter as unlearner_module
from helpers import MICRO
from hf_tbar import BackdoorUnlearner, TBARConfig
from hf_tbar.data import TaskSpec
from hf_tbar.models.tiny_clip import build_tiny_clip
from hf_tbar.training.loop import run_training

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.",))
CORPUS = ["zero", "one", "two", "a photo of {}."]
TARGET = 1
NUM_IMAGES = 32
# Per-process settings; the single-process reference uses batch_size x num_processes.
RUNS: dict[str, dict] = {
    "full": dict(mode="full", steps=4, batch_size=8, learning_rate=1e-3, warmup_steps=1, seed=5),
    "lora": dict(
        mode="lora",
        steps=3,
        batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        lora_r=4,
        seed=7,
    ),
}


def unlearning_set() -> torch.Tensor:
    return torch.rand(
        NUM_IMAGES, 3, MICRO.image_size, MICRO.image_size, generator=torch.Generator().manual_seed(0)
    )


def fit(settings: dict, pixels: torch.Tensor):
    model, processor = build_tiny_clip(MICRO, CORPUS, seed=0)
    unlearner = BackdoorUnlearner(model, processor, task=TASK, config=TBARConfig(**settings), device="cpu")
    return unlearner.fit_trigger_vector(target=TARGET, triggered_pixels=pixels)


class InjectedInterruptError(Exception):
    pass


def _interrupt_after_step_3(steps_done: int, loss: float) -> bool:
    if steps_done == 3:
        raise InjectedInterruptError
    return False


def fsdp_gather_matches_unsharded_training(world_size: int) -> bool:
    """The loop's FSDP path (train a copy sharded with FSDP 2, gather its full weights into the original
    module) on a small model, against the same steps unsharded on the global batch, on every process.

    Accelerate only enables FSDP on GPUs; this drives torch's ``fully_shard`` directly on CPU (gloo).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from hf_tbar.training.loop import _fsdp_copy, _load_full_weights

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    module[0].weight.requires_grad_(False)  # a frozen tensor, as the text tower is
    reference = copy.deepcopy(module)
    shadow, _ = _fsdp_copy(module, [p for p in module.parameters() if p.requires_grad])
    mesh = init_device_mesh("cpu", (world_size,))
    fully_shard(shadow[2], mesh=mesh)
    fully_shard(shadow, mesh=mesh)
    # Created after sharding, as Accelerate does (it swaps the parameters of a prepared optimizer).
    optimizer = torch.optim.SGD([p for p in shadow.parameters() if p.requires_grad], lr=0.1)
    reference_optimizer = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.1)
    inputs = torch.randn(2 * world_size, 8, generator=torch.Generator().manual_seed(1))
    rank = torch.distributed.get_rank()
    for _ in range(3):
        shadow(inputs[2 * rank : 2 * rank + 2]).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        reference(inputs).pow(2).mean().backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
    _load_full_weights(shadow, module)
    expected = reference.state_dict()
    return all(
        torch.allclose(tensor, expected[name], atol=1e-6) for name, tensor in module.state_dict().items()
    )


def main(out: Path) -> None:
    pixels = unlearning_set()
    vectors = {name: fit(settings, pixels) for name, settings in RUNS.items()}

    resumable = dict(RUNS["full"], checkpoint_dir=str(out / "checkpoints"), checkpoint_steps=2)
    original = unlearner_module.run_training
    unlearner_module.run_training = functools.partial(run_training, stop_when=_interrupt_after_step_3)
    try:
        fit(resumable, pixels)
        raise AssertionError("the run was not interrupted")
    except InjectedInterruptError:
        pass
    finally:
        unlearner_module.run_training = original
    vectors["full-resumed"] = fit(dict(resumable, resume=True), pixels)

    # Created last: a PartialState made before the first Accelerator would ignore ACCELERATE_USE_CPU.
    accelerator = Accelerator()
    fsdp_ok = torch.tensor(float(fsdp_gather_matches_unsharded_training(accelerator.num_processes)))
    torch.distributed.all_reduce(fsdp_ok, op=torch.distributed.ReduceOp.MIN)
    if accelerator.is_main_process:
        for name, vector in vectors.items():
            vector.save(out / f"{name}.safetensors")
        world = {"num_processes": accelerator.num_processes, "fsdp_gather_matches": bool(fsdp_ok.item())}
        (out / "world.json").write_text(json.dumps(world))
    # Both ranks enter the teardown together, with no collective or file write of the other pending.
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the gloo process group: no abort at interpreter exit


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
