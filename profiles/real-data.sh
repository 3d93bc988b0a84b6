#!/usr/bin/env bash
# Ingest + validate the real data sets with profiles/real.yaml, reading them where they lie.
#   FINPIPE_DATA  folder holding the data sets (default ../shared/data)
#   REAL_OUT      where outputs go (default data/work/real)
set -euo pipefail
DATA="${FINPIPE_DATA:-../shared/data}"
OUT="${REAL_OUT:-data/work/real}"
PARAMS="${FINPIPE_PARAMS:-profiles/real.yaml}"
if [ ! -d "$DATA" ]; then
  echo "real-data: $DATA not found; set FINPIPE_DATA to the folder with the data sets" >&2
  exit 2
fi
for kind in corpus sentiment ner; do
  finpipe ingest "$kind" --params "$PARAMS" --input "$DATA" --output "$OUT/ingested/$kind" \
    --metrics "$OUT/reports/ingest/$kind.json"
  finpipe validate "$kind" --params "$PARAMS" --input "$OUT/ingested/$kind" --output "$OUT/clean/$kind" \
    --quarantine "$OUT/quarantine/$kind" --reports "$OUT/reports/validation"
done
echo "real-data: reports in $OUT/reports"
