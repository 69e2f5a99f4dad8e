# One entry point per task; every target creates .venv and installs what it needs.
PY      ?= python3
PORT    ?= 5000
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export FLASK_APP := app:create_app

.PHONY: run test test-deploy test-newest-casbin lint typecheck check bench migrate seed policy-test mutation clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q -e 'clients/python[flask]'
	@if $(BIN)/pip show casbin >/dev/null 2>&1; then echo "error: the old 'casbin' distribution is installed; it overwrites pycasbin's files" >&2; exit 1; fi
	touch $(STAMP)

# axe-core (npm) for the accessibility checks of the browser tests; without npm they skip (fail under CI).
AXE     := $(VENV)/npm/node_modules/axe-core/axe.min.js
$(AXE): | $(STAMP)
	@if command -v npm >/dev/null 2>&1; then npm install --prefix $(VENV)/npm --no-audit --no-fund --silent axe-core@4.10.3; else echo "npm not found: the axe-core checks will skip"; fi

install: $(STAMP)

migrate: $(STAMP)
	$(BIN)/flask db-upgrade

seed: migrate
	$(BIN)/flask seed

run: seed
	LOG_LEVEL=$${LOG_LEVEL:-DEBUG} FLASK_APP_ENV=$${FLASK_APP_ENV:-development} $(BIN)/flask run --host 127.0.0.1 --port $(PORT)

test: $(STAMP) $(AXE)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-deploy: $(STAMP)
	@for t in haproxy pgbouncer; do command -v $$t >/dev/null || test -x /usr/sbin/$$t || (apt-get update -q && apt-get install -yq haproxy pgbouncer); done
	$(BIN)/python -m pytest -m deploy tests/deploy -p no:xdist -q

# The engine overrides pycasbin internals (_get_expression, the policy list swap) that only the
# `<3` pin guards: run the core, differential and policy tests against the newest pycasbin on PyPI.
NEWEST  := .venv-newest
test-newest-casbin: pyproject.toml
	test -x $(NEWEST)/bin/python || $(PY) -m venv $(NEWEST)
	$(NEWEST)/bin/pip install -q --upgrade pip
	$(NEWEST)/bin/pip install -q -e '.[dev]'
	$(NEWEST)/bin/pip install -q --upgrade pycasbin  # past the project's pin on purpose
	@$(NEWEST)/bin/python -c "import importlib.metadata as m; print('pycasbin', m.version('pycasbin'))"
	$(NEWEST)/bin/python -m pytest -q -p no:xdist tests/test_core.py tests/test_differential.py tests/test_embedded.py tests/test_engine_inputs.py
	$(NEWEST)/bin/flask policy test

policy-test: $(STAMP) $(AXE)
	$(BIN)/flask policy test

# Mutation testing of the escalation verifier (slow: not part of `make test`, which runs the same
# targeted tests). Configuration: [tool.mutmut] in pyproject.toml; mutants are written to mutants/.
MUTATION_STAMP := $(VENV)/.installed-mutation
$(MUTATION_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,mutation]'
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results --all true | tail -n 40

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1) || echo "wrk not available: HTTP numbers use the Python load generator"
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
