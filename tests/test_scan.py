"""``hf-tbar scan`` on your own data, and how far its verdict can be trusted (the thresholds' calibration).

A micro CLIP and a tiny imagefolder (3 colours x 6 squares of 40x40 px) are written by the tests; the datasets
cache is redirected to a temporary folder. Every scan runs a handful of DECREE steps (a second or two).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from helpers import MICRO, write_imagefolder
from hf_tbar.cli import main, parse_command
from hf_tbar.cli import scan as scan_cli
from hf_tbar.data.arguments import DEFAULT_TEMPLATES
from hf_tbar.detection import (
    UNCALIBRATED_NOTE,
    DecreeConfig,
    calibration_for,
    invert_trigger,
    is_embedded_tiny_clip,
)
from hf_tbar.errors import ConfigError, DataError
from hf_tbar.tiny_clip import TinyCLIPConfig, build_tiny_clip, save_clip

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}
CLASSNAMES = ("blue", "green", "red")  # imagefolder sorts the class folders
CORPUS = [*COLOURS, *DEFAULT_TEMPLATES]
FAST = ["--steps", "4", "--batch_size", "4", "--early_stop_patience", "2"]


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


def test_scan_uses_the_dataset_and_marks_an_uncalibrated_verdict(
    micro_folder, image_folder, tmp_path, capsys
):
    out = tmp_path / "scan"
    argv = scan_argv(micro_folder, image_folder, "--split", "train", "--num_images", "8")
    assert main([*argv, "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    text = (out / scan_cli.REPORT_FILE).read_text()
    report = json.loads(text)
    assert (out / scan_cli.PICTURE_FILE).stat().st_size > 0

    # the dataset's classes, split and a seeded random subset of it; names only, no local paths
    assert report["target"]["class_name"] in CLASSNAMES and len(report["target"]["shares"]) == 3
    assert report["dataset"]["dataset"] == "colour_squares" and report["dataset"]["source"] == "imagefolder"
    assert report["split"] == "train" and report["dataset"]["splits"]["train"]["rows"] == 12
    assert report["num_images"] == 8 and report["rows"] == scan_cli.choose_rows(12, 8, seed=0)
    assert report["model"] == {"kind": "local", "name": "micro-clip"}
    for folder in (tmp_path, image_folder.parent, micro_folder.parent):
        assert str(folder) not in text

    # default thresholds on a model they were not calibrated on: said in words, in the report and the CLI
    assert report["calibration"] == report["decree"]["calibration"] == "uncalibrated"
    assert report["verdict"].endswith("(uncalibrated)") and report["calibration_note"] == UNCALIBRATED_NOTE
    assert f"verdict: {report['verdict']} - PL1" in printed
    assert "calibrated on hf_tbar's embedded tiny CLIP only" in printed and "indicative" in printed
    assert repr(report["target"]["class_name"]) in printed


def test_scan_defaults_to_the_validation_split_and_caps_at_its_size(micro_folder, image_folder):
    args, data_args, config = parse_command("scan", scan_argv(micro_folder, image_folder)[1:])
    assert (args.split, args.num_images, data_args.data_seed) == ("validation", 256, 0)
    result, estimate, report = scan_cli.scan(args, data_args, config)
    carved = report["dataset"]["splits"]["validation"]
    assert carved["carved_from_train"] and report["num_images"] == carved["rows"] == 3
    assert report["rows"] == [0, 1, 2] and 0 <= estimate.target < 3
    assert result.verdict == report["verdict"] and result.calibration == "uncalibrated"


def test_explicit_thresholds_make_a_user_calibrated_verdict(micro_folder, image_folder, capsys):
    argv = scan_argv(micro_folder, image_folder, "--split", "train", "--num_images", "6")
    assert main([*argv, "--detection_threshold", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert (
        "thresholds calibration: user" in printed
        and "(uncalibrated)" not in printed
        and "note:" not in printed
    )


def test_rows_are_a_seeded_random_subset():
    first = scan_cli.choose_rows(100, 10, seed=0)
    assert first == scan_cli.choose_rows(100, 10, seed=0) == sorted(set(first))
    assert first != list(range(10)) and first != scan_cli.choose_rows(100, 10, seed=1)
    assert scan_cli.choose_rows(3, 10, seed=0) == [0, 1, 2]


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "needle"), [({"split": "dev"}, "'dev'"), ({"num_images": 1}, "num_images")]
)
def test_bad_arguments_name_the_value(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        scan_cli.ScanArguments(model="x", **kwargs)


@pytest.mark.parametrize(
    ("extra", "code", "needles"),
    [
        (["--split", "dev"], 2, ["'dev'"]),
        (["--num_images", "1"], 2, ["num_images"]),
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


def test_the_embedded_tiny_clip_is_recognised_by_its_architecture(embedded_shape_clip):
    assert is_embedded_tiny_clip(embedded_shape_clip[0])
    assert not is_embedded_tiny_clip(build_tiny_clip(MICRO, CORPUS)[0])
    assert not is_embedded_tiny_clip(build_tiny_clip(TinyCLIPConfig(image_size=64), CORPUS)[0])
    tiny = TinyCLIPConfig()
    vision = CLIPVisionConfig(
        image_size=tiny.image_size,
        patch_size=tiny.patch_size,
        hidden_size=tiny.vision_width,
        intermediate_size=4 * tiny.vision_width,
        num_hidden_layers=tiny.vision_layers,
        num_attention_heads=tiny.vision_heads,
        projection_dim=tiny.projection_dim,
    )
    assert is_embedded_tiny_clip(CLIPVisionModelWithProjection(vision))
    vision.projection_dim = 32
    assert not is_embedded_tiny_clip(CLIPVisionModelWithProjection(vision))
    text = CLIPTextModel(
        CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    assert not is_embedded_tiny_clip(text)


def test_calibration_of_each_threshold_source(embedded_shape_clip):
    model, processor = embedded_shape_clip
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
