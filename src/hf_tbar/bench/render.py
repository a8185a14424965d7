"""Render the docs' tables of figures from the results files: ``python -m hf_tbar.bench.render``.

In ``README.md``, ``docs/*.md`` and ``results/README.md``, the text between

    <!-- results: tbar_embedded/by_attack -->
    <!-- /results -->

is replaced by table ``by_attack`` of ``results/tbar_embedded.json`` (its caption, the table, its notes)
and one line naming the file, the command, the commit, the date and the wall time. A results name
missing from ``results/`` renders as "Not run yet: <command>" (the command from ``results/runs.yaml``).
``<!-- results: index -->`` renders the list of canonical runs: command, tables, wall time, last run.

``--check`` changes nothing and exits 1 when a doc differs from what its files render, or cites a file
that is missing (what the test suite checks, :func:`check`). ``--commands`` prints the canonical runs'
commands, one per line, to rerun them all.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .results import CUSTOM_DIR, RESULTS_DIR, RUNS_FILE, CanonicalRun, load_results, load_runs, repo_root

__all__ = [
    "Block",
    "Problem",
    "check",
    "doc_files",
    "find_blocks",
    "render_block",
    "render_text",
]

OPEN = re.compile(r"^<!-- results: (?P<ref>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)?) -->\s*$")
CLOSE = "<!-- /results -->"
INDEX = "index"


@dataclass(frozen=True)
class Block:
    """One marked region of a doc: ``lines[start]`` is the opening marker, ``lines[end]`` the closing one."""

    ref: str
    start: int
    end: int

    @property
    def name(self) -> str:
        return self.ref.split("/")[0]

    @property
    def table_id(self) -> str | None:
        return self.ref.split("/")[1] if "/" in self.ref else None


@dataclass(frozen=True)
class Problem:
    """What :func:`check` found wrong in a doc, at a line (1-based)."""

    doc: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.message}"


def find_blocks(lines: list[str]) -> tuple[list[Block], list[tuple[int, str]]]:
    """The marked regions of a doc, and ``(line index, message)`` for malformed markers."""
    blocks, errors = [], []
    open_at: tuple[int, str] | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        match = OPEN.match(stripped)
        if match:
            if open_at is not None:
                errors.append((open_at[0], f"marker results: {open_at[1]} is not closed before line {i + 1}"))
            open_at = (i, match.group("ref"))
        elif stripped == CLOSE:
            if open_at is None:
                errors.append((i, f"{CLOSE} without an opening marker"))
            else:
                blocks.append(Block(open_at[1], open_at[0], i))
                open_at = None
        elif stripped.startswith("<!-- results") and not match:
            errors.append((i, f"malformed marker {stripped!r} (expected <!-- results: name/table -->)"))
    if open_at is not None:
        errors.append((open_at[0], f"marker results: {open_at[1]} is never closed ({CLOSE})"))
    return blocks, errors


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return lines


def format_wall(seconds: float | None) -> str:
    """``42 s``, ``5 min 12 s``, ``1 h 03 min``."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _link(target: Path, doc: Path) -> str:
    return Path(os.path.relpath(target, doc.parent)).as_posix()


def _provenance(data: Mapping, file: Path, doc: Path, root: Path) -> str:
    commit = str(data.get("commit") or "unknown")[:7]
    if data.get("dirty"):
        commit += " with uncommitted changes"
    date = str(data.get("date") or "?")[:10]
    where = f"{data.get('cores', '?')} cores, {data.get('device', '?')}"
    shown = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
    return (
        f"Source: [{shown}]({_link(file, doc)}), from `{data.get('command')}` at commit `{commit}` "
        f"on {date}, {format_wall(data.get('wall_s'))} on {where}."
    )


def _not_run(name: str, runs: Mapping[str, CanonicalRun]) -> str:
    if name not in runs:
        return (
            f"**Unknown results name `{name}`**: add it to `{RESULTS_DIR}/{RUNS_FILE}` and run its command."
        )
    return f"**Not run yet**: `{runs[name].command}` (writes `{RESULTS_DIR}/{name}.json`)."


def render_index(results_dir: Path, runs: Mapping[str, CanonicalRun]) -> list[str]:
    """The table of canonical runs: file, command, tables, wall time, last run."""
    rows = []
    for name, run in runs.items():
        path = results_dir / f"{name}.json"
        if path.is_file():
            data = load_results(path)
            wall = f"{format_wall(data.get('wall_s'))} on {data.get('cores', '?')} cores"
            last = f"`{str(data.get('commit'))[:7]}`, {str(data.get('date'))[:10]}"
            tables = ", ".join(f"`{t}`" for t in data["tables"])
        else:
            wall = f"{run.approx_wall} (approx., from the last run)" if run.approx_wall else "not stated"
            last, tables = "not run yet", "-"
        rows.append([f"`{name}.json`", f"`{run.command}`", tables, wall, last])
    return markdown_table(["results file", "command", "tables", "wall time", "last run"], rows)


def render_block(ref: str, results_dir: Path, runs: Mapping[str, CanonicalRun], doc: Path) -> list[str]:
    """The lines between the markers of ``ref`` (``name/table`` or ``index``)."""
    root = results_dir.parent
    if ref == INDEX:
        return render_index(results_dir, runs)
    name, _, table_id = ref.partition("/")
    path = results_dir / f"{name}.json"
    if not table_id:
        return [f"**Marker `{ref}` names no table**: write `<!-- results: {name}/<table> -->`."]
    if not path.is_file():
        return [_not_run(name, runs)]
    data = load_results(path)
    table = data["tables"].get(table_id)
    if table is None:
        have = ", ".join(data["tables"]) or "none"
        return [f"**No table `{table_id}` in `{RESULTS_DIR}/{name}.json`** (it has: {have})."]
    lines: list[str] = []
    if table.caption:
        lines += [table.caption, ""]
    lines += markdown_table(table.columns, table.rows)
    if table.notes:
        lines += ["", table.notes]
    lines += ["", _provenance(data, path, doc, root)]
    return lines


def render_text(
    text: str, results_dir: Path, runs: Mapping[str, CanonicalRun], doc: Path
) -> tuple[str, list[Block]]:
    """``text`` with every marked region rendered, and the regions found (malformed markers left as they are)."""
    lines = text.split("\n")
    blocks, _ = find_blocks(lines)
    out: list[str] = []
    at = 0
    for block in blocks:
        out += lines[at : block.start + 1]
        out += render_block(block.ref, results_dir, runs, doc)
        at = block.end
    out += lines[at:]
    return "\n".join(out), blocks


def doc_files(root: Path) -> list[Path]:
    """The docs that may hold markers: ``README.md``, ``docs/**/*.md`` and ``results/README.md``."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md")), root / RESULTS_DIR / "README.md"]
    return [f for f in files if f.is_file()]


def _first_difference(old: list[str], new: list[str]) -> tuple[int, str]:
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            return i, f"expected {b!r}, found {a!r}"
    i = min(len(old), len(new))
    if len(new) > len(old):
        return i, f"expected {new[i]!r}, found the end of the block"
    return i, f"expected the end of the block, found {old[i]!r}"


def check(
    docs: Iterable[Path], results_dir: Path, runs: Mapping[str, CanonicalRun] | None = None
) -> list[Problem]:
    """What is wrong with the docs' marked tables: stale content, missing or unknown results, bad markers."""
    results_dir = Path(results_dir)
    runs = load_runs(results_dir / RUNS_FILE) if runs is None else runs
    problems = []
    for doc in docs:
        doc = Path(doc)
        shown = (
            doc.name if not doc.is_relative_to(results_dir.parent) else doc.relative_to(results_dir.parent)
        )
        lines = doc.read_text().split("\n")
        blocks, errors = find_blocks(lines)
        problems += [Problem(str(shown), i + 1, message) for i, message in errors]
        for block in blocks:
            where = f"table {block.ref}"
            if block.ref != INDEX:
                if block.table_id is None:
                    problems.append(
                        Problem(str(shown), block.start + 1, f"{where}: the marker names no table")
                    )
                    continue
                if block.name not in runs:
                    problems.append(
                        Problem(
                            str(shown),
                            block.start + 1,
                            f"{where}: {block.name!r} is not a canonical run of {RESULTS_DIR}/{RUNS_FILE}",
                        )
                    )
                    continue
                path = results_dir / f"{block.name}.json"
                if not path.is_file():
                    problems.append(
                        Problem(
                            str(shown),
                            block.start + 1,
                            f"{where}: {RESULTS_DIR}/{block.name}.json is missing (not run yet: "
                            f"`{runs[block.name].command}`)",
                        )
                    )
                    continue
                try:
                    data = load_results(path)
                except ValueError as err:
                    problems.append(Problem(str(shown), block.start + 1, f"{where}: {err}"))
                    continue
                if not data.get("canonical") or data.get("canonical_command") != runs[block.name].command:
                    problems.append(
                        Problem(
                            str(shown),
                            block.start + 1,
                            f"{where}: {RESULTS_DIR}/{block.name}.json was made by "
                            f"`{data.get('command')}`, not by its canonical command "
                            f"`{runs[block.name].command}`: rerun that",
                        )
                    )
                    continue
                if block.table_id not in data["tables"]:
                    problems.append(
                        Problem(
                            str(shown),
                            block.start + 1,
                            f"{where}: no table {block.table_id!r} in {RESULTS_DIR}/{block.name}.json "
                            f"(it has {sorted(data['tables'])})",
                        )
                    )
                    continue
            expected = render_block(block.ref, results_dir, runs, doc)
            found = lines[block.start + 1 : block.end]
            if found != expected:
                i, what = _first_difference(found, expected)
                problems.append(
                    Problem(
                        str(shown),
                        block.start + 2 + i,
                        f"{where} differs from {RESULTS_DIR}/{block.name}.json: {what} "
                        "(run python -m hf_tbar.bench.render)",
                    )
                )
    return problems


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hf_tbar.bench.render", description=__doc__.splitlines()[0]
    )
    parser.add_argument("docs", nargs="*", type=Path, help="Docs to render (default: all of them).")
    parser.add_argument("--root", type=Path, default=None, help="Repository root (default: git's).")
    parser.add_argument("--check", action="store_true", help="Change nothing; exit 1 if a doc is stale.")
    parser.add_argument("--diff", action="store_true", help="Print the changes made (or, with --check, due).")
    parser.add_argument(
        "--commands", action="store_true", help="Only print the canonical runs' commands, one per line."
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    root = (args.root or repo_root()).resolve()
    results_dir = root / RESULTS_DIR
    runs = load_runs(results_dir / RUNS_FILE)
    if args.commands:
        print("\n".join(run.command for run in runs.values()))  # noqa: T201
        return 0
    docs = [d.resolve() for d in args.docs] or doc_files(root)
    status = 0
    for doc in docs:
        old = doc.read_text()
        new, blocks = render_text(old, results_dir, runs, doc)
        if new != old:
            shown = doc.relative_to(root) if doc.is_relative_to(root) else doc
            print(f"{'stale' if args.check else 'rendered'}: {shown} ({len(blocks)} tables)")  # noqa: T201
            if args.diff:
                sys.stdout.writelines(
                    difflib.unified_diff(
                        old.splitlines(True), new.splitlines(True), str(shown), f"{shown} (rendered)"
                    )
                )
            if not args.check:
                doc.write_text(new)
    problems = check(docs, results_dir, runs)
    for problem in problems:
        print(problem, file=sys.stderr)  # noqa: T201
    if problems:
        status = 1
    custom = results_dir / CUSTOM_DIR
    if custom.is_dir() and any(custom.glob("*.json")):
        print(f"note: {custom} holds non-canonical runs; no doc cites them", file=sys.stderr)  # noqa: T201
    return status


if __name__ == "__main__":
    raise SystemExit(main())
