"""Streaming task arithmetic over safetensors: equality with the in-memory maths, sharding, and refusals."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPModel

import hf_tbar.streaming.engine as streaming
import hf_tbar.streaming.writer as writer
from helpers import MICRO, full_folder
from helpers import read_only_folder as _read_only_folder
from hf_tbar.errors import OutputError
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip
from hf_tbar.streaming import parse_size, stream_apply_vector, stream_task_arithmetic, stream_task_vector

TINY = MICRO
CORPUS = ["zero", "one", "a photo of {}."]
SCALE = 0.7


# ------------------------------------------------------------------------------------------ helpers


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, sharded or not."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def digest(*folders: Path) -> dict[str, str]:
    """sha256 of every file under ``folders``."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(output: Path) -> list[str]:
    """Temporary siblings an interrupted write could have left next to ``output``."""
    return [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]


def write_weights(folder: Path, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def logits(folder: Path) -> torch.Tensor:
    model = CLIPModel.from_pretrained(folder).eval()
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, TINY.image_size, TINY.image_size)
    ids = torch.tensor([[1, 2, 3], [3, 2, 1]])
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits_per_image


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random CLIP ("backdoored") and a perturbed copy ("trigger-fine-tuned"), unsharded."""
    root = tmp_path_factory.mktemp("pair")
    model, processor = build_tiny_clip(TINY, CORPUS, seed=0)
    save_clip(model, processor, root / "base")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    save_clip(model, processor, root / "finetuned")
    return root / "base", root / "finetuned"


@pytest.fixture
def copy_pair(pair, tmp_path) -> tuple[Path, Path]:
    """A private, editable copy of ``pair``."""
    base, finetuned = (Path(shutil.copytree(p, tmp_path / p.name)) for p in pair)
    return base, finetuned


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, Path]:
    """Checkpoints with float32/float16/bfloat16, a 0-d tensor, int64 position_ids and a bool mask."""
    torch.manual_seed(0)
    base = {
        "w32": torch.randn(5, 3),
        "w16": torch.randn(4, 2).half(),
        "wbf16": torch.randn(6).bfloat16(),
        "scalar": torch.tensor(2.5),
        "position_ids": torch.arange(7).unsqueeze(0),
        "mask": torch.tensor([True, False, True]),
    }
    tuned = {
        k: (v + 0.1 * torch.randn(v.shape)).to(v.dtype) if v.is_floating_point() else v
        for k, v in base.items()
    }
    tuned["position_ids"] = torch.arange(7).unsqueeze(0) + 100  # integer tensors come from the base only
    return write_weights(tmp_path / "base", base), write_weights(tmp_path / "tuned", tuned)


# ------------------------------------------------------------------------------------------ maths


@pytest.mark.parametrize("negate", [True, False])
def test_matches_in_memory_arithmetic(pair, tmp_path, negate):
    base, finetuned = pair
    before = digest(base, finetuned)
    out = stream_task_arithmetic(base, finetuned, tmp_path / "out", SCALE, negate=negate, progress=False)
    b, f, o = weights(base), weights(finetuned), weights(out)
    assert set(o) == set(b)
    sign = -1 if negate else 1
    for name, tensor in b.items():
        assert o[name].dtype == tensor.dtype
        torch.testing.assert_close(o[name], tensor + sign * SCALE * (f[name] - tensor), rtol=1e-6, atol=1e-6)
    assert digest(base, finetuned) == before, "inputs were modified"
    # Non-weight files copied; a single shard, no index; metadata kept.
    assert {"config.json", "tokenizer.json", "processor_config.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model.safetensors.index.json").exists()
    assert (out / "config.json").read_bytes() == (base / "config.json").read_bytes()
    with safe_open(out / "model.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_dtypes_preserved_and_integer_tensors_copied(mixed, tmp_path):
    base, tuned = mixed
    out = stream_task_arithmetic(base, tuned, tmp_path / "out", SCALE, progress=False)
    b, f, o = weights(base), weights(tuned), weights(out)
    for name in ("position_ids", "mask"):
        assert o[name].dtype == b[name].dtype and torch.equal(o[name], b[name])
    for name in ("w32", "w16", "wbf16", "scalar"):
        expected = (b[name].float() - SCALE * (f[name].float() - b[name].float())).to(b[name].dtype)
        assert o[name].dtype == b[name].dtype and o[name].shape == b[name].shape
        torch.testing.assert_close(o[name], expected)


def test_scale_zero_is_bit_identical(pair, mixed, tmp_path):
    for base, tuned in (pair, mixed):
        out = stream_task_arithmetic(base, tuned, tmp_path / f"out-{base.parent.name}", 0.0, progress=False)
        b, o = weights(base), weights(out)
        assert set(o) == set(b)
        for name, tensor in b.items():
            assert o[name].dtype == tensor.dtype
            assert torch.equal(o[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), (
                name
            )


def test_chunked_and_remapped_reads_give_the_same_bytes(pair, tmp_path, monkeypatch):
    base, finetuned = pair
    whole = stream_task_arithmetic(base, finetuned, tmp_path / "whole", SCALE, progress=False)
    monkeypatch.setattr(streaming, "_CHUNK_ELEMENTS", 100)  # many chunks per tensor, rows split
    monkeypatch.setattr(streaming, "_RELEASE_BYTES", 1000)  # release mapped pages every few chunks
    monkeypatch.setattr(streaming, "_PIECE_ELEMENTS", 37)  # chunks computed and written in odd pieces
    monkeypatch.setattr(streaming, "_INLINE_BYTES", 0)  # every chunk goes to the worker threads
    chunked = stream_task_arithmetic(base, finetuned, tmp_path / "chunked", SCALE, progress=False)
    assert (whole / "model.safetensors").read_bytes() == (chunked / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def sharded_pair(pair, tmp_path_factory) -> tuple[Path, Path]:
    """``pair`` re-saved by transformers as several shards plus an index."""
    root = tmp_path_factory.mktemp("sharded")
    sharded = []
    for folder in pair:
        model = CLIPModel.from_pretrained(folder)
        model.save_pretrained(root / folder.name, max_shard_size="40KB")
        for extra in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
            shutil.copy(folder / extra, root / folder.name)
        sharded.append(root / folder.name)
    assert len(list(sharded[0].glob("*.safetensors"))) > 1
    return sharded[0], sharded[1]


def shard_contents(folder: Path) -> dict[str, list[str]]:
    """Shard file name -> the tensor names it holds."""
    contents = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as handle:
            contents[shard.name] = sorted(handle.keys())
    return contents


def test_sharded_input_and_output_load_and_give_the_same_logits(pair, sharded_pair, tmp_path):
    base, finetuned = pair
    single = stream_task_arithmetic(base, finetuned, tmp_path / "single", SCALE, progress=False)
    sharded = stream_task_arithmetic(
        *sharded_pair, tmp_path / "sharded", SCALE, max_shard_size=30_000, progress=False
    )

    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    tensors = weights(sharded)
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    for name, shard in index["weight_map"].items():
        with safe_open(sharded / shard, framework="pt") as handle:
            assert name in handle.keys()
    for shard in shards:  # the size limit holds except for a tensor larger than it, alone in its shard
        with safe_open(sharded / shard, framework="pt") as handle:
            sizes = [handle.get_slice(k).get_shape() for k in handle.keys()]
        assert len(sizes) == 1 or (sharded / shard).stat().st_size <= 30_000 + 4096
    assert torch.equal(logits(sharded), logits(single))


def test_by_default_the_output_keeps_the_sharding_of_the_base(pair, sharded_pair, tmp_path):
    sharded = stream_task_arithmetic(*sharded_pair, tmp_path / "sharded", SCALE, progress=False)
    assert shard_contents(sharded) == shard_contents(sharded_pair[0])
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    expected = json.loads((sharded_pair[0] / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == expected["weight_map"]
    single = stream_task_arithmetic(*pair, tmp_path / "single", SCALE, progress=False)
    assert shard_contents(single) == shard_contents(pair[0])
    assert not (single / "model.safetensors.index.json").exists()
    assert torch.equal(logits(sharded), logits(single))


def test_task_vector_then_apply_matches_arithmetic(pair, tmp_path):
    base, finetuned = pair
    vector = stream_task_vector(base, finetuned, tmp_path / "vectors" / "trigger.safetensors", progress=False)
    b, f, v = weights(base), weights(finetuned), load_file(vector)
    assert set(v) == {k for k, t in b.items() if t.is_floating_point()}
    for name, tensor in v.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, f[name] - b[name])
    with safe_open(vector, framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "pt" and metadata["hf_tbar_type"] == "task_vector"
    assert metadata["model_type"] == "clip"

    applied = stream_apply_vector(
        base, vector, tmp_path / "applied", SCALE, max_shard_size="30KB", progress=False
    )
    direct = stream_task_arithmetic(base, finetuned, tmp_path / "direct", SCALE, progress=False)
    a, d = weights(applied), weights(direct)
    for name in d:
        torch.testing.assert_close(a[name], d[name], rtol=1e-6, atol=1e-6)
    assert len(list(applied.glob("*.safetensors"))) > 1


def test_apply_vector_keeps_integer_tensors_and_checks_coverage(mixed, tmp_path):
    base, tuned = mixed
    vector = stream_task_vector(base, tuned, tmp_path / "v.safetensors", progress=False)
    out = stream_apply_vector(base, vector, tmp_path / "out", SCALE, negate=False, progress=False)
    assert torch.equal(weights(out)["position_ids"], weights(base)["position_ids"])
    partial = {k: t for k, t in load_file(vector).items() if k != "w16"}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="'w16'"):
        stream_apply_vector(base, tmp_path / "partial.safetensors", tmp_path / "out2", SCALE, progress=False)


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1GiB") == 2**30
    assert parse_size("500kb") == 500_000
    assert parse_size(1234) == 1234
    for bad in ("lots", "-1MB", 0, True, 1.5):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)


# ------------------------------------------------------------------------------------------ refusals


def rewrite(folder: Path, edit) -> None:
    """Apply ``edit`` to the tensors of a one-file checkpoint folder."""
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


NAME = "vision_model.encoder.layers.0.mlp.fc1.weight"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop(NAME), f"tensor '{NAME}' is in .*base but not in .*finetuned"),
        (lambda t: t.update(extra=torch.zeros(2)), "tensor 'extra' is in .*finetuned but not in .*base"),
        (
            lambda t: t.update({NAME: t[NAME][:-1]}),
            f"tensor '{NAME}' has shape \\[128, 32\\] in .*but \\[127, 32\\]",
        ),
        (lambda t: t.update({NAME: t[NAME].half()}), f"tensor '{NAME}' has dtype F32 in .*but F16"),
    ],
    ids=["missing", "extra", "shape", "dtype"],
)
def test_layout_mismatch_names_the_tensor(copy_pair, tmp_path, edit, message):
    base, finetuned = copy_pair
    rewrite(finetuned, edit)
    with pytest.raises(ValueError, match=message):
        stream_task_arithmetic(base, finetuned, tmp_path / "out", SCALE, progress=False)
    assert not (tmp_path / "out").exists()


def test_different_architecture_in_config_is_refused(copy_pair, tmp_path):
    base, finetuned = copy_pair
    config = json.loads((finetuned / "config.json").read_text())
    config["vision_config"]["num_attention_heads"] = 4  # same weight shapes, another model
    (finetuned / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="vision_config.num_attention_heads is 2 vs 4"):
        stream_task_arithmetic(base, finetuned, tmp_path / "out", SCALE, progress=False)


def test_non_finite_result_is_refused_and_nothing_written(copy_pair, tmp_path):
    base, finetuned = copy_pair
    rewrite(finetuned, lambda t: t[NAME].__setitem__((0, 0), float("nan")))
    before = digest(base, finetuned)
    with pytest.raises(ValueError, match=f"tensor '{NAME}': the result has 1 non-finite .*finetuned"):
        stream_task_arithmetic(base, finetuned, tmp_path / "out", SCALE, progress=False)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path / "out")
    assert digest(base, finetuned) == before


def test_overflow_when_casting_back_is_refused(mixed, tmp_path):
    base, tuned = mixed
    with pytest.raises(ValueError, match="tensor 'w16': the result has .* non-finite .*overflow"):
        stream_task_arithmetic(base, tuned, tmp_path / "out", 1e6, progress=False)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), True, "1"])
def test_non_finite_scale_is_refused(pair, tmp_path, scale):
    with pytest.raises(ValueError, match="scale must be a finite number"):
        stream_task_arithmetic(*pair, tmp_path / "out", scale, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupted_safetensors_is_named(copy_pair, tmp_path, damage):
    base, finetuned = copy_pair
    file = finetuned / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:8] + b"#garbage" + data[16:])
    with pytest.raises(ValueError, match=f"cannot read {file}: not a valid safetensors file"):
        stream_task_arithmetic(base, finetuned, tmp_path / "out", SCALE, progress=False)


def test_pickle_checkpoints_are_never_unpickled(pair, tmp_path, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must not be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    for source in (pickled, pickled / "pytorch_model.bin"):
        with pytest.raises(ValueError, match="pickle checkpoint; hf_tbar will not unpickle it"):
            stream_task_arithmetic(pair[0], source, tmp_path / "out", SCALE, progress=False)


def test_output_overlapping_an_input_is_refused(copy_pair, tmp_path):
    base, finetuned = copy_pair
    for output in (base, base / "sub" / "out", finetuned):
        with pytest.raises(ValueError, match="is inside the input"):
            stream_task_arithmetic(base, finetuned, output, SCALE, overwrite=True, progress=False)
    # An output folder that contains an input would delete it when replaced.
    with pytest.raises(ValueError, match="contains the input"):
        stream_task_arithmetic(base, finetuned, tmp_path, SCALE, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="is inside the input"):
        stream_task_vector(base, finetuned, base / "vector.safetensors", progress=False)
    assert base.exists() and not (base / "sub").exists() and not (base / "vector.safetensors").exists()


def test_existing_output_needs_overwrite(pair, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    with pytest.raises(FileExistsError, match="already exists"):
        stream_task_arithmetic(*pair, out, SCALE, progress=False)
    assert (out / "keep.txt").exists()
    stream_task_arithmetic(*pair, out, SCALE, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_read_only_output_location_is_refused(pair, tmp_path):
    folder = _read_only_folder(tmp_path)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            stream_task_arithmetic(*pair, folder / "out", SCALE, progress=False)
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o755)


@pytest.mark.parametrize("preallocate", [True, False], ids=["fallocate", "no-fallocate"])
def test_a_full_disk_fails_naming_the_output_and_leaves_nothing(pair, tmp_path, monkeypatch, preallocate):
    # With fallocate the shard's space is reserved before any maths and the error comes at once; on a
    # file system without it, the write that finds the disk full fails.
    if not preallocate:
        monkeypatch.setattr(writer, "_FALLOCATE", None)
    before = digest(*pair)
    with full_folder(tmp_path) as full:  # 64 KiB, the weights are 210 KB
        out = full / "out"
        with pytest.raises(OSError, match=f"cannot write {out}: no space left on device") as info:
            stream_task_arithmetic(*pair, out, SCALE, progress=False)
        assert info.value.errno == errno.ENOSPC
        assert list(full.iterdir()) == []
    assert digest(*pair) == before


@pytest.mark.parametrize("existing", [False, True])
def test_interrupt_while_writing_leaves_nothing_behind(copy_pair, tmp_path, monkeypatch, existing):
    base, finetuned = copy_pair
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("previous run")
    before = digest(base, finetuned)
    run_job, calls = streaming._run_job, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the first shard
        return run_job(*args, **kwargs)

    monkeypatch.setattr(streaming, "_run_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stream_task_arithmetic(
            base, finetuned, out, SCALE, overwrite=True, max_shard_size="30KB", progress=False
        )
    assert len(calls) == 5
    assert leftovers(out) == []
    if existing:
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert digest(base, finetuned) == before


def test_interrupt_while_writing_a_vector_leaves_nothing_behind(pair, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming, "_run_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stream_task_vector(*pair, tmp_path / "v.safetensors", progress=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ CLI


def test_cli_arithmetic(pair, tmp_path, monkeypatch, capsys):
    from hf_tbar import cli

    monkeypatch.setitem(cli.COMMANDS, "arithmetic", "hf_tbar.cli.arithmetic")
    base, finetuned = (str(p) for p in pair)
    args = ["arithmetic", "--base", base, "--finetuned", finetuned, "--scale", "0.7", "--no_progress"]
    assert cli.main([*args, "--output_dir", str(tmp_path / "out")]) == 0
    expected = weights(stream_task_arithmetic(*pair, tmp_path / "api", SCALE, progress=False))
    assert all(torch.equal(t, expected[k]) for k, t in weights(tmp_path / "out").items())

    vector = str(tmp_path / "tau.safetensors")
    assert cli.main(["arithmetic", "--operation", "vector", "--base", base, "--finetuned", finetuned,
                     "--output_dir", vector, "--no_progress"]) == 0  # fmt: skip
    assert cli.main(["arithmetic", "--base", base, "--vector", vector, "--scale", "0.7",
                     "--output_dir", str(tmp_path / "applied"), "--no_progress"]) == 0  # fmt: skip

    # A refused run says why in one line and exits with the output-refused status, without a traceback.
    assert cli.main([*args, "--output_dir", str(tmp_path / "out")]) == OutputError.exit_code
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert cli.main(["arithmetic", "--base", base, "--output_dir", str(tmp_path / "x")]) == 2
    assert "exactly one of --finetuned and --vector" in capsys.readouterr().err
    assert cli.main([*args[:-3], "--scale", "nan", "--output_dir", str(tmp_path / "x")]) == 2
    assert "--scale must be a finite number" in capsys.readouterr().err
