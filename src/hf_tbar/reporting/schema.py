"""The typed TBAR run report (``tbar_report.json``): one dataclass written by a run and read by the card,
the safety gate, the push and the CLI.

:class:`TBARReport` keeps the JSON keys hf_tbar has always written; ``to_dict``/``to_json`` and
``from_dict``/``from_json`` round-trip exactly (``ca_retention`` is derived from ``before`` and ``after``
with :func:`hf_tbar.metrics.ca_retention`, so it is written but never read back). Reading checks every key's
type and raises :class:`~hf_tbar.errors.InputError` naming the file and the key.

Schema versions (``schema_version``; a report without one is version 1):

| version | what changed |
|---|---|
| 1 | the format of every report so far; files written before ``schema_version`` existed read as version 1 |
| 2 | ``command`` (a CLI run's ``hf-tbar`` options), ``selection.max_scale``, ``recipe.preserve_set_size``; an inverted trigger named by its file (``trigger.file_name``, beside the report), not inline |
| 3 | ``selection.strategy`` and ``selection.cost`` (the search's cost in full-validation evaluation equivalents), ``sweep[].screened`` (a candidate judged on the halving strategy's screen only) |
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.embedded import TaskSpec
from ..errors import InputError
from ..evaluation import EvalResult
from ..metrics import ca_retention
from ..scale_search import SweepPoint

__all__ = [
    "REPORT_FILE",
    "SCHEMA_VERSION",
    "BaseModelSource",
    "Recipe",
    "RunCommand",
    "Selection",
    "TBARReport",
]

#: File name of the report in a sanitized folder.
REPORT_FILE = "tbar_report.json"
#: The schema version this hf_tbar writes, and the newest it reads.
SCHEMA_VERSION = 3
#: ``trigger_source`` values of a reverse-engineered trigger (``"decree"``: reports of hf_tbar <= schema 2).
INVERTED_SOURCES = ("inverted", "decree")
#: Keys written for the reader's convenience and recomputed on reading (never trusted from the file).
DERIVED_KEYS = ("ca_retention",)


@dataclass
class BaseModelSource:
    """Where the backdoored model came from: ``kind`` ``"hub"``, ``"local"`` or ``"in-memory"``; ``name`` its Hub
    id, its folder's base name (never a path) or ``None`` (see :mod:`hf_tbar.hub.provenance`)."""

    kind: str
    name: str | None = None


@dataclass
class LoraRecipe:
    """The LoRA settings of a ``mode="lora"`` fine-tuning (:class:`~hf_tbar.tbar.config.TBARConfig`'s ``lora_*``)."""

    r: int | None = None
    alpha: int | None = None
    target_modules: list[str] | None = None


@dataclass
class Recipe:
    """How the trigger vector was fitted: the fine-tuning settings of :class:`~hf_tbar.tbar.config.TBARConfig`.

    ``learning_rate`` is the peak AdamW rate (``None``: the mode's default); ``unlearning_set_size`` counts images.
    """

    mode: str | None = None
    steps: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    unlearning_set_size: int | None = None
    variant: str | None = None
    lora: LoraRecipe | None = None
    seed: int | None = None
    preserve_set_size: int | None = None


@dataclass
class Selection:
    """How the negation scale was chosen: the split, the accuracy constraints (fractions of the backdoored
    model's accuracy), the number of scales evaluated, the largest scale searched, the search strategy
    (``halving`` or ``full``) and its cost in full-validation evaluation equivalents (images forwarded over
    those of one evaluation of every validation image)."""

    split: str | None = None
    ca_threshold: float | None = None
    target_threshold: float | None = None
    evaluations: int | None = None
    max_scale: float | None = None
    strategy: str | None = None
    cost: float | None = None


@dataclass
class RunCommand:
    """The ``hf-tbar`` command of a run, as the card's reproduce line rebuilds it.

    Attributes:
        name: The sub-command that makes the same model (``"unlearn"``).
        options: Every option whose value differs from the sub-command's default, by field name (the flag
            without ``--``), in the parser's order; ``output_dir`` and ``overwrite`` are left out, and a local
            path is recorded as ``path/to/<its base name>``.
    """

    name: str = "unlearn"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class TBARReport:
    """The report of one TBAR run, field for field the keys of ``tbar_report.json`` (in that order).

    Accuracies and rates are fractions in ``[0, 1]``. Required keys: ``target_class``, ``scale``, ``before`` and
    ``after`` (with their ``clean_accuracy``); every other key may be missing from older reports and reads as
    ``None`` or empty. Top-level keys this schema does not know are kept in ``extra`` and written back.

    Attributes:
        schema_version: Version of this schema (:data:`SCHEMA_VERSION`).
        base_model: Hub id of the backdoored model, ``None`` when it was not loaded from the Hub.
        base_model_source: Where the backdoored model came from, named without local paths.
        model_type: The model family's ``config.json`` ``model_type`` (``"clip"``, ``"siglip"``; reports
            written before families were recorded are CLIP's).
        task: Class names and prompt templates of the zero-shot head.
        target_class: Class index the backdoor drove images to.
        trigger: The removed trigger's public description (``None``: poisoned images used as found).
        image_size: Model input ``[height, width]`` in pixels.
        trigger_source: ``"known"``, ``"inverted"`` (reverse-engineered by a detector; ``"decree"`` in reports
            written before the other detectors) or ``"found"`` (poisoned images).
        detection: The detectors' verdict when the trigger was unknown
            (:meth:`hf_tbar.detection.ScanVerdict.to_dict`; DECREE's findings alone in older reports).
        scale: The chosen negation scale alpha (dimensionless).
        sweep: The validation metrics of every scale evaluated.
        evaluation_split: The split ``before`` and ``after`` were measured on.
        before: Metrics of the backdoored model; after: of the sanitized one.
        chance_accuracy: Accuracy of uniform guessing on the task, ``1 / number of classes``.
        timings_s: Wall time per stage, seconds.
        finetuning_losses: Loss per step of each fine-tuning, by its label.
        versions: Package versions (``None`` for a package that was not installed).
        dataset, dataset_config, data: The dataset's name, configuration and provenance (splits and sizes).
        command: The ``hf-tbar`` command and options of a CLI run (``None`` for an API run or an older report).
    """

    schema_version: int = SCHEMA_VERSION
    hf_tbar_version: str | None = None
    base_model: str | None = None
    base_model_source: BaseModelSource | None = None
    model_type: str = "clip"
    task: TaskSpec | None = None
    target_class: int
    trigger: dict[str, Any] | None = None
    trigger_description: str | None = None
    image_size: list[int] | None = None
    trigger_source: str | None = None
    detection: dict[str, Any] | None = None
    recipe: Recipe | None = None
    scale: float
    sweep: list[SweepPoint] = field(default_factory=list)
    selection: Selection | None = None
    evaluation_split: str | None = None
    before: EvalResult
    after: EvalResult
    chance_accuracy: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    finetuning_losses: dict[str, list[float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=dict)
    dataset: str | None = None
    dataset_config: str | None = None
    data: dict[str, Any] | None = None
    command: RunCommand | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def inverted_trigger(self) -> bool:
        """Whether the removed trigger was reverse-engineered (the attack was unknown): ASR and the gate then
        measured the inverted trigger, not the attacker's."""
        return self.trigger_source in INVERTED_SOURCES

    @property
    def ca_retention(self) -> float | None:
        """Clean accuracy after / before (:func:`hf_tbar.metrics.ca_retention`; ``None`` when undefined)."""
        return ca_retention(self.after.clean_accuracy, self.before.clean_accuracy)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values, keys in the order of :class:`TBARReport` (plus ``ca_retention``
        after ``after``, and the ``extra`` keys last)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = _plain(getattr(self, f.name))
            if f.name == "after":
                out["ca_retention"] = self.ca_retention
        return {**out, **_plain(self.extra)}

    def to_json(self) -> str:
        """:meth:`to_dict` as the text of ``tbar_report.json`` (indented, one trailing newline)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, payload: Any, source: str = "the report") -> TBARReport:
        """Read a parsed report; ``source`` (a file name) prefixes every error message.

        Raises:
            InputError: a required key is missing, a key has the wrong type, or ``schema_version`` is newer
                than :data:`SCHEMA_VERSION`; the message names ``source`` and the key (``after.clean_accuracy``).
        """
        if not isinstance(payload, dict):
            raise InputError(f"{source} must hold a JSON object, got {type(payload).__name__}")
        version = payload.get("schema_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InputError(f"{source}: key 'schema_version' must be an integer >= 1, got {version!r}")
        if version > SCHEMA_VERSION:
            raise InputError(
                f"{source} has schema_version {version}, newer than the newest this hf_tbar reads "
                f"({SCHEMA_VERSION}): upgrade hf_tbar to read it"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        fields = {key: value for key, value in payload.items() if key in known}
        fields["schema_version"] = version  # a report without one is version 1, not this hf_tbar's
        extra = {k: v for k, v in payload.items() if k not in known and k not in DERIVED_KEYS}
        try:
            return _build(cls, {**fields, "extra": extra}, "")
        except _BadKeyError as error:
            raise InputError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> TBARReport:
        """Read ``tbar_report.json``: a path, or the JSON text itself (a string starting with ``{``).

        Raises:
            InputError: the file cannot be read, is not JSON, or :meth:`from_dict` refuses it (naming the file).
        """
        text = str(path_or_text) if not isinstance(path_or_text, os.PathLike) else None
        if text is not None and text.lstrip().startswith("{"):
            source = "the report JSON"
        else:
            path = Path(path_or_text)
            source = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"cannot read the report {path}: {error}") from None
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{source} is not valid JSON: {error}") from None
        return cls.from_dict(payload, source=source)


class _BadKeyError(Exception):
    """A key of the payload is missing or has the wrong type (the message names its dotted path)."""


def _plain(value: Any) -> Any:
    """Dataclasses as dicts, tuples as lists, recursively: what ``json`` writes and reads back."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _build(cls: type, payload: Any, key: str) -> Any:
    """Instantiate dataclass ``cls`` from ``payload``, checking every field against its type hint."""
    where = f"key {key!r}" if key else "the report"
    if not isinstance(payload, dict):
        raise _BadKeyError(f"{where} must be an object, got {payload!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise _BadKeyError(f"{where} has unknown key(s) {unknown}")
    values = {}
    for name, f in fields.items():
        path = f"{key}.{name}" if key else name
        if name in payload:
            values[name] = _check(payload[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _BadKeyError(f"required key {path!r} is missing")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # the dataclass's own checks (e.g. TaskSpec's)
        raise _BadKeyError(f"{where} is invalid: {error}") from None


_NUMBERS = {int: (int,), float: (int, float)}


def _check(value: Any, hint: Any, key: str) -> Any:
    """``value`` if it matches ``hint`` (nested dataclasses built, tuples from lists), else :class:`_BadKeyError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _check(value, inner, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _BadKeyError(f"key {key!r} must be a list, got {value!r}")
        items = [_check(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _BadKeyError(f"key {key!r} must be an object, got {value!r}")
        return {name: _check(item, args[1], f"{key}.{name}") for name, item in value.items()}
    if value is None:
        raise _BadKeyError(f"key {key!r} must not be null")
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, _NUMBERS.get(hint, (hint,))):
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[hint]
        raise _BadKeyError(f"key {key!r} must be {kind}, got {value!r}")
    return value
