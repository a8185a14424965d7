"""The data layer for your own data: DataArguments, the data-source registry, load_task_data, pixel loaders.

Every dataset here is written on the fly (a few dozen 40x40 images), and the datasets cache is redirected to
a temporary folder; nothing reaches the Hub.
"""

import hashlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from helpers import MICRO, write_imagefolder
from hf_tbar.data import (
    DATA_SOURCES,
    DataArguments,
    TaskSpec,
    load_image_folder,
    load_task_data,
    pixel_loader,
    register_data_source,
    resolve_target,
    tensor_loader,
)
from hf_tbar.data import loader as loader_module
from hf_tbar.data.arguments import DEFAULT_TEMPLATES
from hf_tbar.data.loader import to_rgb
from hf_tbar.data.sources import select_data_source
from hf_tbar.errors import ConfigError, DataError
from hf_tbar.models.tiny_clip import build_tiny_clip

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}
MODES = ("RGB", "L", "RGBA", "P")


def make_image(colour: tuple[int, int, int], index: int, mode: str = "RGB") -> PILImage.Image:
    """A 40x40 image of one colour with a small square whose place encodes ``index``; in ``mode``."""
    image = PILImage.new("RGB", (40, 40), colour)
    image.paste((255, 255, 255), (index % 8 * 5, index // 8 * 5, index % 8 * 5 + 4, index // 8 * 5 + 4))
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(PILImage.new("L", (40, 40), 128))
    return image.convert(mode) if mode != "RGBA" else image


def png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def row_ids(dataset: Dataset, column: str = "image") -> list[str]:
    """A stable identity per row: the image file's name, else a hash of its bytes (without decoding)."""
    cells = dataset.cast_column(column, Image(decode=False))[column]
    return [Path(c["path"]).name if c["path"] else hashlib.md5(c["bytes"]).hexdigest() for c in cells]


@pytest.fixture(scope="module")
def processor():
    return build_tiny_clip(MICRO, ["a", "b"])[1]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """imagefolder layout: 3 class folders x 6 PNG images of mixed modes (RGB, L, RGBA, P), plus one CMYK JPEG."""
    root = tmp_path_factory.mktemp("data") / "my_pets"
    write_imagefolder(root, list(COLOURS), 6, lambda name, i: make_image(COLOURS[name], i, MODES[i % 4]))
    make_image(COLOURS["red"], 7).convert("CMYK").save(root / "red" / "red_cmyk.jpg")
    return root


@pytest.fixture(scope="module")
def disk_dataset(tmp_path_factory) -> Path:
    """A save_to_disk DatasetDict: train (30 rows) and test (9 rows), ClassLabel, no validation split."""
    features = Features(
        {"image": Image(), "label": ClassLabel(names=list(COLOURS)), "caption": Value("string")}
    )

    def split(n: int, offset: int) -> Dataset:
        labels = [i % 3 for i in range(n)]
        images = [make_image(list(COLOURS.values())[y], offset + i) for i, y in enumerate(labels)]
        return Dataset.from_dict(
            {"image": images, "label": labels, "caption": [f"row {i}" for i in range(n)]}, features=features
        )

    folder = tmp_path_factory.mktemp("data") / "colours_saved"
    DatasetDict({"train": split(30, 0), "test": split(9, 30)}).save_to_disk(str(folder))
    return folder


def write_parquet(path: Path, labels: list[int]) -> Path:
    """A parquet file written by pyarrow: ``img`` (PNG bytes) and ``label`` (plain int64, no class names)."""
    images = [png_bytes(make_image(list(COLOURS.values())[y % 3], i)) for i, y in enumerate(labels)]
    pq.write_table(
        pa.table({"img": pa.array(images, pa.binary()), "label": pa.array(labels, pa.int64())}), path
    )
    return path


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory) -> Path:
    return write_parquet(tmp_path_factory.mktemp("data") / "colours.parquet", [i % 3 for i in range(24)])


# ------------------------------------------------------------------------------------------- sources


def test_registry_order_and_contract():
    assert list(DATA_SOURCES)[:5] == ["embedded", "disk", "imagefolder", "files", "hub"]
    nowhere = DataArguments(dataset_name="./no/such/folder")
    for source in DATA_SOURCES.values():
        assert source.description and callable(source.matches) and callable(source.load)
        assert source.matches(nowhere) is False  # cheap, local, and no source claims a missing path
    with pytest.raises(ConfigError, match="'hub'"):
        register_data_source("hub", matches=lambda a: True, load=lambda a: None, description="again")
    with pytest.raises(AttributeError):
        DATA_SOURCES["hub"].name = "other"  # frozen


def test_imagefolder_carves_seeded_stratified_splits(image_folder, processor):
    args = DataArguments(dataset_name=str(image_folder), validation_fraction=0.2, data_seed=3)
    assert select_data_source(args).name == "imagefolder"
    data = load_task_data(args)
    assert data.task.classnames == ("blue", "green", "red") and data.task.templates == DEFAULT_TEMPLATES
    assert (data.image_column, data.label_column) == ("image", "label")
    for split in (data.validation, data.test):
        assert sorted(Counter(split["label"])) == [0, 1, 2]  # every class present
    ids = {name: row_ids(getattr(data, name)) for name in ("train", "validation", "test")}
    assert sum(map(len, ids.values())) == 19 and not set(ids["train"]) & (
        set(ids["validation"]) | set(ids["test"])
    )
    again = load_task_data(
        DataArguments(dataset_name=str(image_folder), validation_fraction=0.2, data_seed=3)
    )
    assert row_ids(again.validation) == ids["validation"] and row_ids(again.test) == ids["test"]
    other = load_task_data(
        DataArguments(dataset_name=str(image_folder), validation_fraction=0.2, data_seed=11)
    )
    assert row_ids(other.validation) != ids["validation"]

    prov = data.provenance
    assert prov["dataset"] == "my_pets" and prov["source"] == "imagefolder"
    assert prov["splits"]["validation"] == {"split": "train", "carved_from_train": True, "rows": 3}
    assert prov["splits"]["test"]["carved_from_train"] and prov["splits"]["train"]["rows"] == 13
    assert str(image_folder.parent) not in json.dumps(prov) and str(Path.home()) not in json.dumps(prov)

    # every image mode (RGB, L, RGBA, P, CMYK) comes out as a 3-channel [0, 1] batch at the processor's size
    batches = list(
        pixel_loader(data.train, processor, image_column="image", label_column="label", batch_size=5)
    )
    assert [p.shape[0] for p, _ in batches] == [5, 5, 3]
    for pixels, labels in batches:
        assert pixels.dtype == torch.float32 and pixels.shape[1:] == (3, 32, 32)
        assert 0.0 <= pixels.min() and pixels.max() <= 1.0
        assert labels.dtype == torch.long and labels.shape == (pixels.shape[0],)


def test_save_to_disk_reads_test_split_and_caps(disk_dataset):
    args = DataArguments(dataset_name=str(disk_dataset), max_train_samples=12, max_eval_samples=6)
    assert select_data_source(args).name == "disk"
    data = load_task_data(args)
    assert data.task.classnames == tuple(COLOURS)
    assert Counter(data.train["label"]) == {0: 4, 1: 4, 2: 4}  # capped, stratified
    assert Counter(data.test["label"]) == {0: 2, 1: 2, 2: 2}
    assert len(data.validation) == 3  # 10% of each class of 30 train rows, carved before capping
    splits = data.provenance["splits"]
    assert splits["test"] == {"split": "test", "carved_from_train": False, "rows": 6}
    assert splits["validation"]["carved_from_train"] and splits["train"]["rows"] == 12
    assert data.provenance["dataset"] == "colours_saved" and data.provenance["max_eval_samples"] == 6
    assert row_ids(load_task_data(args).train) == row_ids(data.train)  # caps are seeded too


def test_parquet_file_and_glob_with_classnames(parquet_file, processor):
    args = DataArguments(
        dataset_name=str(parquet_file), classnames="red,green,blue", templates="a {} patch.|{}"
    )
    assert select_data_source(args).name == "files"
    data = load_task_data(args)
    assert data.image_column == "img" and data.task.classnames == ("red", "green", "blue")
    assert data.task.templates == ("a {} patch.", "{}")
    assert data.provenance["dataset"] == "colours.parquet" and data.provenance["source"] == "files"
    pixels, labels = next(iter(pixel_loader(data.test, processor, image_column="img", label_column="label")))
    assert pixels.shape == (len(data.test), 3, 32, 32) and labels.tolist() == list(data.test["label"])
    glob_args = DataArguments(
        dataset_name=str(parquet_file.parent / "*.parquet"), classnames="red,green,blue"
    )
    assert select_data_source(glob_args).name == "files"
    assert load_task_data(glob_args).provenance["dataset"] == f"{parquet_file.parent.name}/*.parquet"


def test_embedded_keeps_its_templates_unless_given():
    data = load_task_data(DataArguments(dataset_name="digits", max_eval_samples=20))
    assert data.provenance["source"] == "embedded" and data.task.templates[0] == "a photo of the digit {}."
    assert len(data.test) == 20 and not data.provenance["splits"]["validation"]["carved_from_train"]
    assert data.task.classnames[3] == "three"
    given = load_task_data(DataArguments(dataset_name="digits", templates="a {}.", max_eval_samples=20))
    assert given.task.templates == ("a {}.",)


# -------------------------------------------------------------------------------------------- loaders


def test_loader_streams_one_batch_at_a_time(monkeypatch, processor):
    images = [make_image(COLOURS["red"], i) for i in range(20)]
    dataset = Dataset.from_dict({"image": images, "label": [i % 2 for i in range(20)]}).cast_column(
        "image", Image()
    )
    calls = []
    real = loader_module.images_to_tensor

    def counting(batch_images, proc):
        calls.append(len(batch_images))
        return real(batch_images, proc)

    monkeypatch.setattr(loader_module, "images_to_tensor", counting)
    batches = iter(pixel_loader(dataset, processor, image_column="image", label_column="label", batch_size=8))
    first, _ = next(batches)
    assert calls == [8] and first.shape == (8, 3, 32, 32)  # decoded lazily: one batch so far
    rest = list(batches)
    assert calls == [8, 8, 4] and max(p.shape[0] for p, _ in rest) == 8
    assert len(calls) == math.ceil(20 / 8)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "PA", "CMYK", "1", "I"])
def test_to_rgb_every_mode(mode):
    image = make_image(COLOURS["green"], 0)
    converted = to_rgb(image.convert(mode))
    assert converted.mode == "RGB" and converted.size == (40, 40)
    if mode == "RGBA":  # transparent pixels are composited on white
        clear = image.convert("RGBA")
        clear.putalpha(0)
        assert to_rgb(clear).getpixel((20, 20)) == (255, 255, 255)


def test_tensor_loader_same_batches():
    pixels, labels = torch.rand(10, 3, 32, 32), torch.arange(10) % 3
    batches = list(tensor_loader(pixels, labels, batch_size=4))
    assert [p.shape[0] for p, _ in batches] == [4, 4, 2] and batches[0][1].dtype == torch.long
    assert torch.equal(torch.cat([p for p, _ in batches]), pixels)
    assert all(lab is None for _, lab in tensor_loader(pixels, None, batch_size=4))
    with pytest.raises(DataError, match=r"\(10,\)"):
        tensor_loader(pixels, labels[:7], batch_size=4)


def test_load_image_folder_unlabelled(tmp_path, image_folder, processor):
    found = load_image_folder(image_folder)
    assert len(found) == 19 and "red/red_cmyk.jpg" in list(found["path"])
    batches = list(pixel_loader(found, processor, image_column="image", label_column=None, batch_size=8))
    assert [p.shape for p, _ in batches][0] == (8, 3, 32, 32) and all(lab is None for _, lab in batches)
    with pytest.raises(DataError, match="holds no image files"):
        load_image_folder(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(tmp_path)


def test_resolve_target():
    task = TaskSpec(classnames=("golden retriever", "3", "cat", "dog"), templates=("a {}.",))
    assert resolve_target(task, "cat") == 2 and resolve_target(task, "Golden_Retriever") == 0
    assert resolve_target(task, "3") == 1  # a class name wins over the index reading
    assert resolve_target(task, "2") == 2 and resolve_target(task, 3) == 3
    with pytest.raises(DataError, match="'cow'.*'cat'"):
        resolve_target(task, "cow")
    with pytest.raises(DataError, match="7"):
        resolve_target(task, 7)


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"validation_fraction": 0.6}, "0.6"),
        ({"max_train_samples": 0}, "max_train_samples"),
        ({"max_eval_samples": -3}, "-3"),
        ({"data_seed": -1}, "data_seed"),
        ({"dataset_name": " "}, "dataset_name"),
        ({"templates": "a photo of a cat"}, "a photo of a cat"),
        ({"templates": "a {} and a {}|a {}"}, "a {} and a {}"),
        ({"templates": "prompts.txt"}, "prompts.txt"),
        ({"classnames": "cat,,dog"}, "cat,,dog"),
        ({"classnames": "cat,dog,cat"}, "cat"),
        ({"classnames": "names.txt"}, "names.txt"),
        ({"test_split": "train"}, "test_split"),
    ],
)
def test_bad_arguments(kwargs, named):
    with pytest.raises(ConfigError) as info:
        DataArguments(**kwargs)
    assert named in str(info.value)


def test_classnames_and_templates_from_files(tmp_path):
    (tmp_path / "names.txt").write_text("cat\n\ndog\n")
    (tmp_path / "prompts.txt").write_text("a photo of a {}.\nart of the {}.\n")
    args = DataArguments(classnames=str(tmp_path / "names.txt"), templates=str(tmp_path / "prompts.txt"))
    assert args.classname_list() == ("cat", "dog") and args.template_list() == (
        "a photo of a {}.",
        "art of the {}.",
    )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"train_split": "training"}, "'training'.*'test', 'train'"),
        ({"validation_split": "dev2"}, "'dev2'.*'test', 'train'"),
        ({"label_column": "target"}, "'target'.*'caption'"),
        ({"image_column": "picture"}, "'picture'.*'caption'"),
        ({"image_column": "caption"}, "'caption'.*row 0"),
        ({"classnames": "a,b"}, "2 names.*3 classes"),
    ],
)
def test_bad_data_saved(disk_dataset, kwargs, named):
    with pytest.raises(DataError, match=named):
        load_task_data(DataArguments(dataset_name=str(disk_dataset), **kwargs))


def test_bad_labels(tmp_path, parquet_file):
    with pytest.raises(DataError, match="'label'.*no class names.*classnames"):
        load_task_data(DataArguments(dataset_name=str(parquet_file)))
    with pytest.raises(DataError, match=r"split 'train' has label 2 .*2 classes"):
        load_task_data(DataArguments(dataset_name=str(parquet_file), classnames="red,green"))
    bad = write_parquet(tmp_path / "bad.parquet", [0, 1, 2, 7] * 3)
    with pytest.raises(DataError, match=r"split 'train' has label 7 .*3 classes"):
        load_task_data(DataArguments(dataset_name=str(bad), classnames="red,green,blue"))
    ints = Dataset.from_dict({"image": list(range(12)), "label": [0, 1, 2] * 4})
    ints.save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(DataError, match="'image' holds no images"):
        load_task_data(DataArguments(dataset_name=str(tmp_path / "ints"), classnames="a,b,c"))


def test_offline_hub_id_and_missing_paths(tmp_path):
    with pytest.raises(DataError) as info:
        load_task_data(DataArguments(dataset_name="nobody/not-a-dataset"))
    message = str(info.value)
    assert (
        "'nobody/not-a-dataset'" in message and "not in the local cache" in message and "offline" in message
    )
    assert "hf download --repo-type dataset nobody/not-a-dataset" in message
    with pytest.raises(DataError, match="'./no/such/folder' does not exist"):
        load_task_data(DataArguments(dataset_name="./no/such/folder"))
    (tmp_path / "notes.md").write_text("no data here")
    with pytest.raises(DataError, match="exists but is not"):
        load_task_data(DataArguments(dataset_name=str(tmp_path)))


@pytest.mark.parametrize("name", sorted(DATA_SOURCES))
def test_every_registered_data_source_keeps_the_contract(name, tmp_path):
    """Each source reads its own offline example into checked splits and a task; a network-only source
    fails offline with a DataError that names the dataset."""
    source = DATA_SOURCES[name]
    if source.needs_network:
        args = DataArguments(dataset_name="someone/not-cached-here")
        assert select_data_source(args) is source
        with pytest.raises(DataError, match="someone/not-cached-here"):
            load_task_data(args)
        return
    args = source.example(tmp_path)
    assert select_data_source(args) is source
    data = load_task_data(args)
    assert data.provenance["source"] == name and str(tmp_path) not in json.dumps(data.provenance)
    assert len(data.task.classnames) >= 2 and data.task.templates
    for split in (data.train, data.validation, data.test):
        assert len(split) > 0 and {data.image_column, data.label_column} <= set(split.column_names)
        labels = split[data.label_column]
        assert min(labels) >= 0 and max(labels) < len(data.task.classnames)
    assert data.train[0][data.image_column].mode == "RGB"


def test_a_data_source_without_an_example_is_refused():
    with pytest.raises(ConfigError, match="'mine' needs an offline example"):
        register_data_source("mine", matches=lambda args: False, load=lambda args: None, description="x")
