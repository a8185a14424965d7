"""Model card and Hub push of sanitized models, against a loopback fake of the Hub's HTTP API.

The real ``huggingface_hub`` client talks to a ``http.server`` on 127.0.0.1 that implements the endpoints a
push uses: repo creation, branch creation, README validation, preupload (upload mode per file), the LFS batch /
upload / verify protocol and the NDJSON commit. Nothing here reaches the real Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub import constants as hf_constants
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from helpers import MICRO
from hf_tbar import cli
from hf_tbar.errors import InputError, OutputExistsError
from hf_tbar.hub import (
    HubPushError,
    PushConfig,
    SafetyGateError,
    build_model_card,
    check_safety_gate,
    hub_model_id,
    prepare_push_folder,
    push_sanitized_model,
)
from hf_tbar.hub import push as push_module
from hf_tbar.hub.card import CARD_TAGS, FORCED_TAG
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip

TOKEN = "hf_test_secret_token_0123456789"
REPO_ID = "tbar-user/clip-sanitized"
CLASSNAMES = ["zero", "one"]
TEMPLATES = ["a photo of {}."]
EXPECTED_FILES = [
    "README.md",
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tbar_report.json",
    "tbar_scale_sweep.png",
    "tokenizer.json",
    "tokenizer_config.json",
]


# --------------------------------------------------------------------------------------------------------------
# A loopback fake of the Hub
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class FakeHub:
    """State of the fake Hub: requests seen, LFS objects, repositories (ref -> {path: bytes}), injected failures."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    upload_modes: dict[str, str] = field(default_factory=dict)
    #: step name ("create", "branch", "validate", "preupload", "batch", "commit") -> (status, message)
    fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, step_path_fragment: str) -> list[Recorded]:
        return [r for r in self.requests if step_path_fragment in r.path]


_REPO_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit|branch)/(?P<rev>.+)$")
_LFS_BATCH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith((".safetensors", ".png", ".bin")) or size > 10 * 1024 * 1024


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - silence the default stderr access log
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: dict | None = None, headers: dict | None = None) -> None:
            data = json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _maybe_fail(self, step: str) -> bool:
            if step in hub.fail:
                status, message = hub.fail[step]
                self._send(status, {"error": message})
                return True
            return False

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), parse_qs(parts.query)
            body = self._body()
            record = Recorded(
                self.command, path, query, {k.lower(): v for k, v in self.headers.items()}, body
            )
            with hub.lock:
                hub.requests.append(record)
            if path == "/api/repos/create" and self.command == "POST":
                if self._maybe_fail("create"):
                    return
                payload = record.json()
                repo_id = f"{payload.get('organization') or 'tbar-user'}/{payload['name']}"
                with hub.lock:
                    hub.repos.setdefault(repo_id, {"main": {}})
                return self._send(200, {"url": f"{hub.url}/{repo_id}"})
            if path == "/api/validate-yaml" and self.command == "POST":
                if self._maybe_fail("validate"):
                    return
                content = record.json()["content"]
                metadata = yaml.safe_load(content.split("---")[1])
                base = metadata.get("base_model")
                if base is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", str(base)):
                    return self._send(400, {"errors": [{"message": f'"base_model" is invalid: {base}'}]})
                return self._send(200, {"errors": [], "warnings": []})
            match = _REPO_API.match(path)
            if match and self.command == "POST":
                repo_id, action, rev = match["repo"], match["action"], match["rev"]
                if repo_id not in hub.repos:
                    return self._send(404, {"error": "Repository not found"})
                if action == "branch":
                    if self._maybe_fail("branch"):
                        return
                    with hub.lock:
                        hub.repos[repo_id].setdefault(rev, dict(hub.repos[repo_id]["main"]))
                    return self._send(200, {})
                if rev not in hub.repos[repo_id]:  # as the Hub: no commit (or PR) against a missing branch
                    message = f"Invalid rev id: {rev}"
                    return self._send(404, {"error": message}, {"X-Error-Code": "RevisionNotFound"})
                if action == "preupload":
                    if self._maybe_fail("preupload"):
                        return
                    files = []
                    for item in record.json()["files"]:
                        mode = "lfs" if _is_lfs(item["path"], item["size"]) else "regular"
                        hub.upload_modes[item["path"]] = mode
                        files.append(
                            {"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None}
                        )
                    return self._send(200, {"files": files})
                return self._commit(repo_id, rev, record)
            match = _LFS_BATCH.match(path)
            if match and self.command == "POST":
                if self._maybe_fail("batch"):
                    return
                objects = []
                for obj in record.json()["objects"]:
                    oid = obj["oid"]
                    objects.append(
                        {
                            "oid": oid,
                            "size": obj["size"],
                            "authenticated": True,
                            "actions": {
                                "upload": {"href": f"{hub.url}/lfs-upload/{oid}", "header": {}},
                                "verify": {"href": f"{hub.url}/lfs-verify/{oid}", "header": {}},
                            },
                        }
                    )
                return self._send(200, {"transfer": "basic", "objects": objects})
            if path.startswith("/lfs-upload/") and self.command == "PUT":
                oid = path.rsplit("/", 1)[-1]
                if hashlib.sha256(body).hexdigest() != oid:
                    return self._send(400, {"error": "sha256 mismatch"})
                with hub.lock:
                    hub.lfs_objects[oid] = body
                return self._send(200, {})
            if path.startswith("/lfs-verify/") and self.command == "POST":
                oid = path.rsplit("/", 1)[-1]
                return self._send(200 if oid in hub.lfs_objects else 404, {})
            return self._send(404, {"error": f"fake hub: no route for {self.command} {path}"})

        def _commit(self, repo_id: str, rev: str, record: Recorded) -> None:
            if self._maybe_fail("commit"):
                return
            lines = [json.loads(line) for line in record.body.splitlines() if line.strip()]
            header = lines[0]["value"]
            files, kinds = {}, {}
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    if value["oid"] not in hub.lfs_objects:
                        return self._send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                    files[value["path"]] = hub.lfs_objects[value["oid"]]
                kinds[value["path"]] = line["key"]
            oid = hashlib.sha1(record.body).hexdigest()
            create_pr = record.query.get("create_pr") == ["1"]
            ref = f"refs/pr/{len(hub.commits) + 1}" if create_pr else rev
            with hub.lock:
                hub.repos[repo_id].setdefault(ref, {}).update(files)
                hub.commits.append({"repo_id": repo_id, "ref": ref, "header": header, "kinds": kinds})
            payload = {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid}
            if create_pr:
                payload["pullRequestUrl"] = f"{hub.url}/{repo_id}/discussions/{len(hub.commits)}"
            return self._send(200, payload)

        do_GET = do_POST = do_PUT = _handle  # noqa: N815 - names required by BaseHTTPRequestHandler

    return Handler


@pytest.fixture
def fake_hub(monkeypatch):
    """A loopback Hub; the real client may talk to it even under a session-wide ``HF_HUB_OFFLINE=1``."""
    # Offline mode and Xet are read from constants at request time: override them for this test only.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    huggingface_hub.close_session()  # the shared client is rebuilt under these settings
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        huggingface_hub.close_session()


# --------------------------------------------------------------------------------------------------------------
# A sanitized folder
# --------------------------------------------------------------------------------------------------------------


def make_report(base_model: str, **overrides) -> dict:
    report = {
        "hf_tbar_version": "0.1.0",
        "base_model": base_model,
        "task": {"classnames": CLASSNAMES, "templates": TEMPLATES},
        "target_class": 0,
        "trigger": {"name": "badnets", "patch_size": 3, "seed": 0},
        "trigger_source": "known",
        "recipe": {
            "mode": "full",
            "steps": 30,
            "learning_rate": 1e-4,
            "batch_size": 32,
            "unlearning_set_size": 300,
            "variant": "plain",
            "lora": None,
        },
        "scale": 1.5,
        "sweep": [
            {"scale": 0.0, "clean_accuracy": 0.97, "attack_success_rate": 1.0, "target_class_accuracy": 0.98},
            {
                "scale": 1.0,
                "clean_accuracy": 0.95,
                "attack_success_rate": 0.30,
                "target_class_accuracy": 0.80,
            },
            {
                "scale": 1.5,
                "clean_accuracy": 0.93,
                "attack_success_rate": 0.02,
                "target_class_accuracy": 0.70,
            },
        ],
        "selection": {"split": "validation", "ca_threshold": 0.95, "target_threshold": None},
        "evaluation_split": "test",
        "dataset": "digits",
        "before": {
            "clean_accuracy": 0.97,
            "attack_success_rate": 0.99,
            "target_class_accuracy": 0.98,
            "per_class_accuracy": [0.98, 0.96],
            "num_examples": 449,
        },
        "after": {
            "clean_accuracy": 0.93,
            "attack_success_rate": 0.02,
            "target_class_accuracy": 0.70,
            "per_class_accuracy": [0.70, 0.95],
            "num_examples": 449,
        },
        "versions": {"torch": torch.__version__, "transformers": "5.x", "peft": None, "hf_tbar": "0.1.0"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(report.get(key), dict):
            report[key] = {**report[key], **value}
        else:
            report[key] = value
    return report


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny CLIP saved once per module; tests copy it."""
    model, processor = build_tiny_clip(MICRO, ["zero", "one", "a photo of {}."], seed=0)
    folder = tmp_path_factory.mktemp("tiny") / "clip"
    save_clip(model, processor, folder)
    return folder, model, processor


@pytest.fixture
def sanitized_dir(tmp_path, tiny_checkpoint):
    source, _, _ = tiny_checkpoint
    folder = tmp_path / "sanitized"
    shutil.copytree(source, folder)
    (folder / "tbar_report.json").write_text(json.dumps(make_report(str(tmp_path / "backdoored"))))
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "tbar_scale_sweep.png")
    return folder


def write_report(folder: Path, report: dict) -> None:
    (folder / "tbar_report.json").write_text(json.dumps(report))


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_token_nowhere(root: Path, log_text: str) -> None:
    assert TOKEN not in log_text
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point tempfile at a folder of this test, to check that staging folders are cleaned up."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# --------------------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------------------


def test_card_metadata_round_trips_through_model_card_load(tmp_path):
    report = make_report("openai/clip-vit-base-patch32")
    card = build_model_card(report, repo_id=REPO_ID, plot_path="tbar_scale_sweep.png")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")

    assert loaded.data.tags == list(CARD_TAGS)
    assert loaded.data.library_name == "transformers"
    assert loaded.data.pipeline_tag == "zero-shot-image-classification"
    assert loaded.data.base_model == "openai/clip-vit-base-patch32"
    assert loaded.data.model_name == "clip-sanitized"
    results = {(r.metric_type, r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert results == {
        ("accuracy", "Clean accuracy (backdoored model, before TBAR)"): 0.97,
        ("attack_success_rate", "Attack success rate (backdoored model, before TBAR)"): 0.99,
        ("accuracy", "Clean accuracy (after TBAR)"): 0.93,
        ("attack_success_rate", "Attack success rate (after TBAR)"): 0.02,
    }
    assert {(r.dataset_type, r.dataset_split, r.task_type) for r in loaded.data.eval_results} == {
        ("digits", "test", "zero-shot-image-classification")
    }
    assert loaded.data.to_dict() == card.data.to_dict()

    text = loaded.text
    assert "badnets (patch_size=3, seed=0)" in text
    assert "300 triggered images" in text and "full fine-tuning" in text
    assert "| **1.5** (selected) | 93.0% | 2.0% | 70.0% |" in text
    assert "| Clean accuracy (CA) | 97.0% | 93.0% | -4.0 pts |" in text
    assert "| Attack success rate (ASR) | 99.0% | 2.0% | -97.0 pts |" in text
    assert "Target-class accuracy (class 0, `zero`) | 98.0% | 70.0% | -28.0 pts" in text
    assert "**95.9%**" in text  # CA retention 0.93 / 0.97
    assert "](tbar_scale_sweep.png)" in text
    assert 'CLIPModel.from_pretrained("tbar-user/clip-sanitized")' in text
    assert "hf-tbar unlearn --model openai/clip-vit-base-patch32" in text
    assert "| torch |" in text and "| peft |" not in text  # a null version is left out
    assert "WARNING" not in text and "None" not in text


@pytest.mark.parametrize("base", ["/runs/backdoored", "./backdoored", "~/models/x", "C:\\models\\x", "a/b/c"])
def test_card_leaves_local_base_model_out_of_metadata(base, tmp_path):
    card = build_model_card(make_report(base), repo_id=REPO_ID)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert "base_model" not in loaded.data.to_dict()
    name = re.split(r"[\\/]", base)[-1]
    assert f"a local checkpoint (folder `{name}`), not on the Hub" in loaded.text
    assert base not in loaded.text  # only the folder's base name, never the path


def test_hub_model_id_rejects_existing_relative_folders(tmp_path, monkeypatch):
    (tmp_path / "runs" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_model_id("runs/model") is None
    assert hub_model_id("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert hub_model_id(None) is None


def test_card_survives_a_sparse_report(tmp_path):
    """Only the required keys: everything else renders as n/a, and the model-index holds CA only."""
    report = {
        "target_class": 0,
        "scale": 1.0,
        "before": {"clean_accuracy": 0.9},
        "after": {"clean_accuracy": 0.8},
    }
    card = build_model_card(report)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.tags == list(CARD_TAGS)
    assert {r.metric_type for r in loaded.data.eval_results} == {"accuracy"}
    assert "n/a" in loaded.text and "None" not in loaded.text


def test_forced_card_warns_and_is_tagged():
    failures = ["ASR after removal 23.0% exceeds the maximum 10.0% by 13.0 points"]
    card = build_model_card(make_report("a/b"), repo_id=REPO_ID, forced=True, gate_failures=failures)
    assert FORCED_TAG in card.data.tags
    assert "> [!WARNING]" in card.text
    assert "pushed past the hf_tbar safety gate" in card.text
    assert "> - ASR after removal 23.0% exceeds the maximum 10.0% by 13.0 points" in card.text


# --------------------------------------------------------------------------------------------------------------
# Safety gate and configuration
# --------------------------------------------------------------------------------------------------------------


def test_safety_gate_messages_say_what_failed_and_by_how_much():
    assert check_safety_gate(make_report("a/b")) == []
    asr = make_report("a/b", after={"attack_success_rate": 0.23})
    assert check_safety_gate(asr, max_asr=0.10) == [
        "ASR after removal 23.0% exceeds the maximum 10.0% by 13.0 points"
    ]
    ca = make_report("a/b", before={"clean_accuracy": 0.80}, after={"clean_accuracy": 0.60})
    (message,) = check_safety_gate(ca, min_ca_retention=0.90)
    assert message.startswith("CA retention 75.0% (clean accuracy 60.0% after removal, 80.0% before)")
    assert message.endswith("is below the minimum 90.0% by 15.0 points")
    missing = check_safety_gate(
        make_report("a/b", before={"clean_accuracy": 0.0}, after={"attack_success_rate": None})
    )
    assert len(missing) == 2 and all("cannot be checked" in message for message in missing)
    with pytest.raises(ValueError, match="max_asr must be a fraction"):
        check_safety_gate(make_report("a/b"), max_asr=1.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"repo_id": "not a repo id"}, "not a valid Hub repo id"),
        ({"repo_id": ""}, "non-empty"),
        ({"max_asr": -0.1}, "max_asr"),
        ({"min_ca_retention": 2}, "min_ca_retention"),
        ({"commit_message": " "}, "commit_message"),
        ({"endpoint": "127.0.0.1:8000"}, "endpoint"),
        ({"private": "yes"}, "private"),
    ],
)
def test_push_config_validation_names_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PushConfig(**{"repo_id": REPO_ID, **kwargs})


def test_push_config_repr_hides_the_token():
    config = PushConfig(repo_id=REPO_ID, token=TOKEN)
    assert TOKEN not in repr(config)
    with pytest.raises(ValueError) as info:
        PushConfig(repo_id=REPO_ID, token="   ")
    assert "token" in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# Staging and dry runs
# --------------------------------------------------------------------------------------------------------------


def test_prepare_push_folder_writes_only_the_checkpoint_and_card(sanitized_dir, tmp_path):
    (sanitized_dir / "train_log.txt").write_text("loss 0.1")
    (sanitized_dir / "pytorch_model.bin").write_bytes(b"pickle")
    (sanitized_dir / ".env").write_text(f"HF_TOKEN={TOKEN}")
    (sanitized_dir / "README.md").write_text("stale card")
    staging = tmp_path / "staging"
    files = prepare_push_folder(sanitized_dir, staging, PushConfig(repo_id=REPO_ID, token=TOKEN))
    assert files == EXPECTED_FILES == sorted(p.name for p in staging.iterdir())
    assert (staging / "README.md").read_text() != "stale card"
    assert (staging / "model.safetensors").read_bytes() == (sanitized_dir / "model.safetensors").read_bytes()
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in staging.iterdir())

    with pytest.raises(OutputExistsError, match="not empty"):
        prepare_push_folder(sanitized_dir, staging, PushConfig(repo_id=REPO_ID))
    with pytest.raises(ValueError, match="must not overlap"):
        prepare_push_folder(sanitized_dir, sanitized_dir / "out", PushConfig(repo_id=REPO_ID))


def test_prepare_push_folder_refuses_a_leaked_token_and_non_checkpoints(sanitized_dir, tmp_path):
    report = make_report("a/b", note=f"pushed with {TOKEN}")
    write_report(sanitized_dir, report)
    with pytest.raises(ValueError, match="tbar_report.json contains the Hub token"):
        prepare_push_folder(sanitized_dir, tmp_path / "out", PushConfig(repo_id=REPO_ID, token=TOKEN))
    assert not (tmp_path / "out").exists()  # atomic: nothing half-written

    write_report(sanitized_dir, make_report("a/b"))
    (sanitized_dir / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no safetensors weights"):
        prepare_push_folder(sanitized_dir, tmp_path / "out", PushConfig(repo_id=REPO_ID))
    (sanitized_dir / "tbar_report.json").unlink()
    with pytest.raises(InputError, match="has no tbar_report.json"):
        prepare_push_folder(sanitized_dir, tmp_path / "out", PushConfig(repo_id=REPO_ID))
    with pytest.raises(InputError, match="does not exist"):
        prepare_push_folder(tmp_path / "missing", tmp_path / "out", PushConfig(repo_id=REPO_ID))


def test_dry_run_writes_the_folder_without_any_request(
    sanitized_dir, tmp_path, fake_hub, monkeypatch, caplog
):
    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not build a Hub client")

    monkeypatch.setattr(push_module, "HfApi", no_network)
    monkeypatch.setattr(push_module, "get_token", no_network)
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "dry"
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, dry_run=True, endpoint=fake_hub.url)
    result = push_sanitized_model(sanitized_dir, config, dry_run_dir=out)
    assert result.dry_run and result.output_dir == out.resolve()
    assert result.files == EXPECTED_FILES == sorted(p.name for p in out.iterdir())
    assert ModelCard.load(out / "README.md").data.tags == list(CARD_TAGS)
    listing = push_sanitized_model(sanitized_dir, config)
    assert listing.files == EXPECTED_FILES and listing.output_dir is None
    assert fake_hub.requests == []
    assert_token_nowhere(tmp_path, caplog.text)

    with pytest.raises(ValueError, match="needs config.dry_run=True"):
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID), dry_run_dir=tmp_path / "x")


# --------------------------------------------------------------------------------------------------------------
# Pushing to the fake Hub
# --------------------------------------------------------------------------------------------------------------


def logits(model: CLIPModel, processor: CLIPProcessor) -> torch.Tensor:
    inputs = processor.tokenizer(
        [TEMPLATES[0].format(c) for c in CLASSNAMES], padding=True, return_tensors="pt"
    )
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=pixels
        ).logits_per_image


def test_push_uploads_one_commit_with_weights_through_lfs(
    sanitized_dir, tmp_path, tiny_checkpoint, fake_hub, private_tmp, caplog
):
    caplog.set_level(logging.DEBUG)
    before = snapshot(sanitized_dir)
    config = PushConfig(
        repo_id=REPO_ID,
        private=True,
        commit_message="Sanitized tiny CLIP",
        token=TOKEN,
        endpoint=fake_hub.url,
    )
    result = push_sanitized_model(sanitized_dir, config)

    # The client used exactly the expected endpoints, in order, and nothing else.
    seen = [(r.method, re.sub(r"/[0-9a-f]{64}$", "/<oid>", r.path)) for r in fake_hub.requests]
    assert seen[:4] == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/models/{REPO_ID}/preupload/main"),
        ("POST", f"/{REPO_ID}.git/info/lfs/objects/batch"),
    ]
    assert sorted(seen[4:-1]) == sorted([("PUT", "/lfs-upload/<oid>"), ("POST", "/lfs-verify/<oid>")] * 2)
    assert seen[-1] == ("POST", f"/api/models/{REPO_ID}/commit/main")
    # Repository created private, one commit with the message, every file, weights via LFS.
    (create,) = fake_hub.paths("/api/repos/create")
    assert create.json() == {
        "name": "clip-sanitized",
        "organization": "tbar-user",
        "visibility": "private",
        "type": "model",
    }
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    (commit,) = fake_hub.commits
    assert commit["header"]["summary"] == "Sanitized tiny CLIP"
    assert commit["ref"] == "main"
    assert sorted(commit["kinds"]) == EXPECTED_FILES
    assert fake_hub.upload_modes["model.safetensors"] == "lfs"
    assert commit["kinds"]["model.safetensors"] == "lfsFile"
    assert commit["kinds"]["config.json"] == "file"
    weights = (sanitized_dir / "model.safetensors").read_bytes()
    assert fake_hub.lfs_objects[hashlib.sha256(weights).hexdigest()] == weights
    assert len(fake_hub.paths("/lfs-verify/")) == len(fake_hub.lfs_objects) == 2  # weights and plot
    assert result.files == EXPECTED_FILES and not result.dry_run and result.pr_url is None
    assert result.commit_oid and result.commit_url.endswith(result.commit_oid)

    # The card that arrived: metadata, no base_model (a local path), the commit is the only one.
    remote = fake_hub.repos[REPO_ID]["main"]
    repo_dir = tmp_path / "downloaded"
    repo_dir.mkdir()
    for name, data in remote.items():
        (repo_dir / name).write_bytes(data)
    card = ModelCard.load(repo_dir / "README.md")
    assert card.data.tags == list(CARD_TAGS)
    assert card.data.base_model is None
    assert [r.metric_value for r in card.data.eval_results] == [0.97, 0.99, 0.93, 0.02]
    assert json.loads(remote["tbar_report.json"]) == json.loads(
        (sanitized_dir / "tbar_report.json").read_text()
    )

    # The weights load back and give the original model's logits.
    _, model, processor = tiny_checkpoint
    loaded = CLIPModel.from_pretrained(repo_dir).eval()
    assert torch.equal(logits(loaded, CLIPProcessor.from_pretrained(repo_dir)), logits(model, processor))

    assert snapshot(sanitized_dir) == before
    assert list(private_tmp.iterdir()) == []  # staging folder removed
    assert_token_nowhere(tmp_path, caplog.text)


def test_push_to_a_pull_request_and_to_a_branch(sanitized_dir, fake_hub):
    config = PushConfig(repo_id=REPO_ID, create_pr=True, token=TOKEN, endpoint=fake_hub.url)
    result = push_sanitized_model(sanitized_dir, config)
    assert result.pr_url == f"{fake_hub.url}/{REPO_ID}/discussions/1"
    (commit_request,) = [r for r in fake_hub.paths("/commit/") if r.method == "POST"]
    assert commit_request.query == {"create_pr": ["1"]}
    assert fake_hub.commits[0]["ref"] == "refs/pr/1"
    assert "visibility" not in fake_hub.paths("/api/repos/create")[0].json()  # the Hub's default applies
    assert (
        "Upload TBAR-sanitized CLIP (ASR 99.0% -> 2.0%, CA retention 95.9%)"
        == (fake_hub.commits[0]["header"]["summary"])
    )

    config = PushConfig(repo_id=REPO_ID, revision="v1", token=TOKEN, endpoint=fake_hub.url)
    push_sanitized_model(sanitized_dir, config)
    assert [r.path for r in fake_hub.paths("/branch/")] == [f"/api/models/{REPO_ID}/branch/v1"]
    assert fake_hub.commits[1]["ref"] == "v1"
    assert sorted(fake_hub.repos[REPO_ID]["v1"]) == EXPECTED_FILES


def test_token_falls_back_to_hf_token(sanitized_dir, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_environment")
    push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, endpoint=fake_hub.url))
    assert {r.headers.get("authorization") for r in fake_hub.paths("/api/")} == {"Bearer hf_from_environment"}

    monkeypatch.setattr(push_module, "get_token", lambda: None)
    with pytest.raises(HubPushError, match="no Hugging Face token") as info:
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, endpoint=fake_hub.url))
    assert info.value.step == "authenticate"


def test_safety_gate_refuses_and_force_marks_the_card(sanitized_dir, fake_hub):
    write_report(sanitized_dir, make_report("a/b", after={"attack_success_rate": 0.23}))
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(SafetyGateError) as info:
        push_sanitized_model(sanitized_dir, config)
    assert info.value.failures == ["ASR after removal 23.0% exceeds the maximum 10.0% by 13.0 points"]
    assert "ASR after removal 23.0% exceeds the maximum 10.0% by 13.0 points" in str(info.value)
    assert fake_hub.requests == []

    forced = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url, force=True)
    result = push_sanitized_model(sanitized_dir, forced)
    assert result.forced and result.gate_failures == info.value.failures
    readme = fake_hub.repos[REPO_ID]["main"]["README.md"].decode()
    assert "pushed past the hf_tbar safety gate" in readme
    assert "ASR after removal 23.0% exceeds the maximum 10.0% by 13.0 points" in readme
    assert FORCED_TAG in yaml.safe_load(readme.split("---")[1])["tags"]
    assert fake_hub.commits[0]["header"]["summary"].endswith("[forced past safety gate]")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "fail, step, cause",
    [
        ({"create": (500, "Internal Error")}, "create_repo", "500"),
        ({"commit": (500, "Internal Error")}, "commit", "500"),
        (
            {"commit": (403, "You don't have the rights to create a commit")},
            "commit",
            "rights to create a commit",
        ),
        ({"validate": (400, "bad metadata")}, "commit", "Invalid metadata"),
        (None, "create_repo", "ConnectError"),
    ],
)
def test_hub_failures_raise_and_leave_the_folder_untouched(
    fail, step, cause, sanitized_dir, tmp_path, fake_hub, private_tmp, caplog
):
    caplog.set_level(logging.DEBUG)
    before = snapshot(sanitized_dir)
    endpoint = fake_hub.url
    if fail is None:
        endpoint = _closed_port_url()
    else:
        fake_hub.fail.update(fail)
    with pytest.raises(HubPushError) as info:
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=endpoint))
    message = str(info.value)
    assert info.value.repo_id == REPO_ID and info.value.step == step
    assert REPO_ID in message and f"step '{step}'" in message and cause in message
    assert info.value.__cause__ is not None
    assert fake_hub.commits == []
    assert snapshot(sanitized_dir) == before
    assert list(private_tmp.iterdir()) == []
    assert_token_nowhere(tmp_path, caplog.text + message)


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def push_command(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "push", "hf_tbar.cli.push")


def exit_status(argv: list[str]) -> int:
    """``hf-tbar``'s exit status for ``argv``. An error that escapes the CLI boundary fails the test: the boundary
    must turn every error into its exit status."""
    try:
        return cli.main(argv)
    except SystemExit as error:
        return int(error.code or 0)


def test_cli_dry_run_gate_and_push(push_command, sanitized_dir, tmp_path, fake_hub):
    out = tmp_path / "staged"
    base = ["push", "--sanitized_dir", str(sanitized_dir), "--repo_id", REPO_ID, "--endpoint", fake_hub.url]
    assert cli.main(base + ["--dry_run_dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == EXPECTED_FILES
    assert fake_hub.requests == []

    assert (
        cli.main(base + ["--token", TOKEN, "--private", "--create_pr", "--commit_message", "cli push"]) == 0
    )
    assert fake_hub.commits[0]["header"]["summary"] == "cli push"
    assert fake_hub.commits[0]["ref"].startswith("refs/pr/")
    assert fake_hub.paths("/api/repos/create")[0].json()["visibility"] == "private"

    write_report(sanitized_dir, make_report("a/b", after={"clean_accuracy": 0.5}))
    assert exit_status(base + ["--token", TOKEN]) == 3
    fake_hub.fail["create"] = (500, "Internal Error")
    assert exit_status(base + ["--token", TOKEN, "--force"]) == 4
    assert len(fake_hub.commits) == 1


def test_cli_config_file_and_help(push_command, tmp_path):
    config_file = tmp_path / "push.yaml"
    config_file.write_text(yaml.safe_dump({"max_asr": 0.05, "min_ca_retention": 0.5}))
    argv = [
        "--sanitized_dir",
        "s",
        "--repo_id",
        REPO_ID,
        "--config",
        str(config_file),
        "--min_ca_retention",
        "0.8",
    ]
    args, config = cli.parse_command("push", argv)
    assert args.sanitized_dir == "s" and args.dry_run_dir is None
    assert (config.repo_id, config.max_asr, config.min_ca_retention, config.force) == (
        REPO_ID,
        0.05,
        0.8,
        False,
    )
    help_text = cli.build_parser("push").format_help()
    assert "--max_asr" in help_text and "--dry_run_dir" in help_text and "safety gate" in help_text
