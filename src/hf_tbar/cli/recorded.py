"""A CLI run's options as its report records them (``TBARReport.command``), for the card's reproduce line.

Every option whose value differs from the ``hf-tbar unlearn`` default is recorded, by field name, in the
parser's order, so that the line the card writes (:func:`hf_tbar.hub.reproduce.reproduce_command`) parses back
into the same arguments. ``output_dir`` and ``overwrite`` are the card's to set. A report is published: local
paths are recorded as ``path/to/<base name>`` (:func:`~hf_tbar.hub.provenance.local_placeholder`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..hub.provenance import local_placeholder
from . import parse_command

__all__ = ["PATH_OPTIONS", "recorded_command"]

#: Options that may name a local file or folder (else a Hub id, an embedded name, or inline values).
PATH_OPTIONS = frozenset(
    {
        "model",
        "adapter_dir",
        "trigger_image",
        "poisoned_images",
        "dataset_name",
        "classnames",
        "templates",
        "caption_dataset",
        "checkpoint_dir",
    }
)
#: Options the reproduce line does not carry: the card gives its own output folder.
NOT_RECORDED = frozenset({"output_dir", "overwrite"})


def _absolute(value: str) -> bool:
    """An absolute, home-relative or Windows path: a local path whatever the option."""
    return value.startswith(("/", "~")) or "\\" in value or (len(value) > 2 and value[1:3] == ":/")


def _local(value: str) -> bool:
    """A path option's value that names a local file or folder: one that exists here, or reads as a path."""
    return _absolute(value) or value.startswith(("./", "../")) or Path(value).expanduser().exists()


def public_value(name: str, value: Any) -> Any:
    """``value`` of option ``name`` as a published report may hold it: local paths as placeholders, also inside
    a JSON object option (the ``path`` of ``--attack_params``) and in list items."""
    if isinstance(value, list):
        return [public_value("", item) for item in value]
    if not isinstance(value, str):
        return value
    if _absolute(value) or (name in PATH_OPTIONS and _local(value)):
        return local_placeholder(value)
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, dict) and isinstance(parsed.get("path"), str):
            published = public_value("trigger_image", parsed["path"])
            if published != parsed["path"]:
                return json.dumps({**parsed, "path": published})
    return value


def recorded_command(*parsed: Any, name: str = "unlearn") -> dict[str, Any]:
    """``{"name": name, "options": {...}}``: the fields of the dataclasses ``parsed`` (those a run was given:
    ``UnlearnArguments`` or a subclass, the data arguments, ``TBARConfig``) whose value differs from the
    sub-command's parsed default, made public with :func:`public_value`.

    A field the sub-command does not have (``sanitize``'s ``repo_id``, ``token``...) is never recorded.
    """
    values = {f.name: getattr(p, f.name) for p in parsed for f in dataclasses.fields(p)}
    options = {}
    for default in parse_command(name, []):
        for f in dataclasses.fields(default):
            if f.name in NOT_RECORDED or f.name not in values:
                continue
            if values[f.name] != getattr(default, f.name):
                options[f.name] = public_value(f.name, values[f.name])
    return {"name": name, "options": options}
