"""The embedded captioned world: deterministic scenes and captions, held-out tasks, contrastive pretraining."""

import torch

from hf_tbar.data.captioned import (
    CAPTION_TEMPLATES,
    HELD_OUT_TASKS,
    caption_corpus,
    random_scenes,
    render_pairs,
    task_labels,
)
from hf_tbar.models.tokenizer import build_clip_tokenizer
from hf_tbar.training.captioned import CaptionPretrainConfig, pretrain_captioned_clip, zero_shot_accuracies
from hf_tbar.training.losses import contrastive_loss


def test_the_world_is_deterministic_and_its_captions_name_the_attributes():
    scenes = random_scenes(40, seed=3)
    pixels, captions = render_pairs(scenes, seed=3)
    again, captions_again = render_pairs(random_scenes(40, seed=3), seed=3)
    assert torch.equal(pixels, again) and captions == captions_again
    assert pixels.shape == (40, 3, 32, 32) and 0 <= pixels.min() and pixels.max() <= 1
    assert not torch.equal(pixels, render_pairs(random_scenes(40, seed=4), seed=4)[0])
    for scene, caption in zip(scenes, captions):
        assert scene.thing() in caption
    assert len({caption.split(" ")[0] for caption in captions}) > 3  # several templates in use
    assert len(CAPTION_TEMPLATES) >= 5


def test_held_out_tasks_label_only_the_scenes_they_apply_to_and_no_caption_is_truncated():
    scenes = random_scenes(200, seed=0)
    shapes, digits = task_labels(scenes, "shape"), task_labels(scenes, "digit")
    assert ((shapes >= 0) ^ (digits >= 0)).all()  # each scene is a shape or a digit
    assert task_labels(scenes, "colour").max() < HELD_OUT_TASKS["colour"].num_classes
    tokenizer = build_clip_tokenizer(caption_corpus())
    _, captions = render_pairs(scenes, seed=0)
    assert max(len(tokenizer(caption)["input_ids"]) for caption in captions) <= tokenizer.model_max_length


def test_contrastive_pretraining_trains_both_towers_and_scores_every_task(tmp_path):
    from hf_tbar.models.loading import load_model
    from hf_tbar.models.tiny_clip import build_tiny_clip

    config = CaptionPretrainConfig(pairs=256, steps=6, batch_size=32, warmup_steps=1, learning_rate=3e-3)
    model, processor = load_model(pretrain_captioned_clip(config, tmp_path / "captioned"))
    initial = build_tiny_clip(config.architecture, caption_corpus(), seed=config.seed)[0].state_dict()
    for tower in ("vision_model.", "text_model."):
        assert any(
            not torch.equal(v, initial[k]) for k, v in model.state_dict().items() if k.startswith(tower)
        )
    scores = zero_shot_accuracies(model, processor, count=60)
    assert set(scores) == set(HELD_OUT_TASKS) and all(0 <= v <= 1 for v in scores.values())
    a = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    assert contrastive_loss(a, a, 100.0) < contrastive_loss(a, a.roll(1, 0), 100.0)
