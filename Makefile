# Every target creates (once) and uses the virtual environment in .venv/.
# The newest python3.1x that runs here (a pyenv shim of an inactive version does not),
# else python3; the setup below stops with a clear message if it is older than 3.11.
PYTHON ?= $(shell for v in 3.14 3.13 3.12 3.11; do \
	python$$v -c '' >/dev/null 2>&1 && { echo python$$v; exit 0; }; done; echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-ui lint typecheck bench bench-quick clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "dagloop needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." \
	       "Run e.g. 'make PYTHON=python3.12 ...'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/dagster/test_step_logs_ui.py

# The browser test of per-step compute logs (issue 12) in Debian's headless chromium,
# installed here when missing (as root). `.ci/run` runs it after `make test`.
test-ui: $(STAMP)
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "make test-ui needs Debian's chromium: apt-get install chromium (as root)" >&2; exit 1; fi; }
	$(PY) -m pytest -q -p no:cacheprovider -s tests/dagster/test_step_logs_ui.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(MAKE) -C benchmarks bench

bench-quick: $(STAMP)
	$(MAKE) -C benchmarks bench-quick

clean:
	rm -rf $(VENV) .dagster_home build dist src/*.egg-info
