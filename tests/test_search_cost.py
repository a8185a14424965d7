"""The halving scale search (#25): it evaluates little, chooses what the exhaustive search chooses, counts
its cost, reuses the text head, the backdoored model's predictions and the decoded, triggered images."""

import random

import pytest
import torch
from datasets import Dataset
from PIL import Image

from hf_tbar.data.images import DatasetImages, TensorImages
from hf_tbar.models.loading import load_model
from hf_tbar.scale_search import Counts, ScaleSearchConfig, search_scale, search_scale_by_parts
from hf_tbar.task_vector import TaskVector
from hf_tbar.tbar.measuring import select_scale, validation_set, verify_removal
from hf_tbar.tbar.validation import ValidationSet, screen_indices
from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head


def share(scale):
    """A TBAR-like curve: ASR falls to 0 by 1.5; CA holds, then falls past 1.6; the target class erodes."""
    asr = max(0.0, 1.0 - scale / 1.5)
    ca = 0.96 if scale <= 1.6 else max(0.0, 0.96 - 0.25 * (scale - 1.6))
    target = max(0.0, 0.95 - 0.12 * scale)
    return ca, asr, target


def sampled(scale, images, seed):
    """Binomial counts of ``share`` on ``images`` clean (a tenth of them of the target class) and 90% triggered."""
    rng = random.Random(hash((round(scale, 6), seed)))
    ca, asr, target = share(scale)
    triggered, in_target = int(0.9 * images), images // 10

    def draw(p, n):
        return sum(rng.random() < p for _ in range(n))

    return Counts(images, draw(ca, images), triggered, draw(asr, triggered), in_target, draw(target, in_target),
                  images + triggered)  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_halving_chooses_within_one_grid_step_of_the_exhaustive_search_for_less(seed):
    total, screen = 800, 100
    config = ScaleSearchConfig()
    parts = {}

    def by_part(scale, part):
        parts.setdefault(scale, {})[part] = sampled(
            scale, screen if part == 0 else total - screen, (seed, part)
        )
        return parts[scale][part]

    def whole(scale):
        return (sampled(scale, screen, (seed, 0)) + sampled(scale, total - screen, (seed, 1))).measurement(
            scale
        )

    exhaustive = search_scale(whole, config)
    baseline = sampled(0.0, total, (seed, "b"))
    baseline.forwarded = 0  # the backdoored model's predictions are reused from the task check
    halving = search_scale_by_parts(by_part, baseline, config)
    step = config.max_scale / (config.grid_points - 1)
    assert abs(halving.scale - exhaustive.scale) <= step + 1e-9
    assert halving.strategy == "halving" and exhaustive.strategy == "full"
    assert halving.cost < exhaustive.cost
    if (
        halving.best.attack_success_rate <= config.asr_tolerance
    ):  # else the boundary is bisected on every image
        assert halving.cost <= 3.0
    # the cost is the images forwarded over those of one whole evaluation
    forwarded = sum(c.forwarded for scale in parts for c in parts[scale].values())
    assert halving.cost == pytest.approx(
        forwarded / (total + int(0.9 * screen) + int(0.9 * (total - screen)))
    )
    # the chosen point was measured on every image; screened-only candidates are marked and never chosen
    assert halving.best.clean_count == total and not halving.best.screened
    assert all(p.clean_count == screen for p in halving.sweep if p.screened)


def test_when_the_survivors_fail_on_the_whole_set_the_dominated_candidates_are_completed():
    def by_part(scale, part):  # the screen flatters scales from 1.5 on: on the rest their CA collapses
        good = scale <= 1.0 or part == 0
        n = 100 if part == 0 else 700
        hits = 0 if scale >= 1.5 else n // 5 if scale >= 0.5 else n  # below 1.5 they are dominated
        return Counts(n, n if good else 0, n, hits, None, None, 2 * n)

    baseline = Counts(800, 800, 800, 800, None, None, 0)
    selection = search_scale_by_parts(by_part, baseline, ScaleSearchConfig(target_threshold=None))
    assert selection.scale <= 1.0 and selection.best.clean_count == 800
    failed = [p for p in selection.sweep if p.clean_count == 800 and p.scale > 0 and not p.feasible]
    assert failed, "the flattered candidate was completed and refused"


def test_the_screen_is_stratified_seeded_and_leaves_every_class_in_the_rest():
    labels = torch.arange(10).repeat_interleave(30)
    screen = screen_indices(labels, 0.125, 64, seed=3)
    assert torch.equal(screen, screen_indices(labels, 0.125, 64, seed=3))
    per_class = torch.bincount(labels[screen], minlength=10)
    assert per_class.min() >= 6 and per_class.max() <= 7 and len(screen) >= 64
    assert not torch.equal(screen, screen_indices(labels, 0.125, 64, seed=4))


@pytest.fixture(scope="module")
def searched(badnets_scenario):
    """The real backdoored digits model with tau = theta_backdoored - theta_clean (no fine-tuning needed):
    scale 1 is the clean model."""
    sc = badnets_scenario
    model, processor = load_model(sc.backdoored_path)
    clean, _ = load_model(sc.clean_path)
    head = build_zero_shot_head(model, processor.tokenizer, sc.task)
    classifier = ZeroShotClassifier.from_processor(model, head, processor)
    return sc, model, processor, classifier, TaskVector.from_models(clean, model)


def as_dataset(pixels, labels):
    images = [Image.fromarray((p.permute(1, 2, 0).numpy() * 255).round().astype("uint8")) for p in pixels]
    return Dataset.from_dict({"image": images, "label": labels.tolist()})


def test_on_the_digits_halving_matches_the_exhaustive_search_and_reuses_what_does_not_change(searched):
    sc, model, processor, classifier, vector = searched
    pixels, labels = sc.validation
    images = DatasetImages(as_dataset(pixels, labels), processor, name="validation images")
    text_calls = []
    hook = model.text_model.register_forward_hook(lambda *args: text_calls.append(1))
    try:
        chosen = {}
        for strategy in ("full", "halving"):
            search = ScaleSearchConfig(strategy=strategy)
            checked = validation_set(images, sc.task.num_classes, search, seed=0)
            checked.baseline(classifier)
            chosen[strategy] = select_scale(
                classifier, vector, checked, sc.trigger, sc.target, sc.task.classnames, search
            )
            # decoded once, for the task check; every candidate reads the decoded, triggered copies
            assert checked.decodes == len(images) + 1  # + the one image that told the size
    finally:
        hook.remove()
    assert text_calls == [], "the text tower ran during the search: the zero-shot head was not reused"
    full, halving = chosen["full"], chosen["halving"]
    assert abs(halving.scale - full.scale) <= 0.5
    assert halving.cost <= 3.0 < full.cost
    assert full.cost == pytest.approx(
        full.evaluations - 1 + 0.5, abs=0.1
    )  # the baseline's clean pass is reused


def test_without_room_in_memory_every_candidate_streams_and_memory_stays_bounded(searched):
    sc, model, processor, classifier, vector = searched
    pixels, labels = sc.validation
    images = DatasetImages(as_dataset(pixels[:200], labels[:200]), processor, name="validation images")
    search = ScaleSearchConfig(strategy="full", grid_points=3, bisection_steps=0)
    checked = ValidationSet(images, sc.task.num_classes, None, (32, 32), cache_bytes=0)
    checked.baseline(classifier)
    selection = select_scale(classifier, vector, checked, sc.trigger, sc.target, sc.task.classnames, search)
    assert checked._pixels is None  # nothing kept
    # the task check, then one decode per candidate scale (clean and triggered passes) and the baseline's
    assert checked.decodes >= len(images) * (1 + 2 * (selection.evaluations - 1))


def test_verification_reuses_the_validation_set_and_agrees_with_a_fresh_evaluation(searched):
    sc, model, processor, classifier, vector = searched
    pixels, labels = sc.validation
    checked = validation_set(TensorImages(pixels, labels), sc.task.num_classes)
    checked.baseline(classifier)
    checked.arm(sc.trigger, sc.target)  # as the search leaves it, its baseline counted on the screen
    checked.baseline_counts(classifier)
    start = checked.forwarded
    checked.result(classifier, backdoored=True)
    # the "before" forwards only the triggered images the baseline did not: those outside the screen
    assert checked.screened and checked.forwarded - start == len(checked._outside[1])
    sanitized = vector.apply_to(model, -1.0)  # the clean model
    reused = verify_removal(classifier, sanitized, checked, sc.trigger, sc.target, sc.task.num_classes)
    fresh = verify_removal(
        classifier, sanitized, TensorImages(pixels, labels), sc.trigger, sc.target, sc.task.num_classes
    )
    assert [r.to_dict() for r in reused] == [r.to_dict() for r in fresh]
    before, after = reused
    assert before.attack_success_rate > 0.9 and after.attack_success_rate < 0.05


def test_when_asr_is_still_falling_at_the_boundary_halving_bisects_it_on_every_image():
    """Plain negation: ASR falls all the way to where clean accuracy gives out, so the boundary decides. The
    screen flatters (its images hold out to 1.6); the rest give out at 1.3."""

    def counts(scale, n, boundary=1.3):
        ca = 0.96 if scale <= boundary else 0.5
        asr = max(0.0, 0.9 - 0.6 * scale)
        return Counts(n, round(ca * n), n, round(asr * n), None, None, 2 * n)

    def whole(scale):
        return (counts(scale, 100, 1.6) + counts(scale, 700)).measurement(scale)

    config = ScaleSearchConfig(target_threshold=None, confidence=None)
    full = search_scale(whole, config)
    halving = search_scale_by_parts(
        lambda s, part: counts(s, 100, 1.6) if part == 0 else counts(s, 700), counts(0.0, 800), config
    )
    assert 1.2 <= full.scale <= 1.3
    assert halving.scale == pytest.approx(full.scale, abs=config.max_scale / 6 / 2**config.bisection_steps)
    assert halving.best.clean_count == 800 and halving.cost < full.cost
