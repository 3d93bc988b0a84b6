"""Run a command so that it dies with the process that started it.

A Dask worker killed in the middle of a stage (the OOM killer, a lost node, `kill -9`) cannot
clean up: the `dvc repro` it started, and the stage command under it, would run on as orphans,
competing with the retry for the same cores. This wrapper asks the kernel for SIGTERM when its
parent dies (Linux `PR_SET_PDEATHSIG`; elsewhere it only forwards signals), runs the command in
a process group of its own, and on SIGTERM/SIGINT kills that whole group, dvc's children
included (dvc starts stage commands in its own group).

    python -m flows.stage_guard -- CMD [ARG...]

Exit status: the command's, or 128+N when it ended by signal N.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> bool:
    """Ask for SIGTERM when the parent dies; False where the kernel cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m flows.stage_guard -- CMD [ARG...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 128 + signal.SIGTERM
    proc = subprocess.Popen(argv, start_new_session=True)

    def _kill_group(signum: int, frame: FrameType | None) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, _kill_group)
    signal.signal(signal.SIGINT, _kill_group)
    rc = proc.wait()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
