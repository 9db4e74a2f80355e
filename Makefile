# Two commands on a fresh machine: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
TLS_PORT ?= 8443
DEMO_HOSTS ?= 25
DEMO_MACS ?= 3
DEMO_AGENT ?= 1
PYTEST_ARGS ?= -n 2
export PORT TLS_PORT DEMO_HOSTS DEMO_MACS DEMO_AGENT

.PHONY: setup setup-mysql chromium run test e2e test-mysql lint bench bench-console fuzz soak clean bench-tasks bench-embedded bench-load

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# The MySQL driver compiles against libmysqlclient; install the headers when they are missing.
setup-mysql: setup
	@pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-libmysqlclient-dev pkg-config)
	$(PY) -m pip install -q -e '.[dev,mysql]'

run: setup
	$(PY) scripts/run.py

test: setup
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest -p no:cacheprovider -q $(PYTEST_ARGS)
	$(MAKE) e2e

# Debian's Chromium for the browser tests (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The browser tests (e2e/, docs/testing.md): their own pytest run, since Playwright's event loop
# and pytest-asyncio's cannot share a process. Screenshots and server logs go to test-results/.
e2e: setup chromium
	$(PY) -m pytest -c e2e/pytest.ini -q e2e $(E2E_ARGS)

lint: setup
	$(PY) -m ruff check .

bench: setup
	-$(MAKE) setup-mysql
	$(PY) scripts/bench.py $(BENCH_ARGS)

# Hostile and valid agent requests against a server of its own (docs/fuzzing.md); exit 1 on a defect.
fuzz: setup
	-$(MAKE) setup-mysql
	$(PY) scripts/fuzz.py $(FUZZ_ARGS)

# Agents through a Redis outage and a WebSocket held 10 minutes, on MariaDB + Redis (docs/resilience.md).
soak: setup
	-$(MAKE) setup-mysql
	$(PY) scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var test-results

# Console pages (dashboard, host list, host page, CSV) at 100,000 hosts on MariaDB (docs/benchmarks.md).
bench-console: setup
	-$(MAKE) setup-mysql
	$(PY) scripts/bench_console.py $(BENCH_ARGS)

# Task agent sessions on one daphne process: 10,000 idle agents, a change's fan-out (docs/benchmarks.md).
bench-tasks: setup
	-$(MAKE) setup-mysql
	$(PY) scripts/bench_tasks.py $(BENCH_ARGS)

# The deployment files checked offline: compose config, yamllint, kubernetes-validate, nginx -t when
# nginx is installed (deploy/validate.sh, which .ci/run also runs; docs/deployment.md).
.PHONY: validate-deploy
validate-deploy:
	bash deploy/validate.sh

# make run's one server process at 5,000 simulated hosts with a live query (docs/benchmarks.md).
bench-embedded: setup
	$(PY) scripts/bench_embedded.py $(BENCH_ARGS)

# Issue 13's load report: hosts per web core for the agent mix on one gunicorn worker, MariaDB and
# Redis, with their CPU per host (docs/benchmarks.md, "Load report").
bench-load: setup
	-$(MAKE) setup-mysql
	$(PY) scripts/bench_load.py $(BENCH_ARGS)
