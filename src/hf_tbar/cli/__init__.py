"""The ``hf-tbar`` console command: one sub-command per module of this package.

Each sub-command module defines ``HELP`` (one line), ``DATACLASSES`` (argument dataclasses parsed by
:class:`transformers.HfArgumentParser`) and ``run(*parsed_dataclasses) -> int``. Every sub-command
accepts ``--config FILE.yaml``: the file's keys become defaults, explicit flags override them, and
``--debug``. Errors end as one line ``hf-tbar <command>: error: ...`` with the exit status of
:mod:`hf_tbar.errors` (2 for a bad argument, 130 after Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import yaml
from transformers import HfArgumentParser

from ..errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, ConfigError, HfTbarError, InputError, OutputError

# Registry: sub-command name -> module under hf_tbar.cli.
COMMANDS: dict[str, str] = {
    "demo": "hf_tbar.cli.demo",
    "unlearn": "hf_tbar.cli.unlearn",
    "push": "hf_tbar.cli.push",
    "arithmetic": "hf_tbar.cli.arithmetic",
    "scan": "hf_tbar.cli.scan",
    "sanitize": "hf_tbar.cli.sanitize",
    "verify": "hf_tbar.cli.verify",
    "bench": "hf_tbar.cli.bench",
}

#: Environment variable that, set to 1, shows tracebacks like ``--debug``.
DEBUG_ENV = "HF_TBAR_DEBUG"
#: Format of the log lines the CLI prints: wall-clock time first, so the seconds a stage took show.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"


#: Words that give ``None`` to an optional number (``--target_threshold none``).
NONE_WORDS = ("none", "None", "off")


def optional_number(kind: type) -> Callable[[str], object]:
    """An argparse ``type`` reading ``kind`` or one of :data:`NONE_WORDS` (``None``)."""

    def parse(text: str):
        return None if text in NONE_WORDS else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


class CommandParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are one line, ``hf-tbar <command>: error: ...``, exit status 2.

    A value refused by an argument dataclass's ``__post_init__`` is a usage error like any other. A number
    field that may be ``None`` (``target_threshold: float | None``) also reads ``none``.
    """

    def __init__(self, dataclass_types, **kwargs) -> None:
        # Read before HfArgumentParser resolves the types (it rewrites ``float | None`` fields to ``float``).
        optional = {
            name
            for cls in dataclass_types
            for name, hint in typing.get_type_hints(cls).items()
            if hint in (float | None, int | None)
        }
        super().__init__(dataclass_types, **kwargs)
        for action in self._actions:
            if action.dest in optional and action.type in (float, int):
                action.type = optional_number(action.type)

    def error(self, message: str) -> NoReturn:
        self.exit(
            ConfigError.exit_code, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n"
        )

    def parse_args_into_dataclasses(self, *args, **kwargs):
        try:
            return super().parse_args_into_dataclasses(*args, **kwargs)
        except (ValueError, TypeError) as err:  # __post_init__ checks, bad literal values
            self.error(str(err))


def _one_line(message: str) -> str:
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def build_parser(name: str) -> HfArgumentParser:
    """The argument parser of sub-command ``name``."""
    module = _load(name)
    parser = CommandParser(module.DATACLASSES, prog=f"hf-tbar {name}", description=module.HELP)
    parser.add_argument("--config", type=str, default=None, help="YAML file of arguments; flags override it.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"Show the full traceback of an error (also: {DEBUG_ENV}=1).",
    )
    return parser


def _read_config(parser: HfArgumentParser, config_path: str) -> dict:
    path = Path(config_path)
    if not path.is_file():
        parser.error(f"--config file {config_path!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        position = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        parser.error(f"--config file {config_path!r} is not valid YAML{position}: {problem}")
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"--config file {config_path!r} cannot be read: {err}")
    if not isinstance(values, dict):
        parser.error(f"--config file {config_path!r} must hold a mapping of argument names to values")
    return values


def parse_command(name: str, argv: list[str]) -> tuple:
    """Parse ``argv`` (after the sub-command name) into the sub-command's dataclasses."""
    parser = build_parser(name)
    argv = [arg for arg in argv if arg != "--debug"]
    config_path = None
    if "--config" in argv:
        config_path = argv[argv.index("--config") + 1] if argv.index("--config") + 1 < len(argv) else None
        if config_path is None:
            parser.error("--config needs a YAML file path")
    if config_path is not None:
        values = _read_config(parser, config_path)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"--config file {config_path!r} has unknown keys {unknown}")
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the file satisfies a required flag
            if action.dest in values:
                action.required = False
    *parsed, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return tuple(p for p in parsed if dataclasses.is_dataclass(p))


def _exit_code(error: BaseException) -> int:
    if isinstance(error, HfTbarError):
        return error.exit_code
    if isinstance(error, OSError):  # a file that cannot be read or written: an I/O problem, named
        return OutputError.exit_code
    if isinstance(error, ValueError):  # a value refused by a library check that predates hf_tbar.errors
        return InputError.exit_code
    return EXIT_UNEXPECTED


def run_command(name: str, argv: list[str], debug: bool = False) -> int:
    """Parse and run one sub-command; every error becomes one line on stderr and an exit status.

    ``--debug`` (or ``HF_TBAR_DEBUG=1``) prints the traceback before that line.
    """
    prog = f"hf-tbar {name}"
    try:
        parsed = parse_command(name, argv)
        return int(_load(name).run(*parsed) or 0)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted; partial outputs were removed", file=sys.stderr)  # noqa: T201
        return EXIT_INTERRUPTED
    except Exception as error:  # the CLI boundary: nothing reaches the user as a raw traceback
        if debug:
            traceback.print_exc()
        code = _exit_code(error)
        details = getattr(error, "details", None)  # a table the one line refers to (e.g. the scale sweep)
        if details:
            print(str(details).rstrip("\n"), file=sys.stderr)  # noqa: T201
        message = _one_line(str(error)) or type(error).__name__
        if code == EXIT_UNEXPECTED:
            message = f"unexpected {type(error).__name__}: {message} (rerun with --debug for the traceback)"
        print(f"{prog}: error: {message}", file=sys.stderr)  # noqa: T201
        return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hf-tbar``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: hf-tbar {" + ",".join(COMMANDS) + "} [--help] [--debug] [args...]"
    if not argv or argv[0] in ("-h", "--help"):
        lines = [usage, "", "commands:"] + [f"  {n:<12} {_load(n).HELP}" for n in COMMANDS]
        print("\n".join(lines))  # noqa: T201 - console output of the CLI itself
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hf-tbar: error: unknown command {name!r}\n{usage}", file=sys.stderr)  # noqa: T201
        return 2
    debug = "--debug" in rest or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    return run_command(name, rest, debug=debug)
