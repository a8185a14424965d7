import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from hf_tbar.attacks import (
    SIG,
    TRIGGERS,
    BadNets,
    Blended,
    WaNet,
    build_trigger,
    poison_dataset,
    trigger_from_dict,
)


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_every_registered_trigger_keeps_the_contract(name, size, tmp_path):
    """Each registered trigger, built by its ``example`` (which may write the files it needs)."""
    cls = TRIGGERS[name]
    trigger = cls.example(tmp_path, seed=3)
    assert isinstance(trigger, cls) and trigger.name == name
    pixels = torch.rand(5, 3, size, size, generator=torch.Generator().manual_seed(1))
    out = trigger(pixels)
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, pixels)
    assert torch.equal(out, cls.example(tmp_path, seed=3)(pixels))  # deterministic for a seed
    assert torch.equal(out[2:3], trigger(pixels[2:3]))  # vectorised == per image
    assert trigger(pixels[:2].double()).dtype == torch.float64
    description = json.loads(json.dumps(trigger.to_dict()))
    assert description["name"] == name
    rebuilt = trigger_from_dict(description)
    assert rebuilt == trigger and torch.equal(rebuilt(pixels), out)
    public = json.loads(json.dumps(trigger.public_dict()))
    for file_name, data in trigger.public_files().items():  # files a report keeps beside itself
        (tmp_path / file_name).write_bytes(data)
    named = {"path": str(tmp_path / public["file_name"])} if "file_name" in public else {}
    assert trigger_from_dict(public, **named) == trigger
    assert isinstance(trigger.describe(), str)


def test_seeded_triggers_differ_across_seeds():
    pixels = torch.rand(2, 3, 32, 32)
    assert not torch.equal(Blended(seed=0)(pixels), Blended(seed=1)(pixels))
    assert not torch.equal(WaNet(seed=0)(pixels), WaNet(seed=1)(pixels))


def test_badnets_stamps_only_its_patch():
    pixels = torch.zeros(1, 3, 32, 32)
    out = BadNets(patch_size=3)(pixels)
    assert out[..., 29:, 29:].eq(1).all() and out.sum() == 27


def test_default_badnets_at_32_px_is_the_classic_3x3_patch_bit_for_bit():
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = pixels.clone()
    expected[..., 29:32, 29:32] = 1.0
    assert torch.equal(BadNets()(pixels), expected)
    assert torch.equal(BadNets()(pixels), BadNets(patch_size=3)(pixels))
    # the explicit form at 32 px is exactly what older reports and cache keys recorded
    legacy = {"name": "badnets", "patch_size": 3, "margin": 0, "value": 1.0, "seed": 0}
    assert BadNets().resolved(32, 32).to_dict() == legacy
    assert trigger_from_dict(legacy) == BadNets(patch_size=3)
    assert torch.equal(trigger_from_dict(legacy)(pixels), expected)


def test_badnets_size_is_relative_to_the_input_unless_given_in_pixels():
    trigger = BadNets()
    assert trigger.pixel_size(32, 32) == 3 and trigger.pixel_size(224, 224) == 21  # 3/32 * 224 = 21
    assert trigger.pixel_size(16, 64) == 2 and BadNets(relative_size=0.001).pixel_size(32, 32) == 1
    out = trigger(torch.zeros(1, 3, 224, 224))
    assert out[..., 203:, 203:].eq(1).all() and out.sum() == 3 * 21 * 21
    assert BadNets(patch_size=16).pixel_size(224, 224) == 16 and BadNets(16).patch_size == 16
    assert trigger.describe(224) == "BadNets 21x21 px white patch (relative size 0.094 of 224 px)"
    assert "16x16 px" in BadNets(patch_size=16).describe(224)
    assert "3 px at 32 px, 21 px at 224 px" in trigger.describe()
    assert trigger.to_dict() == {
        "name": "badnets",
        "relative_size": 3 / 32,
        "margin": 0,
        "value": 1.0,
        "seed": 0,
    }
    for made in (BadNets(relative_size=0.25, margin=2), BadNets(patch_size=5, value=0.0)):
        assert trigger_from_dict(json.loads(json.dumps(made.to_dict()))) == made
    with pytest.raises(ValueError, match="not both"):
        BadNets(patch_size=4, relative_size=0.2)
    with pytest.raises(ValueError, match="relative_size"):
        BadNets(relative_size=0)
    with pytest.raises(ValueError, match="patch_size"):
        BadNets(patch_size=0)
    with pytest.raises(ValueError, match="does not fit images of 8x8"):
        BadNets(patch_size=9)(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(2, 32, 32), r"\(B, 3, H, W\)"),
        (torch.rand(2, 1, 32, 32), r"\(B, 3, H, W\)"),
        ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "floating-point"),
        (np.zeros((2, 3, 32, 32)), "torch.Tensor"),
    ],
)
def test_bad_images_are_rejected(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        BadNets()(bad)


def test_bad_parameters_and_names():
    with pytest.raises(ValueError, match="'trojan'"):
        build_trigger("trojan")
    with pytest.raises(ValueError, match="alpha"):
        Blended(alpha=1.5)
    with pytest.raises(TypeError, match="no parameter"):
        build_trigger("badnets", alpha=0.3)


def _toy_dataset(n=100, classes=4):
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [i % classes for i in range(n)]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=classes)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_poisoning_respects_rate_target_and_leaves_clean_rows():
    dataset = _toy_dataset()
    poisoned = poison_dataset(dataset, BadNets(patch_size=2), target=1, rate=0.1, seed=0)
    mask = np.array(poisoned["poisoned"])
    assert mask.sum() == 10
    labels = np.array(poisoned["label"])
    original = np.array(dataset["label"])
    assert (labels[mask] == 1).all() and (original[mask] != 1).all()
    assert (labels[~mask] == original[~mask]).all()
    i, j = int(np.flatnonzero(mask)[0]), int(np.flatnonzero(~mask)[0])
    assert np.asarray(poisoned[i]["image"])[-2:, -2:].min() == 255
    assert np.array_equal(np.asarray(poisoned[j]["image"]), np.asarray(dataset[j]["image"]))
    again = poison_dataset(dataset, BadNets(patch_size=2), target=1, rate=0.1, seed=0)
    assert again["poisoned"] == poisoned["poisoned"]


def test_sig_is_clean_label():
    dataset = _toy_dataset()
    poisoned = poison_dataset(dataset, SIG(), target=2, rate=0.1)
    mask = np.array(poisoned["poisoned"])
    assert mask.sum() == 10 and (np.array(poisoned["label"])[mask] == 2).all()
    assert (np.array(dataset["label"])[mask] == 2).all()


@pytest.mark.parametrize("rate", [0, -0.1, 1.5])
def test_bad_rate_is_named(rate):
    with pytest.raises(ValueError, match="poisoning rate"):
        poison_dataset(_toy_dataset(), BadNets(), target=0, rate=rate)


def test_bad_target_and_empty_dataset():
    with pytest.raises(ValueError, match="target class 9"):
        poison_dataset(_toy_dataset(), BadNets(), target=9)
    with pytest.raises(ValueError, match="empty"):
        poison_dataset(_toy_dataset().select([]), BadNets(), target=0)


def test_per_attack_backdoor_recipes_merge_overrides_and_validate_the_stage():
    from hf_tbar.training.backdoor import BackdoorConfig
    from hf_tbar.training.recipes import ATTACK_RECIPES

    assert set(ATTACK_RECIPES) == {"badnets", "blended", "wanet", "sig"}
    wanet = BackdoorConfig.for_attack("wanet", {"grid_size": 8}, target=3, steps=5)
    assert wanet.trigger().strength == ATTACK_RECIPES["wanet"]["attack_params"]["strength"]
    assert wanet.trigger().grid_size == 8 and wanet.target == 3 and wanet.steps == 5
    assert BackdoorConfig.for_attack("sig").stage == "pretrain"
    assert BackdoorConfig.for_attack("badnets") == BackdoorConfig()
    with pytest.raises(ValueError, match="'later'"):
        BackdoorConfig(stage="later")
