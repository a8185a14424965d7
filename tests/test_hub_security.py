"""What a Hub push must never publish or do silently: the token, a non-CLIP model under a CLIP card, a forced
visibility, a missing branch, the wrong endpoint in an error, local paths as provenance.

Runs against the loopback fake of the Hub in ``test_hub``; nothing here reaches the real Hub.
"""
# The fixtures imported from test_hub are used as test arguments, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file

from hf_tbar.attacks import BadNets
from hf_tbar.cli import push as push_cli
from hf_tbar.data.embedded import TaskSpec
from hf_tbar.errors import ConfigError, HfTbarError, InputError, ModelLoadError
from hf_tbar.evaluation import EvalResult
from hf_tbar.hub import (
    HubPushError,
    PushConfig,
    SafetyGateError,
    build_model_card,
    prepare_push_folder,
    push_sanitized_model,
)
from hf_tbar.hub.provenance import base_model_provenance
from hf_tbar.reporting.report import build_report
from hf_tbar.tbar.config import TBARConfig
from hf_tbar.tbar.unlearner import BackdoorUnlearner
from test_hub import (  # noqa: F401 - fixtures used by name
    CLASSNAMES,
    EXPECTED_FILES,
    REPO_ID,
    TEMPLATES,
    TOKEN,
    _closed_port_url,
    exit_status,
    fake_hub,
    make_report,
    private_tmp,
    push_command,
    sanitized_dir,
    tiny_checkpoint,
    write_report,
)

# --------------------------------------------------------------------------------------------------------------
# 1. The token, wherever it was resolved from, is never published
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def env_token(monkeypatch):
    """The token comes from $HF_TOKEN only: none passed, no saved login."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", "/nonexistent/hf_tbar-test/token")


def _leak_token(folder: Path, where: str) -> None:
    if where == "tokenizer_config.json":
        config = json.loads((folder / where).read_text())
        (folder / where).write_text(json.dumps({**config, "hub_token": TOKEN}))
    else:
        write_report(folder, make_report("a/b", note=f"pushed with {TOKEN}"))


@pytest.mark.parametrize("where", ["tokenizer_config.json", "tbar_report.json"])
def test_env_token_in_a_staged_file_refuses_the_push(where, sanitized_dir, fake_hub, env_token, caplog):
    caplog.set_level(logging.DEBUG)
    _leak_token(sanitized_dir, where)
    with pytest.raises(InputError, match=f"{where} contains the Hub token") as info:
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, endpoint=fake_hub.url))
    assert fake_hub.requests == [] and fake_hub.commits == []
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


def test_env_token_is_searched_in_dry_runs_and_prepare_push_folder(sanitized_dir, tmp_path, env_token):
    _leak_token(sanitized_dir, "tokenizer_config.json")
    config = PushConfig(repo_id=REPO_ID, dry_run=True)
    with pytest.raises(InputError, match="tokenizer_config.json contains the Hub token"):
        push_sanitized_model(sanitized_dir, config, dry_run_dir=tmp_path / "dry")
    with pytest.raises(InputError, match="contains the Hub token"):
        push_sanitized_model(sanitized_dir, config)
    with pytest.raises(InputError, match="contains the Hub token"):
        prepare_push_folder(sanitized_dir, tmp_path / "staged", PushConfig(repo_id=REPO_ID))
    assert not (tmp_path / "dry").exists() and not (tmp_path / "staged").exists()


def test_saved_login_token_is_searched_and_a_dry_run_without_token_works(
    sanitized_dir, tmp_path, monkeypatch
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    token_file = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(token_file))
    config = PushConfig(repo_id=REPO_ID, dry_run=True)
    assert push_sanitized_model(sanitized_dir, config).files == EXPECTED_FILES  # no token at all: fine

    token_file.parent.mkdir()
    token_file.write_text(TOKEN)
    _leak_token(sanitized_dir, "tbar_report.json")
    with pytest.raises(InputError, match="tbar_report.json contains the Hub token"):
        push_sanitized_model(sanitized_dir, config)


def test_token_in_safetensors_metadata_is_found(sanitized_dir, tiny_checkpoint, fake_hub):
    _, model, _ = tiny_checkpoint
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, sanitized_dir / "model.safetensors", metadata={"format": "pt", "uploader": TOKEN})
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(InputError, match="model.safetensors contains the Hub token"):
        push_sanitized_model(sanitized_dir, config)
    assert fake_hub.requests == []


# --------------------------------------------------------------------------------------------------------------
# 3. Only CLIP checkpoints are pushed under a CLIP card
# --------------------------------------------------------------------------------------------------------------


def _bert_like_folder(root: Path, sanitized: Path) -> Path:
    folder = root / "bert-like"
    folder.mkdir()
    config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 8, "vocab_size": 16}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(16, 8)}, folder / "model.safetensors")
    shutil.copyfile(sanitized / "tbar_report.json", folder / "tbar_report.json")
    return folder


def test_a_non_clip_folder_is_refused_before_anything_is_staged_or_sent(
    sanitized_dir, tmp_path, fake_hub, private_tmp
):
    folder = _bert_like_folder(tmp_path, sanitized_dir)
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(InputError, match="model_type 'bert'"):
        push_sanitized_model(folder, config)
    with pytest.raises(InputError, match="model_type 'bert'"):
        prepare_push_folder(folder, tmp_path / "staged", config)
    assert fake_hub.requests == [] and not (tmp_path / "staged").exists()
    assert list(private_tmp.iterdir()) == []


def test_clip_config_with_foreign_weights_is_a_model_load_error(sanitized_dir, tmp_path, fake_hub):
    save_file({"embeddings.word_embeddings.weight": torch.zeros(16, 8)}, sanitized_dir / "model.safetensors")
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(ModelLoadError, match="does not load as a CLIPModel"):
        push_sanitized_model(sanitized_dir, config)
    assert fake_hub.requests == []


# --------------------------------------------------------------------------------------------------------------
# 4. Visibility is only sent when asked for
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("private, visibility", [(None, None), (True, "private"), (False, "public")])
def test_create_repo_sends_a_visibility_only_when_asked(private, visibility, sanitized_dir, fake_hub):
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url, private=private)
    push_sanitized_model(sanitized_dir, config)
    (create,) = fake_hub.paths("/api/repos/create")
    payload = create.json()
    assert "private" not in payload
    assert payload.get("visibility") == visibility


def test_cli_private_public_flags(push_command, sanitized_dir, fake_hub):
    base = ["push", "--sanitized_dir", str(sanitized_dir), "--repo_id", REPO_ID, "--endpoint", fake_hub.url]
    base += ["--token", TOKEN]
    assert exit_status(base) == 0
    assert exit_status(base + ["--public"]) == 0
    assert exit_status(base + ["--private"]) == 0
    assert [r.json().get("visibility") for r in fake_hub.paths("/api/repos/create")] == [
        None,
        "public",
        "private",
    ]
    assert exit_status(base + ["--private", "--public"]) == ConfigError.exit_code == 2
    assert len(fake_hub.commits) == 3

    args = push_cli.PushArguments(sanitized_dir=str(sanitized_dir), public=True)
    with pytest.raises(ConfigError, match="--private and --public"):
        push_cli.run(args, PushConfig(repo_id=REPO_ID, private=True))


# --------------------------------------------------------------------------------------------------------------
# 5. --revision with --create_pr, and errors that name the endpoint really used
# --------------------------------------------------------------------------------------------------------------


def test_pull_request_against_a_missing_branch_creates_it(sanitized_dir, fake_hub):
    config = PushConfig(repo_id=REPO_ID, revision="v2", create_pr=True, token=TOKEN, endpoint=fake_hub.url)
    result = push_sanitized_model(sanitized_dir, config)
    assert [r.path for r in fake_hub.paths("/branch/")] == [f"/api/models/{REPO_ID}/branch/v2"]
    (commit,) = [r for r in fake_hub.paths("/commit/") if r.method == "POST"]
    assert commit.path == f"/api/models/{REPO_ID}/commit/v2" and commit.query == {"create_pr": ["1"]}
    assert result.pr_url and fake_hub.commits[0]["ref"].startswith("refs/pr/")


def test_help_says_what_revision_and_visibility_do():
    from hf_tbar import cli

    help_text = " ".join(cli.build_parser("push").format_help().split())
    assert "--public" in help_text and "no visibility is sent" in help_text
    assert "with --create_pr the branch the pull request targets" in help_text
    assert "a missing branch is first created from main" in help_text


def test_hub_errors_name_the_endpoint_really_used(sanitized_dir, fake_hub, monkeypatch):
    endpoint = _closed_port_url()
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)  # what $HF_ENDPOINT sets
    with pytest.raises(HubPushError) as info:
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, token=TOKEN))
    assert f"at {endpoint} failed at step 'create_repo'" in str(info.value)
    assert "default Hub endpoint" not in str(info.value)

    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", "/nonexistent/hf_tbar-test/token")
    with pytest.raises(HubPushError, match="no Hugging Face token") as info:
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, endpoint=fake_hub.url))
    assert fake_hub.url in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# Errors: one line, their own exit status, not swallowed by the sub-command
# --------------------------------------------------------------------------------------------------------------


def test_gate_and_hub_errors_are_one_line_with_their_exit_codes(sanitized_dir, fake_hub):
    write_report(
        sanitized_dir,
        make_report("a/b", after={"attack_success_rate": 0.5, "clean_accuracy": 0.1}),
    )
    with pytest.raises(SafetyGateError) as gate:
        push_sanitized_model(sanitized_dir, PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url))
    assert isinstance(gate.value, HfTbarError) and isinstance(gate.value, RuntimeError)
    # ASR too high, CA retention too low, and CA 10% on 2 classes is below chance
    assert gate.value.exit_code == 3 and len(gate.value.failures) == 3
    assert "near chance (50.0% with 2 classes)" in gate.value.failures[2]
    assert "\n" not in str(gate.value) and "; ".join(gate.value.failures) in str(gate.value)

    error = HubPushError("first line\nsecond line\n", repo_id=REPO_ID, step="commit")
    assert isinstance(error, HfTbarError) and isinstance(error, RuntimeError) and error.exit_code == 4
    assert str(error) == "first line second line"


def test_the_push_command_lets_gate_errors_reach_the_cli_boundary(sanitized_dir, fake_hub):
    write_report(sanitized_dir, make_report("a/b", after={"attack_success_rate": 0.5}))
    args = push_cli.PushArguments(sanitized_dir=str(sanitized_dir))
    config = PushConfig(repo_id=REPO_ID, token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(SafetyGateError):
        push_cli.run(args, config)
    assert not hasattr(push_cli, "EXIT_GATE") and not hasattr(push_cli, "EXIT_HUB")


def test_folder_problems_are_input_errors(sanitized_dir, tmp_path):
    config = PushConfig(repo_id=REPO_ID)
    with pytest.raises(InputError, match="does not exist"):
        prepare_push_folder(tmp_path / "missing", tmp_path / "out", config)
    (sanitized_dir / "config.json").unlink()
    with pytest.raises(InputError, match="no config.json"):
        prepare_push_folder(sanitized_dir, tmp_path / "out", config)


# --------------------------------------------------------------------------------------------------------------
# 7. Provenance without local paths
# --------------------------------------------------------------------------------------------------------------


def _fake_result() -> SimpleNamespace:
    metrics = EvalResult(clean_accuracy=0.9, attack_success_rate=0.01, target_class_accuracy=0.8)
    return SimpleNamespace(
        config=TBARConfig(),
        target=0,
        trigger=BadNets(),
        detection=None,
        unlearning_set_size=10,
        selection=SimpleNamespace(
            scale=1.0,
            sweep=[],
            config=SimpleNamespace(ca_threshold=0.95, target_threshold=0.8, max_scale=3.0),
            evaluations=3,
            strategy="halving",
            cost=1.5,
        ),
        before=metrics,
        after=metrics,
        ca_retention=1.0,
        timings={},
        losses={},
        warnings=[],
    )


def test_report_and_card_of_a_local_model_hold_no_path(tiny_checkpoint, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    folder = home / ".cache" / "hf_tbar" / "backdoored-badnets"
    shutil.copytree(tiny_checkpoint[0], folder)
    unlearner = BackdoorUnlearner(str(folder), task=TaskSpec(tuple(CLASSNAMES), tuple(TEMPLATES)))
    report = build_report(unlearner, _fake_result(), dataset="digits")

    assert report.base_model is None
    assert report.to_dict()["base_model_source"] == {"kind": "local", "name": "backdoored-badnets"}
    card = build_model_card(report, repo_id=REPO_ID)
    assert card.data.base_model is None
    assert "a local checkpoint (folder `backdoored-badnets`)" in card.text
    for text in (report.to_json(), str(card)):
        assert str(tmp_path) not in text and str(home) not in text and "/.cache/" not in text
        assert "~/" not in text

    # A model object loaded from that folder records the same.
    in_memory = BackdoorUnlearner(unlearner.model, processor=unlearner.processor, task=unlearner.task)
    assert build_report(in_memory, _fake_result()).base_model_source.name == "backdoored-badnets"


def test_provenance_of_hub_ids_and_old_reports(tmp_path):
    hub_id = "openai/clip-vit-base-patch32"
    assert base_model_provenance(hub_id) == (hub_id, {"kind": "hub", "name": hub_id})
    assert base_model_provenance(None) == (None, {"kind": "in-memory", "name": None})
    card = build_model_card(make_report(hub_id), repo_id=REPO_ID)
    assert card.data.base_model == hub_id

    old = make_report(str(tmp_path / "runs" / "backdoored"))  # a report written before base_model_source
    card = build_model_card(old, repo_id=REPO_ID)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert "base_model" not in loaded.data.to_dict()
    assert str(tmp_path) not in loaded.content
    assert "a local checkpoint (folder `backdoored`)" in loaded.text
    assert "--model path/to/backdoored" in loaded.text
