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


def test_no_feasible_scale_raises_with_the_sweep_as_a_table_beside_a_one_line_message():
    with pytest.raises(NoFeasibleScaleError, match="the sweep is above") as info:
        search_scale(lambda s: (0.9 if s == 0 else 0.1, 1.0, None))
    assert len(info.value.sweep) >= 3 and "\n" not in str(info.value)
    table = info.value.details.splitlines()
    assert table[0].split() == ["scale", "CA", "ASR", "target", "n", "feasible"]
    assert len(table) == 1 + len(info.value.sweep) and table[1].split()[0] == "0.000"


def test_the_cli_prints_the_sweep_on_its_own_lines_above_the_error(capsys):
    from hf_tbar.cli import run_command

    def refuse(*args):
        search_scale(lambda s: (0.9 if s == 0 else 0.1, 1.0, None))

    import hf_tbar.cli.unlearn as unlearn

    original = unlearn.run
    unlearn.run = refuse
    try:
        assert run_command("unlearn", []) == NoFeasibleScaleError.exit_code
    finally:
        unlearn.run = original
    err = capsys.readouterr().err.splitlines()
    assert err[0].split()[:2] == ["scale", "CA"] and err[-1].startswith(
        "hf-tbar unlearn: error: no scale > 0"
    )
    assert len(err) >= 5  # the header, one row per scale, then the one error line


def counted(ca_correct: int, total: int, asr: float = 0.0, target=None, target_total=None):
    """A measurement with its image counts, as BackdoorUnlearner.select_scale returns it."""
    return ca_correct / total, asr, target, total, total, target_total


def test_on_a_small_validation_set_one_image_does_not_decide_feasibility():
    """96 images at 13.5% CA (13 right): a scale that gets 12 right is not shown to lose 5% of CA."""

    def evaluate(scale):
        return counted(13, 96, asr=0.9) if scale == 0 else counted(12, 96, asr=0.1)

    with pytest.raises(NoFeasibleScaleError):  # point estimates: 12.5% < 0.95 x 13.5%, refused
        search_scale(evaluate, ScaleSearchConfig(target_threshold=None, confidence=None))
    chosen = search_scale(evaluate, ScaleSearchConfig(target_threshold=None))
    assert chosen.scale > 0 and chosen.best.clean_count == 96

    def much_worse(scale):  # a large drop is refused even with the bounds
        return counted(900, 1000, asr=0.9) if scale == 0 else counted(700, 1000, asr=0.0)

    with pytest.raises(NoFeasibleScaleError):
        search_scale(much_worse, ScaleSearchConfig(target_threshold=None))


def test_the_target_class_bound_uses_the_target_class_count():
    def evaluate(scale):  # 10 target-class images: 6 of 10 right is not shown to be below 0.8 x 100%
        return counted(95, 100, 0.0, 1.0, 10) if scale == 0 else counted(94, 100, 0.0, 0.6, 10)

    assert search_scale(evaluate).scale > 0
    with pytest.raises(NoFeasibleScaleError):
        search_scale(evaluate, ScaleSearchConfig(confidence=None))


def test_config_is_validated():
    with pytest.raises(ValueError, match="ca_threshold"):
        ScaleSearchConfig(ca_threshold=1.5)
    with pytest.raises(ValueError, match="max_scale"):
        ScaleSearchConfig(max_scale=float("inf"))
