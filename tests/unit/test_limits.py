"""Requests too long for the controller LLM's context window are refused before any LLM call, with the
token count and the limit, in every front end (library, batch, chat)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from localgpt.batch.inputs import read_items
from localgpt.batch.runner import run_batch
from localgpt.cli.chat import ChatSession
from localgpt.errors import RequestTooLong
from localgpt.pipeline import Pipeline
from tests.integration.test_batch import fake_pipeline, make_settings

LONG = "word " * 40_000  # 200,000 characters: about 50,000 tokens for FakeLLM (4 characters a token)


@pytest.fixture
def pipe(tmp_path: Path) -> Pipeline:
    return fake_pipeline(make_settings(tmp_path))


def test_long_request_is_refused_before_the_llm(pipe: Pipeline) -> None:
    with pytest.raises(RequestTooLong) as caught:
        pipe.run(LONG)
    exc = caught.value
    assert exc.tokens > exc.limit > 0
    assert f"{exc.tokens:,} tokens" in exc.message and f"{exc.limit:,}" in exc.message
    assert "4096" in exc.message and exc.hint and "shorten" in exc.hint
    assert pipe.llm.calls == []  # type: ignore[attr-defined]  # nothing reached the LLM
    with pytest.raises(RequestTooLong):
        pipe.plan(LONG)


def test_limit_is_the_window_less_the_planners_prompt_and_reply(pipe: Pipeline) -> None:
    limit = pipe.request_limit()
    assert 0 < limit < pipe.llm.n_ctx - pipe.planner.max_tokens()
    # a request just under the limit passes the check, one just over does not (FakeLLM: 4 characters a token)
    prompt_extra = pipe.llm.count_tokens(pipe.planner.user_prompt("", []))
    fits = "x" * ((limit - prompt_extra - 1) * 4)
    assert pipe.check_request(fits) <= limit
    with pytest.raises(RequestTooLong):
        pipe.check_request(fits + "y" * 40)


def test_any_script_counts_by_tokens(pipe: Pipeline) -> None:
    """The check counts tokens of any script (CJK, Arabic, emoji): no word splitting involved."""
    for text in ("猫" * 60_000, "قطة " * 30_000, "🐈" * 60_000):
        with pytest.raises(RequestTooLong):
            pipe.check_request(text)
    assert pipe.check_request("画一只猫，然后描述它") > 0


def test_enormous_request_is_refused_without_tokenizing(pipe: Pipeline) -> None:
    counted: list[int] = []
    count = pipe.llm.count_tokens
    pipe.request_limit()
    pipe.llm.count_tokens = lambda text: counted.append(len(text)) or count(text)  # type: ignore[method-assign]
    with pytest.raises(RequestTooLong) as caught:
        pipe.check_request("a" * 5_000_000)
    assert counted == [] and "5,000,000 characters" in caught.value.message


def test_batch_item_too_long_fails_alone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "long", "request": LONG}) + "\n"
                      + json.dumps({"id": "short", "request": "say hello"}) + "\n")
    out = tmp_path / "out.jsonl"
    summary = run_batch(read_items(source, None, settings.max_tasks), out, settings, workers=1,
                        pipeline_factory=fake_pipeline)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert summary.failed == 1
    assert records["short"]["status"] == "done"
    assert "too long" in json.dumps(records["long"]) and "tokens" in json.dumps(records["long"])


def test_chat_turn_too_long_is_reported_and_the_session_goes_on(pipe: Pipeline) -> None:
    session = ChatSession(pipe)
    said: list[str] = []
    lines = io.StringIO(LONG + "\nsay hello\n/quit\n")
    assert session.loop(lines, said.append, lambda: (lambda e: None)) == 0
    assert any(s.startswith("error: the request is too long") and "hint: shorten" in s for s in said)
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["say hello"]
