"""Size of the TBAR negation adapter against the full model, at the real CLIP shapes.

Builds random-weight CLIP models with the public openai/clip-vit-base-patch32 (``b32``) and
clip-vit-large-patch14 (``l14``) configurations (no download), fits nothing: LoRA factors of TBAR's default
layout (rank ``--r``, the vision tower's q/k/v/out projections and MLP, as ``TBARConfig`` does) are filled
with random values, written with :func:`hf_tbar.reporting.negation_adapter.save_negation_adapter`, and the adapter file's
bytes are compared with the model's ``model.safetensors``. Target (issue): under 5% of the model's bytes at
ViT-B/32 with r = 8. It also checks the adapter round trip on the full-size model (sanitized logits equal,
``unload()`` bit-identical).

    python benchmarks/adapter_size.py --models b32 --r 8 16

The table (``main``) also goes to results/adapter_size.json for the canonical run of results/runs.yaml.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from clip_shapes import build_random_clip
from peft import LoraConfig, get_peft_model

from hf_tbar import TBARConfig
from hf_tbar.bench import results
from hf_tbar.models import family_of
from hf_tbar.models.loading import load_model
from hf_tbar.models.working_copy import working_copy
from hf_tbar.reporting.negation_adapter import (
    LowRank,
    load_negation_adapter,
    low_rank_of,
    save_negation_adapter,
)


def random_low_rank(model, r: int, seed: int = 0) -> LowRank:
    """Random LoRA factors of TBAR's default layout for ``model`` (the layers a LoRA fit would adapt)."""
    pattern = family_of(model).lora_target_pattern(TBARConfig().lora_target_modules)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=pattern)
    peft_model = get_peft_model(working_copy(model, share_vision=True), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    return low_rank_of(peft_model, config)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["b32"], choices=["b32", "l14"])
    parser.add_argument("--r", nargs="+", type=int, default=[8])
    return results.add_results_arguments(parser)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    record = results.start(__file__, parser, args, argv)
    rows = [
        "| model | r | adapted layers | adapter MiB | model.safetensors MiB | adapter / model | round trip |",
        "|---|---|---|---|---|---|---|",
    ]
    raw = []
    with tempfile.TemporaryDirectory(prefix="hf_tbar-adapter-") as tmp:
        for name in args.models:
            folder = build_random_clip(name, Path(tmp) / name, ["a photo of a {}.", "cat", "dog"])
            model, _ = load_model(folder)
            model_bytes = (folder / "model.safetensors").stat().st_size
            pixels = torch.rand(2, 3, 224, 224)
            for r in args.r:
                low_rank = random_low_rank(model, r)
                out = Path(tmp) / f"{name}-r{r}"
                info = save_negation_adapter(model, low_rank, 0.5, out)
                before = {k: v.clone() for k, v in model.state_dict().items()}
                with torch.no_grad():
                    applied = load_negation_adapter(model, out)
                    applied.get_image_features(pixel_values=pixels)
                    restored = applied.unload()
                exact = all(torch.equal(restored.state_dict()[k], v) for k, v in before.items())
                rows.append(
                    f"| {name} | {r} | {len(low_rank.factors)} | {info.adapter_bytes / 2**20:.2f} | "
                    f"{model_bytes / 2**20:.0f} | {100 * info.adapter_bytes / model_bytes:.2f}% | "
                    f"{'unload bit-identical' if exact else 'MISMATCH'} |"
                )
                raw.append(
                    {
                        "model": name,
                        "r": r,
                        "adapted_layers": len(low_rank.factors),
                        "adapter_bytes": info.adapter_bytes,
                        "model_bytes": model_bytes,
                        "unload_bit_identical": exact,
                    }
                )
                model = restored
    print("\n".join(rows))  # noqa: T201
    record.table(
        "main",
        results.table_from_markdown(
            "\n".join(rows),
            notes="Random weights with the public configurations; TBAR's LoRA layout (the vision tower's "
            "q/k/v/out projections and MLP). Target: under 5% of the model's bytes.",
        ),
    )
    record.raw["rows"] = raw
    record.write()


if __name__ == "__main__":
    main()
