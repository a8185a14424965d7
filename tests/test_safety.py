"""Bad inputs and unsafe files outside the streaming path (tests/test_streaming.py covers that one).

Pickles that would create a file when unpickled are never executed; corrupted weights and weights that
contradict config.json are refused naming the file or tensor; outputs never overwrite, enter or contain
the input model and never look complete when a save is interrupted; inputs are never modified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import hf_tbar
from helpers import full_folder, read_only_folder
from hf_tbar import BackdoorUnlearner, TaskVector
from hf_tbar.data import TaskSpec
from hf_tbar.models.loading import load_model
from hf_tbar.models.tiny_clip import save_clip
from hf_tbar.streaming import stream_task_arithmetic

SOURCE = Path(hf_tbar.__file__).parent
TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.",))


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_pickle(path: Path, marker: Path) -> Path:
    """Write a pickle at ``path`` that creates ``marker`` if anything ever unpickles it."""
    path.write_bytes(pickle.dumps({"weight": CreatesFile(marker)}))
    return path


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def leftovers(output: Path) -> list[str]:
    return [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


@pytest.fixture
def checkpoint(micro_clip, tmp_path) -> Path:
    return save_clip(*micro_clip, tmp_path / "backdoored")


# ------------------------------------------------------------------------------ source-level guarantees


def python_sources() -> list[tuple[Path, str]]:
    return [(path, path.read_text()) for path in sorted(SOURCE.rglob("*.py"))]


def test_the_library_never_enables_remote_code_or_unsafe_deserialisation():
    offences = []
    for path, text in python_sources():
        for pattern, why in (
            (r"trust_remote_code\s*=\s*True", "enables remote code"),
            (r"trust_remote_code\s*=(?!=)", "passes trust_remote_code"),
            (r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(", "unpickles"),
            (r"\byaml\.(?:unsafe_)?load\(", "uses yaml.load instead of yaml.safe_load"),
            (r"(?<![.\w])(?:eval|exec)\(", "evaluates code"),
        ):
            offences += [f"{path.relative_to(SOURCE)}: {why}" for _ in re.finditer(pattern, text)]
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offences.append(f"{path.relative_to(SOURCE)}: {call} without weights_only=True")
    assert offences == []


def test_load_clip_drops_trust_remote_code(checkpoint, monkeypatch):
    from transformers import CLIPModel

    seen = {}
    original = CLIPModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(CLIPModel, "from_pretrained", classmethod(spy))
    load_model(checkpoint, trust_remote_code=True)
    assert "trust_remote_code" not in seen


# ------------------------------------------------------------------------------ pickles


def test_a_pickle_only_checkpoint_is_refused_and_never_unpickled(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    (checkpoint / "model.safetensors").unlink()
    malicious_pickle(checkpoint / "pytorch_model.bin", marker)
    before = digest(checkpoint)
    with pytest.raises(ValueError, match="no safetensors weights"):
        load_model(checkpoint)
    with pytest.raises(ValueError, match="no safetensors weights"):
        BackdoorUnlearner(checkpoint, task=TASK)
    with pytest.raises(ValueError, match="pytorch_model.bin is a pickle checkpoint"):
        stream_task_arithmetic(checkpoint, checkpoint, tmp_path / "out", 0.5, progress=False)
    assert not marker.exists()
    assert digest(checkpoint) == before


def test_a_pickle_next_to_safetensors_weights_is_ignored(checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    malicious_pickle(checkpoint / "pytorch_model.bin", marker)
    model, _ = load_model(checkpoint)
    assert not marker.exists()
    out = stream_task_arithmetic(checkpoint, checkpoint, tmp_path / "out", 0.5, progress=False)
    assert not (out / "pytorch_model.bin").exists(), "pickles are never copied into an output"
    assert not marker.exists()


def test_a_pickled_task_vector_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("vector.pt", "vector.safetensors"):  # the suffix does not matter: safetensors parses it
        path = malicious_pickle(tmp_path / name, marker)
        with pytest.raises(ValueError, match=f"{name} is not a readable safetensors task vector"):
            TaskVector.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------ corrupted or mismatched


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupted_weights_are_refused_naming_the_checkpoint(checkpoint, damage):
    file = checkpoint / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:8] + b"#garbage" + data[16:])
    before = digest(checkpoint)
    with pytest.raises(ValueError, match=f"cannot load the CLIP weights of {checkpoint}"):
        load_model(checkpoint)
    assert digest(checkpoint) == before


def test_a_truncated_task_vector_is_refused_naming_the_file(tmp_path):
    path = TaskVector({"w": torch.randn(64, 64)}).save(tmp_path / "tau.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="tau.safetensors is not a readable safetensors task vector"):
        TaskVector.load(path)


def edit_config(folder: Path, **vision) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"].update(vision)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("vision", "message"),
    [
        (
            dict(num_hidden_layers=2),
            r"16 tensor\(s\) missing from the weights .*'vision_model.encoder.layers.1",
        ),
        (dict(num_hidden_layers=0), r"16 tensor\(s\) in the weights but not in the architecture"),
        (
            dict(intermediate_size=64),
            r"3 tensor\(s\) of another shape than config.json says, e.g. '.*mlp.fc1.*\[128\].*\[64\]",
        ),
    ],
    ids=["missing-layer", "extra-layer", "shape"],
)
def test_weights_that_contradict_config_json_are_refused(checkpoint, vision, message):
    edit_config(checkpoint, **vision)
    with pytest.raises(
        ValueError, match=f"{checkpoint}: the weights do not match its config.json: {message}"
    ):
        load_model(checkpoint)


def test_extra_tensor_in_the_weights_is_refused(checkpoint):
    from safetensors.torch import load_file

    tensors = load_file(checkpoint / "model.safetensors")
    tensors["vision_model.backdoor.weight"] = torch.zeros(2)
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="'vision_model.backdoor.weight'"):
        load_model(checkpoint)


# ------------------------------------------------------------------------------ outputs


def test_sanitized_output_never_overlaps_the_input_model(checkpoint, tmp_path):
    unlearner = BackdoorUnlearner(checkpoint, task=TASK, device="cpu")
    before = digest(checkpoint)
    for output, message in (
        (checkpoint, "is inside the input"),
        (checkpoint / "sanitized", "is inside the input"),
        (tmp_path, "contains the input"),  # replacing it would delete the input
    ):
        with pytest.raises(ValueError, match=message):
            unlearner.save_pretrained(output, result=None)  # refused before anything is computed
    assert digest(checkpoint) == before and not (checkpoint / "sanitized").exists()


def test_read_only_output_is_refused_naming_it(micro_clip, tmp_path):
    folder = read_only_folder(tmp_path)
    try:
        with pytest.raises(OSError, match=f"cannot write {folder / 'out'}"):
            save_clip(*micro_clip, folder / "out")
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o755)


def test_a_full_disk_fails_the_save_naming_the_output_and_leaves_nothing(micro_clip, tmp_path):
    with full_folder(tmp_path) as full:  # 64 KiB: the config fits, the 210 KB of weights do not
        out = full / "out"
        with pytest.raises(OSError, match=rf"cannot write {re.escape(str(out))}: no space left") as info:
            save_clip(*micro_clip, out)
        assert info.value.errno == errno.ENOSPC
        assert not out.exists() and leftovers(out) == []
        vector = full / "tau.safetensors"
        with pytest.raises(OSError, match=rf"cannot write {re.escape(str(vector))}: no space left"):
            TaskVector({"w": torch.ones(2**16)}).save(vector)
        assert list(full.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_during_a_save_leaves_no_output_that_looks_complete(
    micro_clip, tmp_path, monkeypatch, existing
):
    model, processor = micro_clip
    out = tmp_path / "out"
    if existing:
        previous = save_clip(model, processor, out)
        before = digest(previous)
    save_pretrained = type(model).save_pretrained

    def interrupted(self, folder, **kwargs):
        save_pretrained(self, folder, **kwargs)  # weights and config written ...
        raise KeyboardInterrupt  # ... then Ctrl-C before the processor files

    monkeypatch.setattr(type(model), "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_clip(model, processor, out)
    assert leftovers(out) == []
    if existing:
        assert digest(out) == before, "the previous output must be left as it was"
    else:
        assert not out.exists()


def test_ctrl_c_while_saving_a_task_vector_leaves_nothing(tmp_path, monkeypatch):
    import hf_tbar.task_vector as task_vector

    def interrupted(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(task_vector, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        TaskVector({"w": torch.ones(3)}).save(tmp_path / "tau.safetensors")
    assert list(tmp_path.iterdir()) == []
