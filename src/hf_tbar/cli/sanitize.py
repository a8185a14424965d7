"""``hf-tbar sanitize``: scan -> unlearn -> verify -> card -> push (or dry run), in one command.

Examples::

    hf-tbar sanitize --model me/clip --dataset_name ./my_photos --repo_id me/clip-clean          # unknown trigger
    hf-tbar sanitize --model me/clip --dataset_name ./my_photos --trigger badnets --target cat \\
        --repo_id me/clip-clean --dry_run_dir to-push                                          # known trigger
    hf-tbar sanitize --attack badnets --repo_id me/tiny-clean --dry_run_dir to-push             # embedded model

With ``--trigger auto`` (the default) the detectors scan the model first and nothing is unlearned unless they flag
it; with a trigger given the scan is skipped. The last line says which stage stopped and why, and the exit
status says the same: 5 model at chance (check), 7 not flagged (scan), 8 no feasible scale (unlearn), 3 gate
refused (verify), 4 push failed (push), 2/5/6 bad arguments, input or output (prepare).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from .. import pipeline
from ..data.arguments import DataArguments
from ..detection import DetectionConfig
from ..errors import ConfigError, HfTbarError, ModelAtChanceError
from ..hub import PushConfig
from ..hub.gate import GateArguments, SafetyGateError
from ..hub.remote import HubPushError
from ..models.arguments import ModelArguments
from ..results import NoBackdoorDetectedError
from ..scale_search import NoFeasibleScaleError, ScaleSearchConfig
from ..tbar.config import TBARConfig
from .common import PIPELINE_DATACLASSES, UnlearnArguments, outcome_summary
from .recorded import recorded_command

logger = logging.getLogger(__name__)

HELP = "Scan, unlearn when flagged (or when the trigger is given), verify, write the card, push or dry-run."

#: Which stage an error stopped, by its type (anything else stopped the preparation: arguments, inputs).
STAGES: tuple[tuple[type[BaseException], str, str], ...] = (
    (ModelAtChanceError, "check", "model at chance"),
    (NoBackdoorDetectedError, "scan", "not flagged"),
    (NoFeasibleScaleError, "unlearn", "no feasible scale"),
    (SafetyGateError, "verify", "gate refused"),
    (HubPushError, "push", "push failed"),
)


class StageError(HfTbarError):
    """An error of one stage of ``sanitize``, re-worded to name the stage; keeps the cause's exit status."""

    def __init__(self, stage: str, why: str, cause: BaseException) -> None:
        self.exit_code = getattr(cause, "exit_code", HfTbarError.exit_code)
        self.details = getattr(cause, "details", None)  # e.g. the detectors' findings, printed above the line
        self.stage = stage
        super().__init__(f"stopped at {stage} ({why}): {cause}")


@dataclass
class SanitizeArguments(UnlearnArguments):
    """What to sanitize (the ``unlearn`` arguments, trigger unknown by default) and where to publish it."""

    trigger: str = field(
        default="auto",
        metadata={
            "help": "'auto' (default): scan with the detectors and unlearn the inverted trigger only if flagged; a "
            "trigger name (badnets, blended, ...) or 'known' (the --attack trigger): skip the scan."
        },
    )
    repo_id: str | None = field(
        default=None,
        metadata={"help": "Hub repository to publish to (needed by --dry_run_dir); none: stop after saving."},
    )
    dry_run_dir: str | None = field(
        default=None,
        metadata={"help": "Write exactly what would be pushed here, without any network access."},
    )
    private: bool = field(default=False, metadata={"help": "Create a new repository as private."})
    token: str | None = field(
        default=None, metadata={"help": "Hub token; default: $HF_TOKEN or the saved login. Never printed."}
    )
    endpoint: str | None = field(default=None, metadata={"help": "Hub endpoint URL (default: $HF_ENDPOINT)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dry_run_dir is not None and self.repo_id is None:
            raise ConfigError("--dry_run_dir needs --repo_id (the card and the commit are written for it)")


DATACLASSES = (SanitizeArguments, *PIPELINE_DATACLASSES)


def _stage(error: BaseException) -> tuple[str, str]:
    for kind, stage, why in STAGES:
        if isinstance(error, kind):
            return stage, why
    return "prepare", "bad argument, input or output"


def run(
    args: SanitizeArguments,
    data_args: DataArguments,
    config: TBARConfig,
    search: ScaleSearchConfig,
    detection: DetectionConfig,
    model_args: ModelArguments,
    gate: GateArguments,
) -> int:
    """Run the pipeline's stages in order; the first that fails ends the command with a line naming it."""
    push = None
    if args.repo_id is not None:
        push = PushConfig(
            repo_id=args.repo_id,
            dry_run=args.dry_run_dir is not None,
            private=True if args.private else None,
            token=args.token,
            force=args.force,
            endpoint=args.endpoint,
            **dataclasses.asdict(gate),  # the same gate as the saved folder's
        )
    command = recorded_command(args, data_args, config, search, detection, model_args, gate)
    try:
        done = pipeline.run(
            args, data_args, config, search, detection, gate, push, args.dry_run_dir, command, model_args
        )
    except tuple(kind for kind, _, _ in STAGES) as error:
        stage, why = _stage(error)
        raise StageError(stage, why, error) from error
    result = done.result
    summary = outcome_summary(result, done.data.task.num_classes)
    scanned = (
        f"flagged by {result.detection.winner.detector} (target class {result.target}), "
        if result.detection is not None and result.detection.winner is not None
        else "trigger given, "
    )
    if done.pushed is None:
        print(f"hf-tbar sanitize: done: {scanned}{summary}; saved to {args.output_dir} (no --repo_id)")  # noqa: T201
        return 0
    pushed = done.pushed
    where = (
        f"dry run in {args.dry_run_dir}"
        if pushed.dry_run
        else f"pushed to {pushed.commit_url or args.repo_id}"
    )
    print(f"hf-tbar sanitize: done: {scanned}{summary}; {where}")  # noqa: T201
    return 0
