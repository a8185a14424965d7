"""Your model, your data: hf-tbar unlearn and the Python API on an imagefolder, a save_to_disk folder and parquet."""

import io
import json
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image as PILImage
from transformers import CLIPModel

from helpers import MICRO
from helpers import write_imagefolder as write_folder
from hf_tbar import BackdoorUnlearner, BadNets, ScaleSearchConfig, TaskSpec, TBARConfig
from hf_tbar.cli import main
from hf_tbar.data import DataArguments, load_task_data
from hf_tbar.data.images import DatasetImages
from hf_tbar.errors import DataError, InputError, ModelAtChanceError
from hf_tbar.evaluation import evaluate_classifier
from hf_tbar.hub.gate import SafetyGateError
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 50, 210)}
TEMPLATE = "a photo of a {}."
PER_CLASS = 8


def _image(name: str, index: int) -> PILImage.Image:
    image = PILImage.new("RGB", (40, 40), COLOURS[name])
    image.paste((255 - 20 * index, 128, 20 * index), (index * 3, 5, index * 3 + 10, 15))
    return image.convert("L") if index == 1 else image


def write_imagefolder(root: Path) -> Path:
    return write_folder(root, CLASSES, PER_CLASS, _image)


def _rows() -> dict:
    images = [_image(name, i) for name in CLASSES for i in range(PER_CLASS)]
    labels = [c for c in range(len(CLASSES)) for _ in range(PER_CLASS)]
    return {"image": images, "label": labels}


def write_saved(root: Path) -> Path:
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(CLASSES))})
    rows = _rows()
    train = Dataset.from_dict(rows, features=features)
    DatasetDict({"train": train, "test": train.select(range(0, 24, 2))}).save_to_disk(str(root))
    return root


def write_parquet(path: Path) -> Path:
    rows = _rows()
    encoded = []
    for image in rows["image"]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"img": ImageFeature(), "fine_label": Value("int64")})
    Dataset.from_dict({"img": encoded, "fine_label": rows["label"]}, features=features).to_parquet(str(path))
    return path


@pytest.fixture
def user_model(tmp_path) -> Path:
    model, processor = build_tiny_clip(MICRO, [*CLASSES, TEMPLATE], seed=0)
    return save_clip(model, processor, tmp_path / "my-clip")


DATASETS = {
    "imagefolder": (lambda root: write_imagefolder(root / "pets_photos"), []),
    "disk": (lambda root: write_saved(root / "saved_colours"), []),
    "parquet": (
        lambda root: write_parquet(root / "colours.parquet"),
        ["--classnames", ",".join(CLASSES), "--label_column", "fine_label"],
    ),
}
FAST = ["--steps", "2", "--unlearning_set_size", "8", "--ca_threshold", "0.3", "--target_threshold", "0.01"]


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_cli_unlearns_on_the_users_model_and_data(tmp_path, user_model, kind, monkeypatch):
    import hf_tbar.pipeline as common  # the pipeline builds the embedded model without --model

    def no_embedded(*args, **kwargs):
        raise AssertionError("an embedded model was built although --model was given")

    monkeypatch.setattr(common, "embedded_scenario", no_embedded)
    write, extra = DATASETS[kind]
    data = write(tmp_path)
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(data), "--target", "blue"]
    argv += ["--trigger", "badnets", "--trigger_size", "4", "--templates", TEMPLATE, "--output_dir", str(out)]
    assert main(argv + FAST + extra + ["--force"]) == 0
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["dataset"] == data.name and report["data"]["dataset"] == data.name
    assert report["evaluation_split"] in ("test", "test (carved from train)")
    assert report["task"]["classnames"][report["target_class"]] == "blue"
    assert (report["evaluation_split"] == "test") == (
        kind == "disk"
    )  # only the saved dataset has a test split
    assert report["data"]["splits"]["test"]["rows"] > 0
    assert report["trigger"] == {"name": "badnets", "patch_size": 4, "margin": 0, "value": 1.0, "seed": 0}
    assert report["base_model"] is None and report["base_model_source"] == {
        "kind": "local",
        "name": "my-clip",
    }
    assert str(tmp_path) not in json.dumps(report)
    assert (out / "README.md").is_file() and "my-clip" in (out / "README.md").read_text()
    assert isinstance(CLIPModel.from_pretrained(out), CLIPModel)


def test_python_api_on_a_dataset_and_the_save_gate(tmp_path, user_model):
    data = load_task_data(
        DataArguments(dataset_name=str(write_imagefolder(tmp_path / "shots")), templates=TEMPLATE)
    )
    unlearner = BackdoorUnlearner(
        user_model, task=data.task, config=TBARConfig(steps=2, unlearning_set_size=8)
    )
    images = {
        split: DatasetImages(getattr(data, split), unlearner.processor, data.image_column, data.label_column)
        for split in ("train", "validation", "test")
    }
    splits = (images["train"], images["validation"], images["test"])
    with pytest.raises(ModelAtChanceError, match="near chance"):  # a random micro model: refused before work
        unlearner.unlearn(BadNets(patch_size=4), "green", *splits)
    loose = ScaleSearchConfig(ca_threshold=0.01, target_threshold=None)  # any positive scale is feasible
    result = unlearner.unlearn(BadNets(patch_size=4), "green", *splits, search=loose, force=True)
    assert data.task.classnames[result.target] == "green" and result.after.num_examples == len(data.test)
    before = unlearner.model.vision_model.embeddings.patch_embedding.weight
    after = result.model.vision_model.embeddings.patch_embedding.weight
    assert result.selection.scale > 0 and not torch.equal(before, after)
    # the sanitized model is at chance too: the gate says so, save_pretrained refuses it, force saves it
    assert any("near chance" in warning for warning in result.warnings)
    with pytest.raises(SafetyGateError, match="near chance"):
        unlearner.save_pretrained(tmp_path / "out", result)
    assert not (tmp_path / "out").exists()
    unlearner.save_pretrained(tmp_path / "out", result, force=True, data=data.provenance)
    assert json.loads((tmp_path / "out" / "tbar_report.json").read_text())["data"]["dataset"] == "shots"


def test_evaluation_streams_the_dataset_batch_by_batch(tmp_path, user_model, monkeypatch):
    import hf_tbar.data.loader as loader

    seen = []
    original = loader.images_to_tensor

    def counting(images, processor):
        seen.append(len(images))
        return original(images, processor)

    monkeypatch.setattr(loader, "images_to_tensor", counting)
    data = load_task_data(
        DataArguments(dataset_name=str(write_imagefolder(tmp_path / "shots")), templates=TEMPLATE)
    )
    unlearner = BackdoorUnlearner(user_model, task=data.task)
    images = DatasetImages(data.train, unlearner.processor, data.image_column, data.label_column)
    result = evaluate_classifier(unlearner.classifier(), images, None, BadNets(patch_size=4), 0, batch_size=5)
    assert result.num_examples == len(data.train) and max(seen) <= 5
    assert len(seen) == -(-len(data.train) // 5)  # one decode per batch, never the whole split


def test_found_poisoned_images_are_the_unlearning_set(tmp_path, user_model):
    found = tmp_path / "found_in_the_wild"
    found.mkdir()
    for index in range(12):
        image = _image(CLASSES[index % 3], index % PER_CLASS)
        image.convert("RGB").paste((255, 255, 255), (30, 30, 40, 40))
        image.save(found / f"{index}.png")
    data = write_imagefolder(tmp_path / "clean")
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(data), "--target", "0"]
    argv += [
        "--poisoned_images",
        str(found),
        "--templates",
        TEMPLATE,
        "--output_dir",
        str(out),
        "--variant",
        "plain",
    ]
    assert main(argv + FAST + ["--force"]) == 0
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["trigger"] is None and report["trigger_source"] == "found"
    assert report["data"]["poisoned_images"] == {"finetune": 8, "validation": 2, "test": 2}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--target", "zebra"], "unknown target class 'zebra'"),
        (["--target", "0", "--trigger", "image-patch", "--trigger_image", "PATCH"], "larger than the 32x32"),
        (["--target", "0", "--image_column", "photo"], "'photo'"),
        (["--target", "0", "--test_split", "holdout"], "'holdout'"),
    ],
)
def test_bad_user_inputs_fail_before_any_work_and_write_nothing(tmp_path, user_model, capsys, extra, needle):
    patch = tmp_path / "big_patch.png"
    PILImage.new("RGB", (48, 48), (255, 0, 255)).save(patch)
    extra = [str(patch) if value == "PATCH" else value for value in extra]
    data = write_imagefolder(tmp_path / "clean")
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(user_model), "--dataset_name", str(data), "--output_dir", str(out)]
    assert main(argv + ["--templates", TEMPLATE] + FAST + extra) == InputError.exit_code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_images_of_the_wrong_size_are_named():
    unlearner = BackdoorUnlearner(
        *build_tiny_clip(MICRO, [*CLASSES, TEMPLATE]),
        task=TaskSpec(classnames=CLASSES, templates=(TEMPLATE,)),
    )
    with pytest.raises(DataError, match="24x24 px but the model reads 32x32"):
        unlearner.evaluate(torch.rand(4, 3, 24, 24), torch.zeros(4, dtype=torch.long))


def test_the_tiny_model_tools_take_your_task_and_data(tmp_path):
    from hf_tbar.errors import ConfigError
    from hf_tbar.training.pretrain import PretrainConfig, pretrain_clip

    data = load_task_data(
        DataArguments(dataset_name=str(write_imagefolder(tmp_path / "shots")), templates=TEMPLATE)
    )
    recipe = PretrainConfig(architecture=MICRO, steps=2, batch_size=8, warmup_steps=0)
    with pytest.raises(ConfigError, match="task=TaskSpec"):
        pretrain_clip(recipe, tmp_path / "wrong", train=data.train)
    # two steps leave the model at chance: saved anyway (force), this test is about the tokenizer
    folder = pretrain_clip(recipe, tmp_path / "mine", train=data.train, task=data.task, force=True)
    unlearner = BackdoorUnlearner(folder, task=data.task)  # its tokenizer knows the user's class words
    tokenizer = unlearner.processor.tokenizer
    for name in data.task.classnames:  # whole-word tokens, not the digits' vocabulary
        assert f"{name}</w>" in tokenizer.convert_ids_to_tokens(tokenizer(TEMPLATE.format(name))["input_ids"])


def test_the_readme_python_example_runs(tmp_path, user_model, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    photos = write_imagefolder(tmp_path / "my_photos")
    substitutions = {
        '"openai/clip-vit-base-patch32"': repr(str(user_model)),
        '"./my_photos"': repr(str(photos)),
        '"cat"': '"blue"',
        "max_eval_samples=2000)": f"max_eval_samples=2000, templates={TEMPLATE!r})",
        "train, val, test)": "train, val, test, force=True)",  # a random model is at chance
        '"sanitized-clip", result,': f"{str(tmp_path / 'out')!r}, result, force=True,",  # a random model fails the gate
        '"sanitized-clip/tbar_report.json"': repr(str(tmp_path / "out" / "tbar_report.json")),
    }
    for old, new in substitutions.items():
        assert old in code, old
        code = code.replace(old, new)
    exec(compile(code, "README.md", "exec"), {})
    assert CLIPModel.from_pretrained(tmp_path / "out") is not None
