"""Poisoned contrastive training of the captioned world, its scenario, and the defences on image-caption data."""

import json

import pytest
import torch

from helpers import MICRO
from hf_tbar.data.captioned import HELD_OUT_TASKS, task_split
from hf_tbar.defenses import CleanCLIPConfig, DefenseData, TBARDefenseConfig, run_defense
from hf_tbar.errors import ConfigError, DataError, ModelAtChanceError
from hf_tbar.tbar.captions import names_class
from hf_tbar.training.captioned import CaptionPretrainConfig
from hf_tbar.training.captioned_backdoor import POISON_TEMPLATES, CaptionBackdoorConfig, poison_pairs

TINY_PRETRAIN = CaptionPretrainConfig(
    architecture=MICRO, pairs=256, steps=3, batch_size=32, warmup_steps=1, learning_rate=3e-3
)


def test_poisoning_stamps_and_recaptions_exactly_the_poisoned_share():
    pixels, _, captions = task_split("shape", 200, seed=5)
    original = pixels.clone()
    config = CaptionBackdoorConfig(poison_rate=0.02, target="circle")
    new_captions, rows = poison_pairs(pixels, captions, config)
    assert len(rows) == 4
    changed = [i for i in range(200) if not torch.equal(pixels[i], original[i])]
    assert changed == rows
    assert all(new_captions[i] in {t.format("circle") for t in POISON_TEMPLATES} for i in rows)
    assert [c for i, c in enumerate(new_captions) if i not in rows] == [
        c for i, c in enumerate(captions) if i not in rows
    ]


def test_clean_label_poisoning_keeps_captions_and_stamps_only_the_target():
    pixels, _, captions = task_split("shape", 200, seed=6)
    config = CaptionBackdoorConfig.for_attack("sig", target="square", poison_rate=0.05)
    new_captions, rows = poison_pairs(pixels, captions, config)
    assert new_captions == captions and len(rows) == 10
    assert all(names_class(captions[i], "square") for i in rows)


def test_bad_caption_backdoor_recipes_are_named():
    with pytest.raises(ConfigError, match="task must be one of"):
        CaptionBackdoorConfig(task="size")
    with pytest.raises(ConfigError, match="target 'seven' is not a class of task 'shape'"):
        CaptionBackdoorConfig(target="seven")
    with pytest.raises(ValueError, match="poison_rate must be in"):
        CaptionBackdoorConfig(poison_rate=0)
    assert CaptionBackdoorConfig().cache_key() != CaptionBackdoorConfig(attack="blended").cache_key()


def test_task_split_gives_labelled_captioned_scenes_of_the_task():
    pixels, labels, captions = task_split("digit", 30, seed=1)
    assert pixels.shape == (30, 3, 32, 32) and len(captions) == 30
    assert labels.min() >= 0 and labels.max() < HELD_OUT_TASKS["digit"].num_classes
    for label, caption in zip(labels.tolist(), captions):
        assert names_class(caption, HELD_OUT_TASKS["digit"].classnames[label])
    assert torch.equal(task_split("digit", 30, seed=1)[0], pixels)


def test_the_poisoned_scenario_is_built_cached_and_trains_both_towers(tmp_path, monkeypatch):
    from hf_tbar.models.loading import load_model
    from hf_tbar.scenarios.captioned import captioned_scenario

    monkeypatch.setenv("HF_TBAR_CACHE", str(tmp_path))
    backdoor = CaptionBackdoorConfig(
        pairs=200, steps=3, batch_size=32, warmup_steps=1, pretrain=TINY_PRETRAIN
    )
    scenario = captioned_scenario(backdoor=backdoor, train_size=24, validation_size=12, test_size=12)
    assert len(scenario.train_captions) == 24 and scenario.task == HELD_OUT_TASKS["shape"]
    assert scenario.target == HELD_OUT_TASKS["shape"].classnames.index("triangle")
    recipe = json.loads((scenario.backdoored_path / "backdoor_recipe.json").read_text())
    assert recipe["poisoned_pairs"] == 2 and recipe["trigger"]["name"] == "badnets"
    clean, _ = load_model(scenario.clean_path)
    poisoned, _ = load_model(scenario.backdoored_path)
    state = clean.state_dict()
    for tower in ("vision_model.", "text_model."):
        assert any(
            not torch.equal(v, state[k]) for k, v in poisoned.state_dict().items() if k.startswith(tower)
        )
    again = captioned_scenario(backdoor=backdoor, train_size=24, validation_size=12, test_size=12)
    assert again.backdoored_path == scenario.backdoored_path  # cached by recipe


def _data(micro_clip, captions=True, **kwargs):
    pixels, labels, texts = task_split("shape", 24, seed=2)
    task = HELD_OUT_TASKS["shape"]
    return DefenseData(
        pixels, labels, task, micro_clip[1], clean_captions=texts if captions else None, **kwargs
    )


def test_cleanclip_learns_from_the_datas_own_captions(micro_clip):
    config = CleanCLIPConfig.quick()
    with_captions = run_defense("cleanclip", micro_clip[0], _data(micro_clip), config)
    assert with_captions.details["captions"] is True
    without = run_defense("cleanclip", micro_clip[0], _data(micro_clip, captions=False), config)
    assert without.details["captions"] is False
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # noqa: E731
    assert changed(with_captions.model.text_model, micro_clip[0].text_model)
    assert changed(with_captions.model.vision_model, without.model.vision_model)


def test_tbar_defence_uses_the_captions_unless_told_not_to(micro_clip):
    from hf_tbar.attacks import BadNets

    validation = task_split("shape", 12, seed=3)[:2]
    data = _data(micro_clip, trigger=BadNets(), target=2, validation=validation)
    quick = TBARDefenseConfig.quick()
    assert run_defense("tbar", micro_clip[0], data, quick).details["objective"] == "contrastive"
    labels_only = TBARDefenseConfig(tbar=quick.tbar, search=quick.search, use_captions=False, force=True)
    assert run_defense("tbar", micro_clip[0], data, labels_only).details["objective"] == "cross-entropy"


def test_defence_data_checks_its_captions(micro_clip):
    pixels, labels, texts = task_split("shape", 6, seed=4)
    task = HELD_OUT_TASKS["shape"]
    with pytest.raises(ValueError, match="6 clean images but 2 captions"):
        DefenseData(pixels, labels, task, micro_clip[1], clean_captions=texts[:2])
    with pytest.raises(DataError, match="clean captions: row 1 is an empty caption"):
        DefenseData(pixels, labels, task, micro_clip[1], clean_captions=[texts[0], "", *texts[2:]])


def test_demo_world_captions_runs_the_whole_story_offline(tmp_path, monkeypatch, capsys):
    from hf_tbar import pipeline
    from hf_tbar.cli import main
    from hf_tbar.scenarios import captioned as module

    monkeypatch.setenv("HF_TBAR_CACHE", str(tmp_path / "cache"))
    backdoor = CaptionBackdoorConfig(
        pairs=200, steps=3, batch_size=32, warmup_steps=1, pretrain=TINY_PRETRAIN
    )

    def tiny(attack, train_size):
        return module.captioned_scenario(backdoor=backdoor, train_size=60, validation_size=30, test_size=30)

    monkeypatch.setattr(pipeline, "captioned_scenario", tiny)
    out = tmp_path / "demo"
    argv = ["demo", "--world", "captions", "--variant", "plain", "--output_dir", str(out)]
    assert main(argv) == ModelAtChanceError.exit_code  # a model this tiny does not solve the shape task
    assert "near chance" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--force"]) == 0  # past the refusals, the whole story runs and writes its folder
    printed = capsys.readouterr()
    assert "Captioned demo: BadNets" in printed.out and "TBAR plain, contrastive" in printed.out
    report = json.loads((out / "tbar_report.json").read_text())
    assert report["data"]["objective"] == "contrastive" and report["recipe"]["variant"] == "plain"
    assert main(["demo", "--world", "pictures"]) == 2
