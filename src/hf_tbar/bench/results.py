"""Results files: every figure in the docs comes from one, written by the benchmark that measured it.

A benchmark in ``benchmarks/`` calls :func:`start` right after parsing its arguments and
:meth:`ResultsRecorder.write` when it finishes. The file, ``results/<name>.json``, holds::

    {"schema": 1, "name": "tbar_embedded", "canonical": true,
     "command": "python benchmarks/tbar_embedded.py", "argv": [],
     "canonical_command": "python benchmarks/tbar_embedded.py",
     "commit": "<git HEAD>", "dirty": false, "date": "2025-06-01T12:00:00+00:00",
     "cores": 2, "cpu_count": 2, "device": "cpu", "versions": {"torch": "...", ...}, "wall_s": 312.4,
     "tables": {"by_attack": {"columns": ["method", "badnets"], "rows": [["backdoored", "98.7 / ..."]],
                              "notes": "optional text shown under the table"}},
     "raw": {"rows": [{"attack": "badnets", "clean_accuracy": 0.987, ...}]}}

Cells are strings formatted by the benchmark (it knows its units); :mod:`hf_tbar.bench.render` only lays
them out. ``raw`` holds the same measurements machine-readable.

Names. ``results/runs.yaml`` lists the *canonical* runs: a name and the command that regenerates it. A
run whose parsed arguments equal a canonical command's (output folders and thread counts aside) writes
``results/<that name>.json``; any other run (a quick check, an ablation of your own) writes
``results/custom/<script>-<hash of its arguments>.json`` (``--results_name`` picks the name), which git
ignores and no doc can cite. So a quick run never replaces the file a doc table comes from, and
``--results_name`` cannot give a non-canonical run a canonical name.

``commit`` is git HEAD; ``dirty`` says whether tracked files other than ``results/`` and markdown files
had uncommitted changes (the code the figures came from was not exactly that commit). ``wall_s`` runs
from :func:`start` (after the imports) to :meth:`~ResultsRecorder.write`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CUSTOM_DIR",
    "RESULTS_DIR",
    "RUNS_FILE",
    "SCHEMA_VERSION",
    "CanonicalRun",
    "ResultsArguments",
    "ResultsRecorder",
    "Table",
    "add_results_arguments",
    "arguments_of",
    "load_results",
    "load_runs",
    "parse_with",
    "repo_root",
    "run_info",
    "start",
    "table_from_markdown",
    "write_results",
]

SCHEMA_VERSION = 1
#: Folder of the results files, relative to the repository root.
RESULTS_DIR = "results"
#: The canonical runs, inside :data:`RESULTS_DIR`.
RUNS_FILE = "runs.yaml"
#: Sub-folder (of the results folder) of the runs that are not canonical; git ignores it.
CUSTOM_DIR = "custom"
#: Arguments that never decide whether a run is canonical.
RESULTS_KEYS = ("results_dir", "results_name")
#: Versions recorded in every file, when installed.
PACKAGES = ("hf_tbar", "torch", "transformers", "peft", "accelerate", "datasets")


@dataclass(frozen=True)
class Table:
    """One table of a results file: column names and rows of formatted cells (strings)."""

    columns: list[str]
    rows: list[list[str]]
    caption: str | None = None
    notes: str | None = None

    def __post_init__(self) -> None:
        if not self.columns or not all(isinstance(c, str) for c in self.columns):
            raise ValueError(f"columns must be a non-empty list of strings, got {self.columns!r}")
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"row {i} has {len(row)} cells for {len(self.columns)} columns {self.columns}: {row!r}"
                )
            for cell in row:
                if not isinstance(cell, str):
                    raise ValueError(f"row {i}: cells must be formatted strings, got {cell!r}")
                if "\n" in cell:
                    raise ValueError(f"row {i}: a cell holds a line break: {cell!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"columns": list(self.columns), "rows": [list(r) for r in self.rows]}
        if self.caption:
            out["caption"] = self.caption
        if self.notes:
            out["notes"] = self.notes
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        return cls(
            columns=list(data["columns"]),
            rows=[list(r) for r in data["rows"]],
            caption=data.get("caption"),
            notes=data.get("notes"),
        )


def _split_row(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells, current, escaped = [], [], False
    for char in body:
        if escaped:
            current.append(char if char == "|" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    cells.append("".join(current).strip())
    return cells


def table_from_markdown(text: str, caption: str | None = None, notes: str | None = None) -> Table:
    """A :class:`Table` from a markdown table (header, ``|---|`` line, rows), as benchmarks print them.

    Lines that do not start with ``|`` are ignored; a row with fewer cells than columns is padded with
    empty cells (as markdown renders it), one with more is an error.
    """
    lines = [line for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError(f"not a markdown table: {text[:200]!r}")
    columns = _split_row(lines[0])
    rows = []
    for line in lines[2:]:
        cells = _split_row(line)
        if len(cells) > len(columns):
            raise ValueError(f"row has more cells than the {len(columns)} columns: {line!r}")
        rows.append(cells + [""] * (len(columns) - len(cells)))
    return Table(columns, rows, caption=caption, notes=notes)


# --- where and what ---------------------------------------------------------------------------------


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The git work tree holding ``start`` (a file or folder; default: the working directory); outside git,
    the nearest folder above it with a ``pyproject.toml``; else its folder."""
    here = Path(start or os.getcwd()).resolve()
    folder = here if here.is_dir() else here.parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top:
        return Path(top)
    return next((p for p in (folder, *folder.parents) if (p / "pyproject.toml").is_file()), folder)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _device() -> str:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            return "cpu"
    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken driver still leaves a CPU run to describe
        return "cpu"
    return "cpu"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_info(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit, dirty flag, date, cores, device and versions of a run made from the tree at ``root``."""
    root = repo_root(root)
    changed = _git(
        root,
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        f":(exclude){RESULTS_DIR}",
        ":(exclude,glob)**/*.md",
    )
    return {
        "commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "dirty": bool(changed) if changed is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "cores": _cores(),
        "cpu_count": os.cpu_count(),
        "device": _device(),
        "versions": _versions(),
    }


# --- canonical runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanonicalRun:
    """A run whose file the docs cite: ``results/<name>.json`` from ``command``."""

    name: str
    command: str
    about: str = ""
    approx_wall: str | None = None

    @property
    def script(self) -> str:
        """The script path as the command names it (``benchmarks/x.py``)."""
        tokens = shlex.split(self.command)
        if len(tokens) < 2 or tokens[0] != "python" or not tokens[1].endswith(".py"):
            raise ValueError(f"run {self.name!r}: command must be 'python <script>.py ...': {self.command!r}")
        return tokens[1]

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command)[2:]


def load_runs(path: str | os.PathLike) -> dict[str, CanonicalRun]:
    """The canonical runs of ``results/runs.yaml`` (in file order); an empty dict if there is no file."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    runs = data.get("runs") or {}
    if not isinstance(runs, dict):
        raise ValueError(f"{path}: 'runs' must map results names to {{command, about, approx_wall}}")
    out = {}
    for name, spec in runs.items():
        if not isinstance(spec, dict) or "command" not in spec:
            raise ValueError(f"{path}: run {name!r} needs a 'command'")
        unknown = sorted(set(spec) - {"command", "about", "approx_wall"})
        if unknown:
            raise ValueError(f"{path}: run {name!r} has unknown keys {unknown}")
        out[name] = CanonicalRun(str(name), spec["command"], spec.get("about", ""), spec.get("approx_wall"))
        out[name].script  # noqa: B018 - checks the command's form
    return out


# --- arguments --------------------------------------------------------------------------------------


@dataclass
class ResultsArguments:
    """Where the results file goes (``HfArgumentParser`` scripts; argparse ones: :func:`add_results_arguments`)."""

    results_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the results files (default: results/ of the repository)."},
    )
    results_name: str | None = field(
        default=None,
        metadata={
            "help": "Name of the results file (default: the canonical run these arguments match in "
            "results/runs.yaml, else a name derived from the arguments, under results/custom/)."
        },
    )


def add_results_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--results_dir`` and ``--results_name`` (see :class:`ResultsArguments`) to an argparse parser."""
    for item in dataclasses.fields(ResultsArguments):
        parser.add_argument(f"--{item.name}", default=None, help=item.metadata["help"])
    return parser


def _plain(value: Any) -> Any:
    """``value`` as JSON: dataclasses and mappings as dicts, paths as strings, NaN and inf as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return _plain(value.tolist())
    return str(value)


def arguments_of(parsed: Any) -> dict[str, Any]:
    """Parsed arguments as one flat JSON-able dict: an ``argparse.Namespace``, a dataclass or a tuple of them."""
    items = parsed if isinstance(parsed, (tuple, list)) else (parsed,)
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, argparse.Namespace):
            out.update(vars(item))
        elif dataclasses.is_dataclass(item):
            out.update({f.name: getattr(item, f.name) for f in dataclasses.fields(item)})
        else:
            raise TypeError(f"cannot read arguments from {type(item).__name__}")
    return _plain(out)


def parse_with(parser: Any, argv: Sequence[str]) -> Any:
    """Parse ``argv`` with an ``argparse`` parser (a Namespace) or an ``HfArgumentParser`` (dataclasses).

    Raises ``SystemExit`` (argparse) or ``ValueError`` (``HfArgumentParser``) on a bad argument.
    """
    if hasattr(parser, "parse_args_into_dataclasses"):
        return tuple(parser.parse_args_into_dataclasses(args=list(argv)))
    return parser.parse_args(list(argv))


def _fingerprint(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


# --- writing ----------------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_results(
    path: str | os.PathLike,
    *,
    name: str,
    command: str,
    tables: Mapping[str, Table],
    wall_s: float,
    raw: Any = None,
    argv: Sequence[str] = (),
    canonical: bool = False,
    canonical_command: str | None = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write one results file atomically (a temporary sibling renamed over ``path``); returns ``path``."""
    if not tables:
        raise ValueError(f"results {name!r}: no tables to write")
    payload = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "canonical": canonical,
        "command": command,
        "argv": list(argv),
        "canonical_command": canonical_command,
        **(info if info is not None else run_info(Path(path).parent)),
        "wall_s": round(float(wall_s), 1),
        "tables": {table_id: table.to_dict() for table_id, table in tables.items()},
        "raw": _plain(raw if raw is not None else {}),
    }
    text = json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    path = Path(path)
    _atomic_write(path, text)
    return path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A results file as a dict, its tables as :class:`Table` (``ValueError`` naming the file if malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA_VERSION}")
        data["tables"] = {k: Table.from_dict(v) for k, v in data["tables"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a results file: {err}") from err
    return data


@dataclass
class ResultsRecorder:
    """Collects the tables and raw rows of one benchmark run and writes its results file."""

    name: str
    path: Path
    command: str
    argv: list[str]
    canonical: bool
    canonical_command: str | None
    root: Path
    started: float = field(default_factory=time.perf_counter)
    #: The commit, dirty flag, cores, device and versions, read when the run starts: the code that ran is the
    #: code of that moment, whatever is committed while it runs.
    info: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def table(self, table_id: str, table: Table) -> Table:
        """Add (or replace) table ``table_id``."""
        self.tables[table_id] = table
        return table

    def write(self) -> Path:
        """Write the file (wall time: since :func:`start`) and print where it went."""
        path = write_results(
            self.path,
            name=self.name,
            command=self.command,
            tables=self.tables,
            wall_s=time.perf_counter() - self.started,
            raw=self.raw,
            argv=self.argv,
            canonical=self.canonical,
            canonical_command=self.canonical_command,
            info=self.info or run_info(self.root),
        )
        print(f"results: {path}", flush=True)  # noqa: T201 - the benchmark's console output
        return path


def _command_line(script: Path, root: Path, argv: Sequence[str]) -> str:
    try:
        shown = script.resolve().relative_to(root).as_posix()
    except ValueError:
        shown = script.as_posix()
    return shlex.join(["python", shown, *argv])


def start(
    script: str | os.PathLike,
    parser: Any,
    parsed: Any,
    argv: Sequence[str] | None = None,
    ignore: Iterable[str] = (),
    runs: Mapping[str, CanonicalRun] | None = None,
) -> ResultsRecorder:
    """Decide where this run's results go and start its clock. Call right after parsing.

    Args:
        script: The benchmark's ``__file__``.
        parser: Its parser (``make_parser()``), used to parse the canonical commands of ``script``.
        parsed: What ``parser`` returned for this run (a Namespace, or the dataclasses).
        argv: The arguments as given (default: ``sys.argv[1:]``), recorded as the command.
        ignore: Arguments that do not change the figures (output folders, thread counts).
        runs: The canonical runs (default: ``results/runs.yaml`` of the script's repository).

    Raises:
        ValueError: ``--results_name`` names a canonical run whose command these arguments do not match.
    """
    script = Path(script)
    root = repo_root(script)
    argv = list(sys.argv[1:] if argv is None else argv)
    values = arguments_of(parsed)
    results_dir = values.get("results_dir") or root / RESULTS_DIR
    chosen = values.get("results_name")
    skip = set(ignore) | set(RESULTS_KEYS)
    mine = {k: v for k, v in values.items() if k not in skip}
    runs = load_runs(root / RESULTS_DIR / RUNS_FILE) if runs is None else runs
    try:
        script_rel = script.resolve().relative_to(root).as_posix()
    except ValueError:
        script_rel = script.name
    matched = None
    for run in runs.values():
        if run.script != script_rel:
            continue
        theirs = arguments_of(parse_with(parser, run.argv))
        if {k: v for k, v in theirs.items() if k not in skip} == mine:
            if chosen is None or chosen == run.name:
                matched = run
                break
    if chosen is not None and chosen in runs and (matched is None or matched.name != chosen):
        raise ValueError(
            f"--results_name {chosen!r} is the canonical run `{runs[chosen].command}`, and these arguments "
            "differ from it: leave --results_name out (the file goes to "
            f"{RESULTS_DIR}/{CUSTOM_DIR}/) or run that command"
        )
    if matched is not None:
        name, path = matched.name, Path(results_dir) / f"{matched.name}.json"
    else:
        name = chosen or f"{script.stem}-{_fingerprint(mine)}"
        path = Path(results_dir) / CUSTOM_DIR / f"{name}.json"
    kind = "canonical run" if matched else "not a canonical run"
    print(f"results will go to {path} ({kind})", flush=True)  # noqa: T201
    return ResultsRecorder(
        name=name,
        path=path,
        command=_command_line(script, root, argv),
        argv=argv,
        canonical=matched is not None,
        canonical_command=matched.command if matched else None,
        root=root,
        info=run_info(root),
    )
