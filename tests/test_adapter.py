"""The negated LoRA as a PEFT adapter: exact round trip, one-factor sign, size, card, bad input."""

import copy
import dataclasses
import json

import pytest
import torch
from peft import PeftModel

from helpers import MICRO
from hf_tbar import BackdoorUnlearner, BadNets, TaskSpec, TBARConfig
from hf_tbar.errors import ConfigError, OutputExistsError
from hf_tbar.models.tiny_clip import build_tiny_clip
from hf_tbar.reporting.negation_adapter import load_negation_adapter, save_negation_adapter
from hf_tbar.zeroshot import ZeroShotClassifier

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))
PIXELS = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def fitted(micro_clip):
    model, processor = micro_clip
    config = TBARConfig(mode="lora", steps=3, batch_size=8, unlearning_set_size=16, learning_rate=1e-2)
    unlearner = BackdoorUnlearner(model, processor, TASK, config)
    vector = unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=torch.rand(20, 3, 32, 32))
    return unlearner, vector


def logits(unlearner, model):
    return ZeroShotClassifier.from_processor(model, unlearner.head, unlearner.processor)(PIXELS)


def test_the_adapter_gives_the_sanitized_model_and_unload_gives_the_backdoored_one_back(fitted, tmp_path):
    unlearner, vector = fitted
    scale = 0.8
    info = save_negation_adapter(unlearner.model, vector.low_rank, scale, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert 0 < info.adapter_bytes < info.model_bytes and info.ratio == info.adapter_bytes / info.model_bytes
    sanitized = unlearner.apply(vector, scale)
    backdoored = copy.deepcopy(unlearner.model)
    before = {k: v.clone() for k, v in backdoored.state_dict().items()}
    with torch.no_grad():
        applied = load_negation_adapter(backdoored, tmp_path / "adapter")
        assert isinstance(applied, PeftModel)
        assert torch.allclose(logits(unlearner, applied), logits(unlearner, sanitized), atol=1e-4)
        # the sign sits in one factor: negation, not the addition that negating both factors would give
        added = unlearner.apply(vector, -scale)
        assert not torch.allclose(logits(unlearner, applied), logits(unlearner, added), atol=1e-3)
        restored = applied.unload()
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in before.items())


def test_a_zero_scale_adapter_changes_nothing_and_the_config_names_no_local_path(fitted, tmp_path):
    unlearner, vector = fitted
    save_negation_adapter(unlearner.model, vector.low_rank, 0.0, tmp_path / "zero")
    config = json.loads((tmp_path / "zero" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None and str(tmp_path) not in json.dumps(config)
    with torch.no_grad():
        applied = load_negation_adapter(copy.deepcopy(unlearner.model), tmp_path / "zero")
        assert torch.equal(logits(unlearner, applied), logits(unlearner, unlearner.model))


def test_bad_adapter_inputs_are_named(fitted, tmp_path):
    unlearner, vector = fitted
    with pytest.raises(ConfigError, match="scale must be a finite number >= 0, got -1"):
        save_negation_adapter(unlearner.model, vector.low_rank, -1, tmp_path / "a")
    save_negation_adapter(unlearner.model, vector.low_rank, 0.5, tmp_path / "a")
    with pytest.raises(OutputExistsError):
        save_negation_adapter(unlearner.model, vector.low_rank, 0.5, tmp_path / "a")
    wider, _ = build_tiny_clip(dataclasses.replace(MICRO, vision_width=64), ["zero", "one", "two"])
    with pytest.raises(ConfigError, match="does not fit this CLIPModel"):
        load_negation_adapter(wider, tmp_path / "a")
    full = BackdoorUnlearner(
        unlearner.model, unlearner.processor, TASK, TBARConfig(steps=2, batch_size=8, unlearning_set_size=8)
    ).fit_trigger_vector(BadNets(), 1, clean_pixels=torch.rand(10, 3, 32, 32))
    assert full.low_rank is None and (vector + vector).low_rank is None


def test_save_adapter_writes_the_gated_folder_with_a_peft_card(micro_clip, tmp_path):
    from huggingface_hub import ModelCard

    model, processor = micro_clip
    config = TBARConfig(
        mode="lora", steps=2, batch_size=8, unlearning_set_size=12, learning_rate=1e-2, variant="plain"
    )
    unlearner = BackdoorUnlearner(model, processor, TASK, config)
    labels = torch.arange(24) % 3
    result = unlearner.unlearn(
        BadNets(), 1, PIXELS.repeat(2, 1, 1, 1), (PIXELS.repeat(2, 1, 1, 1), labels), force=True
    )
    info = unlearner.save_adapter(tmp_path / "adapter", result, force=True)
    card = ModelCard.load(tmp_path / "adapter" / "README.md")
    assert card.data.library_name == "peft" and "peft" in card.data.tags
    assert "PeftModel.from_pretrained(backdoored" in card.text
    report = json.loads((tmp_path / "adapter" / "tbar_report.json").read_text())
    assert report["adapter"]["bytes"] == info.adapter_bytes and report["recipe"]["mode"] == "lora"


def test_cli_writes_the_adapter_and_pushes_it_as_a_peft_repo(tmp_path):
    """hf-tbar unlearn --adapter_dir, then hf-tbar push --adapter (a dry run): the staged card is PEFT's."""
    from huggingface_hub import ModelCard

    from hf_tbar.cli import main
    from hf_tbar.data.examples import write_example_folder
    from hf_tbar.models.tiny_clip import save_clip

    model, processor = build_tiny_clip(MICRO, ["red", "green", "blue", "a photo of a {}."], seed=0)
    folder = save_clip(model, processor, tmp_path / "my-clip")
    data = write_example_folder(tmp_path / "colours").dataset_name
    argv = [
        "unlearn",
        "--model",
        str(folder),
        "--dataset_name",
        data,
        "--target",
        "blue",
        "--trigger",
        "badnets",
    ]
    argv += ["--trigger_size", "4", "--templates", "a photo of a {}.", "--max_steps", "2", "--mode", "lora"]
    argv += ["--unlearning_set_size", "8", "--output_dir", str(tmp_path / "out"), "--force"]
    assert (
        main([*argv, "--adapter_dir", str(tmp_path / "ad")]) == 2
    )  # needs plain: the default is repair-preserving
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--variant", "plain", "--adapter_dir", str(tmp_path / "ad")]) == 0
    staged = tmp_path / "staged"
    push = ["push", "--sanitized_dir", str(tmp_path / "ad"), "--repo_id", "me/clip-negation", "--adapter"]
    assert main([*push, "--dry_run_dir", str(staged), "--force"]) == 0
    assert sorted(p.name for p in staged.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "tbar_report.json",
    ]
    card = ModelCard.load(staged / "README.md")
    assert (
        card.data.library_name == "peft"
        and 'PeftModel.from_pretrained(backdoored, "me/clip-negation")' in card.text
    )
    assert str(tmp_path) not in (staged / "adapter_config.json").read_text()
    not_adapter = [*push, "--force", "--dry_run_dir", str(tmp_path / "x")]
    not_adapter[2] = str(tmp_path / "out")  # the sanitized model folder, not an adapter
    assert main(not_adapter) == 5
