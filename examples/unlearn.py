"""TBAR as an Accelerate script: ``accelerate launch examples/unlearn.py --attack badnets``.

The same arguments as ``hf-tbar unlearn`` (``--config file.yaml`` accepted).
"""

from __future__ import annotations

import sys

from hf_tbar.cli import main

if __name__ == "__main__":
    sys.exit(main(["unlearn", *sys.argv[1:]]))
