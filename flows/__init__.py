"""Prefect orchestration of the DVC pipeline: `pipeline` (the flow, one task per DVC stage, in
dvc.yaml's order) and `dvc_stage` (the task: `dvc repro --single-item`, logs, retries,
artifacts)."""
