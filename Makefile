# The two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps test test-unit lint format demo stack-up stack-down clean

setup: $(STAMP)

# pip byte-compiles one file at a time; compileall -j 0 compiles the same files on every core
# (a first setup: about 43 s instead of 50). Compiling on first import instead cost the test
# run more than it saved: every process of the stack compiled what it imported.
$(STAMP): requirements.txt requirements-dev.txt requirements-tuning.txt requirements-tuning-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-compile -r requirements-tuning.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -r requirements-tuning-nodeps.txt
	$(PY) -m pip install --quiet --no-compile --no-deps -e .
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null || true  # files that do not compile: pip skips them too
	touch $(STAMP)

# Debian packages the tests need: Chromium renders report.html. Installed when running as root
# (CI, containers); otherwise the command to run is printed.
system-deps:
	@command -v java >/dev/null || echo "java not found: apt-get install openjdk-17-jre-headless (the emulators need it)"
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: sudo apt-get install chromium (the report rendering test needs it)"; fi; }

# TEST_WORKERS=N runs the suite on N pytest-xdist workers (each with its own local stack, on free
# ports, one test module at a time, longest modules first: tests/conftest.py); 0 runs it in one
# process. Three workers is the default: most of the suite's time is spent waiting (a lease to
# lapse, a redelivery, a poller tick; the CPUs are busy a third of the time on two workers), and
# a third overlaps more of those waits: on this 2-core machine, a lone clone's suite took 339 s on
# three workers against 405 s on two (about 13 min in one process).
TEST_WORKERS ?= 3

test: setup system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

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

# Static checks of deploy/ without a cloud account: checkov in its own virtualenv (its pins
# conflict with ours). The parse and drift tests (tests/unit/test_deploy.py) run with `make test`.
DEPLOY_VENV ?= .venv-deploy

.PHONY: deploy-check
# terraform fmt needs no provider, so it runs wherever the binary is; validate and plan need the
# google provider and a project, which CI does not have (deploy/README.md).
deploy-check: $(DEPLOY_VENV)/.installed
	@if command -v terraform >/dev/null; then \
		echo "terraform fmt -check -recursive deploy"; \
		TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff deploy; \
	else echo "terraform is not on PATH: skipping terraform fmt -check"; fi
	$(DEPLOY_VENV)/bin/checkov -d deploy --quiet --compact --skip-download

$(DEPLOY_VENV)/.installed: deploy/requirements-check.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r deploy/requirements-check.txt
	touch $@
