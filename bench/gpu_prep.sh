#!/usr/bin/env bash
# Run once HERE (the CPU machine, with pip's index): fills .gpu/ (git-ignored through info/exclude) with what
# bench/gpu_check.sh needs on a lent GPU machine that has no network (its Python is 3.12, with torch,
# onnxruntime, transformers, scikit-build-core, cmake and nvcc but no pydantic, outlines, diffusers or
# llama-cpp-python):
#   .gpu/whl/                         cp312 wheels of localgpt's and outlines' pure dependencies (~15 MB)
#   .gpu/llama-cpp-python-src.tar.gz  llama-cpp-python 0.3.36's source, trimmed to what a CUDA build needs (~5 MB)
#   .gpu/tiny.gguf                    a tiny random llama with SmolLM2's tokenizer (bench/tiny_gguf.py, ~8 MB)
# Usage: bash bench/gpu_prep.sh [STORE]   (STORE: the model store holding smollm2-135m-instruct)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE="${1:-${LOCALGPT_STORE:-model_store}}"
PY="${PYTHON:-python3}"
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/tmp
platforms=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_31_x86_64
           --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps "${platforms[@]}" -d .gpu/whl \
    outlines==1.3.3 outlines_core==0.2.14 llguidance==1.9.1 genson==1.4.0 diskcache==5.6.3 jsonschema==4.26.0 \
    referencing==0.37.0 rpds-py==2026.9.1 jsonschema-specifications==2025.9.1 pydantic==2.14.4 \
    pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 typing-inspection==0.4.5 \
    python-dotenv==1.2.4 diffusers==0.39.0 importlib_metadata==10.2.0 typing_extensions==4.16.0
# llama-cpp-python: PyPI has no CUDA wheel, so its source goes and is built there (Hopper only)
"$PY" -m pip download -q --no-deps --no-binary :all: -d .gpu/tmp llama-cpp-python==0.3.36
tar xzf .gpu/tmp/llama_cpp_python-0.3.36.tar.gz -C .gpu/tmp
src=.gpu/tmp/llama_cpp_python-0.3.36
v="$src/vendor/llama.cpp"
rm -rf "$src"/{docs,examples,tests,docker,.git} "$v"/{models,docs,tests,benches,examples,conversion,app,pocs,skills,media,gguf-py,grammars,requirements,.git*}
find "$v/tools" -mindepth 1 -maxdepth 1 ! -name mtmd ! -name CMakeLists.txt -exec rm -rf {} +
for b in sycl vulkan opencl hexagon metal et cann musa webgpu zdnn openvino hip virtgpu zendnn; do rm -rf "$v/ggml/src/ggml-$b"; done
tar czf .gpu/llama-cpp-python-src.tar.gz -C .gpu/tmp llama_cpp_python-0.3.36
# the tiny GGUF (the gguf package only for this step)
"$PY" -m pip install -q --no-deps --target .gpu/tmp/gguf gguf==0.17.1
PYTHONPATH=.gpu/tmp/gguf "$PY" bench/tiny_gguf.py "$STORE/smollm2-135m-instruct/model.gguf" .gpu/tiny.gguf
rm -rf .gpu/tmp
du -sh .gpu
