"""`finpipe`: one subcommand per stage (what dvc.yaml calls), plus `check`.

Paths always come in as arguments (dvc.yaml templates them from params.yaml); the knobs come
from one section of the params file. A UserError ends as one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, TypeAlias

from finpipe.atomic import write_json
from finpipe.errors import UserError

log = logging.getLogger("finpipe")
KINDS = ("corpus", "sentiment", "ner")


def _setup_logging(verbose: bool) -> None:
    if not sys.stderr.isatty():  # progress bars are noise in DVC/CI logs
        import os

        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _cmd_ingest(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from tasks import ingest

    params = load_params(args.params)
    runner = {"corpus": ingest.run_corpus, "sentiment": ingest.run_sentiment, "ner": ingest.run_ner}[args.kind]
    metrics = runner(getattr(params.ingest, args.kind), Path(args.input), Path(args.output))
    if args.metrics:
        write_json(args.metrics, metrics)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from tasks import validate

    params = load_params(args.params)
    runner = {"corpus": validate.run_corpus, "sentiment": validate.run_sentiment, "ner": validate.run_ner}[args.kind]
    runner(params.validate, Path(args.input), Path(args.output), Path(args.quarantine), Path(args.reports))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from finpipe.threads import apply_threads
    from tasks import pretrain

    params = load_params(args.params)
    apply_threads(params.runtime.threads)
    pretrain.run(
        params.pretrain,
        Path(args.corpus),
        Path(args.output),
        Path(args.metrics),
        Path(args.live),
        Path(args.checkpoints),
        Path(args.cache),
    )
    return 0


def _cmd_base_model(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from tasks import base_model

    params = load_params(args.params)
    base_model.run(params.pretrain, Path(args.corpus), Path(args.output), Path(args.cache))
    return 0


def _cmd_tapt(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from finpipe.errors import UserError
    from finpipe.pretrain.adapt import Outputs
    from finpipe.threads import apply_threads
    from tasks import tapt

    params = load_params(args.params)
    apply_threads(params.runtime.threads)
    tasks = params.finetune.sentiment.tasks if args.kind == "sentiment" else params.finetune.ner.tasks
    if args.task not in tasks:
        raise UserError(f"--task {args.task!r}: not a task in finetune.{args.kind}.tasks (have: {sorted(tasks)})")
    tapt.run(
        params.tapt,
        args.kind,
        Path(args.data) / f"{tasks[args.task].dataset}.parquet",
        Path(args.model),
        Outputs(Path(args.output), Path(args.metrics), Path(args.live), Path(args.checkpoints), Path(args.cache)),
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from finpipe.threads import apply_threads

    if args.kind == "sentiment":
        from tasks import finetune_sentiment as stage
    else:
        from tasks import finetune_ner as stage
    params = load_params(args.params)
    apply_threads(params.runtime.threads)
    stage.run(
        params.finetune,
        args.task,
        args.variant,
        args.seed,
        Path(args.model),
        Path(args.data),
        Path(args.output),
        Path(args.metrics),
        Path(args.predictions),
        Path(args.live),
        Path(args.checkpoints),
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from finpipe import predict

    counts = predict.run(
        args.kind,
        Path(args.model),
        args.input,
        args.output,
        text_column=args.text_column,
        batch_size=args.batch_size,
        fmt=args.format,
    )
    log.info("predict: %s", counts)
    return 0


def _column(name: str | None) -> str | None:
    """A column flag: `none` (or empty) means the file has no such column."""
    return None if name is None or name.strip().lower() in ("", "none") else name


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from finpipe.config import load_params
    from finpipe.evaluate_model import evaluate_file
    from finpipe.evaluation import declared_runs
    from tasks import evaluate

    if args.model:  # score one fine-tuned model on any labelled file
        if not args.test or not args.output:
            raise UserError("evaluate --model needs --test FILE and --output metrics.json")
        metrics = evaluate_file(
            Path(args.model),
            Path(args.test),
            fmt=args.format,
            text_column=args.text_column,
            label_column=_column(args.label_column),
            score_column=_column(args.score_column),
            tag_scheme=args.tag_scheme,
            batch_size=args.batch_size,
        )
        write_json(args.output, metrics)
        return 0
    if not args.predictions or not args.reports:
        raise UserError("evaluate needs --predictions DIR and --reports DIR (or --model/--test/--output for one file)")
    params = load_params(args.params)
    if not args.report:
        raise UserError("evaluate needs --report FILE.md (the HTML report is written beside it)")
    evaluate.run(
        params.evaluate,
        declared_runs(params),
        Path(args.predictions),
        Path(args.reports),
        Path(args.report),
        Path(args.curves) if args.curves else None,
    )
    return 0


def _overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value, e.g. pretrain.train.max_steps=200")
        out[key] = yaml.safe_load(value)
    return out


def _prefect_env() -> None:
    import os

    # the temporary server of Prefect's ephemeral mode needs longer than its 20 s default on a
    # busy 2-core machine; analytics off
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _cmd_flow(args: argparse.Namespace) -> int:
    _prefect_env()
    from flows.pipeline import pipeline

    state = pipeline(
        overrides=_overrides(args.set),
        stages=args.stages or None,
        force=args.force,
        retries=args.retries,
        project_dir=args.project_dir,
        concurrency=args.concurrency,
        dask_address=args.dask_address,
        return_state=True,
    )
    if state.is_failed():
        print(f"finpipe flow: failed: {state.message}", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    _prefect_env()
    from flows.pipeline import serve

    params: dict[str, Any] = {
        "project_dir": str(Path(args.project_dir).resolve()),
        "retries": args.retries,
        "concurrency": args.concurrency,
        "dask_address": args.dask_address,
    }
    if args.set:
        params["overrides"] = _overrides(args.set)
    serve(args.name, args.cron, params)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from finpipe.check import SPEC_FLAGS, check
    from finpipe.validation_report import check_fix, markdown

    flags = {k: getattr(args, k) for k in SPEC_FLAGS}
    flags["labels"] = args.labels.split(",") if args.labels else None
    result = check(
        args.kind,
        Path(args.path) if args.path else None,
        dataset=args.dataset,
        params_file=Path(args.params) if args.params else None,
        flags=flags,
        max_bad_fraction=args.max_bad_fraction,
    )
    summary = result.summary
    for note in result.notes:
        print(f"note: {note}")
    sys.stdout.write(markdown(f"{args.kind} ({args.path or args.dataset})", [summary]))
    if args.json:
        write_json(args.json, summary)
    if summary["passed"]:
        return 0
    noun = "texts" if args.kind == "sentiment" else "sentences"
    shown = len(summary["first_failures"])
    listed = "the report above" if summary["rows_quarantined"] <= shown else f"the report above, first {shown}"
    print(f"\nTo pass: {check_fix(summary, noun, listed)}")
    return 1


# what add_subparsers returns: each _add_<command> adds its own parser to it
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_ingest(sub: Subparsers) -> None:
    p = sub.add_parser("ingest", help="read user files into Parquet with splits (stage `ingest`)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--input", required=True, help="the folder that the kind's params paths are relative to")
    p.add_argument("--output", required=True, help="output folder (replaced atomically)")
    p.add_argument("--metrics", help="JSON file for the ingest counts")
    p.set_defaults(func=_cmd_ingest)


def _add_validate(sub: Subparsers) -> None:
    p = sub.add_parser("validate", help="pandera checks, quarantine and report (stage `validate`)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--quarantine", required=True)
    p.add_argument("--reports", required=True, help="folder for <kind>.json and <kind>.md")
    p.set_defaults(func=_cmd_validate)


def _add_pretrain(sub: Subparsers) -> None:
    p = sub.add_parser("pretrain", help="domain-adaptive pretraining, MLM + NSP (stage `pretrain`)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--corpus", required=True, help="the clean corpus.parquet")
    p.add_argument("--output", required=True, help="folder for the adapted model (replaced atomically)")
    p.add_argument("--metrics", required=True, help="JSON metrics: base vs adapted on held-out documents")
    p.add_argument("--live", required=True, help="dvclive folder for the training curves")
    p.add_argument("--checkpoints", required=True, help="checkpoint folder kept across runs (resume)")
    p.add_argument("--cache", required=True, help="Arrow cache of the built examples")
    p.set_defaults(func=_cmd_pretrain)


def _add_base_model(sub: Subparsers) -> None:
    p = sub.add_parser("base-model", help="write the base encoder as it is before pretraining (stage `base-model`)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--corpus", required=True, help="the clean corpus (used for a scratch tokenizer only)")
    p.add_argument("--output", required=True)
    p.add_argument("--cache", required=True, help="pretrain's cache (shares a scratch tokenizer)")
    p.set_defaults(func=_cmd_base_model)


def _add_tapt(sub: Subparsers) -> None:
    for kind in ("sentiment", "ner"):
        p = sub.add_parser(f"tapt-{kind}", help=f"task-adaptive pretraining on a {kind} task's train texts (stage `tapt-{kind}`)")
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--task", required=True, help=f"a task name under finetune.{kind}.tasks")
        p.add_argument("--model", required=True, help="the starting model directory (models/base or models/adapted)")
        p.add_argument("--data", required=True, help=f"the clean {kind} folder")
        p.add_argument("--output", required=True, help="folder for the task-adapted model (replaced atomically)")
        p.add_argument("--metrics", required=True)
        p.add_argument("--live", required=True, help="dvclive folder for the training curves")
        p.add_argument("--checkpoints", required=True, help="checkpoint folder kept across runs (resume)")
        p.add_argument("--cache", required=True, help="Arrow cache of the built examples")
        p.set_defaults(func=_cmd_tapt, kind=kind)


def _add_finetune(sub: Subparsers) -> None:
    for kind in ("sentiment", "ner"):
        p = sub.add_parser(f"finetune-{kind}", help=f"fine-tune for {kind} (stage `finetune-{kind}`)")
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--task", required=True, help=f"a task name under finetune.{kind}.tasks")
        p.add_argument("--variant", required=True, help="base, adapted, base-tapt or adapted-tapt (recorded in the metrics)")
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--model", required=True, help="the starting checkpoint directory")
        p.add_argument("--data", required=True, help=f"the clean {kind} folder")
        p.add_argument("--output", required=True, help="folder for the fine-tuned model (replaced atomically)")
        p.add_argument("--metrics", required=True)
        p.add_argument("--predictions", required=True, help="folder for the test-set predictions (test.jsonl + meta.json)")
        p.add_argument("--live", required=True, help="dvclive folder for the training curves")
        p.add_argument("--checkpoints", required=True)
        p.set_defaults(func=_cmd_finetune, kind=kind)


def _add_predict(sub: Subparsers) -> None:
    p = sub.add_parser("predict", help="label texts with a fine-tuned model (JSONL out)")
    p.add_argument("kind", choices=("sentiment", "ner"))
    p.add_argument("--model", required=True, help="a fine-tuned model directory")
    p.add_argument("--input", required=True, help="CSV (with a text column), JSONL, or text lines; - for stdin")
    p.add_argument("--output", default="-", help="JSONL file; - for stdout")
    p.add_argument("--format", default="auto", choices=("auto", "csv", "tsv", "jsonl", "text"))
    p.add_argument("--text-column", default="text")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_cmd_predict)


def _add_evaluate(sub: Subparsers) -> None:
    p = sub.add_parser("evaluate", help="test-set metrics and report (stage `evaluate`), or score one labelled file")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--predictions", help="folder of the fine-tuning stages' test predictions")
    p.add_argument("--reports", help="folder for metrics.json, plots and report.md/html (replaced atomically)")
    p.add_argument("--report", help="the Markdown report; report.html goes beside it")
    p.add_argument("--curves", help="the fine-tuning stages' report folder (dev curves in the HTML report)")
    p.add_argument("--model", help="score this fine-tuned model on --test instead")
    p.add_argument("--test", help="a labelled file in any format `finpipe check` reads")
    p.add_argument("--format", default="auto")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label", help="`none` for a file with scores only")
    p.add_argument("--score-column", default=None, help="`none` (the default) for a file without scores")
    p.add_argument("--tag-scheme", choices=["bio", "io"], default="bio", help="NER: the file's tagging (io: FIN5-style)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", help="metrics JSON (with --model)")
    p.set_defaults(func=_cmd_evaluate)


def _add_flow(sub: Subparsers) -> None:
    p = sub.add_parser("flow", help="run the pipeline as a Prefect flow (one task per DVC stage)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override (repeatable)")
    p.add_argument("--stages", nargs="*", help="only these stages (and what they depend on)")
    p.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    p.add_argument("--retries", type=int, default=2, help="retries after a transient stage failure")
    p.add_argument("--project-dir", default=".")
    _add_concurrency(p)
    p.set_defaults(func=_cmd_flow)


def _add_concurrency(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        help="stages at a time on a local Dask cluster, each in its own workspace sharing the DVC cache (1: one by one)",
    )
    p.add_argument("--dask-address", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786, instead of a local cluster")
    # no threads option: each stage's threads are the param runtime.threads (they change the models)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_serve(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="register a scheduled Prefect deployment of the flow and serve it")
    p.add_argument("--cron", default=None, help='cron schedule, e.g. "0 2 * * *" (none: runs only when triggered)')
    p.add_argument("--name", default="scheduled")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--project-dir", default=".")
    _add_concurrency(p)
    p.set_defaults(func=_cmd_serve)


def _add_check(sub: Subparsers) -> None:
    p = sub.add_parser(
        "check",
        help="ingest + validate one file as the stages would, leaks between splits included (exit 0 pass, 1 fail, 2 unusable)",
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("path", nargs="?", help="the file (or folder) to check; with --dataset, it replaces the dataset's path")
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="take the whole spec (format, columns, labels, splits, seed) and the validate thresholds from "
        "params: ingest.<kind>.datasets.NAME (corpus: the source NAME); without PATH, its own file(s)",
    )
    p.add_argument("--params", default=None, help="params file for --dataset (default params.yaml); else validate.* from it")
    p.add_argument(
        "--format",
        default=None,
        help="corpus: csv tsv parquet jsonl json text text_dir reuters_sgml; "
        "sentiment: fpb csv tsv jsonl json parquet; ner: conll finer_csv (default: from the extension)",
    )
    _add_check_spec(p)
    p.add_argument("--max-bad-fraction", type=float, default=None, help="default: validate.max_bad_fraction (0.01)")
    p.add_argument("--json", help="also write the report as JSON here")
    p.set_defaults(func=_cmd_check)


def _add_check_spec(p: argparse.ArgumentParser) -> None:
    """check's dataset-spec flags: each overrides one field of the spec (finpipe.check.SPEC_FLAGS)."""
    p.add_argument("--text-column", default=None, help="default: text")
    p.add_argument("--label-column", default=None, help="sentiment: column with class labels (default: label)")
    p.add_argument("--score-column", default=None, help="sentiment: column with a score in [-1, 1]")
    p.add_argument("--id-column", default=None)
    p.add_argument("--labels", default=None, help="comma-separated label set (default negative,neutral,positive)")
    p.add_argument("--tag-scheme", default=None, choices=["bio", "io"], help="ner (default: bio)")
    p.add_argument("--dev-fraction", type=float, default=None, help="default: the stage default (0.1; corpus 0.05)")
    p.add_argument("--test-fraction", type=float, default=None, help="sentiment/ner (default: 0.1)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: 13, the stage default)")


# in `finpipe --help` order
_COMMANDS = (
    _add_ingest,
    _add_validate,
    _add_pretrain,
    _add_tapt,
    _add_base_model,
    _add_finetune,
    _add_predict,
    _add_evaluate,
    _add_flow,
    _add_serve,
    _add_check,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finpipe", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except UserError as err:
        print(f"finpipe {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("finpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
