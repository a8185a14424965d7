"""The benchmark worlds (the lab, apart from the product): a cached clean tiny CLIP, a backdoored copy and
the defender's data, built offline from the recipes of :mod:`hf_tbar.training`.

| module | job |
|---|---|
| ``embedded`` | :func:`embedded_scenario` / :func:`glyph_scenario`: the embedded digits (32 px) and glyph (64 px)
  worlds (classification), tensor splits |
| ``captioned`` | :func:`captioned_scenario`: the image-caption world, poisoned by contrastive training |
"""

from .captioned import captioned_scenario
from .embedded import EmbeddedScenario, embedded_scenario, glyph_scenario, world_scenario

__all__ = ["EmbeddedScenario", "captioned_scenario", "embedded_scenario", "glyph_scenario", "world_scenario"]
