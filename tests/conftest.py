"""Test set-up: never reach the Hub, keep hf_tbar's model cache per test session unless told otherwise."""

import os

# Set before huggingface_hub / transformers read their constants.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: a stray request fails fast
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import MICRO  # noqa: E402
from hf_tbar.models.tiny_clip import build_tiny_clip  # noqa: E402

CORPUS = ["zero", "one", "two", "a photo of {}.", "the number {}."]


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory):
    """Keep the Arrow files ``load_dataset`` writes out of the user's cache."""
    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = str(tmp_path_factory.mktemp("hf-datasets-cache"))
    yield
    datasets.config.HF_DATASETS_CACHE = saved


@pytest.fixture
def micro_clip():
    """A random 1-layer CLIP and its processor (32 px images), built offline in milliseconds."""
    torch.manual_seed(0)
    return build_tiny_clip(MICRO, CORPUS, seed=0)


@pytest.fixture(scope="session")
def badnets_scenario():
    """The embedded benchmark: cached clean tiny CLIP, BadNets-backdoored copy, digit splits.

    Trained on first use (a few minutes on 2 cores), then reused from the hf_tbar cache.
    """
    from hf_tbar.scenarios.embedded import embedded_scenario

    return embedded_scenario("badnets")
