# The two commands of the README: `make demo` (install, start the embedded stack, run the main
# job end to end, stop) and `make test` (install, run the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-dev ui ui-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e '.[all]'

install-dev: $(PY)
	$(PY) -m pip install -e '.[all,dev]'

# The web UI is built when Node is present (project_manager serves web_ui/dist at /); without Node
# the demo and the tests still run, and / says the UI is not built.
ui:
	@if command -v npm >/dev/null 2>&1; then cd web_ui && npm ci --no-audit --no-fund && npm run build; \
	else echo "npm not found: skipping the web UI build"; fi

ui-test: ui
	@if command -v npm >/dev/null 2>&1; then cd web_ui && npm test; fi

demo: install ui
	$(PY) -m tango run examples/digits.yaml

test: install-dev ui-test
	$(PY) -m pytest

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
