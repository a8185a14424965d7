import pytest
import torch

from hf_tbar import BackdoorUnlearner, BadNets, TaskSpec, TBARConfig
from hf_tbar.unlearner import make_unlearning_set

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


def _unlearner(micro_clip, **config):
    model, processor = micro_clip
    return BackdoorUnlearner(
        model, processor, TASK, TBARConfig(steps=3, batch_size=8, unlearning_set_size=16, **config)
    )


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_trigger_finetuning_changes_vision_weights_only_and_leaves_input_untouched(micro_clip, mode):
    unlearner = _unlearner(micro_clip, mode=mode, learning_rate=1e-2)
    before = {k: v.clone() for k, v in unlearner.model.state_dict().items()}
    vector = unlearner.fit_trigger_vector(BadNets(), target=1, clean_pixels=torch.rand(20, 3, 32, 32))
    assert vector.norm() > 0
    changed = [k for k, v in vector.vector.items() if v.abs().sum() > 0]
    assert changed and all(k.startswith(("vision_model.", "visual_projection.")) for k in changed)
    assert all(torch.equal(unlearner.model.state_dict()[k], v) for k, v in before.items())
    assert vector.metadata["unlearning_set_size"] == 16 and vector.metadata["trigger"]["name"] == "badnets"


def test_fine_tuning_is_reproducible_for_a_seed(micro_clip):
    pixels = torch.rand(20, 3, 32, 32)
    a = _unlearner(micro_clip).fit_trigger_vector(BadNets(), 1, clean_pixels=pixels)
    b = _unlearner(micro_clip).fit_trigger_vector(BadNets(), 1, clean_pixels=pixels)
    assert all(torch.equal(a.vector[k], b.vector[k]) for k in a.keys())


def test_bad_unlearning_inputs_are_named(micro_clip):
    unlearner = _unlearner(micro_clip)
    with pytest.raises(ValueError, match="target class 5"):
        unlearner.fit_trigger_vector(BadNets(), 5, clean_pixels=torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="empty"):
        unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=torch.rand(0, 3, 32, 32))
    with pytest.raises(ValueError, match="carries no trigger"):
        make_unlearning_set(torch.ones(4, 3, 32, 32), BadNets(value=1.0), 0, 4)
    with pytest.raises(TypeError, match="CLIPModel"):
        BackdoorUnlearner(torch.nn.Linear(2, 2), micro_clip[1], TASK)
    with pytest.raises(ValueError, match="variant"):
        TBARConfig(variant="magic")


def test_tbar_removes_the_embedded_backdoor_and_keeps_clean_accuracy(badnets_scenario, tmp_path):
    """The embedded benchmark: ASR falls, CA holds, target class survives, report and folder are complete."""
    import json

    from transformers import CLIPModel

    from hf_tbar.scale_search import ScaleSearchConfig

    sc = badnets_scenario
    unlearner = BackdoorUnlearner(
        sc.backdoored_path, task=sc.task, config=TBARConfig(variant="target-preserving")
    )
    result = unlearner.unlearn(
        sc.trigger,
        sc.target,
        sc.train[0],
        sc.validation,
        sc.test,
        clean_labels=sc.train[1],
        search=ScaleSearchConfig(target_threshold=0.8),
    )
    assert result.before.attack_success_rate > 0.9
    assert result.after.attack_success_rate <= 0.05
    assert result.ca_retention >= 0.9
    assert result.after.target_class_accuracy >= 0.5 * result.before.target_class_accuracy
    out = unlearner.save_pretrained(tmp_path / "sanitized", result)
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["scale"] == result.selection.scale and report["after"]["attack_success_rate"] <= 0.05
    assert (out / "tbar_scale_sweep.png").stat().st_size > 0
    reloaded = CLIPModel.from_pretrained(out).eval()
    pixels = sc.test[0][:16]
    assert torch.equal(unlearner.classifier(reloaded)(pixels), unlearner.classifier(result.model)(pixels))


def test_push_to_hub_dry_run_writes_the_card_without_network(badnets_scenario, tmp_path, monkeypatch):
    import huggingface_hub

    from hf_tbar.scale_search import ScaleSearchConfig

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not create a Hub client")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    sc = badnets_scenario
    unlearner = BackdoorUnlearner(
        sc.backdoored_path, task=sc.task, config=TBARConfig(steps=10, unlearning_set_size=100)
    )
    result = unlearner.unlearn(
        sc.trigger, sc.target, sc.train[0], sc.validation, sc.test, search=ScaleSearchConfig(ca_threshold=0.9)
    )
    unlearner.push_to_hub("me/clip-clean", result, dry_run_dir=tmp_path / "staged", force=True)
    files = {p.name for p in (tmp_path / "staged").iterdir()}
    assert {"README.md", "model.safetensors", "config.json", "tbar_report.json"} <= files
