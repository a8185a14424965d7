"""hf-tbar sanitize: one command from scan to a pushed (dry-run) folder, and a last line naming the stage."""

import json

import pytest

from helpers import MICRO
from hf_tbar.cli import main
from hf_tbar.data.examples import write_example_folder
from hf_tbar.tiny_clip import build_tiny_clip, save_clip


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_sanitize_unlearns_a_given_trigger_and_stages_the_embedded_model(badnets_scenario, tmp_path, capsys):
    out, staged = tmp_path / "sanitized", tmp_path / "to-push"
    argv = ["sanitize", "--attack", "badnets", "--trigger", "known", "--output_dir", str(out)]
    assert main([*argv, "--repo_id", "me/tiny-clean", "--dry_run_dir", str(staged)]) == 0
    line = last_line(capsys.readouterr().out)
    assert line.startswith("hf-tbar sanitize: done: trigger given, ASR ") and str(staged) in line
    assert {"model.safetensors", "README.md", "tbar_report.json", "config.json"} <= {
        p.name for p in staged.iterdir()
    }
    report = json.loads((staged / "tbar_report.json").read_text())
    assert report["trigger_source"] == "known" and report["after"]["attack_success_rate"] <= 0.10


@pytest.mark.slow
def test_sanitize_scans_unlearns_and_stages_the_embedded_backdoored_model(badnets_scenario, tmp_path, capsys):
    """The whole chain with DECREE (about 2 minutes on 2 cores: run with -m slow)."""
    out, staged = tmp_path / "sanitized", tmp_path / "to-push"
    argv = ["sanitize", "--attack", "badnets", "--output_dir", str(out), "--repo_id", "me/tiny-clean"]
    assert main([*argv, "--dry_run_dir", str(staged)]) == 0
    line = last_line(capsys.readouterr().out)
    assert line.startswith("hf-tbar sanitize: done: flagged by DECREE, ASR ") and str(staged) in line
    assert {"model.safetensors", "README.md", "tbar_report.json", "config.json"} <= {
        p.name for p in staged.iterdir()
    }
    report = json.loads((staged / "tbar_report.json").read_text())
    assert report["trigger_source"] == "decree" and report["after"]["attack_success_rate"] <= 0.10


def test_a_clean_model_stops_at_the_scan(badnets_scenario, tmp_path, capsys):
    argv = ["sanitize", "--model", str(badnets_scenario.clean_path), "--output_dir", str(tmp_path / "out")]
    argv += ["--decree_steps", "30"]  # too few steps to shrink a trigger: a quick "not flagged"
    assert main([*argv, "--repo_id", "me/x", "--dry_run_dir", str(tmp_path / "staged")]) == 7
    assert "hf-tbar sanitize: error: stopped at scan (not flagged): DECREE did not flag" in last_line(
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "staged").exists()


def test_a_model_that_fails_the_gate_stops_at_verify(tmp_path, capsys):
    data = write_example_folder(tmp_path / "colours").dataset_name
    model, processor = build_tiny_clip(MICRO, ["red", "green", "blue", "a photo of a {}."], seed=0)
    folder = save_clip(model, processor, tmp_path / "random-clip")
    argv = [
        "sanitize",
        "--model",
        str(folder),
        "--dataset_name",
        data,
        "--trigger",
        "badnets",
        "--target",
        "blue",
    ]
    argv += ["--trigger_size", "4", "--templates", "a photo of a {}.", "--max_steps", "2"]
    argv += ["--unlearning_set_size", "8", "--ca_threshold", "0.01", "--target_threshold", "0.01"]
    assert main([*argv, "--output_dir", str(tmp_path / "out"), "--repo_id", "me/x"]) == 3
    assert "error: stopped at verify (gate refused): " in last_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    assert main(["sanitize", "--dry_run_dir", str(tmp_path / "d")]) == 2
    assert "--dry_run_dir needs --repo_id" in capsys.readouterr().err
