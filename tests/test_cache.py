"""The cache of trained tiny models: keyed by recipe and code, checked on reuse, built with fixed threads."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from hf_tbar.training import cache


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TBAR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _builder(calls: list):
    def build(path):
        calls.append(torch.get_num_threads())
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")

    return build


def test_a_folder_is_built_once_and_reused_for_the_same_recipe(cache_root):
    calls: list[int] = []
    first = cache.cached_checkpoint("clean", {"kind": "t", "steps": 3}, _builder(calls))
    again = cache.cached_checkpoint("clean", {"kind": "t", "steps": 3}, _builder(calls))
    other = cache.cached_checkpoint("clean", {"kind": "t", "steps": 4}, _builder(calls))
    assert first == again != other and len(calls) == 2
    recorded = json.loads((first / cache.RECIPE_FILE).read_text())
    assert recorded["recipe"] == {"kind": "t", "steps": 3} and recorded["code"] == cache.code_fingerprint()
    assert recorded["threads"] == cache.BUILD_THREADS
    # the build's time is recorded beside the recipe, not part of it: the folder is still reused
    assert cache.build_seconds(first) == recorded["build_s"] >= 0
    assert cache.build_seconds(cache_root) is None  # not a cached folder


def test_a_folder_whose_record_differs_is_rebuilt(cache_root):
    calls: list[int] = []
    path = cache.cached_checkpoint("clean", {"kind": "t"}, _builder(calls))
    recorded = json.loads((path / cache.RECIPE_FILE).read_text())
    (path / cache.RECIPE_FILE).write_text(json.dumps({**recorded, "threads": 1}))  # built with another count
    cache.cached_checkpoint("clean", {"kind": "t"}, _builder(calls))
    (path / cache.RECIPE_FILE).unlink()  # an interrupted build
    cache.cached_checkpoint("clean", {"kind": "t"}, _builder(calls))
    assert len(calls) == 3


def test_builds_run_with_the_fixed_thread_count_and_give_the_callers_back(cache_root):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as under OMP_NUM_THREADS=1
        calls: list[int] = []
        cache.cached_checkpoint("clean", {"kind": "threads"}, _builder(calls))
        assert calls == [cache.BUILD_THREADS] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_key_follows_the_code_of_the_recipe_modules(tmp_path, monkeypatch):
    module = tmp_path / "hf_tbar_fake_recipe.py"
    module.write_text("STEPS = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cache, "RECIPE_MODULES", ("hf_tbar_fake_recipe",))
    cache.code_fingerprint.cache_clear()
    try:
        before = cache.recipe_key({"kind": "t"})
        module.write_text("STEPS = 2\n")  # how the model is trained changed; the recipe did not
        cache.code_fingerprint.cache_clear()
        assert cache.recipe_key({"kind": "t"}) != before
        monkeypatch.setattr(cache, "RECIPE_MODULES", ("hf_tbar_no_such_module",))
        cache.code_fingerprint.cache_clear()
        with pytest.raises(RuntimeError, match="RECIPE_MODULES"):
            cache.code_fingerprint()
    finally:
        sys.modules.pop("hf_tbar_fake_recipe", None)
        cache.code_fingerprint.cache_clear()


def test_every_recipe_module_exists():
    cache.code_fingerprint.cache_clear()
    assert len(cache.code_fingerprint()) == 16


def test_every_training_module_keys_the_cache_unless_it_holds_no_training_code():
    """A new module of hf_tbar.training is fingerprinted unless it is one of the exempt ones: the cache itself,
    resumable checkpoints (how a run is saved, not what it trains), and the recipe values (each reaches the key
    through the config it fills, so tuning one world's recipe retrains that recipe's models only)."""
    import pkgutil

    import hf_tbar.training

    exempt = {"hf_tbar.training.cache", "hf_tbar.training.checkpoints", "hf_tbar.training.recipes"}
    modules = {f"hf_tbar.training.{m.name}" for m in pkgutil.iter_modules(hf_tbar.training.__path__)}
    assert modules - exempt <= set(cache.RECIPE_MODULES)
    assert not exempt & set(cache.RECIPE_MODULES)


def test_a_world_recipe_reaches_the_key_through_its_config():
    from hf_tbar.training import BackdoorConfig, PretrainConfig

    glyphs = PretrainConfig.for_dataset("glyphs")
    assert glyphs.cache_key() != PretrainConfig.for_dataset("glyphs", steps=glyphs.steps + 1).cache_key()
    assert glyphs.cache_key() != PretrainConfig().cache_key()
    tuned = BackdoorConfig.for_attack("badnets", dataset="glyphs")
    assert tuned.to_dict(image_size=64) != BackdoorConfig.for_attack("badnets").to_dict(image_size=64)
