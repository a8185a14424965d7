"""Bad images and labels are refused, naming what is wrong, before they can skew a result."""

import logging

import pytest
import torch

from hf_tbar import BackdoorUnlearner, BadNets, TaskSpec
from hf_tbar.data.pixels import validate_labels, validate_pixels
from hf_tbar.errors import DataError
from hf_tbar.tbar.unlearning_set import make_unlearning_set

TASK = TaskSpec(classnames=("zero", "one", "two"), templates=("a photo of {}.",))


def test_eight_bit_pixels_converted_with_float_are_refused():
    pixels = torch.randint(0, 256, (4, 3, 32, 32)).float()
    with pytest.raises(DataError, match=r"clean images range from .* to 25\d, not in \[0, 1\] \(8-bit"):
        validate_pixels(pixels, "clean images")


def test_nan_and_normalised_pixels_are_refused():
    pixels = torch.rand(2, 3, 32, 32)
    pixels[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 NaN or infinite"):
        validate_pixels(pixels)
    with pytest.raises(DataError, match="already normalised"):
        validate_pixels(torch.randn(2, 3, 32, 32) * 2)


def test_labels_out_of_range_name_their_kind_and_value():
    with pytest.raises(
        DataError, match=r"validation labels hold 1 value\(s\) out of range, e.g. 7: the task has 3"
    ):
        validate_labels(torch.tensor([0, 7, 1]), 3, "validation labels")
    with pytest.raises(DataError, match="-1"):
        validate_labels(torch.tensor([-1]), 3)


def test_evaluation_and_unlearning_refuse_out_of_range_labels(micro_clip):
    model, processor = micro_clip
    unlearner = BackdoorUnlearner(model, processor, task=TASK)
    pixels = torch.rand(6, 3, 32, 32)
    with pytest.raises(DataError, match="labels of the evaluation images"):
        unlearner.evaluate(pixels, torch.tensor([0, 1, 2, 0, 1, 5]))
    bad_clean = torch.tensor([0, 1, 2, 0, 1, 3])
    with pytest.raises(DataError, match="labels of the clean images") as error:
        unlearner.unlearn(
            BadNets(), 0, pixels, (pixels, torch.zeros(6, dtype=torch.long)), clean_labels=bad_clean
        )
    assert "target class" not in str(error.value)


def test_an_unlearning_set_larger_than_the_data_is_clamped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_tbar.tbar.unlearning_set"):
        pixels, labels = make_unlearning_set(torch.rand(5, 3, 32, 32), BadNets(), target=1, size=300)
    assert len(pixels) == 5 and labels.tolist() == [1] * 5
    assert "asked to hold 300 images but only 5 were given" in caplog.text
