"""`dvc plots show` renders without network: the repo's .dvc/config points DVC at
plots_offline/template.html, which inlines Vega, Vega-Lite and Vega-Embed (DVC's default page
loads them from a CDN and stays blank offline).

test_template_is_the_pinned_build: the template holds DVC's placeholder, no CDN script and,
byte for byte, the npm builds its header names (sha256), with their licence beside it.
test_plots_render_offline: a small DVC repo with the repo's .dvc/config and one plot of each
kind the pipeline declares (dvclive curve, confusion, per-class bars), `dvc plots show`, and
the page opened by headless Chromium with every network request failing: each plot must have
drawn (Vega's canvas in the DOM, coloured pixels on a screenshot kept in test-artifacts/).
test_default_page_stays_blank_offline: the same check on DVC's default page finds nothing
drawn, so the check above tells the two pages apart. Skipped without Chromium (`make test`
installs Debian's).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "plots_offline" / "template.html"
BIN = Path(sys.executable).parent
ARTIFACTS = Path(os.environ.get("FINPIPE_TEST_ARTIFACTS", REPO / "test-artifacts"))

# The plots of dvc.yaml in miniature: a dvclive TSV curve, the evaluate stage's confusion rows
# and per-class F1 bars, each with the template and fields the pipeline uses.
DVC_YAML = """\
plots:
  - curve.tsv:
      x: step
  - confusion.json:
      template: confusion
      x: predicted
      y: actual
  - per_class.json:
      template: bar_horizontal
      x: f1
      y: class
"""
PLOTS = 3
CLASSES = ["strongly negative", "neutral", "strongly positive"]

# Every request that is not a local file fails: names resolve nowhere, and a proxy on a closed
# loopback port catches anything that bypasses name resolution.
OFFLINE_FLAGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
]
MARKS = re.compile(r"<(?:canvas|svg)\b[^>]*\bclass=\"marks\"")


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed (make test installs Debian's chromium when run as root)")
    return found


def test_template_is_the_pinned_build():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    # DVC resolves a relative html_template against the .dvc folder
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE
    page = TEMPLATE.read_text(encoding="utf-8")
    assert page.count("{plot_divs}") == 1
    assert "{scripts}" not in page, "DVC would fill {scripts} with its CDN <script src> tags"
    assert not re.search(r"<script[^>]+src=", page), "every script must be inline"
    header = page.split("-->", 1)[0]
    pinned = re.findall(r"(\S+@\S+) (\S+) sha256=([0-9a-f]{64})", header)
    assert [p[0].split("@")[0] for p in pinned] == ["vega", "vega-lite", "vega-embed"]
    for name, member, digest in pinned:
        marker = f"<script>/* {name} {member} (BSD-3-Clause) */\n"
        code = page.split(marker, 1)[1].split("\n</script>", 1)[0]
        assert hashlib.sha256(code.encode("utf-8")).hexdigest() == digest, f"{name} is not the build its header names"
    licence = (REPO / "plots_offline" / "LICENSE").read_text(encoding="utf-8")
    assert licence.count("Redistribution and use in source and binary forms") == 3


def _plot_repo(root: Path, html_template: bool) -> Path:
    """A DVC repo with the three plots; with html_template, the repo's own .dvc/config and
    template at the same relative place, so the config's path is exercised as it stands."""
    root.mkdir()
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    if html_template:
        shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
        (root / "plots_offline").mkdir()
        shutil.copy2(TEMPLATE, root / "plots_offline" / TEMPLATE.name)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "curve.tsv").write_text("step\tmacro_f1\n" + "".join(f"{s}\t{s / 200:.3f}\n" for s in range(20, 161, 20)))
    rows = [{"actual": a, "predicted": p} for a in CLASSES for p in CLASSES for _ in range(1 + 3 * (a == p))]
    (root / "confusion.json").write_text(json.dumps(rows))
    (root / "per_class.json").write_text(json.dumps([{"class": c, "f1": 0.5 + 0.1 * i} for i, c in enumerate(CLASSES)]))
    return root


def _show(root: Path) -> Path:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([str(BIN / "dvc"), "plots", "show", "-o", "out"], cwd=root, env=env, check=True, capture_output=True)
    return root / "out" / "index.html"


def _browse(chromium: str, page: Path, profile: Path, *action: str) -> str:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        *OFFLINE_FLAGS,
        f"--user-data-dir={profile}",
        "--window-size=1200,1600",
        "--virtual-time-budget=10000",
    ]
    out = subprocess.run([chromium, *flags, *action, page.as_uri()], capture_output=True, text=True, timeout=180, check=True)
    return out.stdout


def _coloured_fraction(png: Path) -> float:
    """Share of pixels that are not near-white: a page with no plot drawn has none."""
    from PIL import Image

    with Image.open(png) as img:
        grey = img.convert("L")
        hist = grey.histogram()
    return sum(hist[:230]) / (grey.width * grey.height)


def test_plots_render_offline(tmp_path):
    chromium = _chromium()
    page = _show(_plot_repo(tmp_path / "repo", html_template=True))
    assert "cdn.jsdelivr.net" not in page.read_text(encoding="utf-8")
    dom = _browse(chromium, page, tmp_path / "chromium", "--dump-dom")
    assert len(MARKS.findall(dom)) == PLOTS, f"Vega drew {len(MARKS.findall(dom))} of {PLOTS} plots offline"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dvc-plots-offline.png"
    _browse(chromium, page, tmp_path / "chromium", f"--screenshot={shot}")
    assert _coloured_fraction(shot) > 0.01, f"the page looks blank: {shot}"


def test_default_page_stays_blank_offline(tmp_path):
    """The break-check, kept: DVC's own page (no html_template) draws nothing offline."""
    chromium = _chromium()
    page = _show(_plot_repo(tmp_path / "repo", html_template=False))
    # should DVC's own page ever stop loading from a CDN, this fails: plots_offline/ can then go
    assert "cdn.jsdelivr.net" in page.read_text(encoding="utf-8")
    dom = _browse(chromium, page, tmp_path / "chromium", "--dump-dom")
    assert not MARKS.findall(dom), "DVC's CDN page drew plots: the browser was not offline"
