#!/usr/bin/env bash
# Ingest + validate the real data sets with profiles/real.yaml, reading them where they lie.
#   FINPIPE_DATA  folder holding the data sets (default ../shared/data)
#   REAL_OUT      where outputs go (default data/work/real)
#   REAL_PRETRAIN 1 = also run domain-adaptive pretraining (MiniLM on Reuters-21578, ~30 min)
set -euo pipefail
DATA="${FINPIPE_DATA:-../shared/data}"
OUT="${REAL_OUT:-data/work/real}"
PARAMS="${FINPIPE_PARAMS:-profiles/real.yaml}"
if [ ! -d "$DATA" ]; then
  echo "real-data: $DATA not found; set FINPIPE_DATA to the folder with the data sets" >&2
  exit 2
fi
# the profile with paths.inputs pointed at DATA: the stages check every input path when they
# load params, so they must name the folder actually read
mkdir -p "$OUT"
python - "$PARAMS" "$DATA" "$OUT/params.yaml" <<'PY'
import sys
import yaml
params = yaml.safe_load(open(sys.argv[1]))
params["paths"]["inputs"] = {kind: sys.argv[2] for kind in params["paths"]["inputs"]}
open(sys.argv[3], "w").write(yaml.safe_dump(params, sort_keys=False))
PY
PARAMS="$OUT/params.yaml"
for kind in corpus sentiment ner; do
  finpipe ingest "$kind" --params "$PARAMS" --input "$DATA" --output "$OUT/ingested/$kind" \
    --metrics "$OUT/reports/ingest/$kind.json"
  finpipe validate "$kind" --params "$PARAMS" --input "$OUT/ingested/$kind" --output "$OUT/clean/$kind" \
    --quarantine "$OUT/quarantine/$kind" --reports "$OUT/reports/validation"
done
if [ "${REAL_PRETRAIN:-0}" = "1" ]; then
  finpipe pretrain --params "$PARAMS" --corpus "$OUT/clean/corpus/corpus.parquet" --output "$OUT/models/adapted" \
    --metrics "$OUT/reports/pretrain/metrics.json" --live "$OUT/reports/pretrain/live" \
    --checkpoints "$OUT/checkpoints/pretrain" --cache "$OUT/cache/pretrain"
fi
echo "real-data: reports in $OUT/reports"
