# The two commands a newcomer needs: `make up` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/cvat-analytics
PYTHON ?= python3

.PHONY: up down test test-fast test-deep render check demo bench clean

# pip's own chatter goes to .venv/install.log; it is shown only when the install fails.
PIP_INSTALL = $(PY) -m pip install --quiet --disable-pip-version-check
$(VENV)/.installed: pyproject.toml
	@echo "installing cvat-analytics and its dependencies into $(VENV) (about a minute the first time)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP_INSTALL) -e . >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

$(VENV)/.test-installed: $(VENV)/.installed scripts/install-system-packages.sh $(VENV)/.plugin-js-installed
	@echo "installing what the tests need (pytest, hypothesis, selenium; Debian's chromium)"
	@$(PIP_INSTALL) -e '.[test]' >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	scripts/install-system-packages.sh
	@touch $@

# --- npm: the Grafana ClickHouse plugin's SQL parser for tests/test_grafana_adhoc.py ------------
# pgsql-ast-parser at the version the plugin locks (tests/js/package-lock.json), installed by
# `npm ci` (the npm registry only) into a cache folder named by the lock file's hash, which the
# tests find the same way. Without node there is nothing to install and those tests skip.
PLUGIN_JS = $${XDG_CACHE_HOME:-$$HOME/.cache}/cvat-analytics/plugin-js-$$(sha256sum tests/js/package-lock.json | cut -c1-16)
$(VENV)/.plugin-js-installed: tests/js/package.json tests/js/package-lock.json $(VENV)/.installed
	@if command -v npm >/dev/null; then \
	  dir="$(PLUGIN_JS)"; mkdir -p "$$dir" && cp tests/js/package.json tests/js/package-lock.json "$$dir/" && \
	  (cd "$$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >npm.log 2>&1) || { cat "$$dir/npm.log"; exit 1; }; \
	else echo "no node/npm here: tests/test_grafana_adhoc.py will skip its plugin checks"; fi
	@touch $@

## up: the Docker stack where a Docker engine answers, else the embedded default on chdb
up: $(VENV)/.installed
	scripts/up.sh

## down: stop whichever `make up` started
down:
	scripts/down.sh

## test: install what the tests need and run them all, on TEST_WORKERS processes (pytest-xdist;
## each its own chdb path). tests/test_wheel.py builds the wheel, installs it into a virtualenv
## outside the repository (~/.cache/cvat-analytics, made once per dependency list) and runs
## init, render, migrate and serve from an empty directory.
## test-fast: the inner loop (35-65 s on 2 cores): the tests that neither open the engine (marker
## `clickhouse`: each opens a database of its own) nor are marked `slow`. Then run the engine
## tests of the files you touched: .venv/bin/pytest -n 2 tests/test_x.py
# One worker more than cores: about a third of the suite's time is waiting (a refresh's
# commit margin, a server or browser starting), which a third worker fills on two cores
# (fresh run on 2 cores: -n 2 626 s, -n 3 510 s).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
# The tests' temporary files (every chdb path, each served store, the browser's profile) on
# tmpfs where there is one: ext4's making and deleting of the engine's part files cost ~12% of
# three modules' CPU (run back to back: 95 -> 83 CPU-s, system time 17.6 -> 9.6 s). pytest keeps
# only a failed test's directory (pyproject.toml), in pytest-of-<user>, which it checks is the user's own.
TEST_TMPDIR ?= $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm)
# Compiled modules kept between runs, in the virtualenv (which holds the installed code anyway),
# also where the environment sets PYTHONDONTWRITEBYTECODE (this machine's does): without them each
# worker compiled and assertion-rewrote every test module (collection 7.9 -> 2.7 s) and each of the
# suite's few hundred Python processes compiled the package's modules again.
PYCACHE = PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache
PYTEST = $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )$(PYCACHE) $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup
test: $(VENV)/.test-installed
	$(PYTEST)

test-fast: $(VENV)/.test-installed
	$(PYTEST) -m "not slow and not clickhouse"

## test-deep: the whole suite with every property test drawing its full count of examples
## (tests/examples_budget.py: `make test` draws a tenth); for a change to the event contract,
## the fast path or the fuzzed routes
test-deep: $(VENV)/.test-installed
	TEST_EXAMPLES_SCALE=1 $(PYTEST)

## render / check: deploy/ from analytics.yaml, and whether it is in sync and valid
render: $(VENV)/.installed
	$(CLI) render --out deploy

check: $(VENV)/.installed
	$(CLI) check --out deploy

## demo: post realistic CVAT traffic to what `make up` started (its address is in .up)
demo: $(VENV)/.installed
	@test -f "$${UP_STATE:-.up}" || { echo "nothing is up: run make up first"; exit 1; }
	$(CLI) demo --url "$$(sed -n 's/^ingest=//p' "$${UP_STATE:-.up}")"

## bench: every headline figure against its baseline (10M events, about 7 min; BENCH_EVENTS=N for fewer)
BENCH_EVENTS ?= 10000000
bench: $(VENV)/.installed
	$(CLI) bench --events $(BENCH_EVENTS) --json bench.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
