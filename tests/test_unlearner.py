import pytest
import torch

from hf_tbar import BackdoorUnlearner, BadNets, TaskSpec, TaskVector, TBARConfig
from hf_tbar.tbar.unlearning_set import make_unlearning_set

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))


def _unlearner(micro_clip, **config):
    model, processor = micro_clip
    return BackdoorUnlearner(
        model, processor, TASK, TBARConfig(steps=3, batch_size=8, unlearning_set_size=16, **config)
    )


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_trigger_finetuning_changes_vision_weights_only_and_leaves_input_untouched(micro_clip, mode):
    unlearner = _unlearner(micro_clip, mode=mode, learning_rate=1e-2)
    before = {k: v.clone() for k, v in unlearner.model.state_dict().items()}
    vector = unlearner.fit_trigger_vector(BadNets(), target=1, clean_pixels=torch.rand(20, 3, 32, 32))
    assert vector.norm() > 0
    changed = [k for k, v in vector.vector.items() if v.abs().sum() > 0]
    assert changed and all(k.startswith(("vision_model.", "visual_projection.")) for k in changed)
    assert all(torch.equal(unlearner.model.state_dict()[k], v) for k, v in before.items())
    assert vector.metadata["unlearning_set_size"] == 16 and vector.metadata["trigger"]["name"] == "badnets"


def test_working_copy_shares_frozen_tensors_and_copies_only_what_is_trained(micro_clip):
    from hf_tbar.models.working_copy import working_copy

    model = micro_clip[0]
    full, lora = working_copy(model), working_copy(model, share_vision=True)
    same = lambda a, b: a.data_ptr() == b.data_ptr()  # noqa: E731
    for copy_ in (full, lora):
        assert copy_ is not model and copy_.vision_model is not model.vision_model
        assert all(same(a, b) for a, b in zip(copy_.text_model.parameters(), model.text_model.parameters()))
        assert same(copy_.logit_scale, model.logit_scale)
    assert not any(
        same(a, b) for a, b in zip(full.vision_model.parameters(), model.vision_model.parameters())
    )
    assert all(same(a, b) for a, b in zip(lora.vision_model.parameters(), model.vision_model.parameters()))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_fine_tuning_gives_back_the_models_grad_flags(micro_clip, mode):
    model = micro_clip[0]
    model.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    _unlearner(micro_clip, mode=mode).fit_trigger_vector(BadNets(), 1, clean_pixels=torch.rand(20, 3, 32, 32))
    assert {name: param.requires_grad for name, param in model.named_parameters()} == flags


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_gradient_checkpointing_fits_the_same_vector(micro_clip, mode, monkeypatch):
    from hf_tbar.tbar import fitter as vector_fitting

    pixels = torch.rand(20, 3, 32, 32)
    plain = _unlearner(micro_clip, mode=mode).fit_trigger_vector(BadNets(), 1, clean_pixels=pixels)
    trained, enable = [], vector_fitting.enable_checkpointing
    monkeypatch.setattr(vector_fitting, "enable_checkpointing", lambda m: trained.append(m) or enable(m))
    unlearner = _unlearner(micro_clip, mode=mode, gradient_checkpointing=True)
    checkpointed = unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=pixels)
    assert all(torch.allclose(plain.vector[k], checkpointed.vector[k], atol=1e-6) for k in plain.keys())
    assert len(trained) == 1 and trained[0].vision_model.encoder.gradient_checkpointing
    assert not unlearner.model.vision_model.encoder.gradient_checkpointing


def test_release_memory_gives_freed_heap_back_on_glibc_and_is_a_no_op_elsewhere(monkeypatch):
    import platform

    from hf_tbar import memory

    if platform.libc_ver()[0] == "glibc":
        chunks = [bytes(4096) + bytes([i % 256]) for i in range(20_000)]  # ~80 MiB of small heap blocks
        del chunks
        assert memory.release_memory() is True  # malloc_trim released the freed pages
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)  # a C library without malloc_trim
    assert memory.release_memory() is False
    assert memory.trim_heap() is False


def test_evaluation_predicts_batch_by_batch_and_trims_the_heap_after_each(monkeypatch, micro_clip):
    from hf_tbar import evaluation

    classifier = _unlearner(micro_clip).classifier()
    pixels = torch.rand(10, 3, 32, 32)
    trims = []
    monkeypatch.setattr(evaluation, "trim_heap", lambda: trims.append(1) or True)
    batched = evaluation.predict_batches(classifier, pixels, 4)
    assert torch.equal(batched, classifier.predict(pixels, 512)) and len(trims) == 3  # 4 + 4 + 2 images
    assert evaluation.predict_batches(classifier, pixels[:0], 4).shape == (0,)


def test_fine_tuning_is_reproducible_for_a_seed(micro_clip):
    pixels = torch.rand(20, 3, 32, 32)
    a = _unlearner(micro_clip).fit_trigger_vector(BadNets(), 1, clean_pixels=pixels)
    b = _unlearner(micro_clip).fit_trigger_vector(BadNets(), 1, clean_pixels=pixels)
    assert all(torch.equal(a.vector[k], b.vector[k]) for k in a.keys())


def test_bad_unlearning_inputs_are_named(micro_clip):
    unlearner = _unlearner(micro_clip)
    with pytest.raises(ValueError, match="target class 5"):
        unlearner.fit_trigger_vector(BadNets(), 5, clean_pixels=torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="empty"):
        unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=torch.rand(0, 3, 32, 32))
    with pytest.raises(ValueError, match="carries no trigger"):
        make_unlearning_set(torch.ones(4, 3, 32, 32), BadNets(value=1.0), 0, 4)
    with pytest.raises(TypeError, match="CLIPModel"):
        BackdoorUnlearner(torch.nn.Linear(2, 2), micro_clip[1], TASK)
    with pytest.raises(ValueError, match="variant"):
        TBARConfig(variant="magic")


def test_tbar_removes_the_embedded_backdoor_and_keeps_clean_accuracy(badnets_scenario, tmp_path):
    """The embedded benchmark: ASR falls, CA holds, target class survives, report and folder are complete."""
    import json

    from transformers import CLIPModel

    from hf_tbar.scale_search import ScaleSearchConfig

    sc = badnets_scenario
    unlearner = BackdoorUnlearner(
        sc.backdoored_path, task=sc.task, config=TBARConfig(variant="repair-preserving")
    )
    result = unlearner.unlearn(
        sc.trigger,
        sc.target,
        sc.train[0],
        sc.validation,
        sc.test,
        clean_labels=sc.train[1],
        search=ScaleSearchConfig(target_threshold=0.8),
    )
    assert result.before.attack_success_rate > 0.9
    assert result.after.attack_success_rate <= 0.05
    assert result.ca_retention >= 0.9
    assert result.after.target_class_accuracy >= 0.8 * result.before.target_class_accuracy
    out = unlearner.save_pretrained(tmp_path / "sanitized", result)
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["scale"] == result.selection.scale and report["after"]["attack_success_rate"] <= 0.05
    assert (out / "tbar_scale_sweep.png").stat().st_size > 0
    reloaded = CLIPModel.from_pretrained(out).eval()
    pixels = sc.test[0][:16]
    assert torch.equal(unlearner.classifier(reloaded)(pixels), unlearner.classifier(result.model)(pixels))


def test_push_to_hub_dry_run_writes_the_card_without_network(badnets_scenario, tmp_path, monkeypatch):
    import huggingface_hub

    from hf_tbar.scale_search import ScaleSearchConfig

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not create a Hub client")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    sc = badnets_scenario
    unlearner = BackdoorUnlearner(
        sc.backdoored_path, task=sc.task, config=TBARConfig(steps=10, unlearning_set_size=100)
    )
    result = unlearner.unlearn(
        sc.trigger,
        sc.target,
        sc.train[0],
        sc.validation,
        sc.test,
        clean_labels=sc.train[1],
        search=ScaleSearchConfig(ca_threshold=0.9),
    )
    unlearner.push_to_hub("me/clip-clean", result, dry_run_dir=tmp_path / "staged", force=True)
    files = {p.name for p in (tmp_path / "staged").iterdir()}
    assert {"README.md", "model.safetensors", "config.json", "tbar_report.json"} <= files


def test_unknown_trigger_runs_decree_then_tbar_or_refuses_when_not_flagged(micro_clip):
    from hf_tbar import DecreeConfig, ScaleSearchConfig
    from hf_tbar.detection import InvertedTrigger
    from hf_tbar.results import NoBackdoorDetectedError

    unlearner = _unlearner(micro_clip, learning_rate=1e-2, variant="plain")
    torch.manual_seed(0)
    clean, images = torch.rand(24, 3, 32, 32), torch.rand(12, 3, 32, 32)
    # labels the micro model agrees with: it "solves" this task, so the run gets past the chance check
    agreed = (images, unlearner.classifier().predict(images))
    never = DecreeConfig(steps=5, batch_size=8, detection_threshold=1e-12)  # nothing is ever flagged
    with pytest.raises(NoBackdoorDetectedError, match="no detector flagged the model") as info:
        unlearner.unlearn("auto", None, clean, agreed, decree=never)  # a DecreeConfig: DECREE alone
    validation = (images, torch.arange(12) % 3)  # at chance: only with force=True
    (finding,) = info.value.detection.findings
    assert finding.detector == "decree" and finding.num_images == 24 and "decree: PL1" in info.value.details
    search = ScaleSearchConfig(ca_threshold=0.01, target_threshold=None, grid_points=2, bisection_steps=0)
    result = unlearner.unlearn("auto", None, clean, validation, decree=never, force=True, search=search)
    assert (
        isinstance(result.trigger, InvertedTrigger) and result.trigger is result.detection.findings[0].trigger
    )
    assert result.target == result.detection.target and "detection_s" in result.timings
    kept = unlearner.unlearn("auto", 2, clean, validation, decree=never, force=True, search=search)
    assert kept.target == 2  # a given target wins over the estimate
    again = unlearner.unlearn(result.detection, None, clean, validation, force=True, search=search)
    assert again.trigger is result.trigger and "detection_s" not in again.timings  # a verdict found before
    with pytest.raises(ValueError, match="'magic'"):
        unlearner.unlearn("magic", 0, clean, validation)
    with pytest.raises(ValueError, match="target is required"):
        unlearner.unlearn(BadNets(), None, clean, validation)


def test_repair_set_keeps_true_labels_of_the_same_draw_and_variants_fit_only_what_they_use(micro_clip):
    from hf_tbar.tbar.variants import VARIANTS, VectorFits

    pixels, labels = torch.rand(20, 3, 32, 32), torch.arange(20) % 3
    triggered, target_labels = make_unlearning_set(pixels, BadNets(), 1, 8, seed=3)
    same, true = make_unlearning_set(pixels, BadNets(), 1, 8, seed=3, true_labels=labels)
    assert torch.equal(triggered, same) and (target_labels == 1).all()
    order = torch.randperm(20, generator=torch.Generator().manual_seed(3))[:8]
    assert torch.equal(true, labels[order]) and torch.equal(same, BadNets()(pixels[order]))
    calls = []

    def fit(kind):
        def run():
            calls.append(kind)
            return TaskVector({"w": torch.ones(2)}, {"kind": kind, "unlearning_set_size": 8})

        return run

    fits = VectorFits(trigger=fit("trigger"), target_class=fit("target"), repair=fit("repair"))
    repaired = VARIANTS["repair"](fits)
    assert calls == ["repair"] and torch.equal(repaired.vector["w"], -torch.ones(2))
    assert repaired.metadata["kind"] == "repair"  # metadata survives negation and projection
    assert VARIANTS["target-preserving"](fits).metadata["kind"] == "trigger"
    calls.clear()
    both = VARIANTS["repair-preserving"](fits)  # -1 projected off the +1 direction: nothing left
    assert sorted(calls) == ["repair", "target"] and both.norm() == 0 and both.metadata["kind"] == "repair"

    unlearner = _unlearner(micro_clip, variant="repair")
    with pytest.raises(ValueError, match="clean_labels"):
        unlearner.unlearn(BadNets(), 1, pixels, (pixels, labels), force=True)
    with pytest.raises(ValueError, match="20 clean images but 3 labels"):
        unlearner.fit_repair_vector(BadNets(), pixels, labels[:3])


@pytest.mark.parametrize("name", ["unlearn.yaml", "unlearn_auto.yaml", "your_data.yaml"])
def test_example_configs_parse_and_bad_trigger_modes_are_named(name):
    from pathlib import Path

    from hf_tbar.cli import parse_command
    from hf_tbar.cli.common import UnlearnArguments

    example = Path(__file__).resolve().parent.parent / "examples" / name
    args, data_args, config, *_ = parse_command("unlearn", ["--config", str(example)])
    assert config.variant == "repair-preserving" and args.trigger in ("known", "auto", "badnets")
    assert data_args.dataset_name == ("./my_photos" if name == "your_data.yaml" else "digits")
    assert parse_command("unlearn", ["--config", str(example), "--mode", "lora"])[2].mode == "lora"
    with pytest.raises(ValueError, match="'sometimes'"):
        UnlearnArguments(trigger="sometimes")
