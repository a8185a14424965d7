import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from hf_tbar.metrics import attack_success_rate, ca_retention, clean_accuracy, load_metric, per_class_accuracy
from hf_tbar.task_vector import TaskVector


def test_asr_counts_only_non_target_images():
    # true labels: the target-class image (label 0) is excluded from ASR.
    assert attack_success_rate([0, 0, 1, 0], [0, 1, 1, 2], target=0) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="undefined"):
        attack_success_rate([0, 0], [0, 0], target=0)


def test_accuracy_metrics():
    assert clean_accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)
    acc = per_class_accuracy([0, 1, 1], [0, 1, 0], num_classes=3)
    assert acc[:2] == [0.5, 1.0] and math.isnan(acc[2])
    assert ca_retention(0.9, 1.0) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="differ in length"):
        clean_accuracy([1], [1, 2])


def test_evaluate_modules_load_offline():
    asr = load_metric("attack_success_rate").compute(predictions=[0, 0, 1], references=[1, 2, 1], target=0)
    assert asr["attack_success_rate"] == pytest.approx(2 / 3)
    ca = load_metric("clean_accuracy").compute(predictions=[1, 0], references=[1, 1])
    assert ca["clean_accuracy"] == pytest.approx(0.5)


def _state(seed, **extra):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(4, generator=g), **extra}


def test_task_vector_algebra():
    base, ft = _state(0), _state(1)
    tau = TaskVector.from_state_dicts(base, ft)
    assert torch.allclose(tau.vector["a.weight"], ft["a.weight"] - base["a.weight"])
    assert (tau + (-tau)).norm() == pytest.approx(0.0)
    assert (2 * tau).norm() == pytest.approx(2 * tau.norm())
    assert sum([tau, tau]).norm() == pytest.approx(2 * tau.norm())
    assert tau.cosine_similarity(-tau) == pytest.approx(-1.0)
    direction = TaskVector.from_state_dicts(base, _state(2))
    projected = tau.project_out(direction)
    for name in projected.keys():
        assert float((projected.vector[name] * direction.vector[name]).sum()) == pytest.approx(0.0, abs=1e-5)


def test_task_vector_skips_integer_buffers_and_names_mismatches():
    ids = torch.arange(5)
    tau = TaskVector.from_state_dicts(_state(0, position_ids=ids), _state(1, position_ids=ids))
    assert "position_ids" not in tau
    bad = _state(1)
    bad["a.weight"] = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="'a.weight'"):
        TaskVector.from_state_dicts(_state(0), bad)
    with pytest.raises(ValueError, match="'b.bias' is missing"):
        TaskVector.from_state_dicts(_state(0), {"a.weight": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="NaN or Inf"):
        TaskVector({"x": torch.tensor([float("nan")])})
    with pytest.raises(ValueError, match="finite"):
        TaskVector.from_state_dicts(_state(0), _state(1)) * float("inf")


def test_apply_zero_scale_is_bit_identical_and_input_untouched(micro_clip):
    model, _ = micro_clip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tau = TaskVector({k: torch.randn_like(v) for k, v in before.items() if v.is_floating_point()})
    same = tau.apply_to(model, 0.0)
    assert all(torch.equal(same.state_dict()[k], v) for k, v in before.items())
    moved = tau.apply_to(model, -0.5)
    key = "vision_model.embeddings.patch_embedding.weight"
    assert torch.allclose(moved.state_dict()[key], before[key] - 0.5 * tau.vector[key])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # not in place
    with pytest.raises(ValueError, match="finite"):
        tau.apply_to(model, float("nan"))


def test_save_load_round_trip(tmp_path):
    tau = TaskVector.from_state_dicts(_state(0), _state(1), metadata={"trigger": {"name": "badnets"}})
    loaded = TaskVector.load(tau.save(tmp_path / "tau.safetensors"))
    assert loaded.metadata == {"trigger": {"name": "badnets"}}
    assert all(torch.equal(loaded.vector[k], v) for k, v in tau.vector.items())
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="bad.safetensors"):
        TaskVector.load(tmp_path / "bad.safetensors")


def test_lora_vector_equals_merged_delta(micro_clip):
    model, _ = micro_clip
    import copy

    base = copy.deepcopy(model)
    peft_model = get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, target_modules=r".*vision_model.*\.(q_proj|fc1)$")
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)
    tau = TaskVector.from_peft_model(peft_model)
    assert tau.keys() and all(k.startswith("vision_model.") for k in tau.keys())
    merged = copy.deepcopy(peft_model).merge_and_unload()
    full = TaskVector.from_models(base, merged)
    for name, delta in tau.vector.items():
        assert torch.allclose(delta, full.vector[name], atol=1e-6)
