"""torch threads of a training stage, from `runtime.threads`.

Why a param and not "all cores": the thread count decides how float sums are split, so it
changes the trained model (and, through early stopping, how long it trains). Declared in
dvc.yaml by every training stage, it is recorded in dvc.lock and the run-cache like any other
input, and a sequential `dvc repro` and a fan-out (`finpipe flow --concurrency N`) train the same
models; so does a machine with another number of cores, given the same CPU kind and libraries.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def apply_threads(threads: int) -> None:
    """Set torch's intra-op threads to `threads`, whatever OMP_NUM_THREADS says (the fan-out and
    Dask's nanny set it for their own reasons; the recorded param is what the model depends on)."""
    import torch  # here, so that the flow can ask usable_cores() without loading torch

    torch.set_num_threads(threads)
    cores = usable_cores()
    if threads > cores:
        log.warning(
            "runtime.threads is %d but only %d cores are usable here: the threads share cores, which is "
            "slower than %d threads would be (same results; lowering the param retrains the stage)",
            threads,
            cores,
            cores,
        )
    else:
        log.info("torch threads: %d (runtime.threads; %d cores usable)", threads, cores)
