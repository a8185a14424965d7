"""Writing a TBAR result: the report, its schema, the sanitized folder, the negation adapter folder.

| module | job |
|---|---|
| ``schema`` | :class:`TBARReport`, the typed ``tbar_report.json``: written by a run, read by the card, gate and push |
| ``report`` | the sanitized-model folder: weights, processor, the report and the scale plot, behind the safety gate |
| ``negation_adapter`` | the negated trigger vector as a PEFT LoRA adapter (written, loaded, unloaded) |
| ``adapter_folder`` | the adapter folder of a LoRA run: the PEFT negation adapter, its report and its card |
| ``publishing`` | the Hub push of a result (``BackdoorUnlearner.push_to_hub``): saved to a temporary folder, pushed |

The package's ``__init__`` imports nothing, so that :mod:`hf_tbar.hub` can read the schema without loading
the writers (which call the hub's gate and card in turn).
"""
