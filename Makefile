# The two commands of the README: `make demo` (install, start the embedded stack, run the main
# job end to end, stop) and `make test` (install, run the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e '.[all]'

install-dev: $(PY)
	$(PY) -m pip install -e '.[all,dev]'

demo: install
	$(PY) -m tango run examples/digits.yaml

test: install-dev
	$(PY) -m pytest

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
