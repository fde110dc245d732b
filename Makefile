# modelmill's entry points, for people and CI alike: .ci/run runs `make test`.
#
#   make serve          set up, then run the server on its embedded defaults (ARGS="--http-port 9000")
#   make test           set up everything, then run every test tier: default, slow, postgres, browser;
#                       and bench/gpu.sh's dry run (no GPU here: it checks its own set-up)
#   make check          the fast default tier only, for the edit-test loop
#   make test-postgres  start a throwaway PostgreSQL and run the postgres tier against it
#   make lint           ruff check + ruff format --check; the layers contract (import-linter); the
#                       README's settings table is current
#   make bench          bench/ingest.py on SQLite, and on PostgreSQL when it can start one
#
# Set-up is idempotent: the virtual environment is (re)installed only when pyproject.toml or
# constraints.txt changed (a stamp file named by their hash), Debian packages only when missing.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
LINTED := src tests bench scripts

.PHONY: install serve test check test-postgres lint bench

install: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[test]"
	@rm -f $(VENV)/.installed-* && touch $@

serve: install
	$(BIN)/modelmill serve $(ARGS)

test: install
	@$(BIN)/python scripts/settings_table.py --check || echo "(warning only: make lint fails on it)"
	$(BIN)/lint-imports
	scripts/install-system-packages.sh postgresql chromium
	scripts/run-tests.sh default slow postgres browser
	GPU_RESULTS_DIR=test-artifacts/gpu bench/gpu.sh --dry-run

check: install
	scripts/run-tests.sh default

test-postgres: install
	scripts/install-system-packages.sh postgresql
	scripts/run-tests.sh postgres

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports
	$(BIN)/python scripts/settings_table.py --check

bench: install
	@export MODELMILL_PG_PORT=$${MODELMILL_PG_PORT:-$$(scripts/postgres.sh free-port)}; \
	url=$$(scripts/postgres.sh start) || { url=; echo "(no PostgreSQL: SQLite only)"; }; \
	trap '[ -z "$$url" ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/ingest.py $${url:+--postgres-url $$url} $(ARGS)
