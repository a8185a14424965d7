import pytest
import torch

from hf_tbar import BadNets, TaskSpec, TaskVector
from hf_tbar.analysis import disentanglement_error, disentanglement_from_predictions, plot_disentanglement

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


def test_disentanglement_from_predictions_counts_disagreements_per_task():
    clean_alone = torch.tensor([[0, 1, 2, 0], [0, 1, 1, 1]])  # a_c in (0, 1), four clean images
    trigger_alone = torch.tensor([[1, 2], [0, 0], [0, 0]])  # a_t in (0, 1, 2), two triggered images
    clean_joint = clean_alone[:, None, :].repeat(1, 3, 1)
    trigger_joint = trigger_alone[None, :, :].repeat(2, 1, 1)
    clean_joint[1, 2, 0] = 2  # (a_c=1, a_t=2): one of four clean predictions moves
    trigger_joint[1, 2] = torch.tensor([1, 1])  # and both triggered predictions move
    error = disentanglement_from_predictions(clean_alone, trigger_alone, clean_joint, trigger_joint)
    assert error.shape == (2, 3)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    expected[1, 2] = 0.25 + 1.0
    assert torch.equal(error, expected)
    with pytest.raises(ValueError, match="shapes"):
        disentanglement_from_predictions(clean_alone, trigger_alone, clean_joint[:, :2], trigger_joint)


def _vision_vector(model, seed: int) -> TaskVector:
    generator = torch.Generator().manual_seed(seed)
    return TaskVector(
        {
            name: 0.5 * torch.randn(tensor.shape, generator=generator)
            for name, tensor in model.state_dict().items()
            if name.startswith("vision_model.encoder.") and tensor.is_floating_point()
        }
    )


def test_disentanglement_error_is_zero_at_the_origin_with_the_grid_shape(micro_clip, tmp_path):
    model, processor = micro_clip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    clean_scales, trigger_scales = [-1.0, 0.0, 1.0, 2.0], [-1.0, 0.0, 1.0]
    result = disentanglement_error(
        model,
        _vision_vector(model, 1),
        _vision_vector(model, 2),
        clean_scales,
        trigger_scales,
        processor,
        TASK,
        pixels,
        BadNets()(pixels),
    )
    assert result.error.shape == (4, 3)
    assert result.at(0.0, 0.0) == 0.0
    assert ((result.error >= 0) & (result.error <= 2)).all()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    path = plot_disentanglement(result, tmp_path / "plots" / "xi.png")
    assert path.stat().st_size > 0
    assert result.to_dict()["error"][1][1] == 0.0


def test_disentanglement_grid_prints_as_a_markdown_table():
    from hf_tbar.analysis.disentanglement import DisentanglementResult

    result = DisentanglementResult([-1.0, 0.0], [0.0, 0.5], torch.tensor([[0.1, 0.2], [0.0, 0.333]]))
    assert result.to_markdown().splitlines() == [
        "| a_c \\ a_t | 0 | 0.5 |",
        "|---|---|---|",
        "| -1 | 0.10 | 0.20 |",
        "| 0 | 0.00 | 0.33 |",
    ]
