"""Which stage failures the flow retries: only those a rerun could fix."""

from __future__ import annotations

import pytest

from flows.dvc_stage import StageFailed, TransientStageError, classify

RAN = "Running stage 'pretrain':\n> finpipe pretrain --params params.yaml"


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize(
    "returncode, output, expected, says",
    [
        (0, RAN, None, None),
        # finpipe's own one-line error (a user error): deterministic
        (
            255,
            f"{RAN}\nfinpipe pretrain: error: pretrain.train.learning_rate: must be > 0\n"
            "ERROR: failed to reproduce 'pretrain': failed to run: finpipe pretrain, exited with 1",
            StageFailed,
            "learning_rate",
        ),
        # DVC refused before running the command: a params key the stage tracks is missing
        (
            255,
            "ERROR: failed to reproduce 'pretrain': Parameters 'pretrain.train.seed' are missing from 'params.yaml'.",
            StageFailed,
            "are missing",
        ),
        (254, "ERROR: unable to read: 'dvc.yaml', YAML file structure is corrupted", StageFailed, "dvc.yaml"),
        (253, "ERROR: you are not inside of a DVC repository", StageFailed, "DVC repository"),
        # the command was killed (OOM killer, kill -9): may pass on retry
        (
            255,
            f"{RAN}\nERROR: failed to reproduce 'pretrain': failed to run: finpipe pretrain, exited with -9",
            TransientStageError,
            "-9",
        ),
        # a traceback from deep inside a library is not a known user error: retried
        (
            255,
            f"{RAN}\nTraceback (most recent call last):\nOSError: [Errno 5] Input/output error\n"
            "ERROR: failed to reproduce 'pretrain': failed to run: finpipe pretrain, exited with 1",
            TransientStageError,
            "exited with 1",
        ),
        # another dvc process holds the lock; or dvc itself crashed
        (
            255,
            "ERROR: Unable to acquire lock. Most likely another DVC process is running or was terminated abruptly.",
            TransientStageError,
            "255",
        ),
        (255, "ERROR: unexpected error - [Errno 104] Connection reset by peer", TransientStageError, "255"),
        (-9, RAN, TransientStageError, "-9"),
    ],
)
def test_classify(returncode: int, output: str, expected: type | None, says: str | None) -> None:
    error = classify("pretrain", returncode, lines(output))
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert says in str(error)
