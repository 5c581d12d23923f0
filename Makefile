# amoscore — every target makes the venv it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast lint bench migration run worker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP) ## replay one month of a gate installer's traffic on the embedded default and show the scores
	$(BIN)/amoscore replay demo/stream.jsonl --config demo/account.yaml --report demo/report.json

test: $(STAMP) ## run every test (needs the machine's Postgres and Redis)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## only the pure tests (no Postgres, Redis or processes)
	$(BIN)/pytest -q -m "not integration and not fault"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy config integrations app jobs

bench: $(STAMP) ## run the benchmarks and print their figures
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

migration: $(STAMP) ## a new migration from the changes to app/models.py: make migration MSG="what changed"
	@test -n "$(MSG)" || { echo 'say what changed: make migration MSG="..."'; exit 2; }
	rm -f /tmp/amoscore-migrate.sqlite3
	$(BIN)/alembic -c app/migrations/alembic.ini upgrade head
	rev=$$(printf '%04d' $$(( $$(ls app/migrations/versions/[0-9]*.py | wc -l) + 1 ))); \
	$(BIN)/alembic -c app/migrations/alembic.ini revision --autogenerate -m "$(MSG)" --rev-id $$rev \
		&& $(BIN)/ruff format -q app/migrations/versions/$${rev}_*.py

run: $(STAMP) ## the receiver under gunicorn on :8000
	$(BIN)/gunicorn -w 1 -k gthread --threads 4 -b 127.0.0.1:8000 'app.web:create_app()'

worker: $(STAMP) ## an RQ worker with the scheduler
	$(BIN)/amoscore worker

clean: ## remove the venv and local state
	rm -rf $(VENV) var .pytest_cache
