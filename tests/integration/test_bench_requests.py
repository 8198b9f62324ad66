"""The evaluation set's scorer end to end with the tiny SmolLM2 planner: plans, stores replies, scores, rescores."""

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


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LOCALGPT_STORE=str(store_dir()))
    return subprocess.run([sys.executable, "-m", "bench.requests", *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=REPO)


def test_requests_scorer_smoke(tmp_path: Path, real_card: Callable[[str], ModelCard]) -> None:
    real_card("smollm2-135m-instruct")
    proc = run_module("--planner", "smollm2-135m-instruct", "--limit", "2", "--threads", "2",
                      "--n-demos", "2", "--against", "n_demos=1", "--name", "smoke", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "smoke.json").read_text())
    assert doc["half"] == "tuning" and doc["report"] is False and doc["planner"] == "smollm2-135m-instruct"
    assert doc["settings"]["n_demos"] == 2
    overall = doc["metrics"]["all"]
    assert overall["requests"] == 2 and overall["median_seconds"] > 0
    assert set(doc["metrics"]["by_shape"]) == {"single", "chain"}  # --limit takes shapes in turn
    meta = [json.loads(line) for line in (tmp_path / "smoke.meta.jsonl").read_text().splitlines()]
    assert len(meta) == 2 and all(m["raw"] and m["seconds"] > 0 for m in meta)  # the replies are kept
    assert "node_f1" in proc.stdout and "exact_set" in proc.stdout
    # --against: the same requests planned again in the same process with one demo, written as smoke-b
    other = json.loads((tmp_path / "smoke-b.json").read_text())
    assert other["settings"]["n_demos"] == 1 and other["against"] == {"run": "smoke", "change": "n_demos=1"}
    assert other["metrics"]["all"]["requests"] == 2
    assert doc["paired"]["run"] == "smoke-b" and doc["paired"]["requests"] == 2
    meta_b = [json.loads(line) for line in (tmp_path / "smoke-b.meta.jsonl").read_text().splitlines()]
    assert [m["id"] for m in meta_b] == [m["id"] for m in meta] and all(m["raw"] for m in meta_b)

    again = run_module("--rescore", "smoke", "--out-dir", str(tmp_path))  # no model: today's code over the replies
    assert again.returncode == 0, again.stderr[-2000:]
    redone = json.loads((tmp_path / "smoke-rescored.json").read_text())
    assert redone["rescored_from"] == "smoke" and redone["metrics"]["all"]["requests"] == 2
    assert redone["metrics"]["all"]["valid_rate"] == overall["valid_rate"]  # same code, same replies, same plans
    assert redone["changed"] == []
