"""The cache of trained tiny models (clean, backdoored, captioned): one folder per recipe, reused only when
the recipe *and the code that trains it* are the same.

A cache key is the hash of the recipe (the config's fields) plus :func:`code_fingerprint`: the package
version and the source text of every module that decides how a cached model is trained
(:data:`RECIPE_MODULES`). Changing how models are trained therefore trains new ones instead of silently
reusing models trained by older code. Every folder holds :data:`RECIPE_FILE` with the recipe it was built
from, and a reused folder's file is compared with the recipe asked for: a folder whose file is missing or
differs (an interrupted build, a collision, a hand edit) is rebuilt, never trusted.

Every build runs with :data:`BUILD_THREADS` CPU threads whatever the process was started with: the weights a
training produces depend on the thread count (it orders the floating-point reductions), so a model built by a
test run under ``OMP_NUM_THREADS=1`` and one built by a benchmark on two cores are the same model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..io import cache_dir, recipe_hash

logger = logging.getLogger(__name__)

__all__ = [
    "BUILD_THREADS",
    "RECIPE_FILE",
    "RECIPE_MODULES",
    "build_seconds",
    "cached_checkpoint",
    "code_fingerprint",
    "recipe_key",
]

#: The file in every cached folder that records the recipe it was built from.
RECIPE_FILE = "hf_tbar_recipe.json"

#: CPU threads of every build (recorded in :data:`RECIPE_FILE`; a folder built with another count is rebuilt).
BUILD_THREADS = 2

#: Modules whose code decides how a cached model is built: architecture and tokenizer, data generation,
#: triggers and poisoning, losses, the training loop, the recipes themselves.
RECIPE_MODULES: tuple[str, ...] = (
    "hf_tbar.attacks.badclip",
    "hf_tbar.attacks.base",
    "hf_tbar.attacks.image_files",
    "hf_tbar.attacks.image_triggers",
    "hf_tbar.attacks.poison",
    "hf_tbar.attacks.triggers",
    "hf_tbar.data.captioned",
    "hf_tbar.data.embedded",
    "hf_tbar.data.glyphs",
    "hf_tbar.data.pixels",
    "hf_tbar.models.tiny_clip",
    "hf_tbar.models.tokenizer",
    "hf_tbar.training.arguments",
    "hf_tbar.training.augment",
    "hf_tbar.training.backdoor",
    "hf_tbar.training.badclip",
    "hf_tbar.training.batches",
    "hf_tbar.training.captioned",
    "hf_tbar.training.captioned_badclip",
    "hf_tbar.training.captioned_backdoor",
    "hf_tbar.training.losses",
    "hf_tbar.training.loop",
    "hf_tbar.training.pretrain",
    "hf_tbar.zeroshot",
)


@functools.cache
def code_fingerprint() -> str:
    """A short hash of hf_tbar's version and the source of :data:`RECIPE_MODULES` (read once per process)."""
    digest = hashlib.sha256(_version().encode())
    for name in RECIPE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"recipe module {name} cannot be found: update RECIPE_MODULES")
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    return digest.hexdigest()[:16]


def recipe_key(recipe: dict[str, Any]) -> str:
    """The cache key of ``recipe`` (a JSON-serialisable dict naming its ``kind``) under the current code."""
    return recipe_hash({**recipe, "code": code_fingerprint()})


def _recorded(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / RECIPE_FILE).read_text())
    except (OSError, ValueError):
        return None


def cached_checkpoint(
    kind: str, recipe: dict[str, Any], build: Callable[[Path], object], complete_file: str = "config.json"
) -> Path:
    """``<cache>/<kind>/<recipe_key(recipe)>``, built there by ``build(path)`` unless a folder built from the
    same recipe under the same code is there already.

    Args:
        kind: Sub-folder of the cache (``"clean"``, ``"backdoored"``, ...).
        recipe: Everything that defines the model (JSON-serialisable); recorded in :data:`RECIPE_FILE`.
        build: Writes a complete checkpoint at the path it is given (atomically: a folder that exists is
            complete).
        complete_file: The file whose presence marks a built folder (a model's ``config.json``; another file
            for folders that hold no model, e.g. an optimised trigger).
    """
    expected = json.loads(
        json.dumps({"recipe": recipe, "code": code_fingerprint(), "threads": BUILD_THREADS}, default=str)
    )
    path = cache_dir() / kind / recipe_key(recipe)
    if (path / complete_file).is_file():
        recorded = _recorded(path)
        if recorded is not None and {k: recorded.get(k) for k in expected} == expected:
            return path
        logger.warning("cached %s folder %s does not record this recipe: rebuilding it", kind, path)
        shutil.rmtree(path)
    logger.info("no cached %s for this recipe; building it in %s (%d threads)", kind, path, BUILD_THREADS)
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    start = time.perf_counter()
    try:
        build(path)
    finally:
        torch.set_num_threads(threads)
    record = {**expected, "hf_tbar_version": _version(), "build_s": round(time.perf_counter() - start, 1)}
    (path / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return path


def build_seconds(path: str | Path) -> float | None:
    """Seconds the cached folder ``path`` took to build (recorded by :func:`cached_checkpoint`; a build that
    trains another cached model first counts that one too), or ``None`` for a folder built before builds were
    timed or not built by the cache."""
    recorded = _recorded(Path(path))
    value = None if recorded is None else recorded.get("build_s")
    return None if value is None else float(value)


def _version() -> str:
    return importlib.metadata.version("hf_tbar")
