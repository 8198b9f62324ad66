"""The Makefile's llama.cpp build flags follow the CPU's features (`make llama-flags`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AVX512 = "avx512f avx512cd avx512vl avx512dq avx512bw"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def flags(cpu_flags: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "CMAKE_ARGS"}
    out = subprocess.run(["make", "-s", "-C", str(ROOT), f"CPU_FLAGS=flags : {cpu_flags}", "llama-flags"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return out.split()


def test_an_avx2_cpu_gets_the_portable_build() -> None:
    assert flags("fpu sse4_2 avx avx2 fma f16c") == ["-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF"]


def test_avx512_kernels_only_where_every_avx512_part_is_listed() -> None:
    assert "-DGGML_AVX512=ON" not in flags("avx2 avx512f avx512_vnni")  # avx512bw and others missing
    full = flags(f"avx2 {AVX512} avx512_vnni avx512vbmi")
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_VBMI=ON"} <= set(full)
    assert "-DGGML_AVX512_BF16=ON" not in full and "-DGGML_NATIVE=OFF" in full


def test_amx_is_never_asked_for() -> None:
    assert not any("AMX" in f or "NATIVE=ON" in f for f in flags(f"avx2 {AVX512} amx_int8 amx_tile avx_vnni"))


def test_cmake_args_from_the_environment_win() -> None:
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "llama-flags"], capture_output=True, text=True, check=True,
                         env=os.environ | {"CMAKE_ARGS": "-DGGML_CUDA=on"}).stdout
    assert out.split() == ["-DGGML_CUDA=on"]
