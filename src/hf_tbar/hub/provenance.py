"""Where a backdoored base model came from, recorded without publishing local paths.

A report and its model card name the base model by Hub id only when it came from the Hub. A model loaded
from a local folder is recorded as ``local`` with the folder's base name only: an absolute path (often inside
the home directory or a cache) says who ran the removal and where, and links to nothing on the Hub.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

if TYPE_CHECKING:
    from ..reporting.schema import TBARReport

#: ``kind`` of a base model given as a model object that records no folder or Hub id.
IN_MEMORY = "in-memory"
#: Folder of the placeholder a published command shows instead of a local path: ``path/to/<base name>``.
PLACEHOLDER_FOLDER = "path/to"


def hub_model_id(name: Any) -> str | None:
    """``name`` if it reads as a Hub model id (``namespace/name``), ``None`` for local paths and anything else.

    A base model recorded as a local folder (``/runs/backdoored``, ``./model``, ``C:\\models\\x``, or a relative
    path that exists on this machine) must not go into the card's ``base_model`` metadata: the Hub rejects
    it and it would link to nothing.
    """
    if not isinstance(name, str) or not name:
        return None
    if name.startswith((".", "/", "~")) or "\\" in name or ":" in name or name.count("/") != 1:
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    if Path(name).expanduser().exists():
        return None
    return name


def _folder_name(source: str) -> str:
    """The last component of a POSIX or Windows path, never a directory above it."""
    path = Path(source).expanduser()
    if path.exists():
        name = path.resolve().name
        if name:
            return name
    parts = [part for part in re.split(r"[\\/]+", source) if part not in ("", ".", "..", "~")]
    return parts[-1] if parts else "unnamed"


def local_placeholder(path: str) -> str:
    """``path/to/<base name>``: how a published command names a local file or folder, never where it was.

    Example:
        ```python
        >>> local_placeholder("/home/me/data/pets_photos")
        'path/to/pets_photos'
        ```
    """
    return f"{PLACEHOLDER_FOLDER}/{_folder_name(path)}"


def base_model_provenance(source: Any) -> tuple[str | None, dict[str, str | None]]:
    """The report's ``base_model`` and ``base_model_source`` for a model loaded from ``source``.

    Args:
        source: What the model was loaded from: a Hub id, a local folder, or ``"in-memory"`` / ``None``.

    Returns:
        ``(hub_id, {"kind": kind, "name": name})``: ``hub_id`` is the Hub id when ``source`` is not an existing
        local path and is a valid ``namespace/name`` repo id, else ``None``; ``kind`` is ``"hub"``, ``"local"``
        or ``"in-memory"``; ``name`` is the Hub id, the folder's base name (never an absolute or home-relative
        path), or ``None`` for an in-memory model.

    Example:
        ```python
        >>> base_model_provenance("openai/clip-vit-base-patch32")
        ('openai/clip-vit-base-patch32', {'kind': 'hub', 'name': 'openai/clip-vit-base-patch32'})
        >>> base_model_provenance("/home/me/.cache/hf_tbar/backdoored-badnets")
        (None, {'kind': 'local', 'name': 'backdoored-badnets'})
        ```
    """
    if source is None or not str(source).strip() or str(source) == IN_MEMORY:
        return None, {"kind": IN_MEMORY, "name": None}
    source = str(source)
    hub_id = hub_model_id(source)
    if hub_id is not None:
        return hub_id, {"kind": "hub", "name": hub_id}
    return None, {"kind": "local", "name": _folder_name(source)}


def report_provenance(report: TBARReport) -> tuple[str | None, dict[str, str | None]]:
    """``(hub_id, source)`` of a report's base model, also for reports written before ``base_model_source``.

    An older report may hold a local path in ``base_model``: it is reduced to the folder's base name here.
    ``kind`` is ``"unknown"`` when the report records neither.
    """
    recorded = report.base_model_source
    if recorded is not None and recorded.kind in ("hub", "local", IN_MEMORY):
        kind, name = recorded.kind, recorded.name
        if kind == "hub":
            hub_id = hub_model_id(name)
            if hub_id is not None:
                return hub_id, {"kind": "hub", "name": hub_id}
            kind = "local"
        if kind == "local":
            return None, {"kind": "local", "name": _folder_name(str(name)) if name else "unnamed"}
        return None, {"kind": IN_MEMORY, "name": None}
    if not report.base_model:
        return None, {"kind": "unknown", "name": None}
    return base_model_provenance(report.base_model)
