# TrainHub: `make run` starts a working portal; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check system-deps-run system-deps-test docker-engine install bench clean screenshots

run: system-deps-run $(STAMP)
	$(PY) manage.py trainhub_up

# The `postgres` tests (row locks: gang scheduling, version and run numbers) run a second
# time against a throwaway PostgreSQL, since SQLite serialises every writer.
test: system-deps-test docker-engine $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	scripts/with-postgres.sh $(PY) -m pytest -m postgres -p no:cacheprovider \
		$$(grep -rl --include='test_*.py' 'mark.postgres' tests)

system-deps-run:
	@scripts/system-deps.sh run

system-deps-test:
	@scripts/system-deps.sh test

# The Docker tests need an engine and the local base image (built once from Debian packages, about
# a minute and a half); where no engine can run they skip and say why, and the rest still runs.
docker-engine:
	@scripts/docker-engine.sh && scripts/docker-base-image.sh || echo "No Docker engine: the Docker tests will skip." >&2

install: $(STAMP)

# uv does not read pip's configuration: trainhub.pipconf passes the machine's indexes,
# local wheel folders and constraints on, so torch==2.13.0 comes from the local CPU file.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	env $$($(PY) -m trainhub.pipconf --env) $(VENV)/bin/uv pip install --python $(PY) \
		$$($(PY) -m trainhub.pipconf) -e '.[dev]'
	touch $(STAMP)

# The README's pictures of the runs table, the compare view, a run page and a cluster page (docs/screenshots/).
screenshots: system-deps-test $(STAMP)
	TRAINHUB_SCREENSHOTS=1 $(PY) -m pytest tests/browser/test_screenshots.py -q

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# Lint, format and the import contracts of pyproject.toml ([tool.importlinter]); .ci/run runs it
# before the tests.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --no-site-packages -p trainhub.sdk

clean:
	rm -rf $(VENV) var
