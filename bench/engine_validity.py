"""The 50 varied requests planned through an engine under the production plan schema: how many replies are
valid plans, and the time a plan.

    flock /tmp/llm.lock python -m bench.engine_validity --engine-url "http://127.0.0.1:8080/v1#smollm2" \
        [--out bench/results/engine-validity-llama-server.json]

The engine gets the constraint in the form localgpt picks for it (``HTTPLLM``: a GBNF grammar for llama.cpp's
servers, ``response_format`` JSON schema for vLLM and others); each reply is checked against the schema here.
``tests/integration/test_engine_real.py`` runs :func:`plan_all` against llama-cpp-python's server in CI.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def plan_all(llm: Any, requests: list[tuple[str, tuple[str, ...]]]
             ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Plan each request through ``llm`` (an ``HTTPLLM``) with the default planner's messages and schema.
    Returns the summary (valid count, seconds, completion tokens) and the invalid replies (request, reply,
    the first line of the schema's complaint)."""
    import jsonschema

    from localgpt.planning.planner import Planner

    planner = Planner(llm)
    invalid: list[tuple[str, str, str]] = []
    before = llm.stats.completion_tokens
    start = time.perf_counter()
    for i, (request, files) in enumerate(requests):
        begin = time.perf_counter()
        raw = llm.generate(planner.messages(request, files), schema=planner.schema, max_tokens=planner.max_tokens())
        try:
            jsonschema.validate(json.loads(raw), planner.schema)
            verdict = "valid"
        except (json.JSONDecodeError, jsonschema.ValidationError) as exc:
            invalid.append((request, raw, str(exc).splitlines()[0]))
            verdict = "invalid"
        print(f"  {i:2d} {time.perf_counter() - begin:5.1f} s {verdict}", flush=True)
    seconds = time.perf_counter() - start
    summary = {"requests": len(requests), "valid": len(requests) - len(invalid),
               "validity_rate": (len(requests) - len(invalid)) / len(requests), "seconds": round(seconds, 1),
               "seconds_per_request": round(seconds / len(requests), 2),
               "completion_tokens": llm.stats.completion_tokens - before}
    return summary, invalid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine-url", required=True, help="http://HOST:PORT/v1, optionally #MODEL")
    parser.add_argument("--engine", default="", help="what the engine is, for the JSON (default: its kind)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "engine-validity.json"))
    args = parser.parse_args()

    from bench.varied_requests import REQUESTS
    from localgpt.llm.http import HTTPLLM

    base, _, model = args.engine_url.partition("#")
    llm = HTTPLLM(base, model=model or None)
    try:
        summary, invalid = plan_all(llm, list(REQUESTS))
        described = llm.describe()
    finally:
        llm.close()
    result = {"bench": "engine_validity", "engine": args.engine or described.get("engine", "unknown"),
              "url": args.engine_url, "described": described, **summary,
              "invalid_examples": [{"request": r, "reply": raw[:400], "error": e} for r, raw, e in invalid[:5]]}
    print(json.dumps({k: v for k, v in result.items() if k != "invalid_examples"}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
