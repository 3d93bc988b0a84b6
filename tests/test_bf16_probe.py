"""`bf16: auto` on a CPU follows a measured matmul probe, not the CPU's flags alone."""

from __future__ import annotations

import json

import pytest
import torch

from finpipe import bf16_probe
from finpipe.training import bf16_available, use_bf16


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """A CPU-only host whose flags and matmul timings the test sets; the probe's caches empty,
    its disk cache in tmp_path. Returns a dict: flags, timings (bf16 s, fp32 s), probe calls."""
    state = {"flags": True, "timings": (0.002, 0.005), "calls": 0}

    def timings(reps: int = bf16_probe.REPS) -> tuple[float, float]:
        state["calls"] += 1
        return state["timings"]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bf16_probe, "cpu_advertises_bf16", lambda: state["flags"])
    monkeypatch.setattr(bf16_probe, "time_matmuls", timings)
    monkeypatch.setattr(bf16_probe, "_decided", {})
    monkeypatch.setenv("FINPIPE_BF16_PROBE_CACHE", str(tmp_path / "probe.json"))
    state["cache"] = tmp_path / "probe.json"
    return state


def test_auto_is_off_where_bf16_is_slower(cpu):
    cpu["timings"] = (0.008, 0.005)  # bf16 0.6x the fp32 speed: a CPU with the flag but no fast path
    assert use_bf16("auto") is False
    assert bf16_available() is False
    assert cpu["calls"] == 1


def test_auto_is_on_where_bf16_is_faster(cpu):
    cpu["timings"] = (0.002, 0.005)  # 2.5x, as on a Zen 4
    assert use_bf16("auto") is True


def test_auto_wants_a_clear_margin(cpu):
    cpu["timings"] = (0.0045, 0.005)  # 1.1x: autocast's casts would eat it
    assert use_bf16("auto") is False


def test_no_bf16_flag_means_off_without_probing(cpu):
    cpu["flags"] = False
    cpu["timings"] = (0.001, 0.005)
    assert use_bf16("auto") is False
    assert cpu["calls"] == 0


def test_explicit_settings_skip_the_probe(cpu):
    assert use_bf16(True) is True
    assert use_bf16(False) is False
    assert cpu["calls"] == 0


def test_probe_runs_once_per_process_and_is_kept_on_disk(cpu, monkeypatch):
    cpu["timings"] = (0.002, 0.005)
    assert use_bf16("auto") is True
    assert use_bf16("auto") is True
    assert cpu["calls"] == 1
    saved = json.loads(cpu["cache"].read_text())
    (entry,) = saved.values()
    assert entry["bf16"] is True and entry["speedup"] == pytest.approx(2.5)
    assert f"{torch.get_num_threads()} threads" in next(iter(saved))
    # a new process (empty in-process cache) reads the disk, even if timings would now differ
    monkeypatch.setattr(bf16_probe, "_decided", {})
    cpu["timings"] = (0.008, 0.005)
    assert use_bf16("auto") is True
    assert cpu["calls"] == 1


def test_cache_is_per_thread_count(cpu, monkeypatch):
    cpu["timings"] = (0.002, 0.005)
    assert use_bf16("auto") is True
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        cpu["timings"] = (0.008, 0.005)
        assert use_bf16("auto") is False  # another key: measured again
    finally:
        torch.set_num_threads(threads)
    assert cpu["calls"] == 2
    assert use_bf16("auto") is True  # the first answer, from the cache


def test_disk_cache_can_be_turned_off(cpu, monkeypatch):
    monkeypatch.setenv("FINPIPE_BF16_PROBE_CACHE", "0")
    assert use_bf16("auto") is True
    assert not cpu["cache"].exists()


def test_the_real_probe_times_both_dtypes():
    bf16_s, fp32_s = bf16_probe.time_matmuls(reps=1)
    assert 0 < bf16_s < 10 and 0 < fp32_s < 10


def test_gpus_keep_their_own_answer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(bf16_probe, "bf16_pays_off", lambda: pytest.fail("a GPU host must not probe the CPU"))
    assert bf16_available() is True
