"""Filesystem helpers: atomic output folders, the user cache, and loading CLIP checkpoints."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

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


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling folder, rename it to ``path`` on success.

    On any exception (Ctrl-C included) the temporary folder is removed and an existing ``path`` is left
    untouched, so no half-written folder ever sits at ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the location is not writable, or the disk filled up (``errno.ENOSPC``, naming ``path``).
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not overwrite:
        raise FileExistsError(f"output folder {target} already exists (pass overwrite=True to replace it)")
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"output path {target} exists and is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as err:  # read-only location, no space...: say which output could not be written
        raise type(err)(
            err.errno, f"cannot write {target}: cannot create a folder in {target.parent} ({err.strerror})"
        ) from err
    try:
        yield tmp
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
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
        ValueError: naming the output and the input it overlaps.
    """
    out = Path(output).expanduser().resolve()
    for source in inputs:
        if not Path(source).expanduser().exists():
            continue
        inp = Path(source).expanduser().resolve()
        if out == inp or inp in out.parents:
            raise ValueError(f"output {out} is inside the input {inp}: write it somewhere else")
        if out in inp.parents:
            raise ValueError(f"output {out} contains the input {inp}: writing it would delete that input")
    return out


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
