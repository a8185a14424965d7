"""Tiny models of your own: pretraining on your rows reports held-out accuracy and refuses a model at chance;
the embedded glyph world."""

import functools
import json
import logging

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from helpers import MICRO
from hf_tbar.data import DataArguments, dataset_to_tensors, load_embedded_dataset, select_data_source
from hf_tbar.data.embedded import EMBEDDED_DATASETS, TaskSpec
from hf_tbar.data.glyphs import GLYPH_NAMES, GLYPHS_TASK, load_glyphs
from hf_tbar.errors import ConfigError, InputError, ModelAtChanceError
from hf_tbar.models import load_model as load_clip
from hf_tbar.models.tiny_clip import TinyCLIPConfig, build_tiny_clip
from hf_tbar.training import PRETRAIN_METRICS_FILE, PretrainConfig, pretrain_clip

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
COLOUR_TASK = TaskSpec(classnames=tuple(COLOURS), templates=("a {} picture.", "something {}."))


def colour_rows(per_class: int = 20, side: int = 32) -> Dataset:
    """Flat colour images with a little noise: a task a micro CLIP learns in a few dozen steps."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for label, rgb in enumerate(COLOURS.values()):
        for _ in range(per_class):
            noisy = np.clip(np.asarray(rgb) + rng.normal(0, 20, (side, side, 3)), 0, 255).astype(np.uint8)
            images.append(PILImage.fromarray(noisy, mode="RGB"))
            labels.append(label)
    features = Features({"image": Image(), "label": ClassLabel(names=list(COLOURS))})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def noise_rows(count: int = 80, classes: int = 4, side: int = 32) -> tuple[Dataset, TaskSpec]:
    """Random images with random labels: nothing to learn, so any held-out accuracy is chance."""
    rng = np.random.default_rng(1)
    images = [PILImage.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]
    names = ("north", "south", "east", "west")[:classes]
    features = Features({"image": Image(), "label": ClassLabel(names=list(names))})
    rows = Dataset.from_dict(
        {"image": images, "label": (np.arange(count) % classes).tolist()}, features=features
    )
    return rows, TaskSpec(classnames=names, templates=("a {} picture.",))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TBAR_CACHE", str(tmp_path / "cache"))


def test_pretraining_your_rows_logs_progress_and_writes_the_held_out_accuracy(tmp_path, caplog):
    recipe = PretrainConfig(architecture=MICRO, steps=40, batch_size=16, warmup_steps=5, learning_rate=3e-3)
    with caplog.at_level(logging.INFO, logger="hf_tbar"):
        folder = pretrain_clip(
            recipe, tmp_path / "mine", train=colour_rows(), task=COLOUR_TASK, held_out_share=0.25
        )
    progress = [r.getMessage() for r in caplog.records if "pretraining: step" in r.getMessage()]
    assert len(progress) == 4 and "step 10/40, loss" in progress[0] and progress[0].endswith("s/step")
    metrics = json.loads((folder / PRETRAIN_METRICS_FILE).read_text())
    assert metrics["split"] == "held_out" and metrics["total"] == 15  # 5 of each class's 20 rows
    assert metrics["chance_accuracy"] == pytest.approx(1 / 3) and metrics["num_classes"] == 3
    assert metrics["accuracy"] == metrics["correct"] / 15 and metrics["accuracy"] >= 0.8
    assert metrics["near_chance"] is False and metrics["steps"] == 40
    low, high = metrics["accuracy_interval_90"]
    assert low <= metrics["accuracy"] <= high
    assert f"zero-shot accuracy on 15 held-out rows {100 * metrics['accuracy']:.1f}%" in caplog.text
    model, processor = load_clip(folder)  # a complete checkpoint whose tokenizer reads the user's words
    assert "green</w>" in processor.tokenizer.tokenize("a green picture.")


def test_explicit_held_out_rows_are_measured_and_force_saves_a_model_at_chance(tmp_path, monkeypatch, caplog):
    import hf_tbar.training.pretrain as pretrain

    seen = {}

    def run_training(module, params, dataset, *args, **kwargs):
        seen["rows"] = len(dataset)
        return [1.0]

    monkeypatch.setattr(pretrain, "run_training", run_training)
    rows = colour_rows(per_class=8)
    recipe = PretrainConfig(architecture=MICRO, steps=1, batch_size=8, warmup_steps=0)
    held_out = rows.select(range(0, 24, 2))  # 12 rows, 4 of each colour
    with caplog.at_level(logging.WARNING, logger="hf_tbar"):
        folder = pretrain_clip(
            recipe, tmp_path / "a", train=rows, task=COLOUR_TASK, held_out=held_out, force=True
        )
    metrics = json.loads((folder / PRETRAIN_METRICS_FILE).read_text())
    assert seen["rows"] == 24 and metrics["total"] == 12  # every training row kept, the given rows measured
    assert metrics["near_chance"] is True and "saved anyway (force=True)" in caplog.text  # an untrained model
    with pytest.raises(ConfigError, match="held_out_share"):
        pretrain_clip(recipe, tmp_path / "b", train=rows, task=COLOUR_TASK, held_out_share=0.9)


def test_the_embedded_train_split_is_not_cut_for_the_held_out_figure(tmp_path, monkeypatch):
    """The digits' weights must not change: the embedded train split is trained on whole, the test split measured."""
    import hf_tbar.training.pretrain as pretrain

    seen = {}

    def run_training(module, params, dataset, *args, **kwargs):
        seen["rows"] = len(dataset)
        return [2.3]

    monkeypatch.setattr(pretrain, "run_training", run_training)
    dataset, _ = load_embedded_dataset("digits")
    folder = pretrain_clip(PretrainConfig(architecture=MICRO, steps=1), tmp_path / "digits", force=True)
    metrics = json.loads((folder / PRETRAIN_METRICS_FILE).read_text())
    assert seen["rows"] == len(dataset["train"])
    assert metrics["split"] == "test" and metrics["total"] == len(dataset["test"])


def test_a_recipe_that_cannot_learn_raises_at_chance_and_leaves_nothing(tmp_path, caplog):
    rows, task = noise_rows()
    recipe = PretrainConfig(architecture=MICRO, steps=30, batch_size=16, warmup_steps=0, learning_rate=1e-6)
    out = tmp_path / "out"
    with (
        caplog.at_level(logging.INFO, logger="hf_tbar"),
        pytest.raises(ModelAtChanceError, match="chance") as err,
    ):
        pretrain_clip(recipe, out, train=rows, task=task)
    assert isinstance(err.value, InputError) and "Nothing was saved" in str(err.value)
    assert "loss never left chance" in str(err.value)
    assert any(r.levelno == logging.WARNING and "still at chance" in r.getMessage() for r in caplog.records)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half-written or temporary folder


def test_glyphs_are_deterministic_balanced_and_in_range():
    first, task = load_glyphs(image_size=32, seed=3, train_size=40, eval_size=20)
    again, _ = load_glyphs(image_size=32, seed=3, train_size=40, eval_size=20)
    other, _ = load_glyphs(image_size=32, seed=4, train_size=40, eval_size=20)
    assert task is GLYPHS_TASK and task.classnames == GLYPH_NAMES and task.num_classes == 10
    assert first["train"].features["label"].names == list(GLYPH_NAMES)
    assert {name: len(split) for name, split in first.items()} == {"train": 40, "validation": 20, "test": 20}
    processor = build_tiny_clip(TinyCLIPConfig(image_size=32), [*task.classnames, *task.templates])[1]
    pixels = {name: dataset_to_tensors(split, processor)[0] for name, split in first.items()}
    for name, split in first.items():
        assert np.bincount(split["label"], minlength=10).tolist() == [len(split) // 10] * 10
        assert pixels[name].shape == (len(split), 3, 32, 32)
        assert 0.0 <= float(pixels[name].min()) and float(pixels[name].max()) <= 1.0
        assert torch.equal(pixels[name], dataset_to_tensors(again[name], processor)[0])
        assert not torch.equal(pixels[name], dataset_to_tensors(other[name], processor)[0])
    assert not torch.equal(pixels["validation"], pixels["test"])  # each split is its own draw
    tokens = processor.tokenizer.tokenize(task.templates[0].format("lambda"))
    assert "lambda</w>" in tokens  # class names are whole words of the tiny tokenizer


def test_glyphs_are_an_embedded_dataset_by_name():
    dataset, task = load_embedded_dataset("glyphs", image_size=24, seed=0, train_size=10, eval_size=10)
    assert dataset["train"][0]["image"].size == (24, 24) and task is GLYPHS_TASK
    assert select_data_source(DataArguments(dataset_name="glyphs")).name == "embedded"
    with pytest.raises(InputError, match="at least 16"):
        load_glyphs(image_size=8)


def test_a_short_glyph_pretraining_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(
        EMBEDDED_DATASETS, "glyphs", functools.partial(load_glyphs, train_size=60, eval_size=30)
    )
    architecture = TinyCLIPConfig(**{**MICRO.__dict__, "image_size": 64, "patch_size": 16})
    recipe = PretrainConfig(
        dataset="glyphs", architecture=architecture, steps=3, batch_size=16, warmup_steps=0
    )
    folder = pretrain_clip(recipe, tmp_path / "glyphs", force=True)  # three steps cannot learn the task
    metrics = json.loads((folder / PRETRAIN_METRICS_FILE).read_text())
    assert metrics["split"] == "test" and metrics["total"] == 30 and metrics["num_classes"] == 10
    assert metrics["recipe"]["dataset"] == "glyphs" and metrics["task"]["classnames"] == list(GLYPH_NAMES)
    model, processor = load_clip(folder)
    assert model.config.vision_config.image_size == 64


def test_the_docs_tiny_model_example_runs(tmp_path):
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "your-data.md").read_text()
    code = docs.split("## Tiny models of your own", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    micro = ", ".join(f"{name}={value}" for name, value in MICRO.__dict__.items())
    substitutions = {
        "TinyCLIPConfig(image_size=64, patch_size=16), steps=2000": f"TinyCLIPConfig({micro}), steps=60, "
        "batch_size=16, warmup_steps=5, learning_rate=3e-3",
        '"my-tiny-clip"': repr(str(tmp_path / "mine")),
        'BackdoorConfig(attack="badnets", target=0)': 'BackdoorConfig(attack="badnets", target=0, steps=2)',
    }
    for old, new in substitutions.items():
        assert old in code, old
        code = code.replace(old, new)
    exec(compile(code, "README.md", "exec"), {"rows": colour_rows(per_class=40)})
    assert json.loads((tmp_path / "mine" / PRETRAIN_METRICS_FILE).read_text())["near_chance"] is False


def test_the_text_tower_rate_keeps_the_digits_recipe_and_slows_elsewhere():
    from hf_tbar.training.recipes import GLYPH_ATTACK_RECIPES

    digits = PretrainConfig()
    assert digits.text_ratio(own_rows=False) == 1.0  # the cached digits models' recipe, unchanged
    assert digits.text_ratio(own_rows=True) == 0.1  # your own rows: the text tower cannot collapse first
    glyphs = PretrainConfig.for_dataset("glyphs", seed=1)
    assert glyphs.dataset == "glyphs" and glyphs.seed == 1 and glyphs.architecture.image_size == 64
    assert glyphs.text_ratio(own_rows=False) == 0.1
    assert PretrainConfig(text_learning_rate_ratio=0.5).text_ratio(own_rows=True) == 0.5
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match="text_learning_rate_ratio"):
            PretrainConfig(text_learning_rate_ratio=bad)
    with pytest.raises(ConfigError, match="no pretraining recipe"):
        PretrainConfig.for_dataset("letters")
    from hf_tbar.training import BackdoorConfig

    wanet = BackdoorConfig.for_attack("wanet", target=4, dataset="glyphs")
    assert wanet.target == 4 and wanet.steps == GLYPH_ATTACK_RECIPES["wanet"].get(
        "steps", BackdoorConfig().steps
    )
    assert BackdoorConfig.for_attack("sig", dataset="glyphs").stage == GLYPH_ATTACK_RECIPES["sig"].get(
        "stage", "finetune"
    )
    with pytest.raises(ConfigError, match="no attack recipes"):
        BackdoorConfig.for_attack("badnets", dataset="letters")
