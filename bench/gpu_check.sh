#!/usr/bin/env bash
# The GPU check, one command on a lent GPU machine with no network (under 8 minutes): installs the carried
# wheels, builds llama-cpp-python with CUDA for Hopper from the carried source (~3-5 min on 16 cores), then
# bench/gpu_check.py prints one table: planning with n_gpu_layers=-1, an ONNX expert on CUDAExecutionProvider,
# a tiny diffusers pipeline in fp16.
# Prepare .gpu/ here first: bash bench/gpu_prep.sh; then run this there with .gpu carried.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-/tmp/gpu-check}"; mkdir -p "$OUTDIR"
SITE=/tmp/site; mkdir -p "$SITE"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
export PYTHONPATH="$SITE:$PWD"
if ! python3 -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" 2>/dev/null; then
    echo "building llama-cpp-python with CUDA (sm_90) ..."
    start=$SECONDS
    rm -rf /tmp/lcp && mkdir -p /tmp/lcp && tar xzf .gpu/llama-cpp-python-src.tar.gz -C /tmp/lcp
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" timeout 360 python3 -m pip install -q --no-index --no-deps \
        --no-build-isolation --no-cache-dir --target "$SITE" /tmp/lcp/llama_cpp_python-0.3.36 > "$OUTDIR/llama_build.log" 2>&1 \
        && echo "built in $((SECONDS - start)) s" \
        || { echo "the CUDA build of llama-cpp-python failed after $((SECONDS - start)) s:"; tail -25 "$OUTDIR/llama_build.log"; }
fi
python3 -m bench.gpu_check --gguf .gpu/tiny.gguf --out "$OUTDIR/gpu_check.json"
