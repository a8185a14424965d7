"""Several backdoors at once: the joint coordinate search (pure), bad pairs, and the API on a micro CLIP."""

import pytest
import torch

from hf_tbar import BackdoorUnlearner, BadNets, Blended, TaskSpec, TBARConfig
from hf_tbar.errors import ConfigError
from hf_tbar.scale_search import NoFeasibleScaleError, ScaleSearchConfig
from hf_tbar.tbar.multi import check_pairs, coordinate_search

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


def fake(optimum: list[float], ca_slope: float = 0.05, ca_floor: float = 0.0):
    """ASR_i falls to 0 at scale optimum[i]; CA falls with the sum of the scales; feasible above ``ca_floor``."""

    def evaluate(scales: list[float]) -> tuple[float, list[float], bool]:
        asrs = [max(0.0, 1 - s / o) for s, o in zip(scales, optimum)]
        ca = 0.9 - ca_slope * sum(scales)
        return ca, asrs, ca >= ca_floor

    return evaluate


def test_the_coordinate_search_finds_each_vectors_own_scale():
    scales, evaluations = coordinate_search(fake([1.0, 2.0], ca_floor=0.69), 2, [0, 0.5, 1, 1.5, 2, 2.5])
    assert scales == [1.0, 2.0] and 0 < evaluations <= 1 + 6 + 2 * 2 * 6


def test_the_accuracy_budget_is_shared_not_spent_on_the_first_vector():
    """From zero, a greedy pass would push the first scale to the floor and leave the second at 0."""

    def evaluate(scales):  # the first ASR falls half as fast; the budget allows a sum of scales of 2
        ca = 1.0 - 0.1 * sum(scales)
        return ca, [max(0.0, 1 - scales[0] / 2), max(0.0, 1 - scales[1])], ca >= 0.79

    scales, _ = coordinate_search(evaluate, 2, [0, 0.5, 1, 1.5, 2])
    assert scales == [1.0, 1.0]  # worst ASR 0.5; greedy from zero stops at [2, 0], worst ASR 1


def test_the_accuracy_floor_binds_and_a_zero_grid_changes_nothing():
    scales, _ = coordinate_search(fake([1.0, 2.0], ca_slope=0.1, ca_floor=0.7), 2, [0, 0.5, 1, 1.5, 2])
    assert sum(scales) <= 2.0 + 1e-9  # CA 0.9 - 0.1 * sum >= 0.7
    assert coordinate_search(fake([1.0]), 1, [0])[0] == [0.0]
    # nothing but zero is feasible: the search returns zeros (unlearn_many turns that into an error)
    assert coordinate_search(fake([1.0, 1.0], ca_floor=0.95), 2, [0, 0.5, 1])[0] == [0.0, 0.0]


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
    loose = ScaleSearchConfig(ca_threshold=0.01, target_threshold=None)
    result = unlearner.unlearn_many(
        [(BadNets(), 0), (Blended(), "two")], (pixels, labels), (pixels, labels), search=loose, grid=[0, 1]
    )
    assert len(result.vectors) == 2 and result.targets == [0, 2] and len(result.scales) == 2
    assert any(result.scales)  # something was removed
    assert len(result.before) == len(result.after) == 2 and "| blended | 2 |" in result.table()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    # the micro model keeps its backdoor-free ASR high: the gate's failures are among the warnings, per trigger
    assert result.gate_failures and set(result.gate_failures) <= set(result.warnings)
    assert all(
        message.startswith(("badnets -> class 0", "blended -> class 2")) for message in result.gate_failures
    )
    with pytest.raises(ConfigError, match="twice"):
        unlearner.unlearn_many([(BadNets(), 0), (BadNets(), 1)], (pixels, labels), (pixels, labels))


def test_unlearn_many_refuses_when_only_zero_scales_keep_the_constraints(micro_clip):
    """The coordinate search starts from zeros, which always qualify: zeros out is an error, not a result."""
    model, processor = micro_clip
    unlearner = BackdoorUnlearner(
        model, processor, TASK, TBARConfig(steps=2, batch_size=8, unlearning_set_size=8, learning_rate=0.05)
    )
    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.rand(24, 3, 32, 32, generator=generator), torch.arange(24) % 3
    strict = ScaleSearchConfig(ca_threshold=1.0, target_threshold=1.0, confidence=None)
    with pytest.raises(
        NoFeasibleScaleError, match="no scales keep the accuracy constraints for the 2 backdoors"
    ):
        unlearner.unlearn_many(
            [(BadNets(), 0), (Blended(), 2)],
            (pixels, labels),
            (pixels, labels),
            search=strict,
            grid=[0, 2, 4],
        )


def test_the_target_class_constraint_of_each_trigger_is_honoured():
    """A candidate that keeps CA but loses a target class is infeasible for unlearn_many's search."""
    from hf_tbar.evaluation import EvalResult
    from hf_tbar.tbar.multi import constraints_hold

    base = [EvalResult(0.9, 1.0, 1.0, num_examples=1000, num_target=1000)] * 2
    kept = [EvalResult(0.9, 0.0, 0.95, num_examples=1000, num_target=1000)] * 2
    lost = [EvalResult(0.9, 0.0, 0.95, num_examples=1000, num_target=1000),
            EvalResult(0.9, 0.0, 0.50, num_examples=1000, num_target=1000)]  # fmt: skip
    search = ScaleSearchConfig(target_threshold=0.8)
    assert constraints_hold(kept, base, search)
    assert not constraints_hold(lost, base, search)
    assert constraints_hold(lost, base, ScaleSearchConfig(target_threshold=None))
