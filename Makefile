# The two commands of the quick start are `make demo` and `make test`; everything they
# need is installed by scripts/install.sh (idempotent, fast when nothing is missing).
VENV ?= .venv
PY := $(VENV)/bin/python
# Two pytest workers: one per core. Each worker gets its own mail stack (see tests/conftest.py).
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint bench clean

install:
	@bash scripts/install.sh

demo: install
	$(VENV)/bin/postroom demo

test: install
	$(PY) -m ruff check postroom tests
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run >/dev/null
	$(PY) -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider

lint: install
	$(PY) -m ruff check postroom tests
	$(VENV)/bin/lint-imports

clean:
	-$(VENV)/bin/postroom devstack stop
	rm -rf var
