"""The card's "How to reproduce" line: the ``hf-tbar unlearn`` command that makes the same sanitized model.

A CLI run records its options in the report (:class:`~hf_tbar.reporting.schema.RunCommand`): the line is those
options, so that ``hf_tbar.cli.parse_command`` reads it back into the run's arguments (with ``--output_dir``
the card's own). A report without them (an API run, a report older than schema version 2) gets a line rebuilt
from what it records: the base model, the data, the trigger, the recipe and the scale-search constraints.

Local files and folders are never named where they were: they read ``path/to/<base name>``. An unknown-trigger
run is reproduced with ``--trigger auto`` (the detectors run again), never with the inverted trigger's tensors.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from ..reporting.schema import Recipe, TBARReport
from .provenance import PLACEHOLDER_FOLDER, local_placeholder, report_provenance

__all__ = ["command_words", "reproduce_command", "reproduce_notes", "reproduce_options"]

#: Data sources whose dataset name is not a local path (see :mod:`hf_tbar.data.sources`).
_NAMED_SOURCES = (None, "hub", "embedded")
#: The placeholder of a base model that has no folder or Hub id recorded (a model object, an old report).
_UNNAMED_MODEL = "backdoored-model"


def _word(value: Any) -> str:
    """One option value as the parser reads it back: ``none``, ``true``/``false``, floats exactly (``repr``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def command_words(options: Mapping[str, Any]) -> list[str]:
    """``--name value`` words of ``options`` (field name -> value): ``True`` is the bare flag, a list gives one
    word per item (an empty one is left out)."""
    words: list[str] = []
    for name, value in options.items():
        flag = f"--{name}"
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(_word, value)] if value else []
        else:
            words += [flag, _word(value)]
    return words


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one: ``report.data`` is free-form (a demo writes strings)."""
    return value if isinstance(value, Mapping) else {}


def _dataset_options(report: TBARReport) -> dict[str, Any]:
    """The data flags of a report without a recorded command: the dataset, its splits, columns and caps."""
    data = _mapping(report.data)
    options: dict[str, Any] = {}
    dataset = report.dataset or data.get("dataset")
    if dataset:
        named = data.get("source") in _NAMED_SOURCES
        options["dataset_name"] = dataset if named else local_placeholder(str(dataset))
    options["dataset_config"] = report.dataset_config or data.get("config")
    for role, used in _mapping(data.get("splits")).items():
        used = _mapping(used)
        read = None if used.get("carved_from_train") else used.get("split")
        if read not in (None, role):
            options[f"{role}_split"] = read
    for key, usual in (("image_column", "image"), ("label_column", "label")):
        if data.get(key) not in (None, usual):
            options[key] = data[key]
    for key in ("max_train_samples", "max_eval_samples"):
        options[key] = data.get(key)
    if data.get("data_seed") not in (None, 0):
        options["data_seed"] = data["data_seed"]
    if data.get("validation_fraction") not in (None, 0.1):
        options["validation_fraction"] = data["validation_fraction"]
    captions = _mapping(data.get("unlearning_set"))
    if captions.get("kind") == "image-caption":
        caption_dataset = captions.get("dataset")
        if caption_dataset != dataset:
            named = captions.get("source") in _NAMED_SOURCES
            options["caption_dataset"] = caption_dataset if named else local_placeholder(caption_dataset)
            options["caption_dataset_config"] = captions.get("config")
            if captions.get("split") not in (None, "train"):
                options["caption_split"] = captions["split"]
        options["caption_column"] = captions.get("caption_column")
    return options


def _trigger_options(report: TBARReport) -> dict[str, Any]:
    """``--trigger auto`` after detection, the found images' folder, or the known trigger and its parameters."""
    trigger = report.trigger
    if report.inverted_trigger:  # the command runs detection again: the inverted tensors are not a flag
        return {"trigger": "auto"}
    if trigger is None or report.trigger_source == "found":
        return {"poisoned_images": f"{PLACEHOLDER_FOLDER}/poisoned_images", "target": report.target_class}
    params = {key: value for key, value in trigger.items() if key not in ("name", "file_name")}
    options: dict[str, Any] = {"trigger": trigger.get("name")}
    if "file_name" in trigger:  # an image trigger: the file is the user's, named by its base name
        options["trigger_image"] = local_placeholder(str(trigger["file_name"]))
    options["attack_params"] = json.dumps(params) if params else None
    options["target"] = report.target_class
    return options


def reproduce_options(report: TBARReport) -> dict[str, Any]:
    """The options of the reproduce line, by field name: the recorded command's, else rebuilt from the report."""
    if report.command is not None:
        return dict(report.command.options)
    recipe, selection = report.recipe or Recipe(), report.selection
    hub_id, source = report_provenance(report)
    options: dict[str, Any] = {
        "model": hub_id or local_placeholder(source["name"] or _UNNAMED_MODEL),
        **_dataset_options(report),
        **_trigger_options(report),
        "mode": recipe.mode,
        "variant": recipe.variant,
        "steps": recipe.steps,
        "learning_rate": recipe.learning_rate,
        "batch_size": recipe.batch_size,
        "unlearning_set_size": recipe.unlearning_set_size,
        "preserve_set_size": recipe.preserve_set_size,
        "lora_r": recipe.lora.r if recipe.lora else None,
        "lora_alpha": recipe.lora.alpha if recipe.lora else None,
        "lora_target_modules": recipe.lora.target_modules if recipe.lora else None,
        "seed": recipe.seed,
    }
    unlearning_set = _mapping(_mapping(report.data).get("unlearning_set"))
    options["target_captions"] = unlearning_set.get("target_captions")
    options = {key: value for key, value in options.items() if value is not None}
    if selection is not None:  # a recorded ``None`` target threshold is the constraint turned off
        options.update(
            {"ca_threshold": selection.ca_threshold, "target_threshold": selection.target_threshold}
        )
        if selection.max_scale is not None:
            options["max_scale"] = selection.max_scale
    return options


def reproduce_command(report: TBARReport, output_dir: str = "sanitized") -> str:
    """The ``hf-tbar`` line that makes the recorded run again, writing to ``output_dir``.

    Every word is shell-quoted; local paths read ``path/to/<base name>`` (see :func:`reproduce_options`).
    """
    name = report.command.name if report.command is not None else "unlearn"
    words = ["hf-tbar", name, *command_words(reproduce_options(report)), "--output_dir", output_dir]
    return " ".join(shlex.quote(word) for word in words)


def reproduce_notes(report: TBARReport) -> list[str]:
    """Sentences the card prints under the reproduce line: placeholders, detection run again, rebuilt line."""
    notes = []
    if report.command is None:
        notes.append(
            "The run did not record its command line (an API run or an older report): this line is rebuilt "
            "from the report's recipe, data and trigger."
        )
    if f"{PLACEHOLDER_FOLDER}/" in reproduce_command(report):
        notes.append(
            f"`{PLACEHOLDER_FOLDER}/...` stands for a local file or folder of the original run, which the report "
            "never locates: replace it with yours."
        )
    file_name = (report.trigger or {}).get("file_name")
    if report.inverted_trigger:
        note = "`--trigger auto` runs the detectors again to reverse-engineer the trigger."
        if file_name:
            note += f" The inverted trigger this run removed is in [`{file_name}`]({file_name})."
        notes.append(note)
    return notes
