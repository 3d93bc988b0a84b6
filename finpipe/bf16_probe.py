"""Does bf16 autocast pay off on this CPU? Measured, not guessed from flags.

A CPU flag says the instructions exist, not that they are fast: on an AMD Zen 4 (AVX-512 BF16,
no AMX) a bf16 matmul runs at about twice the fp32 rate, while a Xeon with oneDNN capped below
AMX ran bf16 slower than fp32, and an AVX2 CPU emulates it more than 10x slower. So where the
CPU advertises bf16 at all, `bf16_pays_off` times one autocast linear layer at a BERT-like shape
(1024 tokens x 384 -> 1536, weights cast per call as autocast does in training) in bf16 and in
fp32, a few tens of milliseconds in all, and says yes when bf16 is at least `MIN_SPEEDUP` times
faster. The answer is cached in-process per thread count and on disk per CPU model, torch
version, thread count and oneDNN ISA cap (`FINPIPE_BF16_PROBE_CACHE`: the JSON file to use; an
empty value or 0 turns the disk cache off), so every process on one machine decides alike and
a rerun does not flip on timing noise.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.2  # bf16 must beat fp32 by this factor: autocast also casts and keeps norms in fp32
SHAPE = (1024, 384, 1536)  # tokens, in, out: one BERT-base-like feed-forward matmul of a small batch
REPS = 3
_decided: dict[str, dict[str, Any]] = {}


def cpu_advertises_bf16() -> bool:
    """AVX-512 BF16 or AMX, as torch reports them."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key() -> str:
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "-"
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | oneDNN ISA {isa}"


def cache_file() -> Path | None:
    setting = os.environ.get("FINPIPE_BF16_PROBE_CACHE")
    if setting is not None:
        return Path(setting) if setting not in ("", "0") else None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "finpipe" / "bf16_probe.json"


def time_matmuls(reps: int = REPS) -> tuple[float, float]:
    """(best bf16 seconds, best fp32 seconds) of one autocast linear at SHAPE, interleaved."""
    tokens, n_in, n_out = SHAPE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(tokens, n_in, generator=gen), torch.randn(n_out, n_in, generator=gen)

    def once(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            F.linear(x, w)
        return time.perf_counter() - t0

    once(True), once(False)  # kernel selection / JIT: not part of the steady state
    bf16 = fp32 = float("inf")
    for _ in range(reps):
        bf16, fp32 = min(bf16, once(True)), min(fp32, once(False))
    return bf16, fp32


def _read(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path | None, key: str, entry: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        data = _read(path)
        data[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as err:  # a read-only home is no reason to fail a run
        log.debug("bf16 probe: cannot write %s: %s", path, err)


def probe() -> dict[str, Any]:
    """The cached decision for this CPU and thread count, measuring once if there is none:
    {"bf16": bool, "bf16_ms", "fp32_ms", "speedup", "key"}. Assumes cpu_advertises_bf16()."""
    key = cache_key()
    if key in _decided:
        return _decided[key]
    path = cache_file()
    entry = _read(path).get(key)
    if not (isinstance(entry, dict) and isinstance(entry.get("bf16"), bool)):
        bf16_s, fp32_s = time_matmuls()
        speedup = fp32_s / bf16_s if bf16_s > 0 else float("inf")
        entry = {
            "bf16": speedup >= MIN_SPEEDUP,
            "bf16_ms": round(bf16_s * 1e3, 3),
            "fp32_ms": round(fp32_s * 1e3, 3),
            "speedup": round(speedup, 3),
        }
        _write(path, key, entry)
        log.info(
            "bf16 probe (%s): autocast linear %s in %.2f ms bf16, %.2f ms fp32 (%.2fx): bf16 %s",
            key,
            "x".join(map(str, SHAPE)),
            entry["bf16_ms"],
            entry["fp32_ms"],
            speedup,
            "on" if entry["bf16"] else "off",
        )
    _decided[key] = {**entry, "key": key}
    return _decided[key]


def bf16_pays_off() -> bool:
    """bf16 autocast on this CPU: only where the CPU advertises bf16, and the probe finds it faster."""
    return cpu_advertises_bf16() and probe()["bf16"]
