# Every target creates (once) and uses the virtual environment in .venv/: `make demo`
# installs what the demo needs (`.[dagster]`), the other targets the dev extra (`.[dev]`).
# The newest python3.1x that runs here (a pyenv shim of an inactive version does not),
# else python3; the setup below stops with a clear message if it is older than 3.11.
PYTHON ?= $(shell for v in 3.14 3.13 3.12 3.11; do \
	python$$v -c '' >/dev/null 2>&1 && { echo python$$v; exit 0; }; done; echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-dagster

# The two ends of the supported range, each in a venv of its own (see CONTRIBUTING.md):
# `make test-floor`: the lowest declared versions (constraints/floor.txt) on Python 3.11;
# `make test-newest`: the newest releases pip resolves inside the declared ranges on
# Python 3.13 (`--upgrade-strategy eager`: a rebuilt venv upgrades every dependency, not
# only dagloop). RANGE_TESTS picks what they run (default: the whole suite).
find_python = $(shell for p in python$(1) $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(1)*/bin/python$(1) 2>/dev/null | sort -r) /usr/local/bin/python$(1) /usr/bin/python$(1); do \
	$$p -c 'import sys; assert sys.version_info[:2] == ($(subst .,$(comma) ,$(1)))' >/dev/null 2>&1 && { echo $$p; break; }; done)
comma := ,
PYTHON_FLOOR  ?= $(call find_python,3.11)
PYTHON_NEWEST ?= $(call find_python,3.13)
VENV_FLOOR    := .venv-floor
VENV_NEWEST   := .venv-newest
RANGE_TESTS   ?= tests
PYTEST_ARGS   := -q -p no:cacheprovider --ignore=tests/ui

.PHONY: setup demo test test-ui test-floor test-newest lint typecheck bench bench-quick bench-interrupts clean

define check_python
	@$(1) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "dagloop needs Python 3.11 or newer; '$(1)' is $$($(1) --version 2>&1)." \
	       "Run e.g. 'make PYTHON=python3.12 ...'." >&2; exit 1; }
endef

$(VENV)/.created:
	$(call check_python,$(PYTHON))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(DEMO_STAMP): pyproject.toml | $(VENV)/.created
	$(PY) -m pip install --quiet -e '.[dagster]'
	touch $@

$(STAMP): pyproject.toml | $(VENV)/.created
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(DEMO_STAMP)

setup: $(STAMP)

demo: $(DEMO_STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) tests

# The browser test of per-step compute logs in Debian's headless chromium,
# installed here when missing (as root). `.ci/run` runs it after `make test`.
test-ui: $(STAMP)
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "make test-ui needs Debian's chromium: apt-get install chromium (as root)" >&2; exit 1; fi; }
	$(PY) -m pytest -q -p no:cacheprovider -s tests/ui

# A venv of the range's ends: $(1) venv, $(2) interpreter, $(3) Python version, $(4) pip args.
define range_venv
	@test -n "$(2)" || { echo "make $@: no Python $(3) found (python$(3), pyenv's" \
	  "versions/$(3)*); name one with PYTHON_FLOOR=... or PYTHON_NEWEST=..." >&2; exit 1; }
	$(2) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet --upgrade $(4)
	$(1)/bin/python -m pip list 2>/dev/null | grep -iE '^(dagster|greenlet|anyio|rich|distributed|create-dagster) ' > $(1)/versions.txt
	touch $(1)/.installed
endef

$(VENV_FLOOR)/.installed: pyproject.toml constraints/floor.txt
	$(call range_venv,$(VENV_FLOOR),$(PYTHON_FLOOR),3.11,-e '.[dev]' -c constraints/floor.txt)

$(VENV_NEWEST)/.installed: pyproject.toml
	$(call range_venv,$(VENV_NEWEST),$(PYTHON_NEWEST),3.13,--upgrade-strategy eager -e '.[dev]')

test-floor: $(VENV_FLOOR)/.installed
	@echo "make test-floor: $$($(VENV_FLOOR)/bin/python --version);" $$(cat $(VENV_FLOOR)/versions.txt | tr -s ' ' '=' | tr '\n' ' ')
	$(VENV_FLOOR)/bin/python -m pytest $(PYTEST_ARGS) $(RANGE_TESTS)

test-newest: $(VENV_NEWEST)/.installed
	@echo "make test-newest: $$($(VENV_NEWEST)/bin/python --version);" $$(cat $(VENV_NEWEST)/versions.txt | tr -s ' ' '=' | tr '\n' ' ')
	$(VENV_NEWEST)/bin/python -m pytest $(PYTEST_ARGS) $(RANGE_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(MAKE) -C benchmarks bench

bench-quick: $(STAMP)
	$(MAKE) -C benchmarks bench-quick

bench-interrupts: $(STAMP)
	$(MAKE) -C benchmarks bench-interrupts

clean:
	rm -rf $(VENV) $(VENV_FLOOR) $(VENV_NEWEST) .dagster_home build dist src/*.egg-info
