"""A user's data as it comes: a truncated image named, a class missing from train named, a target matched only
ignoring case named, ``--trigger_image`` alone taken as ``image-patch``, and log lines with their time."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from helpers import MICRO
from hf_tbar.cli import main, parse_command
from hf_tbar.data import dataset_to_tensors, iter_pixel_batches, load_image_folder
from hf_tbar.data.embedded import TaskSpec
from hf_tbar.data.examples import EXAMPLE_CLASSES, example_image
from hf_tbar.data.task_data import resolve_target
from hf_tbar.errors import DataError
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip

TEMPLATE = "a photo of a {}."
CLASSES = tuple(EXAMPLE_CLASSES)  # red, green, blue
FAST = ["--steps", "2", "--unlearning_set_size", "8", "--ca_threshold", "0.3", "--target_threshold", "0.01"]
FAST += ["--templates", TEMPLATE, "--force"]


@pytest.fixture
def user_model(tmp_path) -> Path:
    model, processor = build_tiny_clip(MICRO, [*CLASSES, TEMPLATE], seed=0)
    return save_clip(model, processor, tmp_path / "my-clip")


def write_split_folder(root: Path, per_class: int = 4) -> Path:
    """An imagefolder with ``train/`` and ``test/`` sub-folders of JPEG files, one folder per class."""
    for split in ("train", "test"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                example_image(name, index).save(root / split / name / f"{name}_{index}.jpg", quality=95)
    return root


def truncate(path: Path) -> Path:
    """Cut an image file in half, as an interrupted download or copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_truncated_image_is_a_data_error_naming_the_file(tmp_path, user_model, capsys):
    data = write_split_folder(tmp_path / "photos")
    broken = truncate(data / "test" / "green" / "green_2.jpg")  # not a first row: read while streaming
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(data), "--target", "blue"]
    argv += ["--trigger", "badnets", "--trigger_size", "4", "--output_dir", str(tmp_path / "out")]
    assert main(argv + FAST) == DataError.exit_code  # was 6 (OutputError) with no name
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hf-tbar unlearn: error: ") and f"image file {str(broken)!r}" in err
    assert "cannot be decoded" in err and not (tmp_path / "out").exists()


def test_every_reader_of_user_images_names_a_truncated_file(tmp_path, micro_clip):
    _, processor = micro_clip
    folder = tmp_path / "found"
    folder.mkdir()
    for index in range(3):
        example_image("red", index).save(folder / f"{index}.jpg", quality=95)
    broken = truncate(folder / "1.jpg")
    with pytest.raises(DataError, match="image file '1.jpg' cannot be read"):
        load_image_folder(folder)  # checks every file up front
    files = {"image": [str(path) for path in sorted(folder.iterdir())], "label": [0, 0, 0]}
    rows = Dataset.from_dict(files, features=Features({"image": ImageFeature(), "label": Value("int64")}))
    with pytest.raises(DataError, match=re.escape(f"image file {str(broken)!r} of column 'image' cannot be")):
        list(iter_pixel_batches(rows, processor, image_column="image", label_column="label", batch_size=2))
    with pytest.raises(DataError, match=re.escape(f"image file {str(broken)!r}")):
        dataset_to_tensors(rows, processor)
    cells = Dataset.from_dict({"image": [{"bytes": b"\xff\xd8\xff garbage", "path": None}]})
    with pytest.raises(DataError, match="image bytes \\(no file name\\) in column 'image' cannot be decoded"):
        dataset_to_tensors(cells.cast_column("image", ImageFeature()).add_column("label", [0]), processor)


def test_a_class_missing_from_train_is_named(tmp_path, user_model, capsys):
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(CLASSES))})
    rows = [(name, index) for name in CLASSES for index in range(4)]
    split = {
        "train": [(n, i) for n, i in rows if n != "blue"],  # no blue image to train on
        "test": rows,
    }
    saved = DatasetDict(
        {
            name: Dataset.from_dict(
                {
                    "image": [example_image(n, i) for n, i in chosen],
                    "label": [CLASSES.index(n) for n, _ in chosen],
                },
                features=features,
            )
            for name, chosen in split.items()
        }
    )
    saved.save_to_disk(str(tmp_path / "no-blue"))
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(tmp_path / "no-blue")]
    argv += ["--target", "red", "--trigger", "badnets", "--output_dir", str(tmp_path / "out")]
    assert main(argv + FAST) == DataError.exit_code
    err = capsys.readouterr().err
    assert "split 'test' has class 'blue' (label 2) that the train split 'train' lacks" in err


def test_a_target_matched_only_ignoring_case_is_named_in_a_warning(tmp_path, user_model, caplog):
    task = TaskSpec(classnames=("red", "dark_green", "blue"), templates=(TEMPLATE,))
    with caplog.at_level(logging.WARNING, logger="hf_tbar.data.task_data"):
        assert resolve_target(task, "blue") == 2
        assert not caplog.records  # an exact name is silent
        assert resolve_target(task, "Dark Green") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "target 'Dark Green' is not a class name; it matches class 'dark_green' (index 1) when case and '_' vs "
        "space are ignored: using that class"
    ]

    caplog.clear()
    Image.new("RGBA", (6, 6), (255, 0, 255, 255)).save(tmp_path / "sticker.png")
    from hf_tbar.data.examples import write_example_folder

    data = write_example_folder(tmp_path / "colours").dataset_name
    out = tmp_path / "out"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", data, "--target", "Blue"]
    argv += ["--trigger_image", str(tmp_path / "sticker.png"), "--output_dir", str(out)]
    with caplog.at_level(logging.WARNING):
        assert main(argv + FAST) == 0
    assert any("target 'Blue'" in r.getMessage() and "class 'blue'" in r.getMessage() for r in caplog.records)
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["task"]["classnames"][report["target_class"]] == "blue"
    assert report["trigger"]["name"] == "image-patch"  # --trigger_image alone


@pytest.mark.parametrize("command", ["unlearn", "sanitize"])
def test_trigger_image_alone_means_image_patch_and_blend_image_stays(command):
    (args, *_) = parse_command(command, ["--trigger_image", "sticker.png"])
    assert args.trigger == "image-patch" and args.trigger_parameters()["path"] == "sticker.png"
    (args, *_) = parse_command(command, ["--trigger_image", "kitty.png", "--trigger", "blend-image"])
    assert args.trigger == "blend-image"


def test_log_lines_carry_the_time(monkeypatch):
    configured = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: configured.update(kwargs))
    assert main(["verify", "--help"]) == 0
    formatter = logging.Formatter(configured["format"], configured.get("datefmt"))
    record = logging.LogRecord("hf_tbar.tbar.unlearner", logging.INFO, __file__, 1, "fitted", None, None)
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO hf_tbar\.tbar\.unlearner: fitted", formatter.format(record))
