#!/usr/bin/env bash
# Dev-set screening of task-adaptive pretraining settings (issue #12), as DVC experiments.
#
# A workspace made by real-run.sh from profiles/real.yaml (absolute data path, so DVC's
# experiment copies find the data too), narrowed to one sentiment task (SCREEN_TASK, default
# fpb50), one seed, the `base` variant and TAPT from base. The baseline run (base and base-tapt
# with the profile's TAPT settings) is committed with its dvc.lock; each line of SCREEN_GRID is
# one `dvc exp run -S ...` over it (only what the overrides touch reruns). screen.tsv collects
# the DEV figures of every fine-tuning run (reports/finetune/.../metrics.json: dev), never test.
#
#   SCREEN_WORKSPACE  default data/work/tapt-screen
#   SCREEN_GRID       a file with one experiment per line: NAME key=value [key=value ...]
#   FINPIPE_DATA      default ../shared/data
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$(cd "${FINPIPE_DATA:-$ROOT/../shared/data}" && pwd)"
WS="${SCREEN_WORKSPACE:-$ROOT/data/work/tapt-screen}"
TASK="${SCREEN_TASK:-fpb50}"
# the workspace (copy of the repo, real.yaml as params.yaml, shared DVC cache), not run yet
REAL_WORKSPACE="$WS" FINPIPE_DATA="$DATA" REAL_SETUP_ONLY=1 bash "$ROOT/profiles/real-run.sh" >/dev/null
cd "$WS"
python - "$TASK" <<'PY'
import sys
import yaml
task = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))
params["finetune"]["sentiment"]["tasks"] = {task: params["finetune"]["sentiment"]["tasks"][task]}
params["finetune"]["ner"]["tasks"] = {}
params["finetune"]["seeds"] = [13]
params["finetune"]["variants"] = ["base"]
params["tapt"]["starts"] = ["base"]
# every TAPT knob spelled out (the profile lists only what it changes): `dvc exp run -S` can
# set only keys that params.yaml has
import dataclasses
from finpipe.config import Tapt, parse
params["tapt"] = dataclasses.asdict(parse(Tapt, params["tapt"], prefix="tapt"))
params["evaluate"]["baselines"] = [b for b in params["evaluate"]["baselines"] if b["task"] == task]
open("params.yaml", "w").write(yaml.safe_dump(params, sort_keys=False))
PY
git add -A && git -c user.name=finpipe -c user.email=finpipe@localhost commit -qm "screen $TASK" || true
record() {  # name, overrides: one TSV row of dev figures (and TAPT's held-out MLM figures)
  python - "$TASK" "$@" >>"$WS/screen.tsv" <<'PY'
import json, sys
from pathlib import Path
task, name, sets = sys.argv[1], sys.argv[2], " ".join(sys.argv[3:]) or "-"
for run in sorted(Path(f"reports/finetune/sentiment/{task}").glob("*/metrics.json")):
    m = json.loads(run.read_text())
    tapt = Path(f"reports/tapt/{task}/base/metrics.json")
    t = json.loads(tapt.read_text()) if run.parent.name.startswith("base-tapt") and tapt.is_file() else None
    row = [name, run.parent.name, f"{m['dev']['accuracy']:.4f}", f"{m['dev']['macro_f1']:.4f}",
           f"{t['base']['perplexity']:.2f}" if t else "", f"{t['adapted']['perplexity']:.2f}" if t else "",
           str(t["train"]["l2sp_distance"]) if t else "", sets]
    print("\t".join(row))
PY
}
run() {  # name, overrides... : one experiment over the committed baseline
  local name="$1"; shift
  local sets=()
  for kv in "$@"; do sets+=(-S "$kv"); done
  git checkout -q -- params.yaml
  local start=$(date +%s)
  if dvc exp run -n "$name" "${sets[@]}" evaluate >"$WS/exp-$name.log" 2>&1; then
    echo "screen: $name done in $(( $(date +%s) - start )) s"
    record "$name" "$@"
  else
    echo "screen: $name failed (see $WS/exp-$name.log)"
  fi
}
printf 'experiment\trun\tdev_accuracy\tdev_macro_f1\ttapt_ppl_before\ttapt_ppl_after\tl2sp_distance\toverrides\n' >"$WS/screen.tsv"
# the baseline: base and base-tapt with the profile's settings, committed with its dvc.lock so
# every experiment below starts from it and reruns only what its overrides touch
start=$(date +%s)
dvc repro evaluate >"$WS/baseline.log" 2>&1  # reruns nothing when an earlier screen ran it
echo "screen: baseline done in $(( $(date +%s) - start )) s"
record baseline
git add -A && git -c user.name=finpipe -c user.email=finpipe@localhost commit -qm "screen baseline" || true
if [ -n "${SCREEN_GRID:-}" ]; then
  while read -r name rest; do
    { [ -z "$name" ] || [ "${name:0:1}" = "#" ]; } && continue
    # shellcheck disable=SC2086
    run "$name" $rest
  done <"$SCREEN_GRID"
fi
echo "screen: dev figures in $WS/screen.tsv; experiments: cd $WS && dvc exp show"
