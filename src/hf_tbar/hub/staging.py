"""The staging folder of a push: exactly the files that go to the Hub, checked to be a loadable checkpoint and
searched for the Hub token before anything leaves this machine."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from huggingface_hub import get_token

from ..errors import InputError, ModelLoadError, OutputError, OutputExistsError
from ..io import atomic_output_dir
from ..models import MODEL_FAMILIES
from ..models.loading import PROCESSOR_FILES, load_model
from .card import build_model_card
from .card_adapter import adapter_card
from .config import PushConfig
from .gate import REPORT_NAME, check_safety_gate, load_report
from .provenance import report_provenance

logger = logging.getLogger(__name__)

PLOT_NAME = "tbar_scale_sweep.png"
CARD_NAME = "README.md"

#: Files of a sanitized folder that are pushed (top level only). Anything else (stray logs, pickled ``.bin``
#: weights, an old README, dotfiles) stays local; the card is always regenerated from the report.
PUSHED_FILE_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    *PROCESSOR_FILES,
    REPORT_NAME,
    PLOT_NAME,
)


def _pushed_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    kept = [p for p in files if any(fnmatch.fnmatch(p.name, pattern) for pattern in PUSHED_FILE_PATTERNS)]
    skipped = sorted(p.name for p in files if p not in kept)
    if skipped:
        logger.info("not pushing files outside the checkpoint: %s", ", ".join(skipped))
    return kept


def check_clip_checkpoint(folder: Path, files: list[Path]) -> None:
    """Refuse anything but a checkpoint of a registered family (CLIP, SigLIP) whose safetensors weights load.

    Args:
        folder: The sanitized folder (only read).
        files: The files of ``folder`` that would be pushed.

    Raises:
        InputError: no ``config.json``, no safetensors weights, or a ``model_type`` of no registered family.
        ModelLoadError: the weights do not load as the model that ``config.json`` describes.
    """
    names = {p.name for p in files}
    if "config.json" not in names:
        raise InputError(f"{folder} is not a model checkpoint: it has no config.json")
    if not any(name.endswith(".safetensors") for name in names):
        raise InputError(f"{folder} has no safetensors weights (pickle .bin checkpoints are never pushed)")
    try:
        config: Any = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{folder / 'config.json'} is not valid JSON: {error}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None

    if model_type not in MODEL_FAMILIES:
        raise InputError(
            f"{folder} is not a checkpoint hf_tbar pushes: config.json has model_type {model_type!r}, "
            f"only {', '.join(repr(t) for t in sorted(MODEL_FAMILIES))} models are pushed"
        )
    try:
        load_model(folder)
    except (ValueError, OSError) as error:
        name = MODEL_FAMILIES[model_type].model_class.__name__
        raise ModelLoadError(f"{folder} does not load as a {name}: {error}") from error


#: The files of a negation-adapter folder that are pushed (the card is regenerated).
ADAPTER_FILES: tuple[str, ...] = ("adapter_config.json", "adapter_model.safetensors", REPORT_NAME)


def check_adapter_folder(folder: Path) -> list[Path]:
    """The files of a negation-adapter folder to push, checked: a PEFT LoRA ``adapter_config.json``, the
    safetensors weights and the report.

    Raises:
        InputError: a file is missing, or ``adapter_config.json`` is not a LoRA adapter's (names it).
    """
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"{folder} is not a negation adapter folder: {', '.join(missing)} missing (write one with "
            "hf-tbar unlearn --mode lora --adapter_dir DIR)"
        )
    try:
        config: Any = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{folder / 'adapter_config.json'} is not valid JSON: {error}") from None
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != "LORA":
        raise InputError(f"{folder / 'adapter_config.json'} is not a LoRA adapter: peft_type {peft_type!r}")
    return [folder / name for name in ADAPTER_FILES]


def _report_named_files(folder: Path, report) -> list[Path]:
    """The safetensors file the report's trigger names (an inverted trigger's), when ``folder`` holds it; an
    image trigger's picture (the attacker's patch) is never pushed."""
    name = (report.trigger or {}).get("file_name")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        return []
    if not (folder / name).is_file():
        return []
    return [folder / name]


def _searched_bytes(path: Path) -> bytes:
    """The bytes of a staged file that may hold text: all of it, or a safetensors file's JSON header only."""
    if path.suffix != ".safetensors":
        return path.read_bytes()
    with path.open("rb") as handle:  # the tensors are not text; the header's __metadata__ can be
        prefix = handle.read(8)
        if len(prefix) < 8:
            return prefix
        (size,) = struct.unpack("<Q", prefix)
        return handle.read(min(size, 100 * 1024 * 1024))


def assert_token_absent(folder: Path, token: str | None) -> None:
    """Refuse to push when a staged file holds the Hub token (the token itself is never shown).

    Every staged file is searched (a safetensors file in its JSON header), including the generated card.

    Raises:
        InputError: naming the file that holds the token.
    """
    if not token:
        return
    needle = token.encode()
    for path in sorted(folder.iterdir()):
        if path.is_file() and needle in _searched_bytes(path):
            raise InputError(
                f"refusing to push: {path.name} contains the Hub token; remove it from the sanitized folder"
            )


def available_token(config: PushConfig) -> str | None:
    """``config.token``, else ``$HF_TOKEN`` or the saved login, else ``None`` (never raises, never logs it)."""
    if config.token:
        return config.token
    try:
        return get_token()
    except Exception as error:  # e.g. an OIDC exchange that failed: nothing to search for
        logger.warning(
            "could not read the saved Hub token (%s): it is not searched for", type(error).__name__
        )
        return None


def stage_folder(source: Path, target: Path, config: PushConfig, token: str | None) -> list[str]:
    """:func:`prepare_push_folder` with resolved folders and an already resolved ``token`` to search for."""
    report = load_report(source)
    if target == source or source in target.parents or target in source.parents:
        raise OutputError(f"staging folder {target} must not overlap the sanitized folder {source}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise OutputExistsError(f"staging folder {target} already exists and is not empty")
    if config.adapter:
        files = check_adapter_folder(source)
    else:
        files = _pushed_files(source)
        check_clip_checkpoint(source, files)
    files += [path for path in _report_named_files(source, report) if path not in files]
    if target.exists():
        target.rmdir()

    failures = check_safety_gate(report, config.max_asr, config.min_ca_retention)
    forced = bool(failures) and config.force
    card = build_model_card(
        report,
        repo_id=config.repo_id,
        forced=forced,
        gate_failures=failures if forced else (),
        plot_path=PLOT_NAME if (source / PLOT_NAME).is_file() else None,
    )
    if config.adapter:
        family = MODEL_FAMILIES.get(report.model_type)
        model_class = family.model_class.__name__ if family else "AutoModel"
        card = adapter_card(card, model_class, report_provenance(report)[0], config.repo_id)
    with atomic_output_dir(target, overwrite=False) as tmp:
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        card.save(tmp / CARD_NAME)
        assert_token_absent(tmp, token)
        written = sorted(p.name for p in tmp.iterdir())
    logger.info("staged %d files for %s in %s", len(written), config.repo_id, target)
    return written


def prepare_push_folder(
    sanitized_dir: str | os.PathLike, staging_dir: str | os.PathLike, config: PushConfig
) -> list[str]:
    """Write, atomically, exactly the folder that would be pushed: the checkpoint files and a fresh model card.

    The folder must be a CLIP checkpoint (``model_type`` ``"clip"``, safetensors weights that load as a
    ``CLIPModel``); this is checked before anything is written. Every staged file is searched for the Hub token
    (``config.token``, else ``$HF_TOKEN`` or the saved login, when there is one). The safety gate is evaluated
    here only to word the card: a model that fails it gets the "forced" warning when ``config.force`` is set.
    Refusing the push is :func:`~hf_tbar.hub.push_sanitized_model`'s job.

    Args:
        sanitized_dir: A folder written by hf_tbar: a CLIP checkpoint (safetensors) plus ``tbar_report.json``
            and optionally ``tbar_scale_sweep.png``. Only read.
        staging_dir: The folder to write; must not exist yet (or be empty) and must not overlap ``sanitized_dir``.
        config: The push settings (repo id for the card, gate thresholds, ``force``, ``token``).

    Returns:
        The sorted file names written to ``staging_dir``.

    Raises:
        InputError: ``sanitized_dir`` or its report is missing, it is not a CLIP safetensors checkpoint, or a
            staged file holds the Hub token.
        ModelLoadError: the weights do not load as a ``CLIPModel``.
        OutputExistsError: ``staging_dir`` exists and is not empty.
        OutputError: the folders overlap.
    """
    source = Path(sanitized_dir).expanduser().resolve()
    target = Path(staging_dir).expanduser().resolve()
    return stage_folder(source, target, config, available_token(config))
