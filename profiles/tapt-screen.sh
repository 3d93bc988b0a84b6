#!/usr/bin/env bash
# Dev-set screening of task-adaptive pretraining settings (issue #12) through DVC's experiment
# queue: `dvc exp run --queue -S ...`, `dvc queue start`, `dvc exp show`.
#
# A workspace made by real-run.sh from profiles/real.yaml (absolute data path, so the copies in
# which queued experiments run find the data too), narrowed to SCREEN_TASKS, SCREEN_SEEDS, the
# `base` variant and TAPT from base. The baseline (base and base-tapt with the profile's TAPT
# settings) runs in the workspace and is committed with its dvc.lock. Each line of SCREEN_GRID is
# queued as one experiment over it; `dvc queue start -j SCREEN_JOBS` runs them, each rerunning
# only the stages its overrides touch (the rest come from the shared cache). `dvc exp show
# --json` then becomes results.jsonl (dev figures only: every key naming test is dropped, so
# nothing here can be chosen on test) and screen.md, the Markdown table of RESULTS.md.
#
#   SCREEN_WORKSPACE  default data/work/tapt-screen
#   SCREEN_GRID       a file with one experiment per line: NAME key=value [key=value ...]
#                     (+key=value for a key the profile leaves at its default)
#   SCREEN_TASKS      fine-tuning tasks, space-separated (default: every task of the profile)
#   SCREEN_SEEDS      seeds, space-separated (default 13: screen on one seed, finalists on three)
#   SCREEN_JOBS       experiments run at once (default 1: on 2 cores two at a time gain nothing,
#                     RESULTS.md "Concurrent stages"; keep SCREEN_JOBS x runtime.threads within
#                     the cores: threads that share cores run many times slower)
#   SCREEN_BASELINE   the baseline's name in the table (default profile)
#   SCREEN_POLL_S     seconds between looks at the queue (default 20)
#   FINPIPE_DATA      default ../shared/data
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$(cd "${FINPIPE_DATA:-$ROOT/../shared/data}" && pwd)"
WS="${SCREEN_WORKSPACE:-$ROOT/data/work/tapt-screen}"
BASELINE="${SCREEN_BASELINE:-profile}"
GRID=""
if [ -n "${SCREEN_GRID:-}" ]; then
  GRID="$(cd "$(dirname "$SCREEN_GRID")" && pwd)/$(basename "$SCREEN_GRID")"
fi
# the workspace (copy of the repo, real.yaml as params.yaml, shared DVC cache), not run yet
REAL_WORKSPACE="$WS" FINPIPE_DATA="$DATA" REAL_SETUP_ONLY=1 bash "$ROOT/profiles/real-run.sh" >/dev/null
WS="$(cd "$WS" && pwd)"
cd "$WS"
SCREEN_TASKS="${SCREEN_TASKS:-}" SCREEN_SEEDS="${SCREEN_SEEDS:-13}" python - <<'PY'
import os
import sys

import yaml

params = yaml.safe_load(open("params.yaml"))
ft = params["finetune"]
every = [*ft["sentiment"]["tasks"], *ft["ner"]["tasks"]]
tasks = os.environ["SCREEN_TASKS"].split() or every
unknown = sorted(set(tasks) - set(every))
if unknown:
    sys.exit(f"tapt-screen: SCREEN_TASKS names {unknown}; profiles/real.yaml has {every}")
for kind in ("sentiment", "ner"):
    ft[kind]["tasks"] = {t: c for t, c in ft[kind]["tasks"].items() if t in tasks}
ft["seeds"] = [int(s) for s in os.environ["SCREEN_SEEDS"].split()]
ft["variants"] = ["base"]
params["tapt"]["starts"] = ["base"]
# the stages' own params sections stay as the profile has them, so the baseline's stages are the
# ones `make real` ran (the run-cache replays them); a knob the profile leaves at its default is
# set with `+key=value` in the grid (hydra's syntax for adding a key)
params["evaluate"]["baselines"] = [b for b in params["evaluate"]["baselines"] if b["task"] in tasks]
open("params.yaml", "w").write(yaml.safe_dump(params, sort_keys=False))
PY
commit() { git add -A && git -c user.name=finpipe -c user.email=finpipe@localhost commit -qm "$1" || true; }
commit "screen: ${SCREEN_TASKS:-every task}, seeds ${SCREEN_SEEDS:-13}"
# the baseline, committed with its dvc.lock so every experiment starts from it
start=$(date +%s)
dvc repro evaluate >"$WS/baseline.log" 2>&1  # reruns nothing when an earlier screen ran it
echo "screen: baseline done in $(( $(date +%s) - start )) s"
commit "screen baseline"
if [ -n "$GRID" ]; then
  while read -r name rest; do
    { [ -z "$name" ] || [ "${name:0:1}" = "#" ]; } && continue
    sets=()
    for kv in $rest; do sets+=(-S "$kv"); done
    dvc exp remove "$name" >/dev/null 2>&1 || true  # a rerun of the screen replaces it
    dvc exp run --queue -n "$name" "${sets[@]}" evaluate
  done <"$GRID"
  start=$(date +%s)
  dvc queue start -j "${SCREEN_JOBS:-1}"
  # (the status is read whole first: `grep -q` quits at the first match, and with pipefail the
  # writer's broken pipe would end the loop early)
  while status="$(dvc queue status 2>/dev/null)" && grep -qE '\b(Queued|Running)\b' <<<"$status"; do
    sleep "${SCREEN_POLL_S:-20}"
  done
  echo "screen: experiments done in $(( $(date +%s) - start )) s"
  dvc queue status
fi
dvc exp show --json >"$WS/exp-show.json"
python "$ROOT/profiles/gpu_screen.py" exp-show "$WS/exp-show.json" --baseline "$BASELINE" >"$WS/results.jsonl"
python "$ROOT/profiles/gpu_screen.py" table "$WS/results.jsonl" >"$WS/screen.md"
cat "$WS/screen.md"
echo "screen: dev figures in $WS/screen.md ($WS/results.jsonl); experiments: cd $WS && dvc exp show"
