# redis-bus: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
RUN_DIR ?= .run
ARGS ?=

.PHONY: help bootstrap run run-sentinel run-cluster example example-report example-depends-on status redis-cli test test-fast loadtest loadtest-quick bench lint docs fmt clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

bootstrap: ## create .venv, install the project, make sure redis-server exists
	@bash scripts/bootstrap.sh

run: bootstrap ## run redis, gunicorn, a worker and a subscriber in the foreground (ARGS="-c worker=3")
	@bash scripts/run.sh $(ARGS)

run-sentinel: bootstrap ## the same stack behind Sentinel: primary, replica, 3 sentinels (try a failover)
	@bash scripts/run-sentinel.sh $(ARGS)

run-cluster: bootstrap ## the same stack on a Redis Cluster: 3 primaries, 3 replicas (try a failover)
	@bash scripts/run-cluster.sh $(ARGS)

example: bootstrap ## the examples/ thumbnail app (127.0.0.1:8001) and its worker, next to make run
	@bash examples/run.sh $(ARGS)

example-report: bootstrap ## the examples/ hot-repositories report (5 fetches, an aggregate, a CSV), every minute, next to make run
	@EXAMPLE_PROCFILE=examples/Procfile.report bash examples/run.sh $(ARGS)

example-depends-on: bootstrap ## the examples/ depends_on pair (RQ's tutorial): two jobs, the second after the first, then exits
	@bash examples/depends_on.sh

# make run's Redis as a role: RUN_DIR/env/<role>.env, written by make run (scripts/acl.sh env).
load_role = f=$(RUN_DIR)/env/$(1).env; [ -r "$$f" ] || { echo "make: no $$f: start the stack with 'make run' first" >&2; exit 1; }; set -a; . "$$f"; set +a

status: ## the whole bus as tables (python -m consumers status ARGS="--json"), as bus-tools on make run's Redis (else BUS_REDIS_URL)
	@if [ -r $(RUN_DIR)/env/tools.env ] || [ -z "$${BUS_REDIS_URL:-}" ]; then $(call load_role,tools); fi; exec $(PY) -m consumers status $(ARGS)

redis-cli: ## redis-cli on make run's Redis as bus-admin (ARGS="llen bus:{default}:pending")
	@$(call load_role,admin); port=$${BUS_REDIS_URL##*:}; exec redis-cli -p "$${port%%/*}" --user bus-admin $(ARGS)

test: bootstrap ## run every test, the slow fault tests included
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: bootstrap ## run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

loadtest: bootstrap ## every load-test scenario beside the naive baseline, the 30-min soak too (~37 min)
	$(PY) -m loadtest run all $(ARGS)

loadtest-quick: bootstrap ## the quick load-test suite: every fault, a few seconds each (~2 min)
	$(PY) -m loadtest run all --quick $(ARGS)

bench: bootstrap ## redis-bus beside raw Redis, the naive loops and RQ/Dramatiq/Celery (~12 min; ARGS="--smoke" or "--only drain,latency")
	$(PY) -m loadtest.bench $(ARGS)

lint: bootstrap ## ruff (lint and format check), mypy, import-direction contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: bootstrap ## build the docs site into site/ (mkdocs --strict: a broken link or reference fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

fmt: bootstrap ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove .venv, the bench's arq/SAQ venv, .run (the stack's Redis data) and caches
	rm -rf $(VENV) .venv-peers-async .run site .pytest_cache .mypy_cache .ruff_cache tests/artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
