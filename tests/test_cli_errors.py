"""The CLI boundary: every sub-command turns a user mistake into one line and a distinct exit status."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MICRO
from hf_tbar.cli import COMMANDS, main
from hf_tbar.errors import (
    EXIT_INTERRUPTED,
    ConfigError,
    DataError,
    HfTbarError,
    InputError,
    OutputError,
    OutputExistsError,
)
from hf_tbar.io import check_output_dir
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if f"hf-tbar {command}: " in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def micro_folder(tmp_path: Path) -> Path:
    model, processor = build_tiny_clip(MICRO, ["zero", "one", "a photo of {}."], seed=0)
    return save_clip(model, processor, tmp_path / "micro-clip")


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["unlearn", "--trigger", "maybe"], 2, "'maybe'"),
        (["unlearn", "--attack_params", "{oops"], 2, "{oops"),
        (["unlearn", "--max_scale", "-1"], 2, "max_scale"),
        (["unlearn", "--mode", "half"], 2, "half"),
        (["demo", "--variant", "nope"], 2, "nope"),
        (["scan", "--model", "x", "--num_images", "1"], 2, "detection_images"),
        (
            ["unlearn", "--trigger", "badnets", "--detectors", "decree"],
            2,
            "--detectors configure the detectors",
        ),
        (["sanitize", "--trigger", "blended", "--decree_steps", "5"], 2, "--detection_steps"),
        (["unlearn", "--target_threshold", "often"], 2, "often"),
        (["push", "--sanitized_dir", "d", "--repo_id", "not a repo"], 2, "not a repo"),
        (["push", "--sanitized_dir", "d", "--repo_id", "me/x", "--max_asr", "2"], 2, "max_asr"),
        (
            ["arithmetic", "--base", "/nonexistent-base", "--finetuned", ".", "--output_dir", "o"],
            2,
            "/nonexistent-base",
        ),
        (
            ["arithmetic", "--base", ".", "--finetuned", ".", "--output_dir", "o", "--scale", "nan"],
            2,
            "scale",
        ),
        (["bench", "--seeds", "0"], 2, "seeds"),
        (["unlearn", "--no_such_flag", "1"], 2, "--no_such_flag"),
    ],
)
def test_bad_values_are_one_line_usage_errors(capsys, argv, code, needle):
    assert main(argv) == code
    line = _one_error_line(capsys, argv[0])
    assert line.startswith(f"hf-tbar {argv[0]}: error: ")
    assert needle in line


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["unlern"]) == 2
    assert "hf-tbar: error: unknown command 'unlern'" in capsys.readouterr().err


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "args.yaml"
    config.write_text("mode: full\nsteps: [1, 2\n")
    assert main(["unlearn", "--config", str(config)]) == 2
    line = _one_error_line(capsys, "unlearn")
    assert str(config) in line and "not valid YAML at line" in line


def test_runtime_errors_map_to_their_exit_codes(tmp_path, capsys, micro_folder):
    missing = tmp_path / "no-such-folder"
    assert main(["push", "--sanitized_dir", str(missing), "--repo_id", "me/x", "--dry_run"]) != 0
    assert str(missing) in _one_error_line(capsys, "push")

    scan_out = micro_folder / "scan"  # inside the model: refused before the scan runs
    assert (
        main(["scan", "--model", str(micro_folder), "--output_dir", str(scan_out)]) == OutputError.exit_code
    )
    assert "inside the input" in _one_error_line(capsys, "scan")
    assert not scan_out.exists()

    out = tmp_path / "arith"
    again = [
        "arithmetic",
        "--base",
        str(micro_folder),
        "--finetuned",
        str(micro_folder),
        "--output_dir",
        str(out),
    ]
    assert main(again) == 0  # a zero vector is fine; the output now exists and holds files
    capsys.readouterr()
    assert main(again) == OutputError.exit_code
    assert "already exists" in _one_error_line(capsys, "arithmetic")


def test_unlearn_refuses_a_non_empty_output_before_any_work(tmp_path, capsys, monkeypatch):
    import hf_tbar.pipeline as common  # the pipeline loads the data and builds the model

    def must_not_run(*args, **kwargs):
        raise AssertionError("data were loaded or a model built before the output was checked")

    monkeypatch.setattr(common, "embedded_scenario", must_not_run)
    monkeypatch.setattr(common, "load_task_data", must_not_run)
    user_folder = tmp_path / "my-files"
    user_folder.mkdir()
    (user_folder / "thesis.tex").write_text("precious")
    assert main(["unlearn", "--output_dir", str(user_folder)]) == OutputExistsError.exit_code
    assert "--overwrite" in _one_error_line(capsys, "unlearn")
    assert (user_folder / "thesis.tex").read_text() == "precious"


def test_unlearn_refuses_checkpoints_inside_the_input_model(tmp_path, capsys, micro_folder):
    argv = ["unlearn", "--model", str(micro_folder), "--output_dir", str(tmp_path / "out")]
    assert main(argv + ["--checkpoint_dir", str(micro_folder / "ckpt")]) == OutputError.exit_code
    assert "inside the input" in _one_error_line(capsys, "unlearn")
    assert not (micro_folder / "ckpt").exists()


def test_debug_flag_and_env_show_the_traceback(tmp_path):
    env = {**os.environ, "HF_TBAR_DEBUG": "0"}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from hf_tbar.cli import main; sys.exit(main())",
        "push",
        "--sanitized_dir",
        str(tmp_path / "none"),
    ]
    cmd += ["--repo_id", "me/x", "--dry_run"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert quiet.returncode != 0 and "Traceback" not in quiet.stderr
    loud = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, env=env, check=False)
    assert loud.returncode == quiet.returncode and "Traceback" in loud.stderr
    env["HF_TBAR_DEBUG"] = "1"
    by_env = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert "Traceback" in by_env.stderr
    assert by_env.stderr.strip().splitlines()[-1].startswith("hf-tbar push: error: ")


def test_ctrl_c_exits_130_with_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, badnets_scenario):
    import hf_tbar.tbar.fitter as unlearner_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "sanitized"
    monkeypatch.setattr(unlearner_module, "run_training", interrupted)
    assert main(["unlearn", "--output_dir", str(out), "--steps", "1"]) == EXIT_INTERRUPTED
    assert "interrupted" in _one_error_line(capsys, "unlearn")
    assert not out.exists()


def test_ctrl_c_during_the_save_leaves_nothing_that_looks_complete(
    tmp_path, capsys, monkeypatch, badnets_scenario
):
    import hf_tbar.reporting.report as report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "sanitized"
    monkeypatch.setattr(report, "plot_sweep", interrupted)  # the last file of the folder
    argv = ["unlearn", "--output_dir", str(out), "--steps", "2", "--unlearning_set_size", "64"]
    assert main(argv + ["--target_threshold", "0.1", "--max_scale", "1", "--force"]) == EXIT_INTERRUPTED
    _one_error_line(capsys, "unlearn")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sanitized")]


def test_error_hierarchy_keeps_the_builtin_types():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, InputError)
    assert issubclass(OutputExistsError, FileExistsError) and issubclass(OutputError, HfTbarError)
    codes = {ConfigError.exit_code, InputError.exit_code, OutputError.exit_code}
    assert len(codes) == 3 and 1 not in codes


def test_check_output_dir_rules(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "a-file")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "a-file" / "below")
    with pytest.raises(OutputExistsError):
        check_output_dir(tmp_path)
    assert check_output_dir(tmp_path, overwrite=True) == tmp_path.resolve()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == (tmp_path / "empty").resolve()
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(OutputError, match="contains the input"):
        check_output_dir(tmp_path, [model], overwrite=True)
    assert not [p for p in tmp_path.iterdir() if "write-test" in p.name]


def test_new_output_folders_get_the_umask_permissions(tmp_path, micro_clip):
    old = os.umask(0o022)
    try:
        folder = save_clip(*micro_clip, tmp_path / "saved")
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_help(command, capsys):
    """``--help`` renders every field's help through argparse (a stray ``%`` in one breaks it)."""
    assert main([command, "--help"]) == 0
    assert f"usage: hf-tbar {command}" in capsys.readouterr().out
