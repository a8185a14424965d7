"""Filesystem helpers: atomic output folders, the user cache, and loading CLIP checkpoints."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputError, OutputExistsError

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root of hf_tbar's cache: ``$HF_TBAR_CACHE``, else ``$XDG_CACHE_HOME/hf_tbar``, else ``~/.cache/hf_tbar``."""
    if os.environ.get("HF_TBAR_CACHE"):
        return Path(os.environ["HF_TBAR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hf_tbar"


def recipe_hash(recipe: dict) -> str:
    """Stable short hash of a JSON-serialisable recipe (key order does not matter)."""
    payload = json.dumps(recipe, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


# What a full disk or an exhausted quota says, as an errno or in the text of a library's own error type
# (safetensors raises ``SafetensorError("... No space left on device (os error 28)")``).
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = tuple(os.strerror(code) for code in _NO_SPACE_ERRNOS)


def _raise_if_no_space(target: Path, err: BaseException) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``target`` (from ``err``) when ``err`` says the disk or quota is full."""
    full = isinstance(err, OSError) and err.errno in _NO_SPACE_ERRNOS
    if full or any(text in str(err) for text in _NO_SPACE_TEXTS):
        raise OSError(errno.ENOSPC, f"cannot write {target}: no space left on device ({err})") from err


def _new_sibling_dir(target: Path, tag: str) -> Path:
    """Create an empty hidden folder next to ``target`` with the usual permissions of a new folder.

    ``tempfile.mkdtemp`` would give mode 0700, so a renamed output would not be readable by the group or
    others as ``save_pretrained``'s folders are; ``os.mkdir(path, 0o777)`` lets the umask decide instead.
    """
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:8]}"
        try:
            os.mkdir(candidate, 0o777)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary folder next to {target}")


def _has_entries(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_output_dir(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False
) -> Path:
    """Refuse an output folder before any work starts, so no run ends in minutes of wasted computation.

    Args:
        path: The folder that will be written (atomically) later.
        inputs: Local inputs (model folders, data) the output must not be, lie in, or contain; Hub ids
            and other names that are not local paths are ignored.
        overwrite: Allow replacing an existing folder that holds files.

    Returns:
        The resolved output path.

    Raises:
        OutputError: the output overlaps an input, exists as a file, has a file among its parents, or its
            location is not writable.
        OutputExistsError: it is a folder holding files and ``overwrite`` is False.
    """
    target = refuse_overlap(path, inputs)
    if target.exists() and not target.is_dir():
        raise OutputError(f"output {target} exists and is a file, not a folder")
    if _has_entries(target) and not overwrite:
        raise OutputExistsError(
            f"output folder {target} already exists and is not empty: choose another folder, or pass "
            "overwrite=True (--overwrite) to replace its contents"
        )
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {target}: {ancestor} is a file, not a folder")
    try:  # a real probe: permission bits say nothing for root or on read-only mounts
        _new_sibling_dir(ancestor / "probe", "write-test").rmdir()
    except OSError as err:
        raise OutputError(f"cannot write {target}: {ancestor} is not writable ({err.strerror})") from None
    return target


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling folder, rename it to ``path`` on success.

    On any exception (Ctrl-C included) the temporary folder is removed and an existing ``path`` is left
    untouched, so no half-written folder ever sits at ``path``. The folder gets the usual permissions of a
    new folder (the umask decides), not ``mkdtemp``'s 0700.

    Raises:
        OutputExistsError: ``path`` is a folder holding files and ``overwrite`` is False (an empty
            folder is replaced).
        OutputError: ``path`` exists and is a file.
        OSError: the location is not writable, or the disk filled up (``errno.ENOSPC``, naming ``path``).
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise OutputError(f"output path {target} exists and is not a folder")
    if _has_entries(target) and not overwrite:
        raise OutputExistsError(
            f"output folder {target} already exists and is not empty (pass overwrite=True to replace it)"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_sibling_dir(target, "tmp")
    except OSError as err:  # read-only location, no space...: say which output could not be written
        raise type(err)(
            err.errno, f"cannot write {target}: cannot create a folder in {target.parent} ({err.strerror})"
        ) from err
    try:
        yield tmp
        if target.exists():
            backup = _new_sibling_dir(target, "old")
            backup.rmdir()
            target.rename(backup)
            tmp.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_no_space(target, err)
        raise


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yield a temporary sibling path, rename it over ``path`` on success.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is left as it was.

    Raises:
        OSError: the disk filled up (``errno.ENOSPC``, naming ``path``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        _raise_if_no_space(target, err)
        raise


def refuse_overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path:
    """Resolve ``output`` and raise when writing it could modify or delete one of ``inputs``.

    An output that is an input or lies inside one would write into it; one that contains an input would
    delete it when replaced. Inputs that do not exist locally (Hub ids, "in-memory") are ignored.

    Raises:
        OutputError: naming the output and the input it overlaps (a ``ValueError``).
    """
    out = Path(output).expanduser().resolve()
    for source in inputs:
        if not Path(source).expanduser().exists():
            continue
        inp = Path(source).expanduser().resolve()
        if out == inp or inp in out.parents:
            raise OutputError(f"output {out} is inside the input {inp}: write it somewhere else")
        if out in inp.parents:
            raise OutputError(f"output {out} contains the input {inp}: writing it would delete that input")
    return out


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
