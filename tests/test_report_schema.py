"""The typed report: exact round trips, old reports, refused malformed or newer ones, and CA retention at zero."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from hf_tbar.errors import InputError
from hf_tbar.evaluation import EvalResult
from hf_tbar.hub import build_model_card, check_safety_gate, load_report
from hf_tbar.hub.gate import default_commit_message
from hf_tbar.metrics import ca_retention
from hf_tbar.reporting.report import build_report
from hf_tbar.reporting.schema import REPORT_FILE, SCHEMA_VERSION, TBARReport
from hf_tbar.results import UnlearningResult
from test_hub import make_report

#: A report written by hf_tbar before ``schema_version`` existed (a 5-step BadNets run on the embedded digits).
V1_REPORT = Path(__file__).parent / "data" / "tbar_report_v1.json"


def _write(folder: Path, payload) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_a_real_run_round_trips_exactly(badnets_scenario, tmp_path):
    from hf_tbar import BackdoorUnlearner, TBARConfig
    from hf_tbar.scale_search import ScaleSearchConfig

    sc = badnets_scenario
    unlearner = BackdoorUnlearner(
        sc.backdoored_path, task=sc.task, config=TBARConfig(steps=3, unlearning_set_size=64)
    )
    search = ScaleSearchConfig(ca_threshold=0.9, max_scale=1.0)
    result = unlearner.unlearn(
        sc.trigger, sc.target, sc.train[0], sc.validation, sc.test, clean_labels=sc.train[1], search=search
    )
    extra = {"dataset": "digits", "dataset_config": None, "data": {"dataset": "digits"}, "note": "kept"}
    out = unlearner.save_pretrained(tmp_path / "sanitized", result, force=True, **extra)

    report = build_report(unlearner, result, **extra)
    assert report.schema_version == SCHEMA_VERSION and report.extra == {"note": "kept"}
    assert report.before == result.before and report.ca_retention == result.ca_retention
    assert TBARReport.from_json(report.to_json()) == report
    assert TBARReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
    text = (out / REPORT_FILE).read_text()
    loaded = load_report(out)
    assert isinstance(loaded, TBARReport) and loaded.to_json() == text
    assert loaded.to_dict() == json.loads(text)
    assert loaded.scale == result.selection.scale and loaded.sweep == result.selection.sweep


def test_an_old_report_without_schema_version_loads_as_version_1():
    stored = json.loads(V1_REPORT.read_text())
    assert "schema_version" not in stored
    report = TBARReport.from_json(V1_REPORT)
    assert report.schema_version == 1 and report.task.classnames[0] == "zero"
    assert report.model_type == "clip"  # reports from before model families are CLIP's
    written = {key: value for key, value in report.to_dict().items() if key != "model_type"}
    counts = {"num_triggered": None, "num_target": None}  # the image counts of the confidence bounds
    later = {  # the keys of schema versions 2 and 3, which this report predates
        "command": None,
        "recipe": {**stored["recipe"], "preserve_set_size": None},
        "selection": {**stored["selection"], "max_scale": None, "strategy": None, "cost": None},
        "before": {**stored["before"], **counts},
        "after": {**stored["after"], **counts},
        "chance_accuracy": None,
        "sweep": [
            {**point, "clean_count": None, "triggered_count": None, "target_count": None, "screened": False}
            for point in stored["sweep"]
        ],
    }
    assert written == {"schema_version": 1, **stored, **later}  # every key kept, in its place
    assert report.ca_retention == stored["ca_retention"]
    assert "| Clean accuracy (CA) | 98.7% | 98.7% | +0.0 pts |" in build_model_card(report).text

    sparse = TBARReport.from_dict(make_report("a/b"))  # the hub tests' report: no timings, no ca_retention
    assert sparse.timings_s == {} and sparse.selection.evaluations is None
    assert sparse.ca_retention == pytest.approx(0.93 / 0.97)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("before"), "required key 'before' is missing"),
        (lambda r: r["after"].pop("clean_accuracy"), "required key 'after.clean_accuracy' is missing"),
        (lambda r: r["after"].update(clean_accuracy="high"), "key 'after.clean_accuracy' must be a number"),
        (lambda r: r["sweep"][1].pop("scale"), "required key 'sweep[1].scale' is missing"),
        (lambda r: r["recipe"].update(steps=2.5), "key 'recipe.steps' must be an integer"),
        (lambda r: r.update(target_class=True), "key 'target_class' must be an integer"),
        (lambda r: r.update(scale=None), "key 'scale' must not be null"),
        (lambda r: r.update(versions=["torch"]), "key 'versions' must be an object"),
        (lambda r: r["before"].update(extra_metric=1), "key 'before' has unknown key(s) ['extra_metric']"),
        (lambda r: r.update(task={"classnames": ["a"], "templates": ["{}"]}), "key 'task' is invalid"),
        (lambda r: r.update(schema_version="1"), "key 'schema_version' must be an integer"),
    ],
)
def test_a_malformed_report_names_the_file_and_the_key(tmp_path, change, message):
    report = make_report("a/b")
    change(report)
    path = _write(tmp_path / "sanitized", report)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load_report(path.parent)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match=re.escape(message)):
        build_model_card(report)


def test_unreadable_reports_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="is not valid JSON"):
        load_report(_write(tmp_path / "a", "{not json").parent)
    with pytest.raises(InputError, match="must hold a JSON object, got list"):
        load_report(_write(tmp_path / "b", "[1, 2]").parent)
    with pytest.raises(InputError, match="cannot read the report"):
        TBARReport.from_json(tmp_path / "missing.json")


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = _write(tmp_path / "sanitized", {**make_report("a/b"), "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(InputError) as info:
        TBARReport.from_json(path)
    assert str(info.value) == (
        f"{path} has schema_version {SCHEMA_VERSION + 1}, newer than the newest this hf_tbar reads "
        f"({SCHEMA_VERSION}): upgrade hf_tbar to read it"
    )


def test_unknown_top_level_keys_are_kept_and_the_stored_retention_is_recomputed():
    payload = {**make_report("a/b"), "note": {"by": "me"}, "ca_retention": 0.1}
    report = TBARReport.from_dict(payload)
    assert report.extra == {"note": {"by": "me"}}
    assert report.to_dict()["note"] == {"by": "me"} and list(report.to_dict())[-1] == "note"
    assert report.to_dict()["ca_retention"] == pytest.approx(0.93 / 0.97)  # derived, never read back


def test_ca_retention_is_undefined_at_zero_before_accuracy_everywhere():
    assert ca_retention(0.9, 1.0) == pytest.approx(0.9)
    for before in (0.0, -0.1, math.nan, None):
        assert ca_retention(0.5, before) is None
    assert ca_retention(None, 0.9) is None and ca_retention(math.inf, 0.9) is None

    report = TBARReport.from_dict(make_report("a/b", before={"clean_accuracy": 0.0}))
    assert report.ca_retention is None and report.to_dict()["ca_retention"] is None
    (message,) = check_safety_gate(report)
    assert message.startswith(
        "CA retention cannot be checked: clean accuracy 93.0% after removal, 0.0% before"
    )
    assert "**CA retention** (sanitized CA / backdoored CA): **n/a**" in build_model_card(report).text
    assert "CA retention" not in default_commit_message(report, forced=False)

    scored = SimpleNamespace(before=EvalResult(clean_accuracy=0.0), after=EvalResult(clean_accuracy=0.5))
    assert UnlearningResult.ca_retention.fget(scored) is None
