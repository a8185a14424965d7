"""The card's "How to reproduce" line: written by ``hf-tbar unlearn``, it parses back into the run's arguments;
an inverted trigger is a file in the folder, named by the report, never an inline mask."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import MICRO
from hf_tbar.cli import main, parse_command
from hf_tbar.cli.verify import report_trigger
from hf_tbar.data.examples import write_example_folder
from hf_tbar.detection import InvertedTrigger
from hf_tbar.detection.inverted import INVERTED_TRIGGER_FILE
from hf_tbar.errors import InputError
from hf_tbar.hub import PushConfig, build_model_card, load_report, prepare_push_folder
from hf_tbar.hub.reproduce import reproduce_command
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip
from hf_tbar.reporting.schema import TBARReport
from test_hub import make_report

TEMPLATE = "a photo of a {}."
#: Where the run's inputs lie, relative to the working folder: the placeholder a card writes for a local path
#: (``path/to/<base name>``), so that the command read back from the card names the same files.
INPUTS = Path("path/to")
NOT_COMPARED = ("output_dir", "overwrite")  # the card sets its own output folder


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """A micro CLIP, a three-colour imagefolder and a patch image under ``path/to/`` in a fresh working folder."""
    monkeypatch.chdir(tmp_path)
    model, processor = build_tiny_clip(MICRO, ["red", "green", "blue", TEMPLATE], seed=0)
    save_clip(model, processor, INPUTS / "my-clip")
    write_example_folder(INPUTS / "colours")
    Image.new("RGBA", (6, 6), (255, 0, 255, 255)).save(INPUTS / "patch.png")
    return tmp_path


def card_command(folder: Path) -> list[str]:
    """The words of the reproduce line of ``folder``'s card, after ``hf-tbar``."""
    card = (folder / "README.md").read_text()
    block = card.split("## How to reproduce", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert "\n" not in block  # one line
    words = shlex.split(block)
    assert words[:2] == ["hf-tbar", "unlearn"]
    return words[2:]


def assert_same_arguments(argv: list[str], reproduced: list[str]) -> None:
    """Both command lines parse into equal dataclasses, field by field (the output folder aside)."""
    original, parsed = parse_command("unlearn", argv), parse_command("unlearn", reproduced)
    assert [type(p) for p in parsed] == [type(p) for p in original]
    for ran, read_back in zip(original, parsed, strict=True):
        for field in dataclasses.fields(ran):
            if field.name not in NOT_COMPARED:
                assert getattr(read_back, field.name) == getattr(ran, field.name), field.name


def test_the_cards_command_parses_back_into_the_runs_arguments(inputs):
    argv = ["--model", "path/to/my-clip", "--dataset_name", "path/to/colours", "--target", "blue"]
    argv += ["--trigger", "image-patch", "--trigger_image", "path/to/patch.png"]
    argv += [
        "--trigger_position",
        "top-left",
        "--trigger_size",
        "4",
        "--attack_params",
        '{"margin": 1}',
        "--templates",
        TEMPLATE,
    ]
    argv += ["--ca_threshold", "0.3", "--target_threshold", "0.01", "--max_scale", "2.5"]
    argv += ["--steps", "2", "--unlearning_set_size", "8", "--batch_size", "4", "--learning_rate", "0.0005"]
    argv += ["--variant", "target-preserving", "--preserve_set_size", "3", "--seed", "3"]
    argv += ["--mode", "lora", "--lora_r", "2", "--lora_target_modules", "q_proj", "v_proj"]
    argv += ["--validation_fraction", "0.2", "--max_eval_samples", "5", "--data_seed", "1", "--force"]
    assert main(["unlearn", *argv, "--output_dir", "sanitized"]) == 0

    reproduced = card_command(inputs / "sanitized")
    assert reproduced[reproduced.index("--trigger_image") + 1] == "path/to/patch.png"
    assert str(inputs) not in " ".join(reproduced)  # never where the files were
    assert_same_arguments(argv, reproduced)
    report = load_report(inputs / "sanitized")
    assert report.command.options["max_scale"] == 2.5 and report.selection.max_scale == 2.5
    assert report.recipe.preserve_set_size == 3


def test_an_automatic_run_keeps_its_trigger_in_a_file_and_reruns_detection(inputs, monkeypatch):
    import hf_tbar.pipeline as pipeline

    runs, original = [], pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: runs.append(original(*a, **k)) or runs[-1])
    argv = ["--model", "path/to/my-clip", "--dataset_name", "path/to/colours", "--templates", TEMPLATE]
    argv += ["--trigger", "auto", "--detectors", "decree", "--decree_steps", "3", "--steps", "2"]
    # --force: a random micro CLIP is at chance, and nothing flags it; its inverted trigger is unlearned anyway
    argv += ["--unlearning_set_size", "8", "--ca_threshold", "0.3", "--target_threshold", "0.01", "--force"]
    assert main(["unlearn", *argv, "--output_dir", "sanitized"]) == 0
    folder = inputs / "sanitized"

    reproduced = card_command(folder)
    assert reproduced[reproduced.index("--trigger") + 1] == "auto" and "--attack_params" not in reproduced
    assert_same_arguments(argv, reproduced)
    card, report_text = (folder / "README.md").read_text(), (folder / "tbar_report.json").read_text()
    assert len(card) < 20_000 and '"mask":' not in report_text and "[[" not in card  # no inline tensor
    report = load_report(folder)
    assert report.trigger["file_name"] == INVERTED_TRIGGER_FILE and (folder / INVERTED_TRIGGER_FILE).is_file()
    assert f"]({INVERTED_TRIGGER_FILE})" in card
    removed = runs[0].result.trigger
    assert isinstance(removed, InvertedTrigger) and report_trigger(report, str(folder)) == removed
    staged = prepare_push_folder(folder, inputs / "to-push", PushConfig(repo_id="me/clip-clean", force=True))
    assert INVERTED_TRIGGER_FILE in staged  # published with the card that names it
    (folder / INVERTED_TRIGGER_FILE).write_bytes(InvertedTrigger(seed=9).to_safetensors())
    with pytest.raises(InputError, match="changed: its sha256"):
        report_trigger(report, str(folder))


def _inline_report(trigger: InvertedTrigger) -> dict:
    """A version-1 report of an unknown-trigger run: the inverted mask and pattern inline."""
    report = make_report("me/clip", trigger_source="decree", schema_version=1)
    report["selection"]["target_threshold"] = None  # written --target_threshold none
    return {**report, "trigger": trigger.to_dict()}


def test_an_old_report_with_an_inline_mask_still_reads_and_its_card_says_auto(tmp_path):
    trigger = InvertedTrigger(seed=2)
    report = TBARReport.from_dict(_inline_report(trigger))
    assert report_trigger(report, str(tmp_path)) == trigger  # rebuilt from the inline lists
    line = reproduce_command(report)
    assert "mask" not in line and len(line) < 1000
    args, *_, model_args, _ = parse_command("unlearn", shlex.split(line)[2:])
    assert args.trigger == "auto" and model_args.model == "me/clip" and args.target is None  # estimated again


def test_a_report_without_a_recorded_command_gets_a_line_that_parses():
    payload = make_report("/runs/backdoored", dataset="path-free-name")
    payload["data"] = {"dataset": "shots", "source": "imagefolder", "config": None, "data_seed": 2}
    payload["trigger"] = {"name": "image-patch", "file_name": "sticker.png", "sha256": "ab" * 32, "size": 4}
    payload["selection"] = {"ca_threshold": 0.9, "target_threshold": 0.5, "max_scale": 2.0}
    report = TBARReport.from_dict(payload)
    line = reproduce_command(report)
    args, data, config, search, _, model_args, _ = parse_command("unlearn", shlex.split(line)[2:])
    assert model_args.model == "path/to/backdoored" and data.dataset_name == "path/to/path-free-name"
    assert args.trigger == "image-patch" and args.trigger_image == "path/to/sticker.png"
    assert json.loads(args.attack_params) == {"sha256": "ab" * 32, "size": 4}
    assert (search.ca_threshold, search.target_threshold, search.max_scale) == (0.9, 0.5, 2.0)
    assert (data.data_seed, args.target, config.steps) == (2, "0", 30)
    assert "rebuilt from the report" in build_model_card(report).text
    free_form = {**payload, "data": {"unlearning_set": "captioned world (image-caption pairs)"}}
    assert "--dataset_name path-free-name" in reproduce_command(
        TBARReport.from_dict(free_form)
    )  # as the demo's


def test_inverted_trigger_files_are_checked_when_read(tmp_path):
    path = tmp_path / INVERTED_TRIGGER_FILE
    trigger = InvertedTrigger(mask=torch.full((4, 4), 0.5), pattern=torch.zeros((3, 4, 4)), seed=1)
    path.write_bytes(trigger.to_safetensors())
    assert InvertedTrigger.load(path, seed=1) == trigger
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=f"{INVERTED_TRIGGER_FILE}' is not an inverted trigger file"):
        InvertedTrigger.load(path)
    with pytest.raises(InputError, match="cannot read the inverted trigger file"):
        InvertedTrigger.load(tmp_path / "missing.safetensors")
