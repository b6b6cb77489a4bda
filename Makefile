# eselake: `make demo` runs the whole chain on simulated DSA-110 data, `make test` runs the test suite.
# Both create .venv and install everything they need from the package registries.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv system-deps clean bench

venv: $(STAMP)

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

demo: $(STAMP) system-deps
	$(BIN)/eselake demo --out demo-out

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) demo-out lake .pytest_cache
