# eselake: `make demo` runs the whole chain on simulated DSA-110 data, `make test` runs the test suite.
# Both create .venv and install everything they need from the package registries.
# eselake needs Python 3.11 (the CASA wheels, casatools/casatasks 6.7, exist for 3.11 only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IS311  := import sys; sys.exit(sys.version_info[:2] != (3, 11))

.PHONY: demo test venv check-python system-deps clean bench

# A venv made with another Python, or whose interpreter is gone, is rebuilt (not left broken).
venv: check-python
	@if [ -e $(VENV) ] && ! $(BIN)/python -c '$(IS311)' 2>/dev/null; then \
	  echo "$(VENV) is broken or not Python 3.11: rebuilding it"; rm -rf $(VENV); fi
	@$(MAKE) --no-print-directory $(STAMP)

check-python:
	@$(PYTHON) -c '$(IS311)' 2>/dev/null || { echo "eselake needs Python 3.11; '$(PYTHON)' is" \
	  "$$($(PYTHON) -V 2>&1 || echo missing). Install python3.11 or run: make PYTHON=/path/to/python3.11" >&2; exit 1; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[radio,dist,dev]'
	touch $(STAMP)

# Optional system packages from Debian: WSClean (the imager used when on PATH; casatasks.tclean otherwise) and
# headless Chromium for the browser test. Best effort: needs root and apt-get; tests that need them skip cleanly.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || missing="$$missing chromium chromium-driver"; \
	  command -v wsclean >/dev/null || missing="$$missing wsclean"; \
	  if [ -n "$$missing" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "system-deps: could not install$$missing; the tests that need them will skip"; \
	  fi; fi

demo: venv system-deps
	$(BIN)/eselake demo --out demo-out
	@echo "eselake is in $(VENV)/bin: run 'source $(VENV)/bin/activate' (or call $(VENV)/bin/eselake)"

test: venv system-deps
	$(BIN)/python -m pytest -q

bench: venv
	for b in benchmarks/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) demo-out lake .pytest_cache
