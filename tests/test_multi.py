"""Several backdoors at once: the joint coordinate search (pure), bad pairs, and the API on a micro CLIP."""

import pytest
import torch

from hf_tbar import BackdoorUnlearner, BadNets, Blended, TaskSpec, TBARConfig
from hf_tbar.errors import ConfigError
from hf_tbar.multi import check_pairs, coordinate_search

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


def fake(optimum: list[float], ca_slope: float = 0.05):
    """ASR_i falls to 0 at scale optimum[i]; CA falls with the sum of the scales."""

    def evaluate(scales: list[float]) -> tuple[float, list[float]]:
        asrs = [max(0.0, 1 - s / o) for s, o in zip(scales, optimum)]
        return 0.9 - ca_slope * sum(scales), asrs

    return evaluate


def test_the_coordinate_search_finds_each_vectors_own_scale():
    scales, evaluations = coordinate_search(fake([1.0, 2.0]), 2, [0, 0.5, 1, 1.5, 2, 2.5], ca_floor=0.69)
    assert scales == [1.0, 2.0] and 0 < evaluations <= 1 + 6 + 2 * 2 * 6


def test_the_accuracy_budget_is_shared_not_spent_on_the_first_vector():
    """From zero, a greedy pass would push the first scale to the floor and leave the second at 0."""

    def evaluate(scales):  # the first ASR falls half as fast; the budget allows a sum of scales of 2
        return 1.0 - 0.1 * sum(scales), [max(0.0, 1 - scales[0] / 2), max(0.0, 1 - scales[1])]

    scales, _ = coordinate_search(evaluate, 2, [0, 0.5, 1, 1.5, 2], ca_floor=0.79)
    assert scales == [1.0, 1.0]  # worst ASR 0.5; greedy from zero stops at [2, 0], worst ASR 1


def test_the_accuracy_floor_binds_and_a_zero_grid_changes_nothing():
    scales, _ = coordinate_search(fake([1.0, 2.0], ca_slope=0.1), 2, [0, 0.5, 1, 1.5, 2], ca_floor=0.7)
    assert sum(scales) <= 2.0 + 1e-9  # CA 0.9 - 0.1 * sum >= 0.7
    assert coordinate_search(fake([1.0]), 1, [0], ca_floor=0.0)[0] == [0.0]


def test_bad_pairs_are_named():
    with pytest.raises(ConfigError, match="at least one"):
        check_pairs([])
    with pytest.raises(ConfigError, match=r"same trigger is given twice \(pairs 0 and 2\)"):
        check_pairs([(BadNets(), 0), (Blended(), 1), (BadNets(), 2)])
    with pytest.raises(ConfigError, match="pair 0 is not a"):
        check_pairs([("badnets", 0)])


def test_unlearn_many_fits_one_vector_per_backdoor_and_reports_asr_per_trigger(micro_clip):
    model, processor = micro_clip
    unlearner = BackdoorUnlearner(
        model, processor, TASK, TBARConfig(steps=2, batch_size=8, unlearning_set_size=8)
    )
    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.rand(24, 3, 32, 32, generator=generator), torch.arange(24) % 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = unlearner.unlearn_many(
        [(BadNets(), 0), (Blended(), "two")], (pixels, labels), (pixels, labels), grid=[0, 1]
    )
    assert len(result.vectors) == 2 and result.targets == [0, 2] and len(result.scales) == 2
    assert len(result.before) == len(result.after) == 2 and "| blended | 2 |" in result.table()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(ConfigError, match="twice"):
        unlearner.unlearn_many([(BadNets(), 0), (BadNets(), 1)], (pixels, labels), (pixels, labels))
