"""hf-tbar unlearn on image-caption unlearning data: --caption_dataset, --caption_column, their errors."""

import json
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from helpers import MICRO, write_imagefolder
from hf_tbar.cli import main, parse_command
from hf_tbar.data.caption_data import CaptionDataArguments
from hf_tbar.errors import ConfigError, DataError
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip
from hf_tbar.tbar import contrastive

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 50, 210)}
TEMPLATE = "a photo of a {}."
CAPTIONS = ("a red square", "a green square with a spot", "a small blue square", "a square on the left")
FAST = ["--steps", "2", "--unlearning_set_size", "8", "--ca_threshold", "0.3", "--target_threshold", "0.01"]
FAST += ["--trigger", "badnets", "--trigger_size", "4", "--templates", TEMPLATE]
FAST += ["--target", "blue", "--force"]


def _image(name: str, index: int) -> Image.Image:
    image = Image.new("RGB", (32, 32), COLOURS[name])
    image.paste((255, 255, 255), (index * 3, 4, index * 3 + 6, 10))
    return image


def _captioned_rows(count: int = 12) -> dict[str, list]:
    names = [CLASSES[i % 3] for i in range(count)]
    return {
        "image": [_image(name, i % 6) for i, name in enumerate(names)],
        "label": [CLASSES.index(name) for name in names],
        "text": [CAPTIONS[i % len(CAPTIONS)] for i in range(count)],
    }


def write_caption_folder(root: Path, column: str = "text") -> Path:
    """A flat imagefolder whose metadata.jsonl gives each image a caption in ``column``."""
    root.mkdir(parents=True)
    rows = _captioned_rows()
    with (root / "metadata.jsonl").open("w") as metadata:
        for index, (image, caption) in enumerate(zip(rows["image"], rows["text"], strict=True)):
            image.save(root / f"{index}.png")
            metadata.write(json.dumps({"file_name": f"{index}.png", column: caption}) + "\n")
    return root


def write_saved(root: Path) -> Path:
    """A save_to_disk dataset of images, class labels and captions."""
    features = Features(
        {"image": ImageFeature(), "label": ClassLabel(names=list(CLASSES)), "text": Value("string")}
    )
    Dataset.from_dict(_captioned_rows(18), features=features).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> Path:
    corpus = [*CLASSES, TEMPLATE, *CAPTIONS]
    model, processor = build_tiny_clip(MICRO, corpus, seed=0)
    return save_clip(model, processor, tmp_path_factory.mktemp("models") / "my-clip")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The classification dataset (validation and test), an imagefolder of three colour classes."""
    return write_imagefolder(tmp_path_factory.mktemp("data") / "colours", CLASSES, 6, _image)


@pytest.fixture
def fitted(monkeypatch) -> list[str]:
    """The fine-tunings that went through the contrastive (caption) route."""
    seen = []
    original = contrastive.caption_rows

    def spy(context, pixels, own, objective, desc, metadata):
        seen.append(desc)
        return original(context, pixels, own, objective, desc, metadata)

    monkeypatch.setattr(contrastive, "caption_rows", spy)
    return seen


def test_a_caption_dataset_is_the_unlearning_set(tmp_path, user_model, photos, fitted):
    captions = write_caption_folder(tmp_path / "captioned_photos")
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(photos), "--output_dir", str(out)]
    argv += ["--caption_dataset", str(captions), "--variant", "repair-preserving", "--preserve_set_size", "4"]
    assert main(argv + FAST) == 0
    assert sorted(fitted) == ["repair fine-tuning (full)", "target-class fine-tuning"]
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["data"]["unlearning_set"] == {
        "kind": "image-caption",
        "objective": "contrastive",
        "dataset": "captioned_photos",
        "config": None,
        "source": "imagefolder",
        "split": "train",
        "image_column": "image",
        "caption_column": "text",
        "label_column": None,
        "rows": 12,
        "target_captions": None,
    }
    assert report["dataset"] == "colours" and report["evaluation_split"] == "test (carved from train)"
    assert str(tmp_path) not in json.dumps(report)


def test_a_caption_column_of_the_classification_dataset(tmp_path, user_model, fitted):
    data = write_saved(tmp_path / "captioned_colours")
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(data), "--output_dir", str(out)]
    argv += ["--caption_column", "text", "--target_captions", "a small blue square", "a blue square"]
    assert main(argv + FAST + ["--variant", "plain"]) == 0
    assert fitted == ["trigger fine-tuning (full)"]  # the plain variant fits the trigger vector alone
    record = json.loads((out / "tbar_report.json").read_text())["data"]
    assert record["unlearning_set"]["dataset"] == "captioned_colours"
    assert record["unlearning_set"]["rows"] == record["splits"]["train"]["rows"]
    assert record["unlearning_set"]["label_column"] == "label"
    assert record["unlearning_set"]["target_captions"] == ["a small blue square", "a blue square"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            ["--caption_dataset", "CAPTIONS", "--caption_column", "caption"],
            "no caption column 'caption'; col",
        ),
        (["--caption_dataset", "PHOTOS"], "has no caption column (looked for 'text', 'caption')"),
        (["--caption_dataset", "EMPTY"], "empty_captions.parquet"),
        (["--caption_dataset", "someone/no-such-captions"], "'someone/no-such-captions'"),
        (["--caption_dataset", "CAPTIONS", "--caption_split", "val"], "no caption split 'val'"),
        (["--caption_column", "image"], "caption column 'image' is the image column"),
        (["--caption_column", "text"], "no caption column 'text'; columns: ['image', 'label']"),
        (["--caption_column", "label"], "caption column 'label' is the label column"),
    ],
)
def test_bad_caption_data_is_named_before_any_work(tmp_path, user_model, photos, capsys, extra, needle):
    paths = {"CAPTIONS": write_caption_folder(tmp_path / "captions"), "PHOTOS": photos}
    paths["EMPTY"] = tmp_path / "empty_captions.parquet"
    features = Features({"image": ImageFeature(), "text": Value("string")})
    Dataset.from_dict({"image": [], "text": []}, features=features).to_parquet(str(paths["EMPTY"]))
    extra = [str(paths.get(value, value)) for value in extra]
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(photos), "--output_dir", str(out)]
    assert main(argv + FAST + extra) == DataError.exit_code
    lines = [line for line in capsys.readouterr().err.splitlines() if "hf-tbar unlearn: " in line]
    assert len(lines) == 1 and lines[0].startswith("hf-tbar unlearn: error: ") and needle in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--caption_column", "img", "--image_column", "img"], "both are 'img'"),
        (["--caption_column", "pic", "--caption_dataset", "d", "--caption_image_column", "pic"], "'pic'"),
        (["--caption_image_column", "photo"], "caption_image_column 'photo' needs caption_dataset"),
        (["--caption_split", "val"], "caption_split 'val' needs caption_dataset"),
        (["--caption_column", ""], "caption_column must be None or a non-empty string"),
    ],
)
def test_contradictory_caption_flags_are_usage_errors(capsys, extra, needle):
    assert main(["unlearn", *extra]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("hf-tbar unlearn: error: ") and needle in err and "Traceback" not in err


def test_the_caption_flags_have_help_and_the_example_config_parses(capsys):
    assert main(["unlearn", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--caption_column", "--caption_dataset", "--caption_dataset_config", "--caption_split"):
        assert flag in help_text
    assert "--caption_image_column" in help_text and "--target_captions" in help_text
    assert "metadata.jsonl has a 'text' column" in help_text
    example = Path(__file__).resolve().parent.parent / "examples" / "your_captions.yaml"
    args, data_args, config, *_ = parse_command("unlearn", ["--config", str(example)])
    assert isinstance(data_args, CaptionDataArguments) and data_args.uses_captions
    assert data_args.caption_dataset == "./my_captioned_photos" and data_args.caption_column == "text"
    assert config.target_captions == ["a photo of a cat.", "a cat sitting on a sofa."]
    assert args.target == "cat" and data_args.dataset_name == "./my_photos"
    again = parse_command("unlearn", ["--config", str(example), "--target_captions", "a cat"])
    assert again[2].target_captions == ["a cat"]  # a flag overrides the file
    plain = parse_command("unlearn", [])[1]
    assert not plain.uses_captions and plain.caption_split == "train"


def test_an_empty_split_and_captions_that_are_not_strings_are_named(monkeypatch, photos):
    # datasets refuses to load an empty local table (caught above); an empty split that loads is named here.
    import hf_tbar.data.caption_data as caption_data
    from hf_tbar.data import DataArguments, load_task_data
    from hf_tbar.data.sources import DATA_SOURCES

    features = Features({"image": ImageFeature(), "text": Value("string")})
    empty = Dataset.from_dict({"image": [], "text": []}, features=features)
    hub = DATA_SOURCES["hub"]
    numbers = Dataset.from_dict({"image": [_image("red", 0)], "text": [3]})
    splits = {"train": empty, "numbers": numbers}
    fake = type(hub)("hub", hub.matches, lambda args: DatasetDict(splits), "fake hub")
    monkeypatch.setattr(caption_data, "select_data_source", lambda args: fake)
    data = load_task_data(DataArguments(dataset_name=str(photos)))
    args = CaptionDataArguments(dataset_name=str(photos), caption_dataset="me/empty-captions")
    with pytest.raises(DataError, match="split 'train' of caption dataset 'me/empty-captions' is empty"):
        caption_data.load_caption_data(args, data)
    args.caption_split = "numbers"
    with pytest.raises(DataError, match="caption column 'text' of split 'numbers' .* holds int64 values"):
        caption_data.load_caption_data(args, data)
    assert caption_data.load_caption_data(DataArguments(dataset_name=str(photos)), data) is None
