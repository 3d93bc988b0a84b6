"""The evaluate stage's report: the same content as Markdown and as one self-contained HTML
file (plots embedded as PNG), plus the plot data DVC renders (`dvc plots show`)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finpipe.config import Evaluate

Block = tuple[str, Any]

NAMES = {
    "macro_f1": "macro-F1",
    "micro_f1": "micro-F1",
    "accuracy": "accuracy",
    "cosine": "cosine",
    "mae_steps": "MAE (class steps)",
    "spearman": "Spearman",
    "pearson": "Pearson",
    "mse": "MSE",
}


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _weak_evidence(s: dict[str, Any], cfg: Evaluate) -> list[str]:
    """Why a verdict on this task rests on little: too few test items, too few seeds."""
    why = []
    if s["test_items"] < cfg.min_test_items:
        why.append(f"only {s['test_items']} test items (evaluate.min_test_items: {cfg.min_test_items})")
    seeds = min(len(v["seeds"]) for v in s["variants"].values())
    if seeds < cfg.min_seeds:
        why.append(
            f"{seeds} seed{'s' if seeds != 1 else ''} per variant, so seed-to-seed variation is not in the interval"
            if seeds == 1
            else f"{seeds} seeds per variant (evaluate.min_seeds: {cfg.min_seeds})"
        )
    return why


def _verdict(c: dict[str, Any], weak: list[str] | None = None) -> str:
    if not c["excludes_zero"]:
        verdict = "the interval includes zero: no evidence of a difference"
    else:
        verdict = "the interval excludes zero: adapted is " + ("better" if c["difference"] > 0 else "worse")
    if weak and c["excludes_zero"]:
        return (
            f"{verdict}, but the evidence is weak: {'; '.join(weak)}. Add seeds (finetune.seeds) and test items before concluding"
        )
    if weak:
        return f"{verdict} ({'; '.join(weak)})"
    return verdict


def _levels(c: dict[str, Any]) -> str:
    return c.get("resampled", "test items")


def headline(s: dict[str, Any], cfg: Evaluate) -> str:
    metric = s["headline"]
    label = f"**{s['task']}** ({s['kind']}, {s['test_items']} test items"
    seeds = {v: len(x["seeds"]) for v, x in s["variants"].items()}
    label += f", seeds per variant: {', '.join(f'{v} {n}' for v, n in seeds.items())})"
    c = s["comparison"].get(metric)
    if c is None:
        means = ", ".join(f"{v} {_fmt(x['mean'].get(metric))}" for v, x in s["variants"].items())
        return f"{label}: {NAMES.get(metric, metric)} {means} (no adapted/base pair to compare)"
    pct = int(round(cfg.confidence * 100))
    return (
        f"{label}: domain pretraining changed {NAMES.get(metric, metric)} by {_fmt(c['difference'], True)} "
        f"({pct}% CI {_fmt(c['ci_low'], True)} to {_fmt(c['ci_high'], True)}; bootstrap over {_levels(c)}); "
        f"{_verdict(c, _weak_evidence(s, cfg))}"
    )


def blocks(summaries: Sequence[dict[str, Any]], cfg: Evaluate, images: dict[str, str] | None = None) -> list[Block]:
    images = images or {}
    out: list[Block] = [("h1", "What domain pretraining bought"), ("ul", [headline(s, cfg) for s in summaries])]
    pct = int(round(cfg.confidence * 100))
    for s in summaries:
        out.append(("h2", f"{s['task']} ({s['kind']}, dataset {s['dataset']})"))
        variants = list(s["variants"])
        keys = [k for k in NAMES if any(k in s["variants"][v]["mean"] for v in variants)]
        keys += sorted({k for v in variants for k in s["variants"][v]["mean"] if k.startswith("f1_")})
        rows = []
        for k in keys:
            row = [NAMES.get(k, k)]
            for v in variants:
                m, sd = s["variants"][v]["mean"].get(k), s["variants"][v]["std"].get(k)
                row.append(f"{_fmt(m)} ± {_fmt(sd)}" if len(s["variants"][v]["seeds"]) > 1 else _fmt(m))
            c = s["comparison"].get(k)
            row += [_fmt(c["difference"], True), f"[{_fmt(c['ci_low'], True)}, {_fmt(c['ci_high'], True)}]"] if c else ["", ""]
            rows.append(row)
        header = ["metric (test)", *[f"{v} (mean ± std over seeds)" for v in variants], "adapted − base", f"{pct}% CI"]
        out.append(("table", (header, rows)))
        if s["comparison"]:
            seeds = sorted({seed for c in s["comparison"].values() for seed in c["per_seed"]}, key=int)
            out.append(("p", "Adapted − base per seed (same seed, same test set):"))
            out.append(
                (
                    "table",
                    (
                        ["metric", *[f"seed {x}" for x in seeds]],
                        [
                            [NAMES.get(m, m), *[_fmt(c["per_seed"].get(x), True) for x in seeds]]
                            for m, c in s["comparison"].items()
                        ],
                    ),
                )
            )
        for key in (f"{s['task']}-confusion", f"{s['task']}-per-class", f"{s['task']}-curves"):
            if key in images:
                out.append(("img", (key, images[key])))
    if cfg.baselines:
        out.append(("h2", "Published baselines"))
        by_task = {s["task"]: s for s in summaries}
        rows = []
        for b in cfg.baselines:
            s = by_task.get(b.task)
            ours = [
                _fmt(s["variants"][v]["mean"].get(b.metric)) if s and v in s["variants"] else "n/a" for v in ("adapted", "base")
            ]
            rows.append([b.task, NAMES.get(b.metric, b.metric), _fmt(b.value), *ours, b.source])
        out.append(("table", (["task", "metric", "published", "ours (adapted)", "ours (base)", "source"], rows)))
    out.append(("h2", "How to read this"))
    out.append(
        (
            "p",
            (
                f"Every number is on the test split, which no training or model selection saw (early stopping uses dev). "
                f"Variant means are over seeds. The interval is a two-level paired percentile bootstrap "
                f"({cfg.bootstrap_resamples} resamples, seed {cfg.seed}): each resample draws seeds with replacement "
                f"(adapted and base of one seed stay a pair), then test items, and scores the drawn runs of both variants "
                f"on the same items, so it covers test-set sampling and seed-to-seed variation. With one seed per variant "
                f"it covers test items only, and with a few seeds it knows only the spread among those: each task's "
                f"headline says which, and its number of test items. "
                f"n/a marks a metric that is undefined for the run (Spearman or Pearson of a constant prediction or gold): "
                f"null in metrics.json, and left out of seed means. "
                f"Sentiment classes from an ordinal (CORAL) head are the median class of the predicted distribution."
            ),
        )
    )
    return out


def render_markdown(summaries: Sequence[dict[str, Any]], cfg: Evaluate) -> str:
    lines: list[str] = []
    for kind, body in blocks(summaries, cfg):
        if kind == "h1":
            lines += [f"# {body}", ""]
        elif kind == "h2":
            lines += [f"## {body}", ""]
        elif kind == "ul":
            lines += [f"- {x}" for x in body] + [""]
        elif kind == "p":
            lines += [body, ""]
        elif kind == "table":
            header, rows = body
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]
    return "\n".join(lines)


def _md_inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_html(summaries: Sequence[dict[str, Any]], cfg: Evaluate, images: dict[str, str]) -> str:
    body: list[str] = []
    for kind, content in blocks(summaries, cfg, images):
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_md_inline(x)}</li>" for x in content) + "</ul>")
        elif kind == "p":
            body.append(f"<p>{_md_inline(content)}</p>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img":
            name, data = content
            body.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"/></figure>')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>finbert-pipeline report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


# --- plots ------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _read_tsv(path: Path) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split("\t")
        xs.append(float(parts[0]))
        ys.append(float(parts[-1]))
    return xs, ys


def write_plots(
    plot_dir: Path, summaries: Sequence[dict[str, Any]], runs: dict[tuple[str, str], list[Any]], curves: Path | None
) -> dict[str, str]:
    """DVC plot data (confusion rows, per-class F1) under plot_dir, and PNGs for the HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, str] = {}
    (plot_dir / "confusion").mkdir(parents=True, exist_ok=True)
    (plot_dir / "per_class").mkdir(parents=True, exist_ok=True)
    for s in summaries:
        group = runs[(s["kind"], s["task"])]
        variants = list(s["variants"])
        if s["kind"] == "sentiment" and "classes" in s["outputs"]:
            labels = group[0].meta["labels"]
            fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 4.2), squeeze=False)
            for ax, v in zip(axes[0], variants, strict=True):
                rows = [{"actual": r["gold"], "predicted": r["label"]} for run in group if run.variant == v for r in run.rows]
                (plot_dir / "confusion" / f"{s['task']}-{v}.json").write_text(json.dumps(rows))
                total = [[0] * len(labels) for _ in labels]
                for run_key, m in s["per_run"].items():
                    if run_key.startswith(f"{v}-s"):
                        for i, row in enumerate(m["confusion_matrix"]):
                            for j, c in enumerate(row):
                                total[i][j] += c
                ax.imshow(total, cmap="Blues")
                for i, row in enumerate(total):
                    for j, c in enumerate(row):
                        ax.text(j, i, str(c), ha="center", va="center", fontsize=8)
                ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
                ax.set_yticks(range(len(labels)), labels, fontsize=8)
                ax.set_xlabel("predicted")
                ax.set_ylabel("actual")
                ax.set_title(f"{s['task']}: {v} (all seeds)")
            images[f"{s['task']}-confusion"] = _png(fig)
        f1_keys = sorted({k for v in variants for k in s["variants"][v]["mean"] if k.startswith("f1_")})
        if f1_keys:
            names = [k.removeprefix("f1_") for k in f1_keys]
            fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5))
            height = 0.8 / len(variants)
            for n, v in enumerate(variants):
                vals = [s["variants"][v]["mean"].get(k, 0.0) for k in f1_keys]
                (plot_dir / "per_class" / f"{s['task']}-{v}.json").write_text(
                    json.dumps([{"class": c, "f1": x} for c, x in zip(names, vals, strict=True)])
                )
                ax.barh([i + n * height for i in range(len(names))], vals, height=height, label=v)
            ax.set_yticks([i + height * (len(variants) - 1) / 2 for i in range(len(names))], names)
            ax.set_xlabel("F1 on test (mean over seeds)")
            ax.set_xlim(0, 1)
            ax.legend()
            ax.set_title(f"{s['task']}: per-{'type' if s['kind'] == 'ner' else 'class'} F1")
            images[f"{s['task']}-per-class"] = _png(fig)
        if curves is not None:
            metric = s["headline"]
            declared = {f"{r.variant}-s{r.seed}" for r in runs[(s["kind"], s["task"])]}  # not stale folders
            found = sorted((curves / s["kind"] / s["task"]).glob(f"*/live/plots/metrics/eval/{metric}.tsv"))
            found = [p for p in found if p.parents[4].name in declared]
            if found:
                fig, ax = plt.subplots(figsize=(7, 3.5))
                for path in found:
                    xs, ys = _read_tsv(path)
                    ax.plot(xs, ys, marker="o", markersize=3, label=path.parents[4].name)
                ax.set_xlabel("optimizer step")
                ax.set_ylabel(f"dev {NAMES.get(metric, metric)}")
                ax.legend(fontsize=8)
                ax.set_title(f"{s['task']}: dev {NAMES.get(metric, metric)} during fine-tuning")
                images[f"{s['task']}-curves"] = _png(fig)
    return images
