import pytest

from hf_tbar.scale_search import NoFeasibleScaleError, ScaleSearchConfig, search_scale


def curve(scale):
    """Synthetic TBAR sweep: ASR falls with the scale, CA stays, then falls past 1.3."""
    asr = max(0.0, 1.0 - scale / 1.5)
    ca = 0.95 if scale <= 1.3 else 0.95 - 0.2 * (scale - 1.3)
    return ca, asr, ca


def test_search_finds_the_constraint_boundary_with_few_evaluations():
    calls = []
    selection = search_scale(
        lambda s: calls.append(s) or curve(s),
        ScaleSearchConfig(max_scale=3.0, grid_points=7, bisection_steps=5),
    )
    # largest scale with CA >= 0.95 * 0.95 = 0.9025 is 1.3 + 0.2375 = 1.5375; ASR is 0 from 1.5 on.
    assert 1.5 <= selection.scale <= 1.5375
    assert selection.best.attack_success_rate == 0.0 and selection.best.feasible
    assert selection.evaluations == len(set(calls)) < 3.0 / (1.5 / 2**5)  # vs a grid of equal resolution
    assert selection.baseline.scale == 0.0 and selection.sweep == sorted(
        selection.sweep, key=lambda p: p.scale
    )


def test_target_constraint_and_ties_prefer_accuracy():
    def evaluate(scale):
        ca, asr, _ = curve(scale)
        return ca, asr, 1.0 - 0.4 * scale  # the target class erodes with the scale

    selection = search_scale(evaluate, ScaleSearchConfig(target_threshold=0.6))
    assert selection.best.target_class_accuracy >= 0.6
    assert selection.scale <= 1.0 + 1e-9


def test_no_feasible_scale_raises_with_the_sweep():
    with pytest.raises(NoFeasibleScaleError, match="the sweep was") as info:
        search_scale(lambda s: (0.9 if s == 0 else 0.1, 1.0, None))
    assert len(info.value.sweep) >= 3


def test_config_is_validated():
    with pytest.raises(ValueError, match="ca_threshold"):
        ScaleSearchConfig(ca_threshold=1.5)
    with pytest.raises(ValueError, match="max_scale"):
        ScaleSearchConfig(max_scale=float("inf"))
