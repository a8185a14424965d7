"""Model families: every registered family keeps one contract; SigLIP goes through the whole product."""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image as PILImage

from helpers import MICRO, write_imagefolder
from hf_tbar import BackdoorUnlearner, BadNets, TaskSpec, TBARConfig
from hf_tbar.cli import main
from hf_tbar.detection import DETECTORS
from hf_tbar.detection.decree import image_encoder
from hf_tbar.errors import InputError, ModelAtChanceError, ModelLoadError
from hf_tbar.hub.staging import check_clip_checkpoint
from hf_tbar.models import MODEL_FAMILIES, ModelFamily, family_of, get_model_family, register_model_family
from hf_tbar.models.loading import load_model
from hf_tbar.models.tiny_clip import save_clip
from hf_tbar.zeroshot import ZeroShotClassifier, build_zero_shot_head

TASK = TaskSpec(("red", "green", "blue"), ("a photo of a {}.", "a {} picture."))
CORPUS = [*TASK.classnames, *TASK.templates]
COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 50, 210)}


def tiny(family: ModelFamily):
    torch.manual_seed(0)
    return family.tiny(MICRO, CORPUS, seed=0)


@pytest.mark.parametrize("model_type", sorted(MODEL_FAMILIES))
def test_every_registered_family_keeps_the_contract(model_type, tmp_path):
    family = MODEL_FAMILIES[model_type]
    model, processor = tiny(family)
    assert family.owns(model) and family_of(model) is family and model.config.model_type == model_type
    # the vision side and the text side split the parameters between them
    names = [name for name, _ in model.named_parameters()]
    vision = {id(p) for p in family.vision_parameters(model)}
    assert vision and all(
        name.startswith(family.vision_prefixes) == (id(p) in vision) for name, p in model.named_parameters()
    )
    assert all(name.startswith(family.vision_prefixes + family.text_prefixes) for name in names), names
    # LoRA targets linear layers of the vision tower only
    pattern = family.lora_target_pattern(["q_proj", "v_proj", "out_proj", "fc1", "fc2"])
    peft_model = get_peft_model(tiny(family)[0], LoraConfig(r=2, target_modules=pattern))
    targeted = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
    assert targeted and all(".vision_model." in name for name in targeted)
    # a zero-shot classifier over normalised embeddings; save then load gives identical logits
    head = build_zero_shot_head(model, processor.tokenizer, TASK)
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = ZeroShotClassifier.from_processor(model, head, processor)(pixels)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    encode, side = image_encoder(model)
    assert side == family.image_size(model) == 32
    assert torch.allclose(encode(pixels).norm(dim=-1), torch.ones(4), atol=1e-5)
    folder = save_clip(model, processor, tmp_path / model_type)
    check_clip_checkpoint(folder, sorted(folder.iterdir()))
    loaded, loaded_processor = load_model(folder)
    assert type(loaded) is type(model) and type(loaded_processor) is type(processor)
    reloaded = ZeroShotClassifier.from_processor(
        loaded, build_zero_shot_head(loaded, loaded_processor.tokenizer, TASK), loaded_processor
    )
    assert torch.equal(reloaded(pixels), logits)
    # TBAR on it: only vision weights move; a zero scale gives the weights back bit for bit
    unlearner = BackdoorUnlearner(
        loaded,
        loaded_processor,
        TASK,
        TBARConfig(steps=2, batch_size=4, unlearning_set_size=8, learning_rate=1e-2),
    )
    vector = unlearner.fit_trigger_vector(BadNets(), 1, clean_pixels=pixels.repeat(3, 1, 1, 1))
    moved = [k for k, v in vector.vector.items() if v.abs().sum() > 0]
    assert moved and all(k.startswith(family.vision_prefixes) for k in moved)
    untouched = unlearner.apply(vector, 0.0).state_dict()
    assert all(torch.equal(untouched[k], v) for k, v in loaded.state_dict().items())


def test_a_family_is_registered_once_and_an_unknown_model_type_is_named(tmp_path):
    with pytest.raises(ValueError, match="registered for model_type 'clip' already"):
        register_model_family(MODEL_FAMILIES["clip"])
    with pytest.raises(InputError, match="model_type 'blip' is not supported"):
        get_model_family("blip")
    model, processor = tiny(MODEL_FAMILIES["siglip"])
    folder = save_clip(model, processor, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "blip"}))
    with pytest.raises(ModelLoadError, match="model_type 'blip'.*supported: clip, siglip"):
        load_model(folder)
    with pytest.raises(TypeError, match="CLIPModel or SiglipModel, got Linear"):
        BackdoorUnlearner(torch.nn.Linear(2, 2), processor, TASK)


def test_siglip_logits_carry_the_bias_and_prompts_are_padded_to_full_length():
    family = MODEL_FAMILIES["siglip"]
    model, processor = tiny(family)
    tokens = family.tokenize(processor.tokenizer, ["red", "a photo of a green."])
    assert tokens["input_ids"].shape[1] == processor.tokenizer.model_max_length
    with torch.no_grad():
        model.logit_bias.fill_(3.0)
        a = torch.nn.functional.normalize(torch.rand(2, 32), dim=-1)
        assert torch.allclose(family.logits(model, a, a) - 3.0, model.logit_scale.exp() * a @ a.T)


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory) -> Path:
    model, processor = tiny(MODEL_FAMILIES["siglip"])
    return save_clip(model, processor, tmp_path_factory.mktemp("models") / "my-siglip")


def colour(name: str, index: int) -> PILImage.Image:
    image = PILImage.new("RGB", (40, 40), COLOURS[name])
    image.paste((255, 255, 255), (index * 4, 4, index * 4 + 6, 10))
    return image


def test_siglip_through_unlearn_scan_arithmetic_and_push(siglip_folder, tmp_path):
    """The whole CLI on a micro SigLIP: unlearn, the card, a dry-run push, scan and streaming arithmetic."""
    from transformers import SiglipModel

    data = write_imagefolder(tmp_path / "colours", list(COLOURS), 8, colour)
    out = tmp_path / "sanitized"
    argv = ["unlearn", "--model", str(siglip_folder), "--dataset_name", str(data), "--target", "blue"]
    argv += ["--trigger", "badnets", "--trigger_size", "4", "--templates", TASK.templates[0]]
    argv += [
        "--steps",
        "2",
        "--unlearning_set_size",
        "8",
        "--ca_threshold",
        "0.3",
        "--target_threshold",
        "0.01",
    ]
    assert main([*argv, "--mode", "lora", "--output_dir", str(out), "--force"]) == 0
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["base_model_source"] == {"kind": "local", "name": "my-siglip"}
    assert isinstance(SiglipModel.from_pretrained(out), SiglipModel)
    card = (out / "README.md").read_text()
    assert "my-siglip" in card and "SiglipModel.from_pretrained" in card and "A SigLIP model" in card
    assert report["model_type"] == "siglip" and "- siglip" in card
    staged = tmp_path / "staged"
    push = ["push", "--sanitized_dir", str(out), "--repo_id", "me/siglip-clean", "--dry_run_dir", str(staged)]
    assert main([*push, "--force"]) == 0
    assert (staged / "model.safetensors").is_file() and (staged / "README.md").is_file()
    scan = ["scan", "--model", str(siglip_folder), "--dataset_name", str(data), "--split", "train"]
    scan += [
        "--num_images",
        "6",
        "--detection_steps",
        "3",
        "--batch_size",
        "4",
        "--templates",
        TASK.templates[0],
    ]
    assert (
        main([*scan, "--output_dir", str(tmp_path / "scan")]) == ModelAtChanceError.exit_code
    )  # random weights
    assert main([*scan, "--output_dir", str(tmp_path / "scan"), "--force"]) == 0
    scanned = json.loads((tmp_path / "scan" / "scan_report.json").read_text())
    assert scanned["model"]["name"] == "my-siglip" and len(scanned["findings"]) == len(DETECTORS)
    negated = tmp_path / "negated"
    arithmetic = ["arithmetic", "--base", str(siglip_folder), "--finetuned", str(out), "--scale", "0.0"]
    assert main([*arithmetic, "--output_dir", str(negated), "--no_progress"]) == 0
    base, _ = load_model(siglip_folder)
    same = SiglipModel.from_pretrained(negated)
    assert all(torch.equal(same.state_dict()[k], v) for k, v in base.state_dict().items())
