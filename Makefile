# The two commands of the quick start are `make demo` and `make test`; everything they
# need is installed by scripts/install.sh (idempotent, fast when nothing is missing).
VENV ?= .venv
PY := $(VENV)/bin/python
# Two pytest workers: one per core. Each worker gets its own mail stack (see tests/conftest.py).
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint lock bench clean

install:
	@bash scripts/install.sh

demo: install
	$(VENV)/bin/postroom demo

# A throwaway PostgreSQL for the second pass (see postroom/devstack/postgres.py).
PG_STATE ?= /tmp/postroom-test-pg
PG_PORT ?= 21095
# The field-bug tests whose outcome depends on the database: kills, two engines, the
# cross-box race, NULs, a restore, the OAuth2 grant row (claims, rotation kept across a
# kill). The other rows are about mail, not storage.
PG_FIELD_BUGS = $(addprefix tests/field_bugs/test_,b01_duplicate_after_transient_imap_error.py \
  b02_overlapping_fetch_runs.py b03_one_mail_to_several_system_addresses.py \
  b10_oauth2_token_lifecycle.py b18_charset_and_encoding_crashes.py b22_destructive_ingest.py)

test: install
	$(PY) -m ruff check postroom postroom_sim tests bench
	$(VENV)/bin/lint-imports
	mkdir -p var
	$(PY) manage.py makemigrations --check --dry-run >/dev/null
	@echo "== the whole suite on SQLite =="
	$(PY) -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider
	@echo "== the database-facing tests again on PostgreSQL =="
	$(PY) -m postroom.devstack.postgres start --state $(PG_STATE) --port $(PG_PORT) >/dev/null
	DATABASE_URL=postgres://postgres@127.0.0.1:$(PG_PORT)/postroom \
	  $(PY) -m pytest -n $(PYTEST_WORKERS) -p no:cacheprovider -m "not browser" tests/integration tests/e2e tests/chaos $(PG_FIELD_BUGS); \
	  status=$$?; $(PY) -m postroom.devstack.postgres destroy --state $(PG_STATE) --port $(PG_PORT); exit $$status

# Figures in bench/results.{json,md,png}; about 35 minutes on 2 cores. Not part of `make test`.
bench: install
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) bench/run.py

# The hashed lock files scripts/install.sh installs from; run after editing the
# dependencies in pyproject.toml (keeps every pin it can, like `uv pip compile` does).
lock:
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes --quiet -o requirements-dev.lock
	# pip-audit asks for CacheControl[filecache]; pip (23.2, Debian 12's venv) in
	# --require-hashes mode takes that extra as a requirement of its own, looks at the
	# newest release for it and refuses it as unpinned, unless the lock pins the extra.
	sed -i 's/^cachecontrol==/cachecontrol[filecache]==/' requirements-dev.lock

lint: install
	$(PY) -m ruff check postroom postroom_sim tests bench
	$(VENV)/bin/lint-imports

clean:
	-$(VENV)/bin/postroom devstack stop
	rm -rf var
