#!/usr/bin/env bash
# Builds llama.cpp's own OpenAI-compatible server (`llama-server`, C++, continuous batching with --parallel)
# from the llama.cpp sources vendored in the llama-cpp-python sdist of the installed version, fetched from
# PyPI (the only network this needs), for bench/engine_validity.py and bench/engine_throughput.py:
#
#   bash bench/build_llama_server.sh [DIR]        # default DIR: ~/.cache/localgpt-llama-server
#   DIR/build/bin/llama-server -m model_store/smollm2-135m-instruct/model.gguf --host 127.0.0.1 --port 8080 \
#       --parallel 4 -c 16384 -t 2 -a smollm2
#
# It prints the binary's path. CPU build (GGML_NATIVE off, as the Dockerfiles build llama-cpp-python); about
# 10 minutes on 2 cores. Needs cmake and a C++ compiler (Debian: cmake g++).
set -euo pipefail
DIR=${1:-$HOME/.cache/localgpt-llama-server}
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python3
VERSION=$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')
mkdir -p "$DIR"
cd "$DIR"
SDIST=llama_cpp_python-$VERSION.tar.gz
if [ ! -s "$SDIST" ]; then
    url=$(curl -sfL https://pypi.org/simple/llama-cpp-python/ | grep -o "https://[^\"#]*/$SDIST" | head -1)
    [ -n "$url" ] || { echo "no sdist $SDIST on PyPI" >&2; exit 1; }
    curl -sfL -o "$SDIST.tmp" "$url" && mv "$SDIST.tmp" "$SDIST"
fi
[ -d "llama_cpp_python-$VERSION" ] || tar xzf "$SDIST"
SRC=llama_cpp_python-$VERSION/vendor/llama.cpp
cmake -S "$SRC" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >cmake.log
cmake --build build --target llama-server -j"$(nproc)" >build.log
echo "$DIR/build/bin/llama-server"
