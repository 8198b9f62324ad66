"""API fuzzing with schemathesis: requests generated from the live app's OpenAPI schema (every route,
uploads and streaming included, with the bearer key) against a real uvicorn on 127.0.0.1 over the fake
pipeline. Every response must be documented in the schema (status, media type, body) and none may be a
5xx. Fixed seed (derandomized) and a bounded number of examples per operation, so CI stays under a minute.

One check is left out: ``positive_data_acceptance`` (ST202) expects every schema-valid request to succeed,
but some rules are about content the schema cannot state: an upload must *be* an image, audio or video
file (its bytes are sniffed: 415 otherwise), a conversation must hold a non-empty user message (400), and a
well-formed file id must name a file that exists (404). Those answers are documented error replies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from localgpt.llm import Message
from tests.helpers import FakeWorld, Served, serve

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("LOCALGPT_FUZZ_EXAMPLES", "120"))  # per operation: about 1,000 requests, 30 s
REAL_EXAMPLES = 3  # per operation, against the real SmolLM2 pipeline


class SturdyWorld(FakeWorld):
    """The fake world, with the fake planner's keyword rules kept from tripping on arbitrary text."""

    def brain(self, messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
        try:
            return super().brain(messages, schema)
        except (IndexError, AttributeError):  # "outside" with no path after it, and the like: a plain plan
            return '[{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello"}}]'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    world = SturdyWorld(tmp_path_factory.mktemp("fuzz"))
    world.release.set()  # requests that say "wait" do not wait
    server = serve(world, api_key=KEY, concurrency=2, queue_size=64, max_upload_mb=1)
    yield server
    server.stop()


def test_every_route_answers_as_documented(served: Served) -> None:
    """Each operation of the schema gets EXAMPLES generated requests (positive and negative data); every
    failed check is collected, and the test fails listing them. (The schemathesis pytest plugin's lazy
    schemas do not work under pytest 9, so the operations are driven with hypothesis directly.)"""
    api = schemathesis.openapi.from_url(served.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    failures: list[str] = []
    sent: dict[str, int] = {}
    for result in api.get_all_operations():
        fuzz(result.ok(), sent, failures)
    print(f"schemathesis: {sum(sent.values())} requests over {len(sent)} operations: {sent}")
    assert set(sent) >= {"GET /health", "GET /v1/models", "POST /v1/files", "GET /v1/files/{file_id}",
                         "POST /v1/chat/completions", "POST /hugginggpt", "POST /tasks", "POST /results",
                         "GET /v1/runs/{run_id}"}
    assert not failures, "\n\n".join(dict.fromkeys(failures))


def fuzz(operation: Any, sent: dict[str, int], failures: list[str], examples: int = EXAMPLES) -> None:
    """EXAMPLES requests to one operation, positive and negative data mixed; failed checks go to ``failures``."""
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE)))
    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        sent[label] = sent.get(label, 0) + 1
        try:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                                   excluded_checks=[positive_data_acceptance])
        except BaseException as exc:  # a failed check (a FailureGroup): collected, every operation is fuzzed
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:600]}")

    check()


@pytest.mark.slow
def test_real_pipeline_answers_as_documented(tmp_path: Path) -> None:
    """A short run against the real pipeline (SmolLM2 planner, the test store's experts): a few generated
    requests per operation, the same checks."""
    from localgpt.config import Settings
    from localgpt.server import create_app
    from tests.helpers import missing, store_dir

    store = store_dir()
    if not (store / "smollm2-135m-instruct" / "model.gguf").is_file():
        missing(f"smollm2-135m-instruct is not installed in {store}; run: python download_models.py --profile test")
    settings = Settings(store=store, planner="smollm2-135m-instruct", threads=2, data_dir=tmp_path / "data",
                        api_key=KEY, concurrency=1, queue_size=64, max_upload_mb=1, task_timeout=120)
    server = Served(create_app(settings))
    try:
        server.wait_ready(timeout=300)
        api = schemathesis.openapi.from_url(server.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
        failures: list[str] = []
        sent: dict[str, int] = {}
        for result in api.get_all_operations():
            fuzz(result.ok(), sent, failures, examples=REAL_EXAMPLES)
        print(f"schemathesis (real pipeline): {sum(sent.values())} requests: {sent}")
        assert not failures, "\n\n".join(dict.fromkeys(failures))
    finally:
        server.stop()
