"""The results files' writer (hf_tbar.bench.results) and the docs' table renderer (hf_tbar.bench.render),
on synthetic files and repositories in tmp_path."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from dataclasses import dataclass, field

import pytest
from transformers import HfArgumentParser

from hf_tbar.bench import render, results
from hf_tbar.bench.results import CanonicalRun, Table

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(root, *args):
    return subprocess.run(
        ["git", "-C", str(root), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git repository with a benchmark script, a runs.yaml and one commit."""
    root = tmp_path / "repo"
    (root / "benchmarks").mkdir(parents=True)
    (root / "results").mkdir()
    (root / "benchmarks" / "fake.py").write_text("# a benchmark\n")
    (root / "results" / "runs.yaml").write_text(
        "runs:\n"
        "  fake:\n"
        "    command: python benchmarks/fake.py\n"
        "    approx_wall: 3 min\n"
        "  fake_big:\n"
        "    command: python benchmarks/fake.py --size 900 --attacks a b\n"
    )
    (root / "README.md").write_text("# doc\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


def fake_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--attacks", nargs="+", default=["a"])
    parser.add_argument("--output_dir", default="outputs/x")
    return results.add_results_arguments(parser)


def start(repo, argv):
    parser = fake_parser()
    args = parser.parse_args(argv)
    return results.start(repo / "benchmarks" / "fake.py", parser, args, argv, ignore=("output_dir",))


# --- tables -------------------------------------------------------------------------------------------


def test_table_refuses_ragged_rows_numbers_and_line_breaks():
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="formatted strings"):
        Table(["a"], [[0.5]])
    with pytest.raises(ValueError, match="line break"):
        Table(["a"], [["x\ny"]])


def test_table_from_markdown_reads_printed_tables():
    table = results.table_from_markdown(
        "intro line\n| model | ASR |\n|---|---|\n| a \\| b | 1.0% |\n| short |\n", notes="n"
    )
    assert table.columns == ["model", "ASR"]
    assert table.rows == [["a | b", "1.0%"], ["short", ""]]
    assert table.notes == "n"
    with pytest.raises(ValueError, match="more cells"):
        results.table_from_markdown("| a |\n|---|\n| 1 | 2 |")
    with pytest.raises(ValueError, match="not a markdown table"):
        results.table_from_markdown("no table here")


# --- writing ------------------------------------------------------------------------------------------


def test_write_results_holds_every_field_and_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "results" / "x.json"
    written = results.write_results(
        path,
        name="x",
        command="python benchmarks/x.py --a 1",
        tables={"main": Table(["a"], [["1.0%"]], notes="cells in %")},
        wall_s=12.345,
        raw={"rows": [{"v": float("nan"), "p": tmp_path, "t": (1, 2)}]},
        argv=["--a", "1"],
    )
    data = json.loads(written.read_text())
    for key in ("name", "command", "commit", "dirty", "date", "cores", "device", "wall_s", "tables", "raw"):
        assert key in data, key
    assert data["wall_s"] == 12.3 and data["argv"] == ["--a", "1"] and data["canonical"] is False
    assert data["raw"]["rows"][0] == {"v": None, "p": str(tmp_path), "t": [1, 2]}
    assert results.load_results(path)["tables"]["main"] == Table(["a"], [["1.0%"]], notes="cells in %")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        results.write_results(path, name="x", command="c", tables={"main": Table(["a"], [["2"]])}, wall_s=1)
    assert json.loads(path.read_text())["tables"]["main"]["rows"] == [["1.0%"]]  # the old file, whole
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left


def test_write_results_refuses_no_tables(tmp_path):
    with pytest.raises(ValueError, match="no tables"):
        results.write_results(tmp_path / "x.json", name="x", command="c", tables={}, wall_s=1)


def test_run_info_commit_and_dirty_flag(repo):
    info = results.run_info(repo)
    assert info["commit"] == git(repo, "rev-parse", "HEAD") and info["dirty"] is False
    assert info["cores"] >= 1 and info["device"] and "python" in info["versions"]
    (repo / "README.md").write_text("# docs change nothing\n")  # markdown and results/ do not count
    (repo / "results" / "runs.yaml").write_text((repo / "results" / "runs.yaml").read_text() + "\n")
    assert results.run_info(repo)["dirty"] is False
    (repo / "benchmarks" / "fake.py").write_text("# changed code\n")
    assert results.run_info(repo)["dirty"] is True


def test_a_run_records_the_commit_it_started_from_not_one_made_while_it_ran(repo):
    record = start(repo, [])
    first = git(repo, "rev-parse", "HEAD")
    (repo / "benchmarks" / "fake.py").write_text("# changed while the run ran\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "later")
    assert git(repo, "rev-parse", "HEAD") != first
    record.table("main", Table(["a"], [["1"]]))
    data = json.loads(record.write().read_text())
    assert data["commit"] == first and data["dirty"] is False


# --- canonical runs -----------------------------------------------------------------------------------


def test_load_runs_checks_its_entries(tmp_path):
    path = tmp_path / "runs.yaml"
    path.write_text("runs:\n  x:\n    command: bash run.sh\n")
    with pytest.raises(ValueError, match="python <script>.py"):
        results.load_runs(path)
    path.write_text("runs:\n  x:\n    command: python b/x.py\n    wall: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        results.load_runs(path)
    assert results.load_runs(tmp_path / "missing.yaml") == {}


def test_canonical_arguments_write_the_canonical_file(repo):
    record = start(repo, ["--output_dir", "elsewhere"])  # output folders do not decide
    assert record.name == "fake" and record.canonical and record.path == repo / "results" / "fake.json"
    record = start(repo, ["--attacks", "a", "b", "--size", "900"])  # another order, same values
    assert (
        record.name == "fake_big"
        and record.canonical_command == "python benchmarks/fake.py --size 900 --attacks a b"
    )
    record.table("main", Table(["a"], [["1"]]))
    path = record.write()
    data = json.loads(path.read_text())
    assert data["command"] == "python benchmarks/fake.py --attacks a b --size 900"
    assert data["canonical"] is True and data["name"] == "fake_big"


def test_other_arguments_write_a_custom_file(repo):
    quick = start(repo, ["--size", "10"])
    assert not quick.canonical and quick.path.parent == repo / "results" / results.CUSTOM_DIR
    assert quick.name.startswith("fake-") and quick.path.name == quick.name + ".json"
    assert start(repo, ["--size", "10"]).name == quick.name  # the same arguments, the same name
    assert start(repo, ["--size", "11"]).name != quick.name
    named = start(repo, ["--size", "10", "--results_name", "mine"])
    assert named.path == repo / "results" / results.CUSTOM_DIR / "mine.json"
    with pytest.raises(ValueError, match="canonical run"):
        start(repo, ["--size", "10", "--results_name", "fake"])
    elsewhere = start(repo, ["--results_dir", str(repo / "scratch")])
    assert elsewhere.canonical and elsewhere.path == repo / "scratch" / "fake.json"


@dataclass
class FakeArguments:
    size: int = 300
    attacks: list[str] = field(default_factory=lambda: ["a"])


def test_start_reads_hf_argument_parser_dataclasses(repo):
    parser = HfArgumentParser((FakeArguments, results.ResultsArguments))
    script = repo / "benchmarks" / "fake.py"
    parsed = parser.parse_args_into_dataclasses(args=["--size", "900", "--attacks", "a", "b"])
    assert results.start(script, parser, parsed, []).name == "fake_big"
    parsed = parser.parse_args_into_dataclasses(args=["--size", "5"])
    assert not results.start(script, parser, parsed, []).canonical


# --- rendering ----------------------------------------------------------------------------------------


def write_canonical(repo, name="fake", rows=(("badnets", "1.0%"),), command="python benchmarks/fake.py"):
    return results.write_results(
        repo / "results" / f"{name}.json",
        name=name,
        command=command,
        tables={"main": Table(["attack", "ASR"], [list(r) for r in rows], notes="ASR on the test split.")},
        wall_s=312,
        canonical=True,
        canonical_command=command,
    )


DOC = "# Doc\n\nText.\n\n<!-- results: fake/main -->\nstale\n<!-- /results -->\n\nEnd.\n"


def test_render_fills_a_marker_with_table_notes_and_provenance(repo):
    write_canonical(repo)
    docs = repo / "docs"
    docs.mkdir()
    (docs / "page.md").write_text(DOC)
    runs = results.load_runs(repo / "results" / "runs.yaml")
    text, blocks = render.render_text(DOC, repo / "results", runs, docs / "page.md")
    assert [b.ref for b in blocks] == ["fake/main"]
    body = text.split("<!-- results: fake/main -->\n")[1].split("<!-- /results -->")[0]
    lines = body.splitlines()
    assert lines[:3] == ["| attack | ASR |", "|---|---|", "| badnets | 1.0% |"]
    assert "ASR on the test split." in lines
    commit = git(repo, "rev-parse", "HEAD")[:7]
    assert lines[-1].startswith(
        "Source: [results/fake.json](../results/fake.json), from `python benchmarks/fake.py`"
    )
    assert f"at commit `{commit}`" in lines[-1] and "5 min 12 s on" in lines[-1]
    assert text.startswith("# Doc\n\nText.\n\n") and text.endswith("<!-- /results -->\n\nEnd.\n")
    assert render.render_text(text, repo / "results", runs, docs / "page.md")[0] == text  # idempotent


def test_render_says_not_run_yet_with_the_command(repo):
    runs = results.load_runs(repo / "results" / "runs.yaml")
    lines = render.render_block("fake_big/main", repo / "results", runs, repo / "README.md")
    assert lines == [
        "**Not run yet**: `python benchmarks/fake.py --size 900 --attacks a b` (writes `results/fake_big.json`)."
    ]
    assert (
        "Unknown results name"
        in render.render_block("nope/main", repo / "results", runs, repo / "README.md")[0]
    )


def test_check_names_the_doc_the_table_and_the_first_differing_line(repo):
    write_canonical(repo)
    doc = repo / "README.md"
    doc.write_text(DOC)
    render.main(["--root", str(repo)])  # renders, then checks
    assert render.check([doc], repo / "results") == []
    write_canonical(repo, rows=(("badnets", "2.0%"),))  # a rerun changed a figure
    [problem] = render.check([doc], repo / "results")
    assert problem.doc == "README.md" and problem.line == 8  # the row's line
    assert "table fake/main differs from results/fake.json" in problem.message
    assert "'| badnets | 2.0% |'" in problem.message and "'| badnets | 1.0% |'" in problem.message
    assert render.main(["--root", str(repo), "--check"]) == 1
    assert render.main(["--root", str(repo)]) == 0 and render.check([doc], repo / "results") == []


def test_check_fails_on_missing_unknown_non_canonical_and_malformed(repo):
    doc = repo / "README.md"
    doc.write_text(
        "<!-- results: fake_big/main -->\n<!-- /results -->\n"
        "<!-- results: nope/main -->\n<!-- /results -->\n"
        "<!-- results: fake/other -->\n<!-- /results -->\n"
        "<!-- results: fake -->\n<!-- /results -->\n"
        "<!-- results fake/main -->\n"
        "<!-- results: fake/main -->\nnever closed\n"
    )
    write_canonical(repo)
    messages = [str(p) for p in render.check([doc], repo / "results")]
    assert any(
        "results/fake_big.json is missing (not run yet: `python benchmarks/fake.py --size 900" in m
        for m in messages
    )
    assert any("'nope' is not a canonical run" in m for m in messages)
    assert any("no table 'other' in results/fake.json" in m for m in messages)
    assert any("the marker names no table" in m for m in messages)
    assert any("malformed marker" in m for m in messages)
    assert any("is never closed" in m for m in messages)
    # a file made by another command (a custom run copied over, or runs.yaml changed since) is refused
    write_canonical(repo, command="python benchmarks/fake.py --size 3")
    doc.write_text("<!-- results: fake/main -->\n<!-- /results -->\n")
    [problem] = render.check([doc], repo / "results")
    assert "not by its canonical command" in problem.message


def test_index_lists_runs_with_wall_time_or_approximation(repo):
    write_canonical(repo)
    runs = results.load_runs(repo / "results" / "runs.yaml")
    lines = render.render_index(repo / "results", runs)
    assert lines[0] == "| results file | command | tables | wall time | last run |"
    assert "5 min 12 s on" in lines[2] and "`main`" in lines[2]
    assert "not run yet" in lines[3] and "not stated" in lines[3]
    runs = {"fake": CanonicalRun("fake", "python benchmarks/fake.py", approx_wall="3 min")}
    (repo / "results" / "fake.json").unlink()
    assert "3 min (approx., from the last run)" in render.render_index(repo / "results", runs)[2]


def test_format_wall():
    assert [render.format_wall(s) for s in (None, 42, 312, 3900)] == ["-", "42 s", "5 min 12 s", "1 h 05 min"]


def test_repo_root_outside_git_is_the_project_folder(tmp_path):
    (tmp_path / "project" / "benchmarks").mkdir(parents=True)
    (tmp_path / "project" / "pyproject.toml").write_text("")
    script = tmp_path / "project" / "benchmarks" / "x.py"
    script.write_text("")
    assert results.repo_root(script) == tmp_path / "project"
    info = results.run_info(tmp_path / "project")
    assert info["commit"] == "unknown" and info["dirty"] is None
