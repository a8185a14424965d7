"""Loading CLIP checkpoints: every unusable folder, path or Hub id is refused with a ModelLoadError (exit 5)
that names the file, tensor, path or id, before a run can "succeed" on a broken model."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hf_tbar.errors import ModelLoadError
from hf_tbar.models.loading import load_model
from hf_tbar.models.tiny_clip import save_clip

TESTS = Path(__file__).parent


@pytest.fixture
def checkpoint(micro_clip, tmp_path) -> Path:
    return save_clip(*micro_clip, tmp_path / "clip")


# ------------------------------------------------------------------------------ incomplete folders (a)


def test_a_folder_without_tokenizer_files_is_refused_naming_them(checkpoint):
    assert not (checkpoint / "vocab.json").exists() and not (checkpoint / "merges.txt").exists()
    (checkpoint / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="has no tokenizer") as caught:
        load_model(checkpoint)
    message = str(caught.value)
    assert str(checkpoint) in message
    assert all(name in message for name in ("vocab.json", "merges.txt", "tokenizer.json"))
    assert caught.value.exit_code == 5


def test_vocab_and_merges_without_tokenizer_json_are_enough(checkpoint):
    bpe = json.loads((checkpoint / "tokenizer.json").read_text())["model"]
    (checkpoint / "vocab.json").write_text(json.dumps(bpe["vocab"]))
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in bpe["merges"]]
    (checkpoint / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{line}\n" for line in merges))
    (checkpoint / "tokenizer.json").unlink()
    _, processor = load_model(checkpoint)
    assert len(processor.tokenizer) >= len(bpe["vocab"])


def test_a_folder_without_an_image_processor_config_is_refused(checkpoint):
    (checkpoint / "processor_config.json").unlink()
    with pytest.raises(
        ModelLoadError,
        match=rf"{re.escape(str(checkpoint))} has no image processor .*preprocessor_config.json",
    ):
        load_model(checkpoint)


def test_a_preprocessor_config_json_alone_is_enough(checkpoint, micro_clip):
    nested = json.loads((checkpoint / "processor_config.json").read_text())["image_processor"]
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(nested))
    (checkpoint / "processor_config.json").unlink()
    _, processor = load_model(checkpoint)
    assert processor.image_processor.crop_size["height"] == 32


# ------------------------------------------------------------------------------ non-finite weights (b)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weights_are_refused_naming_the_tensor(checkpoint, bad):
    tensors = load_file(checkpoint / "model.safetensors")
    name = "vision_model.post_layernorm.weight"
    tensors[name][:3] = bad
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    counts = "3 NaN and 0 infinite" if bad != bad else "0 NaN and 3 infinite"
    with pytest.raises(
        ModelLoadError, match=rf"{re.escape(str(checkpoint))}: tensor '{name}' holds {counts} value\(s\)"
    ):
        load_model(checkpoint)


# ------------------------------------------------------------------------------ paths and Hub ids (c, d)


@pytest.mark.parametrize("name", ["./my-model", "x/y/nope", "~/hf-tbar-no-such-model", "not a repo!"])
def test_a_missing_local_path_is_named_as_a_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=f"model folder {re.escape(name)} does not exist"):
        load_model(name)


def test_a_missing_absolute_path_is_named_as_a_folder(tmp_path):
    missing = tmp_path / "x" / "nope"
    with pytest.raises(ModelLoadError, match=f"^model folder {re.escape(str(missing))} does not exist$"):
        load_model(str(missing))


def test_a_hub_id_missing_from_the_cache_while_offline_is_named(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        load_model("nobody/not-a-model", cache_dir=tmp_path)
    message = str(caught.value)
    assert "nobody/not-a-model is not in the local Hugging Face cache and offline mode is on" in message
    assert "`hf download nobody/not-a-model`" in message and "local folder" in message


def test_a_cached_hub_id_loads_offline(checkpoint, tmp_path):
    repo = tmp_path / "cache" / "models--someone--micro-clip"
    commit = "0" * 40
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model, processor = load_model("someone/micro-clip", cache_dir=tmp_path / "cache")
    assert model.name_or_path == "someone/micro-clip"
    assert processor.tokenizer("one")["input_ids"]


# ------------------------------------------------------------------------------ invalid JSON (e)


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_a_json_file_that_is_not_json_is_named_with_the_position(checkpoint, name):
    (checkpoint / name).write_text('{"model_type": "clip",\n  oops}')
    with pytest.raises(
        ModelLoadError, match=rf"{re.escape(str(checkpoint / name))} is not valid JSON: .* at line 2 column 3"
    ):
        load_model(checkpoint)


# ------------------------------------------------------------------------------ corrupted, mismatched (f)


def test_truncated_weights_raise_a_model_load_error(checkpoint):
    file = checkpoint / "model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=f"cannot load the CLIP weights of {re.escape(str(checkpoint))}"):
        load_model(checkpoint)


def test_mismatched_shapes_raise_a_model_load_error(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["vision_config"]["intermediate_size"] = 64
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"of another shape than config.json says, e.g. '.*mlp.fc1"):
        load_model(checkpoint)


def test_a_file_instead_of_a_folder_raises_a_model_load_error(checkpoint):
    with pytest.raises(ModelLoadError, match="is a file, not a CLIP checkpoint folder"):
        load_model(checkpoint / "config.json")


# ------------------------------------------------------------------------------ no torchvision warning (h)


def test_loading_a_saved_clip_warns_nothing_about_torchvision(checkpoint, caplog, recwarn):
    transformers_logger = logging.getLogger("transformers")  # does not propagate to the root logger
    transformers_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, processor = load_model(checkpoint)
    finally:
        transformers_logger.removeHandler(caplog.handler)
    assert type(processor.image_processor).__name__ in ("CLIPImageProcessorPil", "CLIPImageProcessor")
    texts = [record.getMessage() for record in caplog.records] + [str(w.message) for w in [*caught, *recwarn]]
    assert not [text for text in texts if "torchvision" in text or "use_fast" in text]


def test_a_clean_process_builds_saves_and_loads_without_a_torchvision_warning(tmp_path):
    # The warning is logged once per process, at import time: only a fresh interpreter shows it.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from helpers import MICRO\n"
        "from hf_tbar.models import build_tiny_clip, load_model, save_clip\n"
        "save_clip(*build_tiny_clip(MICRO, ['zero', 'one']), sys.argv[2])\n"
        "load_model(sys.argv[2])\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script, str(TESTS), str(tmp_path / "clip")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr + done.stdout


def test_the_processor_is_the_pil_one_and_matches_the_built_one(checkpoint, micro_clip):
    _, built = micro_clip
    _, loaded = load_model(checkpoint)
    assert type(loaded.image_processor) is type(built.image_processor)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    assert torch.equal(
        loaded.image_processor(image, return_tensors="pt")["pixel_values"],
        built.image_processor(image, return_tensors="pt")["pixel_values"],
    )
