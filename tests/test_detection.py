"""Detection that judges a model against itself: the anomaly index, the verdict object, the detector registry
(contract over every registered detector), the calibration labels, and the bad inputs of issue #22."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from hf_tbar.data.embedded import TaskSpec
from hf_tbar.detection import (
    DETECTORS,
    DetectionConfig,
    Finding,
    ScanVerdict,
    anomaly_indices,
    detect,
    model_world,
)
from hf_tbar.detection.anomaly import smallest_outlier
from hf_tbar.detection.calibration import RECIPE_FILE, calibration_entry, load_calibrations
from hf_tbar.detection.class_inversion import ClassInversionConfig, invert_classes
from hf_tbar.errors import ConfigError, InputError
from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


# ----------------------------------------------------------------------------------- the anomaly index


def test_the_anomaly_index_on_constructed_sizes():
    # median 10, absolute deviations [8, 0, 1, 1, 2] -> MAD 1; the first class lies 8 / 1.4826 below
    indices = anomaly_indices([2.0, 10.0, 9.0, 11.0, 12.0])
    assert indices[0] == pytest.approx(8 / 1.4826)
    assert indices[1] == 0.0 and indices[2] == pytest.approx(1 / 1.4826) and indices[4] < 0
    assert smallest_outlier([2.0, 10.0, 9.0, 11.0, 12.0]) == (0, pytest.approx(8 / 1.4826))
    # no outlier: evenly spread sizes keep the smallest within 2
    assert max(anomaly_indices([1.0, 2.0, 3.0, 4.0, 5.0])) < 2
    # a zero spread: a class below the common size is infinitely anomalous, the others not at all
    assert anomaly_indices([1.0, 5.0, 5.0, 5.0]) == [math.inf, 0.0, 0.0, 0.0]
    # on log sizes: a quarter of the peers' size is the same outlier at any scale
    small = anomaly_indices([0.01, 0.04, 0.05, 0.03, 0.04], log_scale=True)
    large = anomaly_indices([10.0, 40.0, 50.0, 30.0, 40.0], log_scale=True)
    assert small == pytest.approx(large) and small[0] > 2
    assert (
        anomaly_indices([0.0, 1.0, 1.0, 2.0], log_scale=True)[0] > 2
    )  # a zero size stays finite and smallest


def test_the_anomaly_index_refuses_too_few_classes_and_non_numbers():
    with pytest.raises(ValueError, match="at least 3 classes, got 2"):
        anomaly_indices([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        anomaly_indices([1.0, float("nan"), 2.0])


# ------------------------------------------------------------------------------------------ the verdict


def finding(detector: str, value: float | None, threshold: float, direction: str, counts: bool = True, **kw):
    flagged = value is not None and (value > threshold if direction == "above" else value < threshold)
    defaults = {
        "statistic": "s",
        "threshold_source": "test",
        "calibrated": False,
        "counts": counts,
        "flagged": flagged,
        "target": 1,
        "target_name": "one",
        "num_images": 8,
        "seconds": 1.5,
    }
    return Finding(
        detector=detector, value=value, threshold=threshold, direction=direction, **{**defaults, **kw}
    )


def test_the_verdict_combines_only_findings_that_count_and_round_trips_json():
    decree = finding("decree", 0.001, 0.01, "below", counts=False, target=2)  # flagged, uncalibrated
    patch = finding("class-patch", 1.2, 2.0, "above")  # not flagged
    verdict = ScanVerdict([patch, decree], num_classes=3)
    assert not verdict.is_backdoored and verdict.verdict == "not flagged"
    assert "indicative only" in verdict.summary() and "decree" in verdict.summary()

    perturbation = finding("class-perturbation", 5.0, 2.0, "above", target=0, per_class={"0": 0.1, "1": 0.4})
    flagged = ScanVerdict([patch, perturbation, decree], num_classes=3)
    assert flagged.is_backdoored and flagged.winner.detector == "class-perturbation" and flagged.target == 0
    assert flagged.summary().startswith("verdict: backdoored (by class-perturbation; target class 0 'one')")

    payload = json.loads(json.dumps(flagged.to_dict()))
    assert payload["verdict"] == "backdoored" and payload["winner"] == "class-perturbation"
    assert [f["detector"] for f in payload["findings"]] == ["class-patch", "class-perturbation", "decree"]
    again = ScanVerdict.from_dict(payload)
    assert again == flagged and again.to_dict() == flagged.to_dict()
    with pytest.raises(ValueError, match="unknown key"):
        Finding.from_dict({**perturbation.to_dict(), "bogus": 1})


def test_the_winner_is_the_counted_flag_whose_trigger_works_best_then_furthest_past_its_threshold():
    weak = finding("class-patch", 2.5, 2.0, "above", target=1)
    strong = finding("class-perturbation", 8.0, 2.0, "above", target=2)
    assert ScanVerdict([weak, strong], 3).winner is strong  # no trigger measured: the margin decides
    assert ScanVerdict([weak, strong], 3).target == 2
    # a flag far past its threshold whose trigger barely works loses to one whose trigger does
    weak.trigger_success, strong.trigger_success = 0.9, 0.1
    assert ScanVerdict([weak, strong], 3).winner is weak
    assert "its trigger sends 90% there" in weak.summary()
    payload = json.loads(json.dumps(ScanVerdict([weak, strong], 3).to_dict()))
    assert payload["winner"] == "class-patch" and payload["findings"][0]["trigger_success"] == 0.9


# ------------------------------------------------------------------------------------------ detectors


@pytest.fixture
def micro_inputs(micro_clip):
    model, processor = micro_clip
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, TASK), processor
    )
    generator = torch.Generator().manual_seed(0)
    return model, processor, classifier, torch.rand(12, 3, 32, 32, generator=generator), torch.arange(12) % 3


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_registered_detector_keeps_the_contract(name, micro_inputs):
    """Any detector: a Finding naming itself, a threshold and its source, images and time, a class of the task,
    a trigger that stamps images; the model and the images are left untouched; the finding is JSON."""
    model, processor, classifier, pixels, labels = micro_inputs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    kept = pixels.clone()
    config = DetectionConfig(detectors=[name], detection_steps=3, detection_images=12)
    verdict = detect(model, processor, classifier, TASK, pixels, labels, config)
    (result,) = verdict.findings
    assert result.detector == name and result.threshold_source and result.num_images == 12
    assert result.seconds >= 0 and result.direction in ("above", "below")
    assert result.target is not None and 0 <= result.target < TASK.num_classes
    assert result.target_name == TASK.classnames[result.target]
    assert result.trigger is not None and result.trigger(pixels[:2]).shape == (2, 3, 32, 32)
    stamped = result.trigger(pixels[labels != result.target])
    with torch.no_grad():
        sent = (classifier(stamped).argmax(-1) == result.target).float().mean().item()
    assert result.trigger_success == pytest.approx(sent)  # measured on the images outside its class
    assert json.loads(json.dumps(result.to_dict()))["detector"] == name
    assert len(verdict.warnings) == 1 and "fewer than the 128" in verdict.warnings[0]  # 12 images
    assert verdict.warnings[0] in verdict.summary()
    assert ScanVerdict.from_dict(json.loads(json.dumps(verdict.to_dict()))).warnings == verdict.warnings
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert torch.equal(pixels, kept)


def test_with_two_classes_the_class_detectors_say_they_cannot_judge(micro_clip):
    model, processor = micro_clip
    task = TaskSpec(("zero", "one"), ("a photo of {}.",))
    classifier = ZeroShotClassifier.from_processor(
        model, build_zero_shot_head(model, processor.tokenizer, task), processor
    )
    pixels = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    config = DetectionConfig(detectors=["class-patch", "decree"], detection_steps=2)
    verdict = detect(model, processor, classifier, task, pixels, torch.arange(8) % 2, config)
    patch = verdict.findings[0]
    assert patch.value is None and not patch.flagged and "at least 3" in patch.note
    assert [f.detector for f in verdict.findings] == ["class-patch", "decree"]
    assert "class-patch" in verdict.summary() and "at least 3" in verdict.summary()


def test_class_inversion_finds_the_class_a_planted_shortcut_points_to():
    """A classifier that answers class 2 whenever the top-left pixel is bright: class 2's patch is tiny."""

    class Shortcut(torch.nn.Module):
        head = torch.zeros(4, 1)

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixels):
            mean = pixels.mean(dim=(1, 2, 3))
            corner = pixels[:, :, :2, :2].mean(dim=(1, 2, 3))
            logits = torch.stack([mean * 3, 2 - mean * 3, 40 * (corner - 0.9), 1 - mean], dim=1)
            return logits + 0 * self.weight

    noise = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pixels = torch.cat([noise[:16] * 0.5, noise[16:] * 0.8 + 0.1])  # dark images go to class 1, bright to 0
    labels = Shortcut()(pixels).argmax(-1)  # each class is inverted on the images not already sent there
    assert set(labels.tolist()) == {0, 1}
    result = invert_classes(Shortcut(), pixels, labels, ClassInversionConfig(steps=60, learning_rate=0.2))
    sizes = result.sizes()
    assert result.target == 2 and sizes[2] == min(sizes.values()) and result.indices is not None


# ---------------------------------------------------------------------------------------- calibration


def test_a_models_kind_comes_from_its_recipe_file_not_its_architecture(micro_clip, tmp_path):
    model, processor = micro_clip
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    model.config._name_or_path = str(folder)
    assert model_world(model) is None  # no recipe file: not a kind any benchmark measured
    (folder / RECIPE_FILE).write_text(json.dumps({"recipe": {"kind": "pretrain", "world": "digits@32"}}))
    assert model_world(model) == "digits@32"


def test_a_user_calibration_file_is_read_and_a_bad_one_is_named(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"worlds": {"faces@64": {"class-patch": {"threshold": 3.0}}}}))
    assert calibration_entry("faces@64", "class-patch", good) == {"threshold": 3.0}
    assert calibration_entry("faces@64", "class-patch") is None  # only with the file
    packaged = load_calibrations()
    assert packaged and all(calibration_entry(w, "class-patch") for w in packaged)
    assert all(calibration_entry(w, "class-patch", packaged=False) is None for w in packaged)
    assert load_calibrations(good, packaged=False) == {"faces@64": {"class-patch": {"threshold": 3.0}}}
    assert "faces@64" in load_calibrations(good)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="bad.json"):
        load_calibrations(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_calibrations(tmp_path / "missing.json")


def test_a_user_threshold_and_a_calibrated_one_are_said_apart(micro_inputs, tmp_path):
    model, processor, classifier, pixels, labels = micro_inputs
    fast = {"detectors": ["class-patch"], "detection_steps": 2}
    mine = detect(
        model, processor, classifier, TASK, pixels, labels, DetectionConfig(**fast, anomaly_threshold=1.5)
    )
    assert mine.findings[0].threshold == 1.5 and "set by the user" in mine.findings[0].threshold_source
    assert not mine.findings[0].calibrated
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    (folder / RECIPE_FILE).write_text(json.dumps({"recipe": {"world": "faces@64"}}))
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"worlds": {"faces@64": {"class-patch": {"threshold": 3.5}}}}))
    model.config._name_or_path = str(folder)
    measured = detect(
        model,
        processor,
        classifier,
        TASK,
        pixels,
        labels,
        DetectionConfig(**fast, calibration_file=str(calibration)),
    )
    assert measured.findings[0].threshold == 3.5 and measured.findings[0].calibrated
    assert "faces@64" in measured.findings[0].threshold_source


def test_bad_detection_settings_name_the_value():
    with pytest.raises(ConfigError, match="unknown detector"):
        DetectionConfig(detectors=["nope"])
    with pytest.raises(ConfigError, match="named twice"):
        DetectionConfig(detectors=["decree", "decree"])
    with pytest.raises(ConfigError, match="detection_images"):
        DetectionConfig(detection_images=1)
    with pytest.raises(ConfigError, match="anomaly_threshold"):
        DetectionConfig(anomaly_threshold=-1.0)
    assert DetectionConfig(detectors="decree,class-patch").detectors == ["decree", "class-patch"]
    assert dataclasses.replace(DetectionConfig(), detection_steps=5).decree_config().steps == 5
