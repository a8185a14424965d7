"""Task arithmetic streamed over safetensors checkpoints, one chunk of one tensor in memory at a time.

TBAR's negation ``theta_clean = theta_b - alpha * (theta_t - theta_b)`` only needs, for each tensor, the
same tensor of the two checkpoints. This package computes it without building any model: tensors are
read in row chunks as zero-copy views on memory maps of the files (headers validated with
:func:`safetensors.safe_open`), combined in float32 (no conversion for float32 tensors), cast back to
each tensor's dtype and written straight into output shards whose layout is planned from the input
headers (and whose disk space is reserved up front), so peak memory stays at a few chunks (tens of MiB)
whatever the size of the model or shards. The calling thread maps chunks while two worker threads, each
on one torch thread (the setting is restored afterwards), compute them, check them for NaN/Inf and
write them at their place in the file.
Every output goes through :func:`hf_tbar.io.atomic_output_dir` or :func:`hf_tbar.io.atomic_output_file`:
an error, a full disk or Ctrl-C leaves nothing at the output path, and inputs are only ever read.

Modules, one job each:

- :mod:`.checkpoint`: read and validate checkpoint headers (never the data; pickles refused),
- :mod:`.checks`: compare two checkpoints and vet the output location,
- :mod:`.reader`: read row chunks of tensors through bounded memory maps,
- :mod:`.kernels`: the per-chunk tensor maths and the finiteness check,
- :mod:`.writer`: write one safetensors file whose layout is fixed up front,
- :mod:`.shards`: shard sizes, planning and the index file,
- :mod:`.engine`: the one per-tensor loop that streams jobs into files,
- :mod:`.api`: the public functions.
"""

from .api import stream_apply_vector, stream_task_arithmetic, stream_task_vector
from .shards import parse_size

__all__ = ["parse_size", "stream_apply_vector", "stream_task_arithmetic", "stream_task_vector"]
