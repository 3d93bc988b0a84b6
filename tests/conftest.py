"""Shared fixtures. Offline by design: no hub look-ups, no telemetry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("FINPIPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set FINPIPE_DATA)")
    return REAL_DATA
