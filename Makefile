# The two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-unit lint format demo stack-up stack-down clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-tuning.txt requirements-tuning-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-tuning.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-tuning-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup
	$(VENV)/bin/sftpipe demo $(DEMO_ARGS)

stack-up: setup
	$(VENV)/bin/sftpipe stack up

stack-down: setup
	$(VENV)/bin/sftpipe stack down

clean:
	-$(VENV)/bin/sftpipe stack down
	rm -rf $(VENV) .sftpipe .pytest_cache .ruff_cache
