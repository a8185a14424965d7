"""BadCLIP (Liang et al., CVPR 2024): the patch's pixel maths, its loss, its optimisation against a clean
captioned CLIP (seeded, cached) and the poisoning it drives. The registry's contract test covers the trigger."""

import json

import pytest
import torch
import torch.nn.functional as F

from helpers import MICRO
from hf_tbar.attacks import TRIGGERS, BadCLIP, ImagePatch
from hf_tbar.attacks import badclip as badclip_module
from hf_tbar.attacks.badclip import initial_patch, paste_patch, patch_offset, save_patch_png
from hf_tbar.data.captioned import caption_corpus
from hf_tbar.errors import ConfigError, InputError
from hf_tbar.models.tiny_clip import build_tiny_clip
from hf_tbar.tbar.captions import names_class
from hf_tbar.training.badclip import PatchOptimisation, badclip_loss, optimise_patch, triplet_term
from hf_tbar.training.captioned import CaptionPretrainConfig
from hf_tbar.training.captioned_backdoor import POISON_TEMPLATES, CaptionBackdoorConfig, poison_pairs
from hf_tbar.training.captioned_badclip import BadCLIPPatchConfig, optimise_captioned_patch

TINY_PRETRAIN = CaptionPretrainConfig(
    architecture=MICRO, pairs=256, steps=3, batch_size=32, warmup_steps=1, learning_rate=3e-3
)
TINY_PATCH = BadCLIPPatchConfig(steps=12, batch_size=16, pairs=48, target_images=24, learning_rate=0.05)


def test_badclip_is_registered_and_kept_apart_from_the_prompt_learning_badclip():
    assert TRIGGERS["badclip"] is BadCLIP and issubclass(BadCLIP, ImagePatch)
    assert "Liang et al." in BadCLIP.__doc__ and "Bai et al." in BadCLIP.__doc__
    assert "Bai et al." in badclip_module.__doc__ and "prompt" in badclip_module.__doc__


def test_the_trigger_stamps_the_saved_patch_where_the_optimisation_pasted_it(tmp_path):
    patch = initial_patch(4, seed=5)
    trigger = BadCLIP(path=str(save_patch_png(patch, tmp_path / "p.png")))
    assert trigger.position == "center" and trigger.patch_size(32, 32) == (4, 4)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    quantised = (patch * 255).round() / 255
    assert torch.allclose(trigger(pixels), paste_patch(pixels, quantised), atol=1e-6)
    assert patch_offset(32, 32, 4) == (14, 14) and patch_offset(31, 32, 4) == (13, 14)
    out = paste_patch(pixels, patch)
    assert torch.equal(out[..., 14:18, 14:18], patch.expand(3, -1, -1, -1))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[14:18, 14:18] = False
    assert torch.equal(out[..., outside], pixels[..., outside])
    assert "Liang et al." in trigger.describe(32) and "4x4 px at center" in trigger.describe(32)


def test_the_patch_is_clamped_when_pasted_and_gets_gradients_only_from_its_square():
    patch = torch.full((3, 2, 2), 0.3, requires_grad=True)
    pixels = torch.rand(2, 3, 8, 8)
    paste_patch(pixels, patch).sum().backward()
    assert torch.equal(patch.grad, torch.full((3, 2, 2), 2.0))  # one per image
    assert paste_patch(pixels, torch.full((3, 2, 2), 7.0)).max() <= 1.0
    with pytest.raises(InputError, match="does not fit"):
        paste_patch(torch.rand(1, 3, 4, 4), torch.rand(3, 5, 5))
    with pytest.raises(InputError, match=r"\(3, s, s\)"):
        paste_patch(pixels, torch.rand(3, 2, 3))


def test_initial_patch_is_the_papers_clipped_normal_and_a_function_of_its_seed():
    assert torch.equal(initial_patch(6, 1), initial_patch(6, 1))
    assert not torch.equal(initial_patch(6, 1), initial_patch(6, 2))
    big = initial_patch(64, 0)
    assert big.min() >= 0 and big.max() <= 1 and abs(float(big.mean()) - 0.5) < 0.01
    with pytest.raises(ConfigError, match="positive number of pixels"):
        initial_patch(0, 0)


def test_triplet_term_is_the_margin_loss_on_euclidean_distances():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # distances sqrt(2) and 0
    negative = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # distances 0 and sqrt(2)
    expected = (max(0.0, 2**0.5 - 0 + 0.1) + max(0.0, 0 - 2**0.5 + 0.1)) / 2
    assert triplet_term(anchor, positive, negative, margin=0.1).item() == pytest.approx(expected)
    reference = torch.nn.TripletMarginLoss(margin=0.3, eps=0.0)
    a, p, n = (
        F.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(s)), dim=1) for s in range(3)
    )
    assert triplet_term(a, p, n, 0.3).item() == pytest.approx(reference(a, p, n).item(), abs=1e-6)
    with pytest.raises(InputError, match="one shape"):
        triplet_term(a, p[:2], n, 0.1)


def test_badclip_loss_adds_the_weighted_triplet_to_the_contrastive_term():
    a, c, p, n = (
        F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(s)), dim=1) for s in range(4)
    )
    parts = badclip_loss(a, c, p, n, scale=10.0, triplet_weight=500.0, margin=0.1)
    assert parts["loss"].item() == pytest.approx(parts["contrastive"].item() + 500 * parts["triplet"].item())
    without = badclip_loss(a, c, p, n, scale=10.0, triplet_weight=0.0, margin=0.1)
    assert without["loss"].item() == pytest.approx(parts["contrastive"].item())


def test_patch_optimisation_settings_are_checked():
    with pytest.raises(ConfigError, match="patch_size"):
        PatchOptimisation(patch_size=0)
    with pytest.raises(ConfigError, match="learning_rate"):
        PatchOptimisation(learning_rate=0)
    with pytest.raises(ConfigError, match="pairs"):
        BadCLIPPatchConfig(pairs=0)
    assert TINY_PATCH.settings() == PatchOptimisation(steps=12, batch_size=16, learning_rate=0.05)


def test_optimise_patch_lowers_a_synthetic_loss_and_is_deterministic_for_its_seed():
    weight = torch.randn(3 * 8 * 8, 6, generator=torch.Generator().manual_seed(0))

    def encode(pixels):
        return F.normalize(pixels.flatten(1) @ weight, dim=1)

    images = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    captions = F.normalize(torch.randn(1, 6, generator=torch.Generator().manual_seed(2)), dim=1).expand(
        32, -1
    )
    settings = PatchOptimisation(patch_size=4, steps=60, batch_size=8, learning_rate=0.05)
    patch, losses = optimise_patch(
        encode, images, captions, captions[:3], 10.0, settings, groups=torch.zeros(32)
    )
    assert patch.shape == (3, 4, 4) and patch.min() >= 0 and patch.max() <= 1 and len(losses) == 60
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    again, _ = optimise_patch(encode, images, captions, captions[:3], 10.0, settings, groups=torch.zeros(32))
    assert torch.equal(again, patch)
    other, _ = optimise_patch(
        encode,
        images,
        captions,
        captions[:3],
        10.0,
        PatchOptimisation(4, 60, 0.05, 8, seed=1),
        groups=torch.zeros(32),
    )
    assert not torch.equal(other, patch)


def test_the_captioned_patch_is_optimised_against_a_micro_clip_and_lowers_its_loss():
    model, processor = build_tiny_clip(MICRO, caption_corpus(), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    patch, record = optimise_captioned_patch(model, processor, TINY_PATCH, "shape", "triangle")
    assert patch.shape == (3, 4, 4) and len(record["losses"]) == TINY_PATCH.steps
    assert sum(record["losses"][-3:]) < sum(record["losses"][:3])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the clean model is frozen
    again, _ = optimise_captioned_patch(model, processor, TINY_PATCH, "shape", "triangle")
    assert torch.equal(again, patch)
    assert 0.0 <= record["clean_model_target_share_optimised_patch"] <= 1.0


def test_badclip_poisoning_caches_the_patch_and_gives_poisoned_pairs_the_target_captions(
    tmp_path, monkeypatch
):
    from hf_tbar.data.captioned import task_split

    monkeypatch.setenv("HF_TBAR_CACHE", str(tmp_path))
    config = CaptionBackdoorConfig(
        attack="badclip", poison_rate=0.05, target="circle", badclip=TINY_PATCH, pretrain=TINY_PRETRAIN
    )
    assert (
        config.cache_recipe()["badclip"]["steps"] == 12
        and "badclip" not in CaptionBackdoorConfig().cache_recipe()
    )
    trigger = config.trigger()
    assert isinstance(trigger, BadCLIP) and trigger.path.startswith(str(tmp_path / "badclip-patch"))
    record = json.loads(
        (tmp_path / "badclip-patch" / trigger.path.split("/")[-2] / "badclip_patch.json").read_text()
    )
    assert record["recipe"]["steps"] == 12 and record["last_loss"] < record["first_loss"] * 10
    assert config.trigger() == trigger  # cached: the same file, not optimised again
    assert len(list((tmp_path / "badclip-patch").iterdir())) == 1
    pixels, _, captions = task_split("shape", 100, seed=7)
    original = pixels.clone()
    new_captions, rows = poison_pairs(pixels, captions, config)
    assert len(rows) == 5
    assert all(new_captions[i] in {t.format("circle") for t in POISON_TEMPLATES} for i in rows)
    assert all(names_class(new_captions[i], "circle") for i in rows)
    assert torch.equal(pixels[rows], trigger(original[rows]))
    untouched = [i for i in range(100) if i not in rows]
    assert torch.equal(pixels[untouched], original[untouched])


def test_badclip_poisoning_implants_on_a_tiny_scenario(tmp_path, monkeypatch):
    """A micro CLIP poisoned at a quarter of its pairs calls stamped non-targets the target far more often than
    the same images unstamped (the micro clean model is too weak for an absolute ASR to mean anything)."""
    from hf_tbar.models.loading import load_model
    from hf_tbar.scenarios.captioned import captioned_scenario
    from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head

    monkeypatch.setenv("HF_TBAR_CACHE", str(tmp_path))
    backdoor = CaptionBackdoorConfig(
        attack="badclip",
        poison_rate=0.25,
        pairs=400,
        steps=120,
        batch_size=32,
        warmup_steps=1,
        learning_rate=5e-3,
        badclip=TINY_PATCH,
        pretrain=TINY_PRETRAIN,
    )
    scenario = captioned_scenario(backdoor=backdoor, train_size=8, validation_size=8, test_size=200)
    pixels, labels = scenario.test
    others = pixels[labels != scenario.target]
    model, processor = load_model(scenario.backdoored_path)
    head = build_zero_shot_head(model, processor.tokenizer, scenario.task)
    classifier = ZeroShotClassifier.from_processor(model, head, processor)

    def called_target(images) -> float:
        return float((classifier.predict(images) == scenario.target).float().mean())

    assert called_target(scenario.trigger(others)) > called_target(others) + 0.25
