# Every target creates (once) and uses the virtual environment in .venv/.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-ui lint typecheck bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

# The browser test of per-step compute logs (issue 12) in Debian's headless chromium,
# installed here when missing (as root); `make test` runs it too when chromium is there.
test-ui: $(STAMP)
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "make test-ui needs Debian's chromium: apt-get install chromium (as root)" >&2; exit 1; fi; }
	DAGLOOP_REQUIRE_UI=1 $(PY) -m pytest -q -p no:cacheprovider -s tests/dagster/test_step_logs_ui.py

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
