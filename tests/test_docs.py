"""The docs as shipped: every table of figures comes from its results file, and every command shown parses.

- Marked tables (``<!-- results: name/table -->``) must equal what ``python -m hf_tbar.bench.render`` renders
  from ``results/<name>.json``, and that file must exist (nothing ships unrun).
- A markdown table outside a marker is allowed only as a reference table (``<!-- table: reference -->`` on the
  line before) without figures; prose quotes no figures either (decimal percentages, ``±``).
- Every fenced shell line that runs ``hf-tbar <command>``, ``python benchmarks/<x>.py``,
  ``python -m hf_tbar.bench.render``, ``accelerate launch`` / ``torchrun examples/unlearn.py`` or ``make``
  is parsed by that command's own parser (nothing runs).
- Local links and their anchors resolve; the README stays a front door.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from hf_tbar.bench import render, results
from hf_tbar.cli import COMMANDS, parse_command

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / results.RESULTS_DIR
DOCS = render.doc_files(ROOT)
SHELL = {"bash", "sh", "shell", "console"}
REFERENCE = "<!-- table: reference -->"
FIGURE = re.compile(r"\d+\.\d+\s?%|±")
README_MAX_LINES = 160


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def outside(lines: list[str]) -> list[tuple[int, str]]:
    """``(line number, line)`` of a doc outside fenced code and results markers."""
    blocks, _ = render.find_blocks(lines)
    inside = {i for b in blocks for i in range(b.start, b.end + 1)}
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced and i not in inside:
            out.append((i + 1, line))
    return out


def shell_commands() -> list[tuple[str, int, str]]:
    """``(doc, line number, command line)`` of every fenced shell line, continuations joined."""
    found = []
    for doc in DOCS:
        language, start, pending = None, 0, ""
        for i, line in enumerate(doc.read_text().splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith("```"):
                language = None if language is not None else (stripped[3:].strip() or "text")
                continue
            if language not in SHELL or not stripped:
                continue
            if not pending:
                start = i
            pending += stripped.removeprefix("$ ")
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if segments(pending):  # not a comment alone
                found.append((rel(doc), start, pending))
            pending = ""
    return found


def segments(command: str) -> list[list[str]]:
    """The simple commands of a line (split at ``&&``, ``||``, ``;``, ``|``), comments and ``VAR=x`` dropped."""
    tokens = shlex.split(command, comments=True)
    out: list[list[str]] = [[]]
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            out.append([])
        elif not out[-1] and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
            continue
        else:
            out[-1].append(token)
    return [s for s in out if s]


def load_script(path: Path):
    """Import a benchmark script as a module (``benchmarks/`` on sys.path for its helpers)."""
    name = f"_docs_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.MULTILINE))


def parse_simple(tokens: list[str]) -> str | None:
    """Parse one simple command with its own parser; raise on a bad line. Returns what was parsed, or None."""
    head = tokens[0]
    if head == "hf-tbar":
        assert len(tokens) > 1 and tokens[1] in COMMANDS, f"unknown hf-tbar command in {tokens}"
        parse_command(tokens[1], tokens[2:])
        return f"hf-tbar {tokens[1]}"
    if head == "python" and len(tokens) > 1 and tokens[1].startswith("benchmarks/"):
        script = ROOT / tokens[1]
        assert script.is_file(), f"no script {tokens[1]}"
        module = load_script(script)
        assert hasattr(module, "make_parser"), f"{tokens[1]} has no make_parser()"
        results.parse_with(module.make_parser(), tokens[2:])
        return tokens[1]
    if head == "python" and tokens[1:3] == ["-m", "hf_tbar.bench.render"]:
        render.make_parser().parse_args(tokens[3:])
        return "hf_tbar.bench.render"
    if head in ("accelerate", "torchrun"):
        scripts = [i for i, t in enumerate(tokens) if t.endswith("examples/unlearn.py")]
        assert scripts, f"{head} line without examples/unlearn.py: {tokens}"
        if "--config_file" in tokens:
            config = tokens[tokens.index("--config_file") + 1]
            assert (ROOT / config).is_file(), f"no Accelerate config {config}"
        parse_command("unlearn", tokens[scripts[0] + 1 :])
        return "examples/unlearn.py"
    if head == "make":
        missing = set(tokens[1:]) - make_targets()
        assert not missing, f"no Makefile target {sorted(missing)}"
        return "make"
    return None


COMMAND_LINES = shell_commands()


@pytest.mark.parametrize(
    "doc,line,command", COMMAND_LINES, ids=[f"{doc}:{line}" for doc, line, _ in COMMAND_LINES]
)
def test_doc_command_parses(doc, line, command, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # --config examples/... is read relative to the repository root
    for tokens in segments(command):
        try:
            parse_simple(tokens)
        except SystemExit as done:  # argparse: --help exits 0, a bad argument 2 with a message
            if done.code not in (0, None):
                pytest.fail(f"{doc}:{line}: `{shlex.join(tokens)}` does not parse: {capsys.readouterr().err}")
        except (AssertionError, ValueError, TypeError) as err:
            pytest.fail(f"{doc}:{line}: `{shlex.join(tokens)}` does not parse: {err}")


def test_docs_show_commands_of_every_kind():
    """The parser test above sees the commands it is meant to check (a fence language typo would hide them)."""
    seen = {parse_kind(c) for _, _, c in COMMAND_LINES}
    for kind in ("hf-tbar unlearn", "hf-tbar push", "benchmark", "examples/unlearn.py", "make", "render"):
        assert kind in seen, f"no `{kind}` line found in the docs' shell blocks"


def parse_kind(command: str) -> str:
    tokens = segments(command)[0]
    if tokens[0] == "hf-tbar":
        return f"hf-tbar {tokens[1]}"
    if tokens[0] == "python" and tokens[1].startswith("benchmarks/"):
        return "benchmark"
    if tokens[0] == "python" and "hf_tbar.bench.render" in tokens:
        return "render"
    if tokens[0] in ("accelerate", "torchrun"):
        return "examples/unlearn.py"
    return tokens[0]


def test_every_benchmark_command_of_runs_yaml_parses_and_is_its_own_canonical_run():
    runs = results.load_runs(RESULTS / results.RUNS_FILE)
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"clip_shapes.py"}
    assert {Path(run.script).name for run in runs.values()} == scripts, "a benchmark without a canonical run"
    for name, run in runs.items():
        module = load_script(ROOT / run.script)
        parser = module.make_parser()
        record = results.start(ROOT / run.script, parser, results.parse_with(parser, run.argv), run.argv)
        assert record.canonical and record.name == name, f"{run.command} resolves to {record.name}"


def test_doc_tables_match_their_results_files():
    """A marked table equals what its results file renders (the first differing line is named)."""
    problems = [p for p in render.check(DOCS, RESULTS) if "is missing (not run yet" not in p.message]
    assert not problems, "\n".join(map(str, problems)) + "\nrun: python -m hf_tbar.bench.render"


def test_every_readme_table_has_its_results_file():
    """The front door ships nothing unrun: every README marker's results file exists (run the commands of
    results/README.md). A table in docs/ whose file is missing renders as "Not run yet: <command>" (checked
    by test_doc_tables_match_their_results_files), and results/README.md lists it as not run."""
    missing = [
        p for p in render.check([ROOT / "README.md"], RESULTS) if "is missing (not run yet" in p.message
    ]
    assert not missing, "\n".join(map(str, missing))


def test_no_table_of_figures_outside_markers():
    problems = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        kept = outside(lines)
        numbers = [n for n, _ in kept]
        for k, (number, line) in enumerate(kept):
            nxt = kept[k + 1][1] if k + 1 < len(kept) else ""
            if not (line.lstrip().startswith("|") and re.match(r"^\s*\|?\s*:?-{3,}", nxt)):
                continue
            if k > 0 and kept[k - 1][1].lstrip().startswith("|"):
                continue  # not the table's first line
            before = [line for n, line in kept[:k] if line.strip()][-1:]
            if before != [REFERENCE] or numbers[k] - 1 not in numbers:
                problems.append(f"{rel(doc)}:{number}: a table outside <!-- results: ... --> markers")
                continue
            table = [line for _, line in kept[k:] if line.lstrip().startswith("|")]
            for row in table:
                if FIGURE.search(row):
                    problems.append(f"{rel(doc)}:{number}: a reference table holds a figure: {row.strip()}")
                    break
    assert not problems, "\n".join(problems)


def test_prose_quotes_no_figures():
    """Figures live in the rendered tables only: prose points at them (no decimal percentages, no ±)."""
    problems = [
        f"{rel(doc)}:{number}: {line.strip()}"
        for doc in DOCS
        for number, line in outside(doc.read_text().splitlines())
        if FIGURE.search(line) and not line.lstrip().startswith("|")
    ]
    assert not problems, "\n".join(problems)


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {
        slug(line.lstrip("#"))
        for _, line in outside(doc.read_text().splitlines())
        if re.match(r"^#{1,6} ", line)
    }


def test_local_links_and_anchors_resolve():
    problems = []
    for doc in DOCS:
        for number, line in outside(doc.read_text().splitlines()):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^[a-z]+://", target):
                    continue
                path, _, anchor = target.partition("#")
                file = (doc.parent / path).resolve() if path else doc
                if not file.exists():
                    problems.append(f"{rel(doc)}:{number}: no file {path}")
                elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                    problems.append(f"{rel(doc)}:{number}: no heading #{anchor} in {rel(file)}")
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md: keep it a front door; move detail to docs/"
    assert "make demo" in text and "make test" in text and "CI runs it" in text
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def test_readme_python_example_is_the_api_page_one():
    """tests/test_user_data.py runs the README's example; the API page shows the same one, so it runs too."""
    readme = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("```python", 1)[1]
    api = (ROOT / "docs" / "api.md").read_text().split("```python", 1)[1]
    assert readme.split("```", 1)[0] == api.split("```", 1)[0], "README.md and docs/api.md: keep one example"
