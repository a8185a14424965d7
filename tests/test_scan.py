"""``hf-tbar scan`` on your own data, and how far its verdict can be trusted (the thresholds' calibration).

A micro CLIP and a tiny imagefolder (3 colours x 6 squares of 40x40 px) are written by the tests; the datasets
cache is redirected to a temporary folder. Every scan runs a handful of inversion steps (a second or two). The
micro CLIP is random, so it is at chance on the colours: the scans pass ``--force`` (the refusal itself is
tested below).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

from helpers import MICRO, write_imagefolder
from hf_tbar.cli import main, parse_command
from hf_tbar.cli import scan as scan_cli
from hf_tbar.data.arguments import DEFAULT_TEMPLATES
from hf_tbar.detection import UNCALIBRATED_NOTE, DecreeConfig, calibration_for, invert_trigger
from hf_tbar.detection.calibration import RECIPE_FILE
from hf_tbar.errors import ConfigError, DataError, ModelAtChanceError
from hf_tbar.models.tiny_clip import TinyCLIPConfig, build_tiny_clip, save_clip

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}
CLASSNAMES = ("blue", "green", "red")  # imagefolder sorts the class folders
CORPUS = [*COLOURS, *DEFAULT_TEMPLATES]
FAST = ["--detection_steps", "4", "--batch_size", "4", "--early_stop_patience", "2", "--force"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """imagefolder layout: 3 class folders x 6 PNG squares (one colour each, a white spot that moves)."""
    return write_imagefolder(tmp_path_factory.mktemp("data") / "colour_squares", list(COLOURS), 6, square)


def square(name: str, index: int) -> PILImage.Image:
    """One colour, with a white spot that moves with ``index``."""
    image = PILImage.new("RGB", (40, 40), COLOURS[name])
    image.paste((255, 255, 255), (index * 6, index * 6, index * 6 + 5, index * 6 + 5))
    return image


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory) -> Path:
    model, processor = build_tiny_clip(MICRO, CORPUS, seed=0)
    return save_clip(model, processor, tmp_path_factory.mktemp("models") / "micro-clip")


@pytest.fixture(scope="module")
def embedded_shape_clip():
    """A model with the embedded tiny CLIP's architecture (TinyCLIPConfig defaults), randomly initialised."""
    return build_tiny_clip(TinyCLIPConfig(), CORPUS, seed=0)


def scan_argv(model: Path, folder: Path, *extra: str) -> list[str]:
    return ["scan", "--model", str(model), "--dataset_name", str(folder), *FAST, *extra]


# ------------------------------------------------------------------------------------------ the scan


def test_scan_uses_the_dataset_and_says_what_each_detector_measured(
    micro_folder, image_folder, tmp_path, capsys
):
    out = tmp_path / "scan"
    argv = scan_argv(micro_folder, image_folder, "--split", "train", "--num_images", "8")
    assert main([*argv, "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    text = (out / scan_cli.REPORT_FILE).read_text()
    report = json.loads(text)

    # the dataset's classes, split and a seeded random subset of it; names only, no local paths
    assert report["dataset"]["dataset"] == "colour_squares" and report["dataset"]["source"] == "imagefolder"
    assert report["split"] == "train" and report["dataset"]["splits"]["train"]["rows"] == 12
    assert report["num_images"] == 8 and report["rows"] == scan_cli.choose_rows(12, 8, seed=0)
    assert report["model"] == {"kind": "local", "name": "micro-clip"}
    assert report["chance_accuracy"] == pytest.approx(1 / 3) and 0 <= report["clean_accuracy"] <= 1
    for folder in (tmp_path, image_folder.parent, micro_folder.parent):
        assert str(folder) not in text

    # one finding per detector, each with its statistic, threshold and the threshold's source
    names = [f["detector"] for f in report["findings"]]
    assert names == ["class-patch", "class-perturbation", "decree"]
    for found in report["findings"]:
        assert found["threshold_source"] and found["num_images"] == 8 and found["target_name"] in CLASSNAMES
        assert (out / found["trigger_file"]).stat().st_size > 0
    decree = report["findings"][2]
    # DECREE's default threshold on a model it was never calibrated on: it does not count, and says so
    assert not decree["counts"] and "uncalibrated" in decree["threshold_source"]
    assert report["verdict"] in ("backdoored", "not flagged") and printed.count("\n  ") >= 3
    assert f"verdict: {report['verdict']}" in printed and "indicative only" in printed


def test_scan_defaults_to_the_validation_split_and_caps_at_its_size(micro_folder, image_folder):
    parsed = parse_command("scan", scan_argv(micro_folder, image_folder)[1:])
    args, data_args, detection, decree, model_args = parsed
    assert (args.split, detection.detection_images, data_args.data_seed) == ("validation", 256, 0)
    assert model_args.model == str(micro_folder)
    verdict, report = scan_cli.scan(args, data_args, detection, decree, model_args=model_args)
    carved = report["dataset"]["splits"]["validation"]
    assert carved["carved_from_train"] and report["num_images"] == carved["rows"] == 3
    assert report["rows"] == [0, 1, 2] and verdict.to_dict()["findings"] == report["findings"]


def test_a_model_at_chance_is_refused_before_any_detection(micro_folder, image_folder, tmp_path, capsys):
    argv = [a for a in scan_argv(micro_folder, image_folder, "--split", "train") if a != "--force"]
    out = tmp_path / "scan"
    assert main([*argv, "--output_dir", str(out)]) == ModelAtChanceError.exit_code
    error = capsys.readouterr().err
    assert "near chance (33.3% with 3 classes)" in error and "--classnames" in error
    assert not out.exists()


def test_explicit_decree_thresholds_make_it_count(micro_folder, image_folder, capsys):
    argv = scan_argv(micro_folder, image_folder, "--split", "train", "--num_images", "6")
    assert main([*argv, "--detectors", "decree", "--detection_threshold", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "set by the user" in printed and "indicative only" not in printed


def test_rows_are_a_seeded_random_subset():
    first = scan_cli.choose_rows(100, 10, seed=0)
    assert first == scan_cli.choose_rows(100, 10, seed=0) == sorted(set(first))
    assert first != list(range(10)) and first != scan_cli.choose_rows(100, 10, seed=1)
    assert scan_cli.choose_rows(3, 10, seed=0) == [0, 1, 2]


# ----------------------------------------------------------------------------------------- bad input


def test_bad_arguments_name_the_value():
    with pytest.raises(ConfigError, match="'dev'"):
        scan_cli.ScanArguments(split="dev")


@pytest.mark.parametrize(
    ("extra", "code", "needles"),
    [
        (["--split", "dev"], 2, ["'dev'"]),
        (["--num_images", "1"], 2, ["detection_images"]),
        (["--max_eval_samples", "1"], DataError.exit_code, ["'validation'", "1 image", "at least 2"]),
    ],
)
def test_bad_inputs_are_one_line_errors(micro_folder, image_folder, capsys, extra, code, needles):
    assert main([*scan_argv(micro_folder, image_folder), *extra]) == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-tbar scan")]
    assert len(lines) == 1 and lines[0].startswith("hf-tbar scan: error: ")
    assert all(needle in lines[0] for needle in needles)


def test_a_missing_dataset_is_named(micro_folder, tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    assert main(scan_argv(micro_folder, missing)) == DataError.exit_code
    assert str(missing) in capsys.readouterr().err


# ------------------------------------------------------------------------------------- calibration


def test_the_embedded_calibration_is_recognised_by_recipe_not_architecture(embedded_shape_clip, tmp_path):
    """A model of the embedded tiny CLIP's exact shape is not the embedded model: only its recipe file says so."""
    model, processor = embedded_shape_clip
    default = DecreeConfig()
    assert calibration_for(model, default) == "uncalibrated"  # same architecture, no recipe: another model
    folder = tmp_path / "embedded"
    model.save_pretrained(folder)
    (folder / RECIPE_FILE).write_text(json.dumps({"recipe": {"kind": "pretrain", "world": "digits@32"}}))
    model.config._name_or_path = str(folder)
    assert calibration_for(model, default) == "embedded-tiny-clip"
    (folder / RECIPE_FILE).write_text(json.dumps({"recipe": {"kind": "pretrain", "world": "letters@48"}}))
    assert calibration_for(model, default) == "uncalibrated"


def test_calibration_of_each_threshold_source(embedded_shape_clip, tmp_path):
    model, processor = embedded_shape_clip
    model.save_pretrained(tmp_path / "embedded")
    (tmp_path / "embedded" / RECIPE_FILE).write_text(json.dumps({"recipe": {"world": "digits@32"}}))
    model.config._name_or_path = str(tmp_path / "embedded")
    micro = build_tiny_clip(MICRO, CORPUS)[0]
    default, paper, user = DecreeConfig(), DecreeConfig.paper(), DecreeConfig(detection_threshold=0.02)
    assert (default.cosine_threshold, default.detection_threshold) == (0.6, 0.01)  # resolved as before
    assert (paper.cosine_threshold, paper.detection_threshold) == (0.99, 0.1)
    assert calibration_for(model, default) == "embedded-tiny-clip"
    assert calibration_for(micro, default) == "uncalibrated"
    assert calibration_for(micro, paper) == calibration_for(model, paper) == "paper"
    assert calibration_for(micro, user) == calibration_for(model, user) == "user"
    assert calibration_for(micro, DecreeConfig.paper(cosine_threshold=0.9)) == "user"
    assert calibration_for(micro, DecreeConfig(cosine_threshold=0.6)) == "user"  # given, even if equal
    assert calibration_for(model, dataclasses.replace(default, steps=3)) == "embedded-tiny-clip"
    assert calibration_for(micro, dataclasses.replace(paper, seed=2)) == "paper"
    assert json.loads(json.dumps(default.to_dict()))["detection_threshold"] == 0.01

    pixels = torch.rand((6, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    fast = {"steps": 3, "batch_size": 4}
    result = invert_trigger(model, processor, pixels, DecreeConfig(**fast))
    assert result.calibration == "embedded-tiny-clip" and result.calibration_note is None
    assert result.verdict == ("backdoored" if result.is_backdoored else "not flagged")
    flagged = invert_trigger(model, processor, pixels, DecreeConfig(**fast, detection_threshold=1.0))
    assert flagged.calibration == "user" and flagged.is_backdoored  # the threshold comparison, unchanged
    assert flagged.verdict == "backdoored" and flagged.to_dict()["verdict"] == "backdoored"
    uncalibrated = dataclasses.replace(flagged, calibration="uncalibrated")
    assert uncalibrated.verdict == "backdoored (uncalibrated)" and uncalibrated.is_backdoored
    assert uncalibrated.to_dict()["calibration_note"] == UNCALIBRATED_NOTE
