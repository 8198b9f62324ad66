"""Golden plans: a request, its files and a realistic, imperfect reply of the LLM -> the plan the planner
keeps after validation, mending and every pass (tests/golden/plans.jsonl; docs/planning.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localgpt.planning.passes import PASSES
from localgpt.planning.planner import Planner
from localgpt.testing import FakeLLM

CASES = [json.loads(line) for line in (Path(__file__).parent / "plans.jsonl").read_text("utf-8").splitlines()
         if line.strip()]


def _plan(case: dict[str, Any]) -> Any:
    llm = FakeLLM([json.dumps(case["reply"], ensure_ascii=False)])
    return Planner(llm, n_demos=0).attempt(case["request"], case["files"]), llm


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_plan(case: dict[str, Any]) -> None:
    attempt, llm = _plan(case)
    assert attempt.plan is not None, attempt.error
    assert [t.model_dump() for t in attempt.plan.tasks] == [
        {**t, "dep": [d for d in t["dep"] if d != -1]} for t in case["plan"]]
    assert list(attempt.passes) == case["passes"]
    assert attempt.salvaged is case["mended"]
    assert len(llm.calls) == 1  # no repair round was needed


def test_the_golden_set_covers_languages_files_and_long_chains() -> None:
    assert len(CASES) >= 24
    assert sum(c["lang"] != "en" for c in CASES) * 2 >= len(CASES)
    assert {"zh", "de", "ja", "ar", "fr", "es"} <= {c["lang"] for c in CASES}
    assert any(len(c["files"]) >= 3 for c in CASES)
    assert any(len(c["plan"]) >= 5 for c in CASES)


@pytest.mark.parametrize("name", sorted({n for n, _ in PASSES if n != "merge_duplicates_again"}))
def test_every_pass_fires_in_one_case_and_stays_still_in_another(name: str) -> None:
    fires = [c["id"] for c in CASES if name in c["passes"]]
    assert fires, f"no golden case where {name} changes the plan"
    assert any(name not in c["passes"] for c in CASES)


def test_quoted_text_stays_verbatim_in_its_language() -> None:
    for case in CASES:
        if "「" in case["request"] or "«" in case["request"]:
            attempt, _ = _plan(case)
            assert attempt.plan is not None
            quoted = case["request"].split("「")[-1].split("」")[0] if "「" in case["request"] else \
                case["request"].split("«")[-1].split("»")[0]
            quoted = quoted.strip()  # French sets its guillemets off with spaces
            assert any(quoted in v for t in attempt.plan.tasks for v in t.args.values()), case["id"]
