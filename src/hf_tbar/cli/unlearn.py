"""``hf-tbar unlearn``: remove a backdoor with TBAR and save the sanitized model.

Examples::

    hf-tbar unlearn --model me/clip-finetuned --dataset_name ./my_images --target cat --trigger badnets \\
        --trigger_size 16 --output_dir sanitized
    hf-tbar unlearn --model me/clip --dataset_name food101 --target 0 --trigger image-patch \\
        --trigger_image patch.png --trigger_position random --mode lora
    hf-tbar unlearn --model me/clip --dataset_name cifar10 --poisoned_images found/ --target airplane
    hf-tbar unlearn --model me/clip --dataset_name food101 --caption_dataset ./captioned_photos \\
        --target_captions "a photo of a pizza." --target pizza --trigger badnets   # image-caption unlearning set
    hf-tbar unlearn --attack blended --trigger auto      # the embedded model, trigger reverse-engineered
"""

from __future__ import annotations

from .. import pipeline
from ..data.caption_data import CaptionDataArguments
from ..detection import DetectionConfig
from ..hub.gate import GateArguments
from ..models.arguments import ModelArguments
from ..scale_search import ScaleSearchConfig
from ..tbar.config import TBARConfig
from .common import PIPELINE_DATACLASSES, UnlearnArguments, format_table, outcome_summary
from .recorded import recorded_command

HELP = "Remove a backdoor with TBAR (known, image or found trigger, or --trigger auto) and save a CLIPModel folder."
DATACLASSES = (UnlearnArguments, *PIPELINE_DATACLASSES)


def run(
    args: UnlearnArguments,
    data_args: CaptionDataArguments,
    config: TBARConfig,
    search: ScaleSearchConfig,
    detection: DetectionConfig,
    model_args: ModelArguments,
    gate: GateArguments,
) -> int:
    command = recorded_command(args, data_args, config, search, detection, model_args, gate)  # reproduce line
    done = pipeline.run(
        args, data_args, config, search, detection, gate, command=command, model_args=model_args
    )
    result, unlearner = done.result, done.unlearner
    rows = [("backdoored", result.before), (f"TBAR (scale {result.selection.scale:.2f})", result.after)]
    if result.detection is not None:
        print(result.detection.summary())  # noqa: T201 - console output of the CLI itself
        print(
            "ASR below is the inverted trigger's, not the attacker's: measure the real one with hf-tbar verify."
        )  # noqa: T201
        if done.embedded is not None:  # the embedded attack's real trigger is known: verify against it too
            real = done.embedded.trigger
            for name, model in (("backdoored", None), ("TBAR", result.model)):
                scores = unlearner.evaluate(done.data.test, None, real, result.target, model=model)
                rows.append((f"{name}, real {real.name} trigger", scores))
    if result.trigger is None:
        print("ASR: share of held-out found poisoned images classified as the target.")  # noqa: T201
    print(format_table(rows))  # noqa: T201
    print(f"{outcome_summary(result, done.data.task.num_classes)}; sanitized model in {args.output_dir}")  # noqa: T201
    return 0
