"""``hf-tbar push``: check a sanitized folder against the safety gate and publish it on the Hub with a model card.

Examples::

    hf-tbar push --sanitized_dir runs/sanitized --repo_id me/clip-sanitized --dry_run --dry_run_dir staged
    HF_TOKEN=hf_... hf-tbar push --sanitized_dir runs/sanitized --repo_id me/clip-sanitized --private
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from ..hub.push import HubPushError, PushConfig, SafetyGateError, push_sanitized_model

logger = logging.getLogger(__name__)

HELP = "Publish a sanitized model on the Hub with a model card, behind a CA/ASR safety gate."

#: Exit status when the safety gate refuses the push.
EXIT_GATE = 3
#: Exit status when the Hub (or the network) refused the push.
EXIT_HUB = 4


@dataclass
class PushArguments:
    """What to push."""

    sanitized_dir: str = field(
        metadata={"help": "Folder written by `hf-tbar unlearn`: a CLIP checkpoint plus tbar_report.json."}
    )
    dry_run_dir: str | None = field(
        default=None,
        metadata={
            "help": "Write the folder that would be pushed here, without network access (implies --dry_run)."
        },
    )

    def __post_init__(self) -> None:
        if not self.sanitized_dir:
            raise ValueError("--sanitized_dir must name a folder")


DATACLASSES = (PushArguments, PushConfig)


def run(args: PushArguments, config: PushConfig) -> int:
    """Run the push; returns the process exit status (0 success, 3 safety gate refused, 4 Hub error)."""
    if args.dry_run_dir is not None and not config.dry_run:
        logger.info("--dry_run_dir given: running a dry run, nothing is sent to the Hub")
        config = dataclasses.replace(config, dry_run=True)
    try:
        result = push_sanitized_model(args.sanitized_dir, config, dry_run_dir=args.dry_run_dir)
    except SafetyGateError as error:
        logger.error("%s", error)
        return EXIT_GATE
    except HubPushError as error:
        logger.error("%s", error)
        return EXIT_HUB
    if result.dry_run:
        where = f" (written to {result.output_dir})" if result.output_dir else ""
        logger.info("dry run for %s: %d files%s", result.repo_id, len(result.files), where)
    else:
        logger.info("done: %s", result.pr_url or result.commit_url)
    return 0
