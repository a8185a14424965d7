"""``hf-tbar push``: check a sanitized folder against the safety gate and publish it on the Hub with a model card.

Examples::

    hf-tbar push --sanitized_dir runs/sanitized --repo_id me/clip-sanitized --dry_run --dry_run_dir staged
    HF_TOKEN=hf_... hf-tbar push --sanitized_dir runs/sanitized --repo_id me/clip-sanitized --private

A refused gate raises :class:`~hf_tbar.hub.SafetyGateError` (exit status 3) and a Hub failure
:class:`~hf_tbar.hub.HubPushError` (exit status 4); the ``hf-tbar`` boundary prints them as one line.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..hub.push import PushConfig, push_sanitized_model

logger = logging.getLogger(__name__)

HELP = "Publish a sanitized model on the Hub with a model card, behind a CA/ASR safety gate."


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
    public: bool = field(
        default=False,
        metadata={"help": "Create a new repository as public (the opposite of --private; not both)."},
    )

    def __post_init__(self) -> None:
        if not self.sanitized_dir:
            raise ConfigError("--sanitized_dir must name a folder")


DATACLASSES = (PushArguments, PushConfig)


def run(args: PushArguments, config: PushConfig) -> int:
    """Run the push; returns 0 on success.

    Raises:
        ConfigError: both ``--private`` and ``--public`` were given.
        SafetyGateError: the model fails the safety gate without ``--force`` (exit status 3).
        HubPushError: no token, or the Hub or the network refused the push (exit status 4).
        InputError: the folder has no report, is not a CLIP checkpoint, or a file holds the token.
    """
    if args.public:
        if config.private:
            raise ConfigError("--private and --public contradict each other: give one of them")
        config = dataclasses.replace(config, private=False)
    if args.dry_run_dir is not None and not config.dry_run:
        logger.info("--dry_run_dir given: running a dry run, nothing is sent to the Hub")
        config = dataclasses.replace(config, dry_run=True)
    result = push_sanitized_model(args.sanitized_dir, config, dry_run_dir=args.dry_run_dir)
    if result.dry_run:
        where = f" (written to {result.output_dir})" if result.output_dir else ""
        logger.info("dry run for %s: %d files%s", result.repo_id, len(result.files), where)
    else:
        logger.info("done: %s", result.pr_url or result.commit_url)
    return 0
