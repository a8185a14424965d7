"""hf-tbar sanitize: one command from scan to a pushed (dry-run) folder, and a last line naming the stage."""

import json

import pytest

from helpers import MICRO
from hf_tbar.cli import main
from hf_tbar.data.examples import write_example_folder
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip


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
    """The whole chain with every detector (a few minutes on 2 cores: run with -m slow)."""
    out, staged = tmp_path / "sanitized", tmp_path / "to-push"
    argv = ["sanitize", "--attack", "badnets", "--output_dir", str(out), "--repo_id", "me/tiny-clean"]
    assert main([*argv, "--dry_run_dir", str(staged)]) == 0
    line = last_line(capsys.readouterr().out)
    assert line.startswith("hf-tbar sanitize: done: flagged by ") and str(staged) in line
    assert "ASR of the inverted trigger (not the attacker's)" in line
    report = json.loads((staged / "tbar_report.json").read_text())
    assert report["trigger_source"] == "inverted" and report["after"]["attack_success_rate"] <= 0.10


def test_a_clean_model_is_not_flagged_by_a_real_scan(badnets_scenario, tmp_path, capsys):
    """The embedded clean model, judged by the patch detector (self-relative) and DECREE (indicative by default) at
    their own budgets on 64 images: nothing flags it, and the verdict lists what ran."""
    argv = ["sanitize", "--model", str(badnets_scenario.clean_path), "--output_dir", str(tmp_path / "out")]
    argv += ["--detectors", "class-patch,decree", "--detection_images", "64"]
    assert main([*argv, "--repo_id", "me/x", "--dry_run_dir", str(tmp_path / "staged")]) == 7
    err = capsys.readouterr().err
    assert (
        "hf-tbar sanitize: error: stopped at scan (not flagged): no detector flagged the model"
        in last_line(err)
    )
    assert "class-patch: MAD anomaly index" in err and "decree: PL1" in err  # the findings, above the line
    assert not (tmp_path / "out").exists() and not (tmp_path / "staged").exists()


def test_a_model_at_chance_stops_before_any_work(tmp_path, capsys):
    data = write_example_folder(tmp_path / "colours").dataset_name
    model, processor = build_tiny_clip(MICRO, ["red", "green", "blue", "a photo of a {}."], seed=0)
    folder = save_clip(model, processor, tmp_path / "random-clip")
    argv = ["sanitize", "--model", str(folder), "--dataset_name", data, "--templates", "a photo of a {}."]
    assert main([*argv, "--output_dir", str(tmp_path / "out"), "--repo_id", "me/x"]) == 5
    line = last_line(capsys.readouterr().err)
    assert "stopped at check (model at chance)" in line and "near chance (33.3% with 3 classes)" in line
    assert not (tmp_path / "out").exists()


def test_a_model_that_fails_the_gate_stops_at_verify(badnets_scenario, tmp_path, capsys):
    """The embedded backdoored model, with a negation too small to remove anything (max_scale 0.02)."""
    argv = ["sanitize", "--attack", "badnets", "--trigger", "known", "--variant", "plain", "--max_steps", "2"]
    argv += ["--max_scale", "0.02", "--plateau_window", "0"]
    assert main([*argv, "--output_dir", str(tmp_path / "out"), "--repo_id", "me/x"]) == 3
    assert "error: stopped at verify (gate refused): " in last_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    assert main(["sanitize", "--dry_run_dir", str(tmp_path / "d")]) == 2
    assert "--dry_run_dir needs --repo_id" in capsys.readouterr().err
