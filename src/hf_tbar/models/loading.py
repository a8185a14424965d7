"""Load CLIP (and other registered image-text family) checkpoints safely: from a local folder or a Hub id, refused with a :class:`ModelLoadError` that
names the file, tensor, path or id when the checkpoint cannot be used as it is.

A Hub id is first resolved to a snapshot folder holding only the files listed in :data:`CHECKPOINT_FILES`
(safetensors weights, never a pickle), so that a local folder and a Hub id go through the same checks:
config.json, tokenizer and image processor files present and valid JSON, weights that match config.json
and hold only finite values.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, is_offline_mode, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from transformers import AutoTokenizer, PreTrainedModel

from ..errors import InputError, ModelLoadError
from .base import MODEL_FAMILIES, ModelFamily, get_model_family

__all__ = [
    "CHECKPOINT_FILES",
    "PROCESSOR_FILES",
    "check_checkpoint_folder",
    "check_finite",
    "load_model",
]

logger = logging.getLogger(__name__)

#: The tokenizer and image-processor files of a checkpoint folder.
PROCESSOR_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
)
#: The files of a CLIP checkpoint fetched from the Hub (safetensors weights only, never pickles).
CHECKPOINT_FILES: tuple[str, ...] = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    *PROCESSOR_FILES,
)
# load_model keyword arguments that choose what is fetched from the Hub (not passed to from_pretrained).
_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


def load_model(name_or_path: str | os.PathLike, **kwargs: Any) -> tuple[PreTrainedModel, Any]:
    """Load an image-text model and its processor from a local folder or a Hub id
    (``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``).

    The family (CLIP, SigLIP, or one registered with :func:`hf_tbar.models.register_model_family`) is chosen
    by the ``model_type`` of config.json.

    ``trust_remote_code`` is never enabled, and only safetensors weights are loaded (a pickle ``.bin`` is
    never read, nor downloaded). The image processor is always the PIL one (no torchvision needed).

    Args:
        name_or_path: A local checkpoint folder, or a Hub id (fetched into, or read from, the Hugging Face
            cache).
        **kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only`` and ``force_download`` choose
            what is fetched from the Hub; the others go to the family's ``from_pretrained``.

    Returns:
        The model (in eval mode) and its processor.

    Raises:
        ModelLoadError: a path that does not exist, a Hub id that cannot be fetched (or is not cached while
            offline), a folder that is not a complete CLIP checkpoint (names the missing or invalid file),
            weights that cannot be read (truncated or corrupted), that do not match config.json (a tensor
            missing, left over or of another shape, so that no layer is silently left at random values),
            or that hold NaN or infinite values (names the first such tensor).
    """
    kwargs.pop("trust_remote_code", None)
    hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
    folder, repo_id = _resolve(name_or_path, hub_kwargs)
    try:
        family = check_checkpoint_folder(folder)
    except ModelLoadError as err:
        if repo_id is None:
            raise
        raise ModelLoadError(
            f"{err} (cached copy of {repo_id}: if it is incomplete, download it again with "
            f"`hf download {repo_id}`)"
        ) from err
    # Mismatched shapes are reported in the loading info (and refused below, naming the tensor).
    kwargs.setdefault("ignore_mismatched_sizes", True)
    try:
        model, info = family.model_class.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except (SafetensorError, RuntimeError) as err:  # a truncated or corrupted weights file
        raise ModelLoadError(
            f"cannot load the {family.display_name} weights of {name_or_path}: {err}"
        ) from err
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"cannot load {name_or_path} as a {family.model_class.__name__}: {err}") from err
    _check_loading_info(name_or_path, info)
    check_finite(model, name_or_path)
    if repo_id is not None:
        model.name_or_path = model.config.name_or_path = repo_id
    processor = _load_processor(folder, name_or_path, family)
    model.eval()
    return model, processor


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id (``namespace/name``)."""
    separators = sum(name.count(sep) for sep in {os.sep, os.altsep or os.sep})
    if name.startswith((".", "/", "~")) or separators >= 2:
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def _resolve(name_or_path: str | os.PathLike, hub_kwargs: dict[str, Any]) -> tuple[Path, str | None]:
    """The local folder of a checkpoint, and its Hub id when it was fetched from (or found in) the cache.

    Raises:
        ModelLoadError: a file instead of a folder, a path that does not exist, or a Hub id that cannot be
            fetched.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file, not a CLIP checkpoint folder")
        return path, None
    name = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or _looks_like_path(name):
        where = "" if str(path.absolute()) == name else f" ({path.absolute()})"
        raise ModelLoadError(f"model folder {name} does not exist{where}")
    try:
        folder = snapshot_download(name, allow_patterns=list(CHECKPOINT_FILES), **hub_kwargs)
    except LocalEntryNotFoundError as err:  # not cached, and offline or the Hub cannot be reached
        if is_offline_mode():
            why = "offline mode is on (HF_HUB_OFFLINE=1)"
        elif hub_kwargs.get("local_files_only"):
            why = "local_files_only=True was passed"
        else:
            why = f"the Hub cannot be reached ({constants.ENDPOINT})"
        raise ModelLoadError(
            f"{name} is not in the local Hugging Face cache and {why}: download it first with "
            f"`hf download {name}` while online, or pass a local folder"
        ) from err
    except OSError as err:  # repository or revision not found, gated, HTTP errors
        raise ModelLoadError(f"cannot fetch {name} from the Hugging Face Hub: {err}") from err
    logger.info("loading %s from %s", name, folder)
    return Path(folder), name


def _read_json(file: Path) -> Any:
    """The content of a JSON file, or a ModelLoadError naming the file and where the JSON breaks."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(
            f"{file} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno} (char {err.pos})"
        ) from err
    except UnicodeDecodeError as err:
        raise ModelLoadError(f"{file} is not valid JSON: not UTF-8 text at byte {err.start}") from err


def check_checkpoint_folder(folder: Path) -> ModelFamily:
    """Check that ``folder`` holds a complete checkpoint of a registered family, before anything is loaded
    from it; return that family.

    Args:
        folder: The checkpoint folder.

    Raises:
        ModelLoadError: config.json missing, not JSON or of an unregistered ``model_type``; no safetensors
            weights; no tokenizer (one of the family's ``tokenizer_files`` sets, e.g. tokenizer.json, or
            vocab.json and merges.txt); no image processor configuration; or any of its
            JSON files not valid JSON. The message names the folder and the files.
    """
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a CLIP checkpoint: it has no config.json")
    documents = {
        name: _read_json(folder / name)
        for name in CHECKPOINT_FILES
        if name.endswith(".json") and (folder / name).is_file()
    }
    config = documents["config.json"]
    model_type = config.get("model_type") if isinstance(config, dict) else None
    try:
        family = get_model_family(model_type)
    except InputError:
        raise ModelLoadError(
            f"{folder} is not a checkpoint hf_tbar can load: config.json has model_type {model_type!r} "
            f"(supported: {', '.join(sorted(MODEL_FAMILIES))})"
        ) from None
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        raise ModelLoadError(f"{folder} has no safetensors weights (pickle .bin checkpoints are not loaded)")
    if not any(all((folder / name).is_file() for name in group) for group in family.tokenizer_files):
        files = sorted({name for group in family.tokenizer_files for name in group})
        needs = ", or ".join(" and ".join(group) for group in family.tokenizer_files)
        raise ModelLoadError(
            f"{folder} has no tokenizer: {', '.join(files)} missing (a {model_type} checkpoint needs {needs})"
        )
    processor_config = documents.get("processor_config.json")
    nested = processor_config.get("image_processor") if isinstance(processor_config, dict) else None
    if "preprocessor_config.json" not in documents and not isinstance(nested, dict):
        raise ModelLoadError(
            f"{folder} has no image processor configuration: preprocessor_config.json missing (and no "
            "image_processor entry in processor_config.json)"
        )
    return family


def check_finite(model: torch.nn.Module, name_or_path: str | os.PathLike) -> None:
    """Check that every floating-point parameter and buffer of ``model`` is finite.

    Args:
        model: The loaded model.
        name_or_path: Where it was loaded from (for the message).

    Raises:
        ModelLoadError: names the first tensor holding NaN or infinite values, and how many of each.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor.detach())
        if bool(finite.all()):
            continue
        nans = int(torch.isnan(tensor.detach()).sum())
        infs = tensor.numel() - int(finite.sum()) - nans
        raise ModelLoadError(
            f"{name_or_path}: tensor {name!r} holds {nans} NaN and {infs} infinite value(s) out of "
            f"{tensor.numel()}: the weights are corrupted"
        )


def _load_processor(folder: Path, name_or_path: str | os.PathLike, family: ModelFamily) -> Any:
    """The tokenizer and the PIL image processor of a checked checkpoint folder, as the family's processor."""
    try:
        image_processor = family.image_processor_class.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(
            f"cannot load the tokenizer or image processor of {name_or_path}: {err}"
        ) from err
    return family.build_processor(image_processor, tokenizer)


def _check_loading_info(name_or_path: str | os.PathLike, info: dict) -> None:
    """Raise a ModelLoadError when the checkpoint's tensors and the architecture of config.json disagree."""
    mismatched = [
        f"{entry[0]!r} (weights {list(entry[1])}, config.json {list(entry[2])})"
        if isinstance(entry, tuple) and len(entry) == 3
        else repr(entry)
        for entry in info.get("mismatched_keys") or []
    ]
    problems = {
        "missing from the weights (they would stay at random values)": [
            repr(key) for key in info.get("missing_keys") or []
        ],
        "in the weights but not in the architecture": [
            repr(key) for key in info.get("unexpected_keys") or [] if not key.endswith("position_ids")
        ],
        "of another shape than config.json says": mismatched,
    }
    for what, keys in problems.items():
        if keys:
            raise ModelLoadError(
                f"{name_or_path}: the weights do not match its config.json: {len(keys)} tensor(s) {what}, "
                f"e.g. {sorted(keys)[0]}"
            )
