"""DECREE trigger inversion, the inverted trigger, target estimation and the ``scan`` sub-command."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPTextConfig, CLIPTextModel, HfArgumentParser

from helpers import MICRO
from hf_tbar.attacks import BadNets, trigger_from_dict
from hf_tbar.data.embedded import DIGIT_NAMES, DIGIT_TEMPLATES
from hf_tbar.detection import (
    DecreeConfig,
    InvertedTrigger,
    LambdaState,
    estimate_target,
    invert_trigger,
    mean_pairwise_cosine,
    update_lambda,
)
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip
from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head

FAST = dict(steps=12, batch_size=8, early_stop_patience=5)


@pytest.fixture(scope="module")
def tiny_clip():
    return build_tiny_clip(MICRO, ["zero", "one", "a photo of {}."])


@pytest.fixture(scope="module")
def clean_pixels():
    return torch.rand((16, 3, 32, 32), generator=torch.Generator().manual_seed(0))


def random_trigger(size: int = 32, seed: int = 0) -> InvertedTrigger:
    gen = torch.Generator().manual_seed(seed)
    return InvertedTrigger(
        mask=torch.rand((size, size), generator=gen), pattern=torch.rand((3, size, size), generator=gen)
    )


# --- InvertedTrigger --------------------------------------------------------------------------------


def test_inverted_trigger_applies_the_blend_exactly(clean_pixels):
    trigger = random_trigger()
    expected = (1 - trigger.mask) * clean_pixels + trigger.mask * trigger.pattern
    assert torch.equal(trigger(clean_pixels), expected)
    assert trigger(clean_pixels[:0]).shape == (0, 3, 32, 32)


def test_inverted_trigger_round_trips_through_json(clean_pixels):
    trigger = random_trigger()
    description = json.loads(json.dumps(trigger.to_dict()))
    assert description["name"] == "inverted"
    rebuilt = trigger_from_dict(description)
    assert isinstance(rebuilt, InvertedTrigger)
    assert torch.equal(rebuilt.mask, trigger.mask) and torch.equal(rebuilt.pattern, trigger.pattern)
    assert rebuilt == trigger and hash(rebuilt) == hash(trigger) and rebuilt != random_trigger(seed=1)
    assert torch.equal(rebuilt(clean_pixels), trigger(clean_pixels))
    assert "32x32" in rebuilt.describe()


def test_inverted_trigger_resizes_to_other_image_sizes():
    trigger = InvertedTrigger(mask=torch.full((8, 8), 0.25), pattern=torch.ones((3, 8, 8)))
    pixels = torch.zeros((2, 3, 24, 20))
    out = trigger(pixels)
    assert out.shape == pixels.shape
    assert torch.allclose(out, torch.full_like(out, 0.25))
    assert trigger.pl1 == pytest.approx(0.25) and trigger.mask_l1 == pytest.approx(3 * 64 * 0.25)


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"mask": torch.full((4, 4), 1.5), "pattern": torch.zeros((3, 4, 4))},
            ValueError,
            "mask must lie in",
        ),
        ({"mask": torch.zeros((4, 4)), "pattern": torch.zeros((3, 4, 5))}, ValueError, "(3, 4, 5)"),
        ({"mask": torch.zeros((3, 4, 4)), "pattern": torch.zeros((3, 4, 4))}, ValueError, "2 dimensions"),
        ({"mask": torch.zeros((4, 4))}, ValueError, "both a mask"),
        ({"pattern": torch.zeros((3, 4, 4))}, ValueError, "both a mask"),
        (
            {"mask": torch.full((4, 4), float("nan")), "pattern": torch.zeros((3, 4, 4))},
            ValueError,
            "non-finite",
        ),
    ],
)
def test_inverted_trigger_rejects_bad_parameters(params, error, message):
    with pytest.raises(error, match=re.escape(message)):
        InvertedTrigger(**params)


def test_inverted_trigger_built_from_a_seed_alone_is_a_deterministic_placeholder():
    from hf_tbar.attacks import build_trigger

    assert build_trigger("inverted", seed=3) == InvertedTrigger(seed=3) != InvertedTrigger(seed=4)
    assert InvertedTrigger(seed=3).size == (32, 32)


def test_inverted_trigger_saves_a_picture(tmp_path):
    path = random_trigger(16).save_png(tmp_path / "sub" / "trigger.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- pure pieces ------------------------------------------------------------------------------------


def test_lambda_goes_up_after_patience_successes_and_down_after_patience_failures():
    state = LambdaState(1e-3)
    for _ in range(4):
        state = update_lambda(state, True)
    assert state.value == 1e-3 and state.above == 4
    state = update_lambda(state, True)
    assert state.value == pytest.approx(5e-3) and state.above == 0
    state = update_lambda(state, False)  # a failure breaks the run of successes
    assert (state.above, state.below) == (0, 1)
    for _ in range(4):
        state = update_lambda(state, False)
    assert state.value == pytest.approx(1e-3) and state.below == 0


def test_lambda_stays_within_bounds():
    low = LambdaState(1e-7, below=4)
    assert update_lambda(low, False, min_value=1e-7).value == 1e-7
    high = LambdaState(1e5, above=4)
    assert update_lambda(high, True, max_value=1e5).value == 1e5
    assert update_lambda(LambdaState(1.0, above=1), True, multiplier=2.0, patience=2).value == 2.0


def test_mean_pairwise_cosine_excludes_the_diagonal():
    same = F.normalize(torch.ones((4, 3)), dim=-1)
    assert mean_pairwise_cosine(same).item() == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(3)).item() == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 1),
        ("steps", 0),
        ("lambda_multiplier", 1.0),
        ("cosine_threshold", 1.5),
        ("learning_rate", -1.0),
        ("detection_threshold", 0.0),
        ("eps", 1.0),
        ("init_lambda", 1e-9),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        DecreeConfig(**{field: value})


# --- inversion on a tiny random CLIP ----------------------------------------------------------------


def test_inversion_leaves_the_model_unchanged_and_is_deterministic(tiny_clip, clean_pixels):
    model, processor = tiny_clip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    model.train()
    try:
        first = invert_trigger(model, processor, clean_pixels, DecreeConfig(**FAST, cosine_threshold=-0.5))
        second = invert_trigger(model, processor, clean_pixels, DecreeConfig(**FAST, cosine_threshold=-0.5))
        assert model.training
        assert not model.text_model.embeddings.token_embedding.weight.requires_grad
        assert all(p.requires_grad for n, p in model.named_parameters() if "token_embedding" not in n)
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.text_model.embeddings.token_embedding.weight.requires_grad_(True)
        model.eval()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(first.trigger.mask, second.trigger.mask)
    assert torch.equal(first.trigger.pattern, second.trigger.pattern)
    assert first.pl1 == second.pl1 and first.steps == second.steps
    other = invert_trigger(
        model, processor, clean_pixels, DecreeConfig(**FAST, cosine_threshold=-0.5, seed=1)
    )
    assert not torch.equal(first.trigger.mask, other.trigger.mask)


def test_inversion_result_is_consistent(tiny_clip, clean_pixels):
    model, processor = tiny_clip
    result = invert_trigger(model, processor, clean_pixels, DecreeConfig(**FAST, cosine_threshold=-0.5))
    mask, pattern = result.trigger.mask, result.trigger.pattern
    assert mask.shape == (32, 32) and pattern.shape == (3, 32, 32)
    assert 0 <= mask.min() and mask.max() <= 1 and 0 <= pattern.min() and pattern.max() <= 1
    assert result.found and 1 <= result.steps <= FAST["steps"]
    assert result.pl1 == pytest.approx(float(mask.mean()), rel=1e-5)
    assert result.mask_l1 == pytest.approx(3 * float(mask.sum()), rel=1e-5)
    assert result.is_backdoored == (result.pl1 < result.threshold)
    report = json.loads(json.dumps(result.to_dict(include_trigger=True)))
    assert trigger_from_dict(report["trigger"]).size == (32, 32)
    assert isinstance(result.to_dict()["trigger"], str)


def test_unreachable_threshold_is_reported_as_not_found(tiny_clip, clean_pixels):
    model, processor = tiny_clip
    result = invert_trigger(
        model, processor, clean_pixels, DecreeConfig(steps=3, batch_size=4, cosine_threshold=1.0)
    )
    assert not result.found and not result.is_backdoored and result.steps == 3


def test_inversion_works_at_another_image_size():
    model, processor = build_tiny_clip(
        dataclasses.replace(MICRO, image_size=16), ["zero", "one", "a photo of {}."]
    )
    result = invert_trigger(model, processor, torch.rand((6, 3, 16, 16)), DecreeConfig(steps=3, batch_size=4))
    assert result.trigger.size == (16, 16)


@pytest.mark.parametrize(
    ("pixels", "error", "message"),
    [
        (torch.rand((0, 3, 32, 32)), ValueError, "at least 2 clean images"),
        (torch.rand((4, 3, 24, 24)), ValueError, "24x24 px but the model reads 32x32"),
        ((torch.rand((4, 3, 32, 32)) * 255).to(torch.uint8), TypeError, "torch.uint8"),
        (torch.rand((4, 3, 32, 32)) * 255, ValueError, "in [0, 1]"),
        (torch.rand((4, 32, 32)), ValueError, "(4, 32, 32)"),
    ],
)
def test_bad_images_are_rejected(tiny_clip, pixels, error, message):
    model, processor = tiny_clip
    with pytest.raises(error, match=re.escape(message)):
        invert_trigger(model, processor, pixels, DecreeConfig(**FAST))


def test_a_model_without_vision_tower_is_rejected(tiny_clip, clean_pixels):
    text_model = CLIPTextModel(
        CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(TypeError, match="CLIPTextModel"):
        invert_trigger(text_model, tiny_clip[1], clean_pixels, DecreeConfig(**FAST))


# --- target estimation ------------------------------------------------------------------------------


def test_estimate_target_reports_the_majority_class(tiny_clip, clean_pixels):
    model, processor = tiny_clip
    from hf_tbar.data.embedded import TaskSpec

    task = TaskSpec(classnames=("zero", "one"), templates=("a photo of {}.",))
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, task), processor
    )
    estimate = estimate_target(classifier, clean_pixels, BadNets(patch_size=8))
    predictions = classifier.predict(BadNets(patch_size=8)(clean_pixels))
    assert len(estimate.shares) == 2 and sum(estimate.shares) == pytest.approx(1.0)
    assert estimate.target == int(torch.bincount(predictions, minlength=2).argmax())
    assert estimate.flip_share == pytest.approx(float((predictions == estimate.target).double().mean()))
    assert json.loads(json.dumps(estimate.to_dict()))["target"] == estimate.target
    with pytest.raises(ValueError, match="at least one clean image"):
        estimate_target(classifier, clean_pixels[:0], BadNets())


# --- the embedded models (slow: uses, or trains, the cached tiny CLIPs) ----------------------------


def test_default_config_separates_the_embedded_clean_and_badnets_models(badnets_scenario):
    """DECREE with its default thresholds on the embedded pair: the clean model is not flagged, the backdoored
    one is, on the class of the attack; both verdicts rest on the embedded calibration (their recipe files)."""
    from hf_tbar.models.loading import load_model

    sc = badnets_scenario
    verdicts = {}
    for name, path in (("clean", sc.clean_path), ("badnets", sc.backdoored_path)):
        model, processor = load_model(path)
        pixels = sc.validation[0][:128]
        result = invert_trigger(model, processor, pixels, DecreeConfig(steps=150))  # ~10 s; separates already
        head = build_zero_shot_head(model, processor.tokenizer, sc.task)
        estimate = estimate_target(
            ZeroShotClassifier.from_processor(model, head, processor), pixels, result.trigger
        )
        verdicts[name] = (result.is_backdoored, estimate.target, result.calibration, result.pl1)
    assert not verdicts["clean"][0], verdicts
    assert verdicts["badnets"][:2] == (True, sc.target), verdicts
    assert verdicts["clean"][2] == verdicts["badnets"][2] == "embedded-tiny-clip"
    assert verdicts["badnets"][3] < verdicts["clean"][3]


# --- the scan sub-command ---------------------------------------------------------------------------


def test_scan_command_writes_a_report(tmp_path, capsys):
    from hf_tbar.cli import scan

    model, processor = build_tiny_clip(MICRO, [*DIGIT_NAMES, *DIGIT_TEMPLATES])
    save_clip(model, processor, tmp_path / "model")
    parser = HfArgumentParser(scan.DATACLASSES)
    args, data_args, detection, decree, model_args = parser.parse_args_into_dataclasses(
        args=[
            "--model",
            str(tmp_path / "model"),
            "--num_images",
            "8",
            "--output_dir",
            str(tmp_path / "out"),
            "--detection_steps",
            "3",
            "--batch_size",
            "4",
            "--force",  # a random micro model is at chance on the digits
        ]
    )
    assert scan.run(args, data_args, detection, decree, model_args) == 0
    printed = capsys.readouterr().out
    assert "verdict:" in printed and "decree: PL1" in printed
    report = json.loads((tmp_path / "out" / scan.REPORT_FILE).read_text())
    assert report["num_images"] == 8 and report["detection"]["decree"]["steps"] == 3
    decree_finding = next(f for f in report["findings"] if f["detector"] == "decree")
    assert 0 <= decree_finding["target"] < 10
    rebuilt = trigger_from_dict({"name": "inverted"}, path=tmp_path / "out" / decree_finding["trigger_file"])
    assert rebuilt.size == (32, 32)
