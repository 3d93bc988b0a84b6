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
from finpipe.evaluation import REFERENCE, pair_seeds, run_name, split_run, variant_order

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


def _weak_evidence(s: dict[str, Any], cfg: Evaluate, variant: str) -> list[str]:
    """Why a verdict on variant - base rests on little: too few test items, too few seeds."""
    why = []
    if s["test_items"] < cfg.min_test_items:
        why.append(f"only {s['test_items']} test items (evaluate.min_test_items: {cfg.min_test_items})")
    seeds = pair_seeds(s, variant)
    if seeds < cfg.min_seeds:
        why.append(
            f"{seeds} seed{'s' if seeds != 1 else ''} per variant, so seed-to-seed variation is not in the interval"
            if seeds == 1
            else f"{seeds} seeds per variant (evaluate.min_seeds: {cfg.min_seeds})"
        )
    return why


def _verdict(c: dict[str, Any], variant: str, weak: list[str] | None = None) -> str:
    if not c["excludes_zero"]:
        verdict = "the interval includes zero: no evidence of a difference"
    else:
        verdict = f"the interval excludes zero: {variant} is " + ("better" if c["difference"] > 0 else "worse")
    if weak and c["excludes_zero"]:
        return (
            f"{verdict}, but the evidence is weak: {'; '.join(weak)}. Add seeds (finetune.seeds) and test items before concluding"
        )
    if weak:
        return f"{verdict} ({'; '.join(weak)})"
    return verdict


def _verdict_cell(c: dict[str, Any], weak: list[str]) -> str:
    """The verdict in a table cell: what the interval says, and the weak-evidence flag."""
    verdict = ("excludes zero: " + ("better" if c["difference"] > 0 else "worse")) if c["excludes_zero"] else "includes zero"
    return f"{verdict}; weak evidence: {'; '.join(weak)}" if weak else verdict


def _levels(c: dict[str, Any]) -> str:
    return c.get("resampled", "test items")


def _ci(c: dict[str, Any], cfg: Evaluate) -> str:
    return f"{int(round(cfg.confidence * 100))}% CI [{_fmt(c['ci_low'], True)}, {_fmt(c['ci_high'], True)}]"


def _mean_std(v: dict[str, Any], metric: str) -> str:
    """A variant's seed mean, with the std over seeds where it had more than one."""
    m, sd = v["mean"].get(metric), v["std"].get(metric)
    return f"{_fmt(m)} ± {_fmt(sd)}" if len(v["seeds"]) > 1 else _fmt(m)


def winner_line(s: dict[str, Any], cfg: Evaluate) -> str:
    """Which variant has the best mean headline metric, and what its gain over base is worth."""
    metric = s["headline"]
    name = NAMES.get(metric, metric)
    winner = s["winner"]
    if REFERENCE not in s["variants"]:
        means = ", ".join(f"{v} {_fmt(x['mean'].get(metric))}" for v, x in s["variants"].items())
        return f"{name} {means} (no {REFERENCE} variant to compare with)"
    if winner is None or winner == REFERENCE:
        return f"no variant beat {REFERENCE} on {name} ({REFERENCE} {_fmt(s['variants'][REFERENCE]['mean'].get(metric))})"
    c = s["comparison"][winner][metric]
    return (
        f"winner: {winner} ({_fmt(c['difference'], True)} {name} over {REFERENCE}, {_ci(c, cfg)}; "
        f"bootstrap over {_levels(c)}); {_verdict(c, winner, _weak_evidence(s, cfg, winner))}"
    )


def headline(s: dict[str, Any], cfg: Evaluate) -> str:
    label = f"**{s['task']}** ({s['kind']}, {s['test_items']} test items"
    seeds = {v: len(x["seeds"]) for v, x in s["variants"].items()}
    label += f", seeds per variant: {', '.join(f'{v} {n}' for v, n in seeds.items())})"
    return f"{label}: {winner_line(s, cfg)}"


def _headline_table(s: dict[str, Any], cfg: Evaluate) -> Block:
    """Each variant's headline mean, its difference from base with the interval, the verdict
    (with the weak-evidence flag)."""
    metric = s["headline"]
    pct = int(round(cfg.confidence * 100))
    rows = []
    for v, x in s["variants"].items():
        c = s["comparison"].get(v, {}).get(metric)
        if v == REFERENCE:
            rows.append([f"{v} (reference)", _mean_std(x, metric), "", "", ""])
        elif c is None:
            rows.append([v, _mean_std(x, metric), "n/a", "n/a", f"no {REFERENCE} variant to compare with"])
        else:
            ci = f"[{_fmt(c['ci_low'], True)}, {_fmt(c['ci_high'], True)}]"
            rows.append([v, _mean_std(x, metric), _fmt(c["difference"], True), ci, _verdict_cell(c, _weak_evidence(s, cfg, v))])
    name = NAMES.get(metric, metric)
    header = ["variant", f"{name} (mean ± std over seeds)", f"− {REFERENCE}", f"{pct}% CI", "the interval"]
    return ("table", (header, rows))


def _metrics_table(s: dict[str, Any]) -> Block:
    """Every metric (rows) of every variant (columns), means over seeds."""
    variants = list(s["variants"])
    keys = [k for k in NAMES if any(k in s["variants"][v]["mean"] for v in variants)]
    keys += sorted({k for v in variants for k in s["variants"][v]["mean"] if k.startswith("f1_")})
    rows = [[NAMES.get(k, k), *[_mean_std(s["variants"][v], k) for v in variants]] for k in keys]
    return ("table", (["metric (test)", *variants], rows))


def _differences_table(s: dict[str, Any], cfg: Evaluate) -> Block:
    """Each variant - base on every compared metric: the bootstrap's estimate and interval,
    and the difference per seed (same seed, same test set) where both ran it."""
    pct = int(round(cfg.confidence * 100))
    seeds = sorted({x for by in s["comparison"].values() for c in by.values() for x in c["per_seed"]}, key=int)
    rows = [
        [
            v,
            NAMES.get(m, m),
            _fmt(c["difference"], True),
            f"[{_fmt(c['ci_low'], True)}, {_fmt(c['ci_high'], True)}]",
            *[_fmt(c["per_seed"].get(x), True) for x in seeds],
        ]
        for v, by in s["comparison"].items()
        for m, c in by.items()
    ]
    return ("table", (["variant", "metric", f"− {REFERENCE}", f"{pct}% CI", *[f"seed {x}" for x in seeds]], rows))


def _baselines_table(summaries: Sequence[dict[str, Any]], cfg: Evaluate) -> Block:
    by_task = {s["task"]: s for s in summaries}
    variants = variant_order(v for s in summaries for v in s["variants"])
    rows = []
    for b in cfg.baselines:
        s = by_task.get(b.task)
        ours = [_fmt(s["variants"][v]["mean"].get(b.metric)) if s and v in s["variants"] else "n/a" for v in variants]
        rows.append([b.task, NAMES.get(b.metric, b.metric), _fmt(b.value), *ours, b.source])
    return ("table", (["task", "metric", "published", *[f"ours ({v})" for v in variants], "source"], rows))


def blocks(summaries: Sequence[dict[str, Any]], cfg: Evaluate, images: dict[str, str] | None = None) -> list[Block]:
    images = images or {}
    out: list[Block] = [("h1", "What domain pretraining bought")]
    if cfg.note:  # e.g. that the numbers come from synthetic data: read before any number
        out.append(("p", f"**Note:** {cfg.note}"))
    out.append(("ul", [headline(s, cfg) for s in summaries]))
    for s in summaries:
        out.append(("h2", f"{s['task']} ({s['kind']}, dataset {s['dataset']})"))
        out.append(("p", winner_line(s, cfg)))
        out.append(_headline_table(s, cfg))
        out.append(("p", "Every metric, mean ± std over seeds:"))
        out.append(_metrics_table(s))
        if s["comparison"]:
            out.append(("p", f"Each variant − {REFERENCE}, with the difference per seed (same seed, same test set):"))
            out.append(_differences_table(s, cfg))
        for key in (f"{s['task']}-confusion", f"{s['task']}-per-class", f"{s['task']}-curves"):
            if key in images:
                out.append(("img", (key, images[key])))
    if cfg.baselines:
        out.append(("h2", "Published baselines"))
        out.append(_baselines_table(summaries, cfg))
    out.append(("h2", "How to read this"))
    out.append(
        (
            "p",
            (
                f"Every number is on the test split, which no training or model selection saw (early stopping uses dev). "
                f"Variants: {REFERENCE} (the base model, no domain pretraining: the reference), adapted (domain-adaptive "
                f"pretraining on the corpus), base-tapt and adapted-tapt (task-adaptive pretraining on the task's own "
                f"train texts, from base or from adapted); each other variant is compared with {REFERENCE}. "
                f"Variant means are over seeds. Each interval is a two-level paired percentile bootstrap "
                f"({cfg.bootstrap_resamples} resamples, seed {cfg.seed}): each resample draws seeds with replacement "
                f"(the variant and {REFERENCE} of one seed stay a pair), then test items, and scores the drawn runs of both "
                f"variants on the same items, so it covers test-set sampling and seed-to-seed variation. With one seed per "
                f"variant it covers test items only, and with a few seeds it knows only the spread among those: each "
                f"task's headline says which, and its number of test items. "
                f"The winner is the variant with the highest mean headline metric ({REFERENCE} included). Each interval "
                f"holds for one comparison on its own: the winner was picked for being highest, which flatters its gain, "
                f"and with several variants one interval excluding zero by chance alone is likelier than with one. "
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
# PNGs for report.html (matplotlib) and the rows `dvc plots show` draws (dvc.yaml's `plots:`
# under the evaluate stage: confusion rows per task and variant, per-class F1 bars).


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # tight bbox on top of each figure's constrained layout: nothing drawn outside the axes
    # (rotated tick labels, outside legends) is cut off at the edge of the PNG
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def _colours(variants: Sequence[str]) -> dict[str, str]:
    """One colour per variant, in the task's variant order (base first), the same in every
    figure of the task, so a variant is found by its colour across the bars and the curves."""
    return {v: f"C{i % 10}" for i, v in enumerate(variants)}


def _confusion_total(s: dict[str, Any], variant: str, k: int) -> list[list[int]]:
    """The variant's confusion matrix summed over its seeds (rows: actual, columns: predicted).
    Run keys are <variant>-s<seed> and a variant may contain '-' (base-tapt): split_run takes
    the last -s<digits>, so `base` never collects `base-tapt`'s runs."""
    total = [[0] * k for _ in range(k)]
    for run_key, m in s["per_run"].items():
        if split_run(run_key)[0] == variant:
            for i, row in enumerate(m["confusion_matrix"]):
                for j, c in enumerate(row):
                    total[i][j] += c
    return total


def _confusion_figure(task: str, labels: list[str], totals: dict[str, list[list[int]]]) -> Any:
    """One heat map per variant sharing the class axis: side by side for two, two per row for
    more (four in a row would be shrunk below legibility in the report's page width). Class
    names such as "strongly negative" are long: the x labels are rotated and anchored at their
    end and drawn under every panel (a panel above an empty slot has no panel below to show
    them), the y labels appear once per row (left column), and constrained layout sizes the axes
    around them."""
    import matplotlib.pyplot as plt

    n = len(totals)
    cols = n if n <= 2 else 2
    rows = -(-n // cols)
    side = max(3.2, 0.55 * len(labels) + 1.2)  # cells stay readable with more classes
    fig, grid = plt.subplots(
        rows, cols, figsize=(side * cols + 1.6, (side + 1.4) * rows), squeeze=False, sharey=True, layout="constrained"
    )
    axes = list(grid.ravel())
    for spare in axes[n:]:  # an odd number of variants leaves the last slot empty
        fig.delaxes(spare)
    # one colour scale for all variants, so equal shades mean equal counts across panels
    top = max(max(max(row) for row in total) for total in totals.values()) or 1
    image = None
    for i, (ax, (variant, total)) in enumerate(zip(axes, totals.items(), strict=False)):
        image = ax.imshow(total, cmap="Blues", vmin=0, vmax=top)
        for r, row in enumerate(total):
            for j, c in enumerate(row):
                ax.text(j, r, str(c), ha="center", va="center", fontsize=8, color="white" if c > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_title(f"{task}: {variant} (all seeds)", fontsize=10)
        if i % cols == 0:
            ax.set_ylabel("actual")
    fig.colorbar(image, ax=axes[:n], shrink=0.6, label="test items")
    return fig


def _per_class_rows(s: dict[str, Any], labels: list[str] | None) -> tuple[list[str], list[str]]:
    """(metric keys, display names) of the per-class / per-type F1s. Sentiment keys are
    f1_<label with _ for spaces>: shown under the label's own name and in the label order
    (weakest to strongest for ordered classes), not sorted by key."""
    keys = sorted({k for v in s["variants"] for k in s["variants"][v]["mean"] if k.startswith("f1_")})
    by_key = {f"f1_{x.replace(' ', '_')}": x for x in labels or []}
    if keys and all(k in by_key for k in keys):
        ordered = [k for k in by_key if k in keys]
        return ordered, [by_key[k] for k in ordered]
    return keys, [k.removeprefix("f1_") for k in keys]


def _per_class_figure(s: dict[str, Any], names: list[str], values: dict[str, list[float]]) -> Any:
    """One group of bars per class, one bar per variant; the figure grows with the number of
    variants so that a bar stays about as thick with four variants as with two."""
    import matplotlib.pyplot as plt

    n = len(values)
    fig, ax = plt.subplots(figsize=(7.5, (0.3 + 0.14 * n) * len(names) + 1.6), layout="constrained")
    height = 0.8 / n
    colours = _colours(list(values))
    for k, (variant, vals) in enumerate(values.items()):
        ax.barh([i + k * height for i in range(len(names))], vals, height=height, label=variant, color=colours[variant])
    ax.set_yticks([i + height * (n - 1) / 2 for i in range(len(names))], names)
    ax.invert_yaxis()  # first class on top, as in the confusion matrix
    ax.set_xlabel("F1 on test (mean over seeds)")
    ax.set_xlim(0, 1)
    # outside the axes: inside, it covered the bars that reach F1 = 1
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title(f"{s['task']}: per-{'type' if s['kind'] == 'ner' else 'class'} F1")
    return fig


def _read_tsv(path: Path) -> tuple[list[float], list[float]]:
    """A dvclive TSV (header `step<TAB>metric`) as (steps, values), one value per step, in step
    order. A run resumed from a checkpoint appends to the TSV (dvclive resume) and logs again
    the evaluations made after that checkpoint: the later value of a step wins."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    x, y = header.index("step"), header.index(path.stem) if path.stem in header else len(header) - 1
    by_step: dict[float, float] = {}
    for line in lines[1:]:
        if line.strip():
            parts = line.split("\t")
            by_step[float(parts[x])] = float(parts[y])
    steps = sorted(by_step)
    return steps, [by_step[st] for st in steps]


def _eval_cadence(live_dirs: Sequence[Path]) -> str | None:
    """How often the runs evaluated on dev, from dvclive's own files (params.yaml: the
    TrainingArguments, metrics.json: the last step), e.g. "dev evaluated every 23 of 46
    optimizer steps": a curve of two points is then explained on the figure itself."""
    import yaml

    every: set[int] = set()
    totals: set[int] = set()
    for live in live_dirs:
        try:
            args = yaml.safe_load((live / "params.yaml").read_text(encoding="utf-8")) or {}
            every.add(int(args["eval_steps"]))
            totals.add(int(json.loads((live / "metrics.json").read_text(encoding="utf-8"))["step"]))
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            return None  # an older run without these files: no note rather than a wrong one
    if len(every) != 1 or not totals:
        return None
    span = f"{min(totals)}" if len(totals) == 1 else f"{min(totals)}-{max(totals)}"
    return f"dev evaluated every {every.pop()} of {span} optimizer steps (fine-tuning eval_steps)"


def _curves_figure(s: dict[str, Any], found: list[Path]) -> Any:
    """One line per run: the colour says the variant (as in the bar chart), the line style the
    seed, so four variants with three seeds each stay told apart."""
    import matplotlib.pyplot as plt

    metric = NAMES.get(s["headline"], s["headline"])
    colours = _colours(list(s["variants"]))
    runs = [split_run(p.parents[4].name) for p in found]
    seeds = sorted({seed for _, seed in runs})
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, max(3.8, 1.6 + 0.22 * len(found))), layout="constrained")
    for path, (variant, seed) in zip(found, runs, strict=True):
        xs, ys = _read_tsv(path)
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=4,
            color=colours.get(variant),
            linestyle=styles[seeds.index(seed) % len(styles)],
            label=f"{variant} s{seed}",
        )
    cadence = _eval_cadence([p.parents[3] for p in found])
    ax.set_xlabel("optimizer step" + (f"\n{cadence}" if cadence else ""))
    ax.set_ylabel(f"dev {metric}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title(f"{s['task']}: dev {metric} during fine-tuning")
    return fig


def _curve_files(s: dict[str, Any], group: list[Any], curves: Path) -> list[Path]:
    """The dev TSVs of the headline metric, for the declared runs only (not stale folders of
    runs since removed from params): <curves>/<kind>/<task>/<run>/live/plots/metrics/eval/,
    in the task's variant order, then by seed."""
    order = {v: i for i, v in enumerate(s["variants"])}
    declared = {run_name(r.variant, r.seed) for r in group}
    found = (curves / s["kind"] / s["task"]).glob(f"*/live/plots/metrics/eval/{s['headline']}.tsv")
    kept = [p for p in found if p.parents[4].name in declared]
    return sorted(kept, key=lambda p: (order[split_run(p.parents[4].name)[0]], split_run(p.parents[4].name)[1]))


def write_plots(
    plot_dir: Path, summaries: Sequence[dict[str, Any]], runs: dict[tuple[str, str], list[Any]], curves: Path | None
) -> dict[str, str]:
    """DVC plot data under plot_dir (confusion/<task>-<variant>.json: one {actual, predicted}
    row per test item and seed; per_class/<task>-<variant>.json: {class, f1}), and the PNGs of
    report.html by key (<task>-confusion, <task>-per-class, <task>-curves)."""
    import matplotlib

    matplotlib.use("Agg")

    images: dict[str, str] = {}
    (plot_dir / "confusion").mkdir(parents=True, exist_ok=True)
    (plot_dir / "per_class").mkdir(parents=True, exist_ok=True)
    for s in summaries:
        group = runs[(s["kind"], s["task"])]
        variants = list(s["variants"])
        labels = group[0].meta.get("labels") if s["kind"] == "sentiment" else None
        if s["kind"] == "sentiment" and "classes" in s["outputs"]:
            for v in variants:
                rows = [{"actual": r["gold"], "predicted": r["label"]} for run in group if run.variant == v for r in run.rows]
                _write_rows(plot_dir / "confusion" / f"{s['task']}-{v}.json", rows)
            totals = {v: _confusion_total(s, v, len(labels)) for v in variants}
            images[f"{s['task']}-confusion"] = _png(_confusion_figure(s["task"], labels, totals))
        keys, names = _per_class_rows(s, labels)
        if keys:
            values = {v: [s["variants"][v]["mean"].get(k, 0.0) for k in keys] for v in variants}
            for v, vals in values.items():
                _write_rows(
                    plot_dir / "per_class" / f"{s['task']}-{v}.json",
                    [{"class": c, "f1": x} for c, x in zip(names, vals, strict=True)],
                )
            images[f"{s['task']}-per-class"] = _png(_per_class_figure(s, names, values))
        if curves is not None:
            found = _curve_files(s, group, curves)
            if found:
                images[f"{s['task']}-curves"] = _png(_curves_figure(s, found))
    return images
