# `make demo` and `make test` each create (or refresh, when pyproject.toml
# changed) the virtual environment in .venv, install the package, and run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Installed first and pinned so pip never swaps in a CUDA build (see README).
TORCH := torch==2.13.0

.PHONY: venv demo test test-slow bench clean

# The editable install runs twice quiet: setuptools prints an informational
# notice on every editable install; errors still show.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet --quiet -e ".[test]"
	@if $(PY) -m pip list 2>/dev/null | grep -i '^nvidia-'; then \
		echo "error: CUDA packages were pulled in; the CPU install must not need them" >&2; exit 1; fi
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/tanq pipeline --config configs/tiny.yaml

test: venv
	$(VENV)/bin/pytest -q

test-slow: venv
	$(VENV)/bin/pytest -q -m slow

bench: venv
	$(VENV)/bin/tanq bench data --json runs/bench/data.json
	$(VENV)/bin/tanq bench step --json runs/bench/step.json
	$(VENV)/bin/tanq bench train --json runs/bench/train.json
	$(VENV)/bin/tanq bench sweep --json runs/bench/sweep.json
	$(VENV)/bin/tanq bench translate --json runs/bench/translate.json
	$(VENV)/bin/tanq bench segment --json runs/bench/segment.json

clean:
	rm -rf runs mlruns mlartifacts mlflow.db
