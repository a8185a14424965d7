import json

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from hf_tbar.data import TaskSpec, dataset_to_tensors, load_embedded_dataset, normalize_pixels
from hf_tbar.io import atomic_output_dir
from hf_tbar.models.loading import load_model
from hf_tbar.models.tiny_clip import TinyCLIPConfig, save_clip
from hf_tbar.models.tokenizer import build_clip_tokenizer
from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head


def test_digits_splits_are_disjoint_stratified_and_complete():
    dataset, task = load_embedded_dataset("digits")
    sizes = {name: len(split) for name, split in dataset.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["train"] > sizes["test"] > sizes["validation"] > 0
    for split in dataset.values():
        counts = np.bincount(split["label"], minlength=10)
        assert counts.min() > 0
    assert task.num_classes == 10 and dataset["train"][0]["image"].size == (32, 32)


def test_unknown_dataset_and_bad_task_are_named():
    with pytest.raises(ValueError, match="'mnist'"):
        load_embedded_dataset("mnist")
    with pytest.raises(ValueError, match="placeholder"):
        TaskSpec(("a", "b"), ("no placeholder",))
    task = TaskSpec(("a", "b"), ("{}",))
    with pytest.raises(ValueError, match="target class 7"):
        task.check_label(7)


def test_tokenizer_encodes_prompts_as_whole_words_and_unseen_text():
    tokenizer = build_clip_tokenizer(["a photo of the digit {}.", "seven"])
    ids = tokenizer("a photo of the digit seven.")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[1:-1] == [
        "a</w>",
        "photo</w>",
        "of</w>",
        "the</w>",
        "digit</w>",
        "seven</w>",
        ".</w>",
    ]
    assert len(tokenizer("zebra crossing!")["input_ids"]) > 3  # unseen words fall back to bytes


def test_save_then_load_gives_identical_logits_offline(tmp_path, micro_clip):
    model, processor = micro_clip
    save_clip(model, processor, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = CLIPModel.from_pretrained(tmp_path / "ckpt")
    loaded_processor = CLIPProcessor.from_pretrained(tmp_path / "ckpt")
    task = TaskSpec(("zero", "one", "two"), ("a photo of {}.",))
    pixels = torch.rand(4, 3, 32, 32)
    logits = [
        ZeroShotClassifier.from_processor(m, build_zero_shot_head(m, p.tokenizer, task), p)(pixels)
        for m, p in ((model, processor), (loaded.eval(), loaded_processor))
    ]
    assert torch.equal(logits[0], logits[1])


def test_failed_save_leaves_nothing_behind(tmp_path, micro_clip, monkeypatch):
    model, processor = micro_clip

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(processor), "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_clip(model, processor, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_keeps_existing_folder_on_failure(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "keep.txt").read_text() == "old"


def test_load_clip_rejects_folders_that_are_not_clip_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        load_model(tmp_path)


def test_pixels_round_trip_and_normalisation(micro_clip):
    _, processor = micro_clip
    dataset, _ = load_embedded_dataset("digits")
    pixels, labels = dataset_to_tensors(dataset["validation"].select(range(8)), processor)
    assert pixels.shape == (8, 3, 32, 32) and pixels.min() >= 0 and pixels.max() <= 1
    assert labels.dtype == torch.long
    normalised = normalize_pixels(pixels, processor)
    assert not torch.allclose(normalised, pixels)
    with pytest.raises(ValueError, match="empty"):
        dataset_to_tensors(dataset["validation"].select([]), processor)


def test_tiny_clip_config_validates():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        TinyCLIPConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="vision_layers"):
        TinyCLIPConfig(vision_layers=0)
