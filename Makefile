# The two commands: `make demo` (the main job on the embedded local stack) and `make test`.
# Each creates .venv when it is missing and installs what it needs (torch first, CPU wheel).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# checkov pins its own dependency set, so it lives in a virtual environment of its own.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp

.PHONY: install test-tools demo test test-chaos lint infra-check down status mutation lock

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q "checkov>=3.2,<4"
	touch $(CHECKOV_STAMP)

install: $(STAMP)

# What the end-to-end tests need besides Python: Debian's chromium and its chromedriver for
# the browser test of the Prefect UI (Playwright's own browser download cannot reach its
# servers from here), PostgreSQL for the stack on PostgreSQL, Redis and HAProxy for the
# Prefect server as a cluster (`img2img local up --ha`).
test-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		&& ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		&& command -v redis-server >/dev/null && command -v haproxy >/dev/null || \
		( apt-get update -qq && apt-get install -y -qq chromium chromium-driver postgresql \
			redis-server haproxy >/dev/null )

demo: install
	$(BIN)/img2img demo --json

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/bandit -q -c pyproject.toml -r img2img flows tasks deployments infra cli
	$(BIN)/python -m infra.release.audit

infra-check: install $(CHECKOV_STAMP)
	$(BIN)/cfn-lint infra/aws/*.yaml
	$(CHECKOV_VENV)/bin/checkov -d infra/aws --framework cloudformation --compact --quiet \
		--skip-download

# Two test processes, a test module each at a time: most of the suite waits on real servers
# and workers, so two modules overlap well on 2 cores. The chaos scenarios (minutes each, a
# whole stack killed piece by piece) are `make test-chaos`: CI runs both.
test: lint infra-check test-tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 -m "not chaos"

test-chaos: install test-tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=5 -m chaos

down:
	$(BIN)/img2img local down

status:
	$(BIN)/img2img local status

# Test strength, not part of `make test`: mutants of the modules that decide outcomes
# (`[tool.mutmut]` in pyproject.toml), each run against the tests that reach them, then the
# share the tests killed per module. Several minutes on 2 cores; mutants/ is a scratch copy.
mutation: install
	$(BIN)/python -m pip install -q "mutmut>=3.8,<4"
	$(BIN)/mutmut run
	$(BIN)/python -m infra.bench.mutation_report

# The hosts' hash-locked requirements (infra/release/locks/*.txt), after a dependency
# change in pyproject.toml; tests/unit/test_locks.py fails until they are made again.
lock: install
	$(BIN)/python -m infra.release.locks
