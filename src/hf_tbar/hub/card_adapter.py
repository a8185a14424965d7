"""The card of a negation adapter: the sanitized model's card, published as a PEFT adapter of the backdoored
model (``library_name: peft``, ``base_model``: the backdoored model's Hub id)."""

from __future__ import annotations

from huggingface_hub import ModelCard

ADAPTER_TAGS = ("peft", "lora", "negation-adapter")


def adapter_card(
    card: ModelCard, model_class: str, base_model_id: str | None, repo_id: str | None
) -> ModelCard:
    """The sanitized model's card turned into the adapter's: ``library_name: peft``, adapter tags, and how to
    apply (and remove) the adapter on the backdoored model."""
    card.data.library_name = "peft"
    card.data.tags = [*(card.data.tags or []), *ADAPTER_TAGS]
    base = base_model_id or "path/to/the/backdoored/model"
    here = repo_id or "path/to/this/adapter"
    usage = (
        "## A PEFT adapter, not a full model\n\n"
        "This repository holds the TBAR sanitization of the backdoored model as a LoRA adapter whose weights "
        "are the *negated, scaled* trigger vector. Applied to the backdoored model it gives the sanitized "
        "model; removing it gives the backdoored model back, bit for bit.\n\n"
        "```python\n"
        f"from peft import PeftModel\nfrom transformers import {model_class}\n\n"
        f'backdoored = {model_class}.from_pretrained("{base}")\n'
        f'model = PeftModel.from_pretrained(backdoored, "{here}")  # sanitized\n'
        "original = model.unload()  # the backdoored model again\n```\n\n"
    )
    head, sep, rest = card.text.partition("\n## ")
    card.text = f"{head}\n{usage}{sep.lstrip()}{rest}" if sep else card.text + "\n" + usage
    return card
