"""``hf-tbar unlearn``: remove a known backdoor with TBAR and save the sanitized model."""

from __future__ import annotations

from ..config import TBARConfig
from .common import UnlearnArguments, format_table, run_tbar

HELP = "Remove a backdoor with TBAR (known trigger) and save a sanitized CLIPModel folder."
DATACLASSES = (UnlearnArguments, TBARConfig)


def run(args: UnlearnArguments, config: TBARConfig) -> int:
    _, result, _ = run_tbar(args, config)
    print(
        format_table(
            [("backdoored", result.before), (f"TBAR (scale {result.selection.scale:.2f})", result.after)]
        )
    )
    print(f"CA retention {100 * result.ca_retention:.1f}%; sanitized model in {args.output_dir}")
    return 0
