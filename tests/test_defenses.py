import math

import pytest
import torch

from hf_tbar import BadNets, TaskSpec, TBARConfig
from hf_tbar.defenses import (
    DEFENSES,
    CleanCLIPConfig,
    DefenseData,
    DefenseResult,
    TBARDefenseConfig,
    TSBDConfig,
    caption_pairs,
    contrastive_loss,
    get_defense,
    mixed_unlearning_set,
    neuron_weight_change,
    perturbation,
    rank_neurons,
    register_defense,
    reinit_masks,
    run_defense,
    surrogate_loss,
    two_point_gradient,
    zero_weights,
)
from hf_tbar.detection import DETECTORS
from hf_tbar.scale_search import ScaleSearchConfig
from hf_tbar.tbar.unlearning_set import make_unlearning_set

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


# --------------------------------------------------------------------------- TSBD stage 1 maths
def _hand_deltas() -> dict[str, torch.Tensor]:
    return {
        "a": torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.0, 0.1]]),  # NWC 3.5, 0.2
        "b": torch.tensor([[3.0, 0.0, 0.0], [0.2, 0.2, -0.1], [1.0, 1.0, 1.0]]),  # NWC 3.0, 0.5, 3.0
    }


def test_neuron_weight_change_is_the_l1_norm_of_each_output_row():
    deltas = _hand_deltas()
    assert torch.allclose(neuron_weight_change(deltas["a"]), torch.tensor([3.5, 0.2]))
    conv = torch.ones(4, 2, 3, 3)  # a convolution: one neuron per output channel
    assert neuron_weight_change(conv).tolist() == [18.0] * 4


def test_neurons_are_ranked_together_across_tensors_ties_in_order():
    ranked = [(name, row) for name, row, _ in rank_neurons(_hand_deltas())]
    assert ranked == [("a", 0), ("b", 0), ("b", 2), ("b", 1), ("a", 1)]


def test_reinit_mask_picks_the_largest_changes_inside_the_top_neurons():
    deltas = _hand_deltas()
    # top 40% of 5 neurons = 2 (a0 and b0); their pooled |changes| are 1, 2, .5, 3, 0, 0; half = 3 largest.
    masks = reinit_masks(deltas, neuron_ratio=0.4, weight_ratio=0.5)
    assert masks["a"].tolist() == [[True, True, False], [False, False, False]]
    assert masks["b"].tolist() == [[True, False, False], [False, False, False], [False, False, False]]
    weights = {"a": torch.ones(2, 3), "b": torch.ones(3, 3)}
    assert zero_weights(weights, masks) == 3
    assert weights["a"].tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    assert weights["b"][0].tolist() == [0.0, 1.0, 1.0] and weights["b"][1:].eq(1).all()


def test_reinit_mask_keeps_at_least_one_neuron_and_weight_and_rejects_bad_ratios():
    masks = reinit_masks(_hand_deltas(), neuron_ratio=0.01, weight_ratio=0.01)
    assert sum(int(m.sum()) for m in masks.values()) == 1 and masks["a"][0, 1]  # |-2| is a0's largest
    with pytest.raises(ValueError, match="neuron_ratio"):
        reinit_masks(_hand_deltas(), neuron_ratio=0.0, weight_ratio=0.5)
    with pytest.raises(ValueError, match="weight_ratio"):
        reinit_masks(_hand_deltas(), neuron_ratio=0.5, weight_ratio=1.5)
    with pytest.raises(ValueError, match="shape"):
        zero_weights({"a": torch.ones(3, 3)}, {"a": torch.zeros(2, 3, dtype=torch.bool)})


# --------------------------------------------------------------------------- TSBD stage 2 maths
def _quadratic():
    torch.manual_seed(0)
    m = torch.randn(5, 5, dtype=torch.float64)
    hessian = m @ m.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    params = [
        torch.nn.Parameter(torch.randn(2, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(3, dtype=torch.float64)),
    ]

    def loss():
        theta = torch.cat(params)
        return 0.5 * theta @ hessian @ theta - b @ theta

    return hessian, b, params, loss


def _penalised_gradient(loss, params, weight, per_tensor):
    """Autograd of ``L + weight * ||grad L||`` (global norm, or the sum of per-tensor norms)."""
    grads = torch.autograd.grad(loss(), params, create_graph=True)
    if per_tensor:
        penalty = sum(g.norm() for g in grads)
    else:
        penalty = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    return torch.autograd.grad(loss() + weight * penalty, params)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_two_point_gradient_equals_the_gradient_norm_penalty_on_a_quadratic(per_tensor):
    hessian, b, params, loss = _quadratic()
    radius, alpha = 0.05, 0.7
    before = [p.detach().clone() for p in params]
    value, combined = two_point_gradient(loss, params, radius, alpha, per_tensor)
    assert all(torch.equal(p, q) for p, q in zip(params, before))  # moved back bit-identically
    assert torch.isclose(value, loss().detach())
    theta = torch.cat(before)
    g = hessian @ theta - b
    if per_tensor:
        unit = torch.cat([g[:2] / g[:2].norm(), g[2:] / g[2:].norm()])
    else:
        unit = g / g.norm()
    analytic = g + alpha * radius * hessian @ unit  # grad of L + a r ||grad L|| for constant Hessian
    assert torch.allclose(torch.cat(combined), analytic, atol=1e-10)
    autograd = torch.cat(_penalised_gradient(loss, params, alpha * radius, per_tensor))
    assert torch.allclose(torch.cat(combined), autograd, atol=1e-10)


def test_two_point_gradient_approaches_the_penalty_gradient_to_second_order():
    torch.manual_seed(1)
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 2, (40,)).double()
    params = [torch.nn.Parameter(torch.randn(3, dtype=torch.float64))]

    def loss():  # logistic regression: a non-constant Hessian
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ params[0], y)

    errors = []
    for radius in (0.1, 0.01):
        _, combined = two_point_gradient(loss, params, radius, alpha=0.7)
        exact = _penalised_gradient(loss, params, 0.7 * radius, per_tensor=False)
        errors.append(float((combined[0] - exact[0]).norm()))
    assert errors[1] < errors[0] / 20  # O(r^2): a 10x smaller radius gives ~100x less error


def test_two_point_helpers_edge_cases():
    zero = [torch.zeros(3)]
    assert torch.equal(perturbation(zero, 0.5)[0], torch.zeros(3))
    assert perturbation([], 0.5) == []
    step = perturbation([torch.tensor([3.0, 4.0])], 0.5)[0]
    assert torch.allclose(step, torch.tensor([0.3, 0.4]))
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    target_grad = torch.tensor([0.25, -1.0])
    loss = surrogate_loss(torch.tensor(7.0), [target_grad], [p])
    loss.backward()
    assert float(loss.detach()) == 7.0 and torch.equal(p.grad, target_grad)


# --------------------------------------------------------------------------- CleanCLIP maths
def test_contrastive_loss_and_caption_pairs():
    a = torch.eye(4)
    assert contrastive_loss(a, a, 100.0) < 1e-6
    assert contrastive_loss(a, a.flip(0), 100.0) > 10
    groups = torch.tensor([0, 0, 1, 1])
    same = torch.eye(2)[groups]  # rows of one group share an embedding
    assert math.isclose(float(contrastive_loss(same, same, 100.0, groups)), math.log(2), rel_tol=1e-5)
    labels = torch.tensor([0, 1, 2, 2, 1])
    first, second = caption_pairs(labels, 4, torch.Generator().manual_seed(0))
    assert torch.equal(first // 4, labels) and torch.equal(second // 4, labels)
    assert (first != second).all()
    single, again = caption_pairs(labels, 1)
    assert torch.equal(single, labels) and torch.equal(again, labels)


# --------------------------------------------------------------------------- data, configs, registry
def test_mixed_unlearning_set_matches_the_pure_set_and_mixes_clean_images():
    pixels, labels = torch.rand(20, 3, 32, 32), torch.arange(20) % 3
    pure, pure_labels, clean = mixed_unlearning_set(pixels, labels, BadNets(), 1, 10, 0.0, seed=3)
    reference, _ = make_unlearning_set(pixels, BadNets(), 1, 10, seed=3)
    assert clean == 0 and torch.equal(pure, reference) and pure_labels.eq(1).all()
    mixed, mixed_labels, clean = mixed_unlearning_set(pixels, labels, BadNets(), 1, 10, 0.3, seed=3)
    assert clean == 3 and len(mixed) == 10 and mixed_labels[:7].eq(1).all()
    assert any(torch.equal(mixed[-1], image) for image in pixels)  # the clean tail is untouched
    with pytest.raises(ValueError, match="no triggered image"):
        mixed_unlearning_set(pixels, labels, BadNets(), 1, 1, 0.9)


def test_registry_and_data_errors_name_the_bad_value(micro_clip):
    model, processor = micro_clip
    with pytest.raises(ValueError, match="'magic'"):
        get_defense("magic")
    with pytest.raises(ValueError, match="'magic'.*available"):
        run_defense("magic", model, None)
    with pytest.raises(ValueError, match="already registered"):
        register_defense("tbar", TBARDefenseConfig)(lambda *a: None)
    pixels, labels = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="labels must lie in"):
        DefenseData(pixels, labels + 1, TASK, processor)
    with pytest.raises(ValueError, match="6 clean images but 5 labels"):
        DefenseData(pixels, labels[:5], TASK, processor)
    with pytest.raises(ValueError, match="together"):
        DefenseData(pixels, labels, TASK, processor, trigger=BadNets())
    data = DefenseData(pixels, labels, TASK, processor)
    with pytest.raises(ValueError, match="'tbar' needs the trigger"):
        run_defense("tbar", model, data)
    with pytest.raises(TypeError, match="CleanFinetuneConfig"):
        run_defense("clean-finetune", model, data, TSBDConfig())
    with pytest.raises(TypeError, match="CLIPModel"):
        run_defense("clean-finetune", torch.nn.Linear(2, 2), data)
    with pytest.raises(ValueError, match="neuron_ratio"):
        TSBDConfig(neuron_ratio=0)
    with pytest.raises(ValueError, match="clean_share"):
        TBARDefenseConfig(clean_share=1.0)
    with pytest.raises(ValueError, match="self_supervised_weight"):
        CleanCLIPConfig(multimodal_weight=0, self_supervised_weight=0)
    assert {"tbar", "tbar-decree", "tbar-auto", "clean-finetune", "cleanclip", "tsbd"} <= set(DEFENSES)
    assert all(DEFENSES[name].description for name in DEFENSES)


# --------------------------------------------------------------------------- every defense, end to end
def _tbar_config(**kwargs) -> dict:
    return {
        "tbar": TBARConfig(steps=2, batch_size=8, unlearning_set_size=12, learning_rate=1e-2),
        "search": ScaleSearchConfig(
            ca_threshold=0.01, target_threshold=None, grid_points=3, bisection_steps=1
        ),
        "force": True,  # the micro model is at chance on random pixels
        **kwargs,
    }


#: Every registered defense at its quick config, plus TBAR with a mixed unlearning set.
MICRO_CONFIGS = {
    **{name: defense.config_class.quick for name, defense in DEFENSES.items()},
    # the mixed set is the trigger vector's: the plain variant (the seed paper's ablation)
    "tbar-mixed": lambda: TBARDefenseConfig(
        **_tbar_config(
            clean_share=0.5,
            tbar=TBARConfig(
                steps=2, batch_size=8, unlearning_set_size=12, learning_rate=1e-2, variant="plain"
            ),
        )
    ),
}


@pytest.mark.parametrize("setting", sorted(MICRO_CONFIGS))
def test_every_registered_defense_keeps_the_contract(micro_clip, setting):
    model, processor = micro_clip
    name = setting.removesuffix("-mixed")
    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.rand(24, 3, 32, 32, generator=generator), torch.arange(24) % 3
    validation = (torch.rand(12, 3, 32, 32, generator=generator), torch.arange(12) % 3)
    known = get_defense(name).needs_trigger
    data = DefenseData(
        pixels,
        labels,
        TASK,
        processor,
        trigger=BadNets() if known else None,
        target=1 if known else None,
        validation=validation,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    result = run_defense(name, model, data, MICRO_CONFIGS[setting]())
    assert isinstance(result, DefenseResult) and result.defense == name and result.model is not model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # input untouched
    assert torch.equal(torch.random.get_rng_state(), rng)  # caller's RNG untouched
    after = result.model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items() if v.is_floating_point())
    assert not result.model.training and result.wall_time_s > 0 and result.finetune_steps >= 2
    assert result.clean_images_used + result.triggered_images_used > 0
    if setting == "tbar":  # the default variant, repair-preserving, also uses clean target-class images
        assert result.triggered_images_used == 12 and result.clean_images_used == 8
        assert result.vector is not None and result.details["scale"] > 0
        assert result.finetune_steps == 4  # two fine-tunings (repair, target-class) of two steps
    if setting == "tbar-mixed":
        assert (result.triggered_images_used, result.clean_images_used) == (6, 6)
    if setting in ("tbar-decree", "tbar-auto"):
        assert result.details["detection_images"] == 16 and result.details["flagged"] in (True, False)
        assert result.details["detector"] in DETECTORS
        assert "decree_value" in result.details
    if setting == "tsbd":
        assert result.details["reinitialised_weights"] > 0 and 1 <= result.details["unlearn_steps"] <= 3
        assert result.finetune_steps == result.details["unlearn_steps"] + 2
    if setting == "cleanclip":  # both towers are trained
        assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("text_model."))


def test_a_defense_config_without_the_contract_is_refused_at_registration():
    from dataclasses import dataclass

    from hf_tbar.defenses import register_defense

    @dataclass
    class Plain:
        steps: int = 1

    with pytest.raises(TypeError, match="'mine': its config class must be a DefenseConfig"):
        register_defense("mine", Plain)


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_defense_config_round_trips_through_json(name):
    import json
    from dataclasses import asdict

    config = DEFENSES[name].config_class.quick()
    again = type(config)(**json.loads(json.dumps(asdict(config))))
    assert again == config
