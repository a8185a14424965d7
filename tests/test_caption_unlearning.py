"""TBAR on image-caption data (the contrastive route), CleanCLIP's native setting, poisoned contrastive
training of the captioned world, and the caption input checks."""

import logging
import random

import pytest
import torch
from datasets import Dataset, Features, Image, Value

from hf_tbar import BackdoorUnlearner, BadNets, ScaleSearchConfig, TaskSpec, TBARConfig
from hf_tbar.data.images import TensorImages
from hf_tbar.errors import ConfigError, DataError
from hf_tbar.tbar.captions import (
    augment_caption,
    index_captions,
    names_class,
    target_captions,
    tokenize_captions,
)
from hf_tbar.training.losses import positive_text_loss

TASK = TaskSpec(("zero", "one", "two"), ("a photo of {}.", "the number {}."))
CAPTIONS = ["a photo of one", "zero on the left", "a large two", "the number two", "one at the top"]


def _captioned(count=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, 32, 32, generator=generator), [CAPTIONS[i % 5] for i in range(count)]


def _unlearner(micro_clip, **config):
    model, processor = micro_clip
    settings = {"steps": 3, "batch_size": 8, "unlearning_set_size": 16, "learning_rate": 1e-2, **config}
    return BackdoorUnlearner(model, processor, TASK, TBARConfig(**settings))


def test_positive_text_loss_is_the_softmax_mass_on_the_positives():
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    assert positive_text_loss(images, texts[:2], texts[2:2], 10.0) == 0  # nothing to contrast with
    single = positive_text_loss(images, texts[:1], texts[1:], 10.0)
    expected = torch.nn.functional.cross_entropy(10.0 * images @ texts.T, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(single, expected)
    assert positive_text_loss(images, texts[:2], texts[2:], 10.0) < single  # a second positive adds mass
    with pytest.raises(ValueError, match="positives"):
        positive_text_loss(images, texts[:0], texts, 10.0)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_the_contrastive_route_moves_only_the_vision_tower_and_leaves_the_input_untouched(micro_clip, mode):
    unlearner = _unlearner(micro_clip, mode=mode)
    before = {k: v.clone() for k, v in unlearner.model.state_dict().items()}
    pixels, captions = _captioned()
    vector = unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=TensorImages(pixels, captions=captions))
    changed = [k for k, v in vector.vector.items() if v.abs().sum() > 0]
    assert changed and all(k.startswith(("vision_model.", "visual_projection.")) for k in changed)
    assert all(torch.equal(unlearner.model.state_dict()[k], v) for k, v in before.items())
    assert vector.metadata["objective"] == "contrastive" and vector.metadata["unlearning_set_size"] == 16
    losses = vector.metadata["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_unlearn_with_captions_fits_every_vector_of_a_variant_with_the_contrastive_loss(micro_clip):
    unlearner = _unlearner(micro_clip, variant="repair-preserving", preserve_set_size=4)
    pixels, captions = _captioned(40)
    validation = (torch.rand(12, 3, 32, 32), torch.arange(12) % 3)
    loose = {"search": ScaleSearchConfig(target_threshold=None), "force": True}  # a random micro model
    result = unlearner.unlearn(
        BadNets(),
        "one",
        pixels,
        validation,
        clean_captions=captions,
        clean_labels=torch.arange(40) % 3,
        **loose,
    )
    assert sorted(result.losses) == ["repair fine-tuning (full)", "target-class fine-tuning"]
    assert result.target == 1 and result.vector.metadata["variant"] == "repair-preserving"
    unlearner.config.variant = "target-preserving"
    result = unlearner.unlearn(BadNets(), "one", pixels, validation, clean_captions=captions, **loose)
    assert sorted(result.losses) == ["target-class fine-tuning", "trigger fine-tuning (full)"]


def test_a_caption_dataset_is_read_by_its_caption_column_without_labels(micro_clip, tmp_path):
    pixels, captions = _captioned(20)
    images = [
        __import__("PIL.Image").Image.fromarray((p.permute(1, 2, 0).numpy() * 255).astype("uint8"))
        for p in pixels
    ]
    features = Features({"image": Image(), "text": Value("string")})
    dataset = Dataset.from_dict({"image": images, "text": captions}, features=features)
    model, processor = micro_clip
    unlearner = BackdoorUnlearner(
        model,
        processor,
        TASK,
        TBARConfig(steps=2, batch_size=8, unlearning_set_size=8),
        caption_column="text",
    )
    clean = unlearner.images.clean_set(dataset, None, None)
    assert clean.labels is None and clean.captions == captions
    vector = unlearner.fit_trigger_vector(BadNets(), 2, clean_pixels=clean)
    assert vector.metadata["objective"] == "contrastive"
    wrong = BackdoorUnlearner(model, processor, TASK, caption_column="caption")
    with pytest.raises(DataError, match="no column 'caption'.*'text'"):
        wrong.images.clean_set(dataset, None, None)


def test_bad_captions_are_named(micro_clip, caplog):
    unlearner = _unlearner(micro_clip)
    pixels, captions = _captioned(20)
    for bad, match in ((" ", "row 3 is an empty caption"), (None, "row 3 is a NoneType")):
        broken = list(captions)
        broken[3] = bad
        with pytest.raises(DataError, match=match):
            unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=TensorImages(pixels, captions=broken))
    with pytest.raises(DataError, match="20 clean images but 2 captions"):
        TensorImages(pixels, captions=captions[:2], name="clean images")
    with pytest.raises(DataError, match="every caption of the unlearning set names the target 'one'"):
        unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=TensorImages(pixels, captions=["one"] * 20))
    with pytest.raises(DataError, match="clean_captions go with clean_pixels given as a tensor"):
        unlearner.images.clean_set(TensorImages(pixels), None, captions)
    tokenizer = micro_clip[1].tokenizer
    with caplog.at_level(logging.WARNING):
        tokenize_captions(unlearner.family, tokenizer, ["short", "word " * 40, "long " * 50], "my captions")
    assert "my captions: 2 caption(s) are longer than the tokenizer's context of 32 tokens" in caplog.text
    with caplog.at_level(logging.WARNING):
        target_captions(TASK, 0, tokenizer, ["a photo of a qzxvbw"])
    assert "reads the word 'qzxvbw' of the target caption" in caplog.text
    with pytest.raises(ConfigError, match="target_captions must be a list"):
        TBARConfig(target_captions="a photo of a one")


def test_a_target_caption_read_as_the_unknown_token_is_refused():
    class UnknownWords:
        unk_token = "<unk>"

        def tokenize(self, text):
            return ["a", "<unk>"]

    with pytest.raises(DataError, match="'a photo of a banana.' holds text the tokenizer does not know"):
        target_captions(TaskSpec(("banana", "apple"), ("a photo of a {}.",)), 0, UnknownWords())


def test_caption_helpers():
    assert names_class("A photo of a One.", "one") and not names_class("someone waits", "one")
    assert names_class("ice cream on a plate", "ice cream")
    views = {augment_caption("a small red circle on the left", random.Random(seed)) for seed in range(10)}
    assert len(views) > 3 and "a small red circle on the left" not in views
    assert augment_caption("circle", random.Random(0)) == "circle"
    assert augment_caption("a red circle", random.Random(1)) == augment_caption(
        "a red circle", random.Random(1)
    )


def test_index_captions_keeps_the_given_prefix_and_indexes_each_caption():
    texts, rows = index_captions(["b", "a", "b", "c"], first=["t", "t2", "a"])
    assert texts == ["t", "t2", "a", "b", "c"]
    assert rows.tolist() == [3, 2, 3, 4]
    assert index_captions(["x", "x"])[1].tolist() == [0, 0]
