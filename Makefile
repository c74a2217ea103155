# The two commands a newcomer needs: `make up` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/cvat-analytics
PYTHON ?= python3

.PHONY: up down test render check demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed scripts/install-system-packages.sh
	$(PY) -m pip install --quiet -e '.[test]'
	scripts/install-system-packages.sh
	touch $@

## up: the Docker stack where a Docker engine answers, else the embedded default on chdb
up: $(VENV)/.installed
	scripts/up.sh

## down: stop whichever `make up` started
down:
	scripts/down.sh

## test: install what the tests need and run them
test: $(VENV)/.test-installed
	$(VENV)/bin/pytest

## render / check: deploy/ from analytics.yaml, and whether it is in sync and valid
render: $(VENV)/.installed
	$(CLI) render --out deploy

check: $(VENV)/.installed
	$(CLI) check --out deploy

## demo: post realistic CVAT traffic to the running service (after `make up`)
demo: $(VENV)/.installed
	$(CLI) demo --url http://127.0.0.1:8282/

## bench: every headline figure against its baseline (10M events, ~15 min; BENCH_EVENTS=N for fewer)
BENCH_EVENTS ?= 10000000
bench: $(VENV)/.installed
	$(CLI) bench --events $(BENCH_EVENTS) --json bench.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
