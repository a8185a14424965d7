"""TBAR as an Accelerate script: ``accelerate launch examples/unlearn.py --attack badnets``.

The same arguments as ``hf-tbar unlearn`` (``--config file.yaml`` accepted), parsed into its dataclasses and
handed to one library call, :func:`hf_tbar.pipeline.run`, as TRL's scripts hand theirs to a trainer. The trigger
fine-tuning runs on every process Accelerate starts (see ``examples/accelerate/`` for DDP, FSDP and DeepSpeed
ZeRO-2 configs); on CPU, start the processes with ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2
examples/unlearn.py ...``.
"""

from __future__ import annotations

import logging
import sys

from accelerate import PartialState

from hf_tbar import pipeline
from hf_tbar.cli import LOG_DATE_FORMAT, LOG_FORMAT, parse_command
from hf_tbar.cli.common import outcome_summary
from hf_tbar.cli.recorded import recorded_command

logger = logging.getLogger("unlearn")


def main(argv: list[str]) -> int:
    args, data_args, config, search, detection, model_args, gate = parse_command("unlearn", argv)
    command = recorded_command(
        args, data_args, config, search, detection, model_args, gate
    )  # the card's line
    done = pipeline.run(
        args, data_args, config, search, detection, gate, command=command, model_args=model_args
    )
    summary = outcome_summary(done.result, done.data.task.num_classes)
    logger.info("%s; sanitized model in %s", summary, args.output_dir)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    status = main(sys.argv[1:])
    # Tear the process group down before exit (gloo otherwise aborts at interpreter shutdown).
    PartialState().destroy_process_group()
    sys.exit(status)
