"""The rebound check (``hf_tbar.tbar.rebound`` and ``hf-tbar verify --rebound``) on a micro CLIP.

Images are solid-colour 32 px squares (3 classes); the trigger is BadNets' white corner patch. Every run
is a handful of steps on a 1-layer CLIP (well under a second each).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

from helpers import MICRO, write_imagefolder
from hf_tbar import cli
from hf_tbar.attacks import BadNets, ImagePatch
from hf_tbar.data.arguments import DEFAULT_TEMPLATES
from hf_tbar.data.embedded import TaskSpec
from hf_tbar.errors import ConfigError, DataError, InputError
from hf_tbar.evaluation import EvalResult
from hf_tbar.models.tiny_clip import build_tiny_clip, save_clip
from hf_tbar.reporting.schema import REPORT_FILE, TBARReport
from hf_tbar.tbar.rebound import ReboundConfig, poisoned_mix, rebound

COLOURS = {"blue": (0.1, 0.15, 0.8), "green": (0.1, 0.8, 0.15), "red": (0.85, 0.1, 0.1)}
TASK = TaskSpec(classnames=tuple(COLOURS), templates=("a photo of a {}.",))
CORPUS = [*COLOURS, *DEFAULT_TEMPLATES]
TARGET = 0
FAST = ReboundConfig(steps=3, batch_size=8, learning_rate=1e-3, poisoned_samples=4, clean_images=24)


def squares(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` noisy solid-colour 32 px squares per class, in ``[0, 1]``, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.tensor(list(COLOURS.values())).view(-1, 3, 1, 1)
    labels = torch.arange(len(COLOURS)).repeat_interleave(per_class)
    noise = 0.1 * torch.rand(len(labels), 3, 32, 32, generator=generator)
    return (colours[labels] * 0.9 + noise).clamp(0, 1), labels


@pytest.fixture
def micro():
    return build_tiny_clip(MICRO, CORPUS, seed=0)


def run_rebound(model, processor, config: ReboundConfig = FAST):
    clean, test = squares(10, seed=0), squares(6, seed=1)
    return rebound(model, processor, TASK, *clean, BadNets(), TARGET, *test, config)


# -------------------------------------------------------------------------------------- invariants


def test_the_input_model_is_untouched_and_the_caller_rng_kept(micro):
    model, processor = micro
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    result = run_rebound(model, processor)
    assert torch.equal(torch.rand(3), expected_draw)
    assert all(torch.equal(weights[name], tensor) for name, tensor in model.state_dict().items())
    assert flags == {name: param.requires_grad for name, param in model.named_parameters()}
    assert not model.training
    for scored in (result.before, result.after_clean, result.after_poisoned):
        assert isinstance(scored, EvalResult) and scored.num_examples == 18
        assert 0 <= scored.clean_accuracy <= 1 and 0 <= scored.attack_success_rate <= 1
    assert [len(result.losses[run]) for run in ("clean", "poisoned")] == [3, 3]
    assert result.losses["clean"] != result.losses["poisoned"]  # different data, so different training
    assert (result.clean_images, result.poisoned_samples, result.steps) == (24, 4, 3)
    assert result.to_dict()["asr_rebound"] == result.asr_rebound


def test_the_poisoned_run_implants_the_trigger_and_the_clean_run_does_not(micro):
    model, processor = micro
    config = ReboundConfig(steps=60, batch_size=16, learning_rate=3e-3, poisoned_samples=20, clean_images=30)
    result = run_rebound(model, processor, config)
    assert result.after_poisoned.attack_success_rate >= 0.9
    assert result.after_poisoned.attack_success_rate > result.after_clean.attack_success_rate
    assert result.asr_rebound["poisoned"] > 0


def test_a_seed_reproduces_the_result_and_another_seed_changes_it(micro):
    model, processor = micro
    first, again = run_rebound(model, processor).to_dict(), run_rebound(model, processor).to_dict()
    assert first == again
    other = run_rebound(model, processor, ReboundConfig(**{**vars(FAST), "seed": 1})).to_dict()
    assert other["losses"] != first["losses"]


def test_the_poisoned_mix_adds_k_stamped_non_target_images_labelled_target():
    pixels, labels = squares(5, seed=0)
    mixed, mixed_labels = poisoned_mix(pixels, labels, BadNets(), TARGET, 4, seed=0)
    assert len(mixed) == len(pixels) + 4 and torch.equal(mixed[: len(pixels)], pixels)
    assert torch.equal(mixed_labels[len(labels) :], torch.full((4,), TARGET))
    stamped = mixed[len(pixels) :]
    assert torch.equal(stamped, BadNets()(stamped))  # already carry the trigger
    assert not any(torch.equal(image, p) for image in stamped for p in pixels[labels == TARGET])


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"steps": 0}, "--rebound_steps"),
        ({"poisoned_samples": 0}, "--poisoned_samples"),
        ({"clean_images": 0}, "--clean_images"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_bad_settings_name_the_value(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        ReboundConfig(**kwargs)


def test_too_few_images_to_poison_are_named():
    pixels, labels = squares(2, seed=0)
    with pytest.raises(DataError, match="poisoned_samples is 9 .* only 4 image"):
        poisoned_mix(pixels, labels, BadNets(), TARGET, 9, seed=0)


def test_mismatched_clean_data_is_refused(micro):
    model, processor = micro
    pixels, labels = squares(2, seed=0)
    with pytest.raises(DataError, match="6 images and 5 labels"):
        rebound(model, processor, TASK, pixels, labels[:5], BadNets(), TARGET, *squares(2, 1), FAST)


# ---------------------------------------------------------------------------------- hf-tbar verify


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    def square(name: str, index: int) -> PILImage.Image:
        colour = tuple(int(255 * c) for c in COLOURS[name])
        image = PILImage.new("RGB", (32, 32), colour)
        image.putpixel((index, index), (128, 128, 128))
        return image

    return write_imagefolder(tmp_path_factory.mktemp("data") / "squares", list(COLOURS), 12, square)


def sanitized_folder(root: Path, trigger: dict) -> Path:
    """A micro CLIP folder with a ``tbar_report.json`` recording ``trigger`` and target 0."""
    folder = save_clip(*build_tiny_clip(MICRO, CORPUS, seed=0), root / "sanitized")
    scores = {"clean_accuracy": 0.9, "attack_success_rate": 0.5, "target_class_accuracy": 1.0}
    report = TBARReport(
        task=TASK,
        target_class=TARGET,
        trigger=trigger,
        scale=1.0,
        before=EvalResult(**scores),
        after=EvalResult(**scores),
    )
    (folder / REPORT_FILE).write_text(report.to_json())
    return folder


@pytest.fixture
def verify():
    """Run ``hf-tbar verify ARGS``."""
    return lambda *argv: cli.main(["verify", *map(str, argv)])


REBOUND_FLAGS = ["--rebound", "--rebound_steps", "2", "--rebound_batch_size", "8"]
REBOUND_FLAGS += ["--poisoned_samples", "3", "--clean_images", "12"]


def test_verify_rebound_prints_each_model_before_and_after(verify, tmp_path, image_folder, capsys):
    folder = sanitized_folder(tmp_path, BadNets().public_dict())
    code = verify(
        "--sanitized_dir",
        folder,
        "--dataset_name",
        image_folder,
        "--backdoored_model",
        folder,
        *REBOUND_FLAGS,
    )
    out = capsys.readouterr().out
    assert code == 0
    for name in ("backdoored", "sanitized"):
        assert f"| {name} |" in out
        assert f"| {name} + 2 clean steps |" in out
        assert f"| {name} + 2 steps with 3 poisoned |" in out
    assert "3 triggered copies" in out and "(poisoned share 20.0%)" in out


def test_verify_without_rebound_scores_the_folder_only(verify, tmp_path, image_folder, capsys):
    folder = sanitized_folder(tmp_path, BadNets().public_dict())
    assert verify("--sanitized_dir", folder, "--dataset_name", image_folder) == 0
    out = capsys.readouterr().out
    assert "| sanitized |" in out and "clean steps" not in out


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-tbar verify")]
    assert len(lines) == 1 and lines[0].startswith("hf-tbar verify: error: ")
    return lines[0]


@pytest.mark.parametrize("exists", [True, False])
def test_a_folder_without_a_report_is_one_error_naming_it(verify, tmp_path, capsys, exists):
    folder = tmp_path / "not-sanitized"
    if exists:
        folder.mkdir()
    assert verify("--sanitized_dir", folder, *REBOUND_FLAGS) == InputError.exit_code == 5
    assert str(folder) in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--rebound_steps", "0"], "--rebound_steps"), (["--poisoned_samples", "0"], "--poisoned_samples")],
)
def test_zero_steps_or_k_is_a_usage_error(verify, tmp_path, capsys, argv, needle):
    assert verify("--sanitized_dir", tmp_path, "--rebound", *argv) == ConfigError.exit_code
    assert needle in one_error_line(capsys)


def test_a_trigger_that_cannot_be_rebuilt_is_named(verify, tmp_path, image_folder, capsys):
    patch = ImagePatch.example(tmp_path)
    folder = sanitized_folder(tmp_path, patch.public_dict())
    assert verify("--sanitized_dir", folder, "--dataset_name", image_folder) == InputError.exit_code
    line = one_error_line(capsys)
    assert str(folder / REPORT_FILE) in line and "--trigger_image" in line
    assert (
        verify("--sanitized_dir", folder, "--dataset_name", image_folder, "--trigger_image", patch.path) == 0
    )


def test_a_report_without_trigger_is_named(verify, tmp_path, capsys):
    folder = sanitized_folder(tmp_path, None)
    assert verify("--sanitized_dir", folder, "--rebound") == InputError.exit_code
    assert "records no trigger" in one_error_line(capsys)


def test_a_dataset_with_other_classes_is_named(verify, tmp_path, capsys):
    folder = sanitized_folder(tmp_path, BadNets().public_dict())
    assert verify("--sanitized_dir", folder) == InputError.exit_code  # the default: embedded digits
    assert "has 3 classes but dataset 'digits' has 10" in one_error_line(capsys)
