#!/usr/bin/env bash
# `make real`: the whole pipeline (ingest ... pretrain ... fine-tune x 3 seeds ... evaluate) on the
# real data sets, with profiles/real.yaml as its params, in a workspace of its own:
#   REAL_WORKSPACE  (default data/work/real-project) a copy of the repo's files, with
#                   profiles/real.yaml as params.yaml and the data folder as the user gave it
#                   (relative to the workspace when given relative, so dvc.lock names relative
#                   inputs); a git repo (dvclive needs one) sharing this repo's DVC cache. Rerunning refreshes
#                   the copy and `dvc repro` reruns only what changed.
#   FINPIPE_DATA    folder with the data sets (default ../shared/data)
#   REAL_SETUP_ONLY set: prepare the workspace, run nothing
# Afterwards: cd $REAL_WORKSPACE && dvc metrics show / dvc plots show; the report is
# $REAL_WORKSPACE/reports/report.md (and .html).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="$(cd "${FINPIPE_DATA:-$ROOT/../shared/data}" 2>/dev/null && pwd)" || {
  echo "real: data folder ${FINPIPE_DATA:-$ROOT/../shared/data} not found; set FINPIPE_DATA" >&2; exit 2; }
WS="${REAL_WORKSPACE:-$ROOT/data/work/real-project}"
mkdir -p "$WS"
WS="$(cd "$WS" && pwd)"
cd "$ROOT"
# the repo's own files (tracked, or new and not ignored: never data/work, models, reports), then
# profiles/real.yaml as params.yaml with the data folder
python - "$WS" "$DATA" <<'PY'
import os, shutil, subprocess, sys
from pathlib import Path
import yaml
ws, data = sys.argv[1], sys.argv[2]
files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], capture_output=True, text=True, check=True).stdout
for rel in files.split():
    if rel != "dvc.lock" and Path(rel).is_file():
        (Path(ws) / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rel, Path(ws) / rel)
params = yaml.safe_load(open(f"{ws}/profiles/real.yaml"))
# relative to the workspace when the data folder was given relative (as the default is), so
# dvc.lock names the inputs the way the user did; absolute when it was given absolute
given = os.environ.get("FINPIPE_DATA", "../shared/data")
where = data if os.path.isabs(given) else os.path.relpath(data, ws)
params["paths"]["inputs"] = {kind: where for kind in params["paths"]["inputs"]}
open(f"{ws}/params.yaml", "w").write(yaml.safe_dump(params, sort_keys=False))
PY
cd "$WS"
if [ ! -d .git ]; then
  git init -q
  dvc cache dir --local "$ROOT/.dvc/cache"
fi
git add -A
git -c user.name=finpipe -c user.email=finpipe@localhost commit -qm "real profile $(date -u +%FT%TZ)" || true
[ -n "${REAL_SETUP_ONLY:-}" ] && { echo "real: workspace ready at $WS"; exit 0; }
start=$(date +%s)
# what the report needs (`evaluate` and its upstream stages): a stage no variant uses (DAPT when
# finetune.variants has no `adapted`) is not run; a target among the arguments replaces it
target=evaluate
for arg in "$@"; do case "$arg" in -*) ;; *) target= ;; esac; done
set -- "$@" $target
dvc repro "$@"
echo "real: dvc repro took $(( $(date +%s) - start )) s; report: $WS/reports/report.md"
