"""The benchmark scripts in smoke mode with the tiny SmolLM2 planner: they run and write their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from localgpt.schema import ModelCard
from tests.helpers import store_dir

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LOCALGPT_STORE=str(store_dir()))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)


def test_constrained_smoke(tmp_path: Path, real_card: Callable[[str], ModelCard]) -> None:
    card = real_card("smollm2-135m-instruct")
    out = tmp_path / "constrained.json"
    proc = run_script("-m", "bench.constrained", "--model", str(card.file("model.gguf")),
                      "--n", "2", "--backend", "llguidance", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    model = next(iter(doc["models"].values()))
    build = model["compile"][0]
    assert build["backend"] == "llguidance" and build["warm_s"] < build["cold_s"]
    assert model["decode"]["constrained"]["valid"] == 2


def test_pipeline_smoke(tmp_path: Path, real_card: Callable[[str], ModelCard]) -> None:
    for model_id in ("smollm2-135m-instruct", "piper-en-us-joe-medium", "whisper-tiny-en", "all-minilm-l6-v2-int8"):
        real_card(model_id)
    out = tmp_path / "pipeline.json"
    proc = run_script("-m", "bench.pipeline", "--planner", "smollm2-135m-instruct", "--quick",
                      "--out", str(out), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert len(doc["requests"]) == 1
    par = doc["parallel"]
    assert par["tasks"] == 3 and par["serial_s"] > 0 and par["parallel_s"] > 0
    assert "speedup" in proc.stdout
