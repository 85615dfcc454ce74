# iasql-proxy: `make run` starts the development stack, `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# `make run PORT=6543`: the proxy's port (Postgres and moto take free ports of their own)
PORT ?= 6432

.PHONY: install system-deps certs run test unit model bench traces clean image image-test fuzz

# System packages the tests drive: psql, pgbench and Debian's chromium for the console's browser
# test (tools/system-deps.sh; Playwright drives /usr/bin/chromium and never downloads a browser); the
# PostgreSQL server comes from the system or the pgserver wheel; the JDBC tests install pgJDBC themselves.
system-deps:
	@bash tools/system-deps.sh

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml setup.py proxy/wire/_fastpath.c proxy/wire/framing.py proxy/wire/framing.pxd proxy/relay/core.py proxy/relay/core.pxd | $(PY)
	$(PY) -m pip install -q -e '.[test,sandbox]'
	@if ! $(PY) -c 'from proxy.embedded.postgres import find_bindir; find_bindir()' 2>/dev/null; then \
		echo "no system PostgreSQL found: installing the pgserver wheel"; \
		$(PY) -m pip install -q -e '.[embedded-postgres]'; fi
	touch $(STAMP)

install: $(STAMP)

certs: install
	$(VENV)/bin/iasql-proxy certs --dir certs

# psql is what you connect with: installed when missing (as root on Debian), else how is printed
run: install certs
	@bash tools/system-deps.sh psql
	$(VENV)/bin/iasql-proxy dev --port $(PORT)

test: system-deps install certs
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

unit: install
	$(VENV)/bin/pytest -q tests/unit

# The model-based differential test of transaction pooling, long: 2000 random cases (make test
# runs 30 fixed ones). IASQL_MODEL_VERBOSE=1 prints each case.
model: system-deps install certs
	IASQL_MODEL_EXAMPLES=2000 IASQL_MODEL_RANDOM=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/pooling/test_model.py

# The long fuzz campaign (tests/fuzz): N inputs against a throwaway Postgres and proxy, result in
# tests/fuzz/last_run.json (make test runs a short one). `make fuzz N=1000000`.
N ?= 20000
fuzz: install certs
	$(PY) -m tests.fuzz --inputs $(N)

bench: system-deps install certs
	$(PY) -m tools.bench

# Re-record the wire-trace corpus tests/traces/*.jsonl (psql, psycopg, psycopg2, asyncpg, pg8000,
# node-postgres, pgJDBC through a recording proxy); `make traces CLIENTS="psql jdbc"` for some.
traces: system-deps install certs
	$(PY) -m tests.traces.record $(CLIENTS)

# The container image (docker/Dockerfile) with docker, or buildah and podman (tools/image.sh
# installs those on Debian when there is no Docker daemon). image-test runs real containers.
image:
	@bash tools/image.sh build

image-test:
	@bash tools/image.sh test

# What the build made; your certificates and the dev stack's data are yours to remove.
clean:
	rm -rf $(VENV) *.egg-info build dist .hypothesis .pytest_cache
	find proxy engine tools tests -name __pycache__ -type d -prune -exec rm -rf {} +
	find proxy -name '*.so' -delete
	rm -f proxy/relay/core.c proxy/wire/framing.c
	@echo "kept: certs/ (the development CA and keys) and .run/ (the dev database and its sandbox cloud); remove them yourself to start afresh"
