"""The controller LLM on a real engine: llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server``) serving the SmolLM2 GGUF of the test store on 127.0.0.1, started by this module.

The 50 varied requests of test_llm_real.py are planned through it under the production plan schema, which
goes to the engine as its grammar (engine_schema.for_gbnf): every reply must be a valid plan, as in-process
decoding guarantees. A whole TTS -> ASR run goes through it with the real experts, with the answer streamed,
and every connection the run opens is recorded: only the engine's loopback address is contacted.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.engine_server import LlamaServer
from bench.engine_validity import plan_all
from bench.varied_requests import REQUESTS
from localgpt.config import Settings
from localgpt.llm.engine_schema import for_gbnf, grammar_for
from localgpt.llm.http import HTTPLLM
from localgpt.pipeline import Pipeline
from localgpt.planning.schema import plan_schema
from localgpt.runtime.selector import Selector
from localgpt.schema import Plan
from tests import helpers
from tests.integration.test_e2e_real import PLAN, REQUEST, SMOLLM, normalise

pytestmark = [pytest.mark.slow]


def gguf() -> Path:
    path = helpers.store_dir() / SMOLLM / "model.gguf"
    if not path.is_file():
        helpers.missing(f"'{SMOLLM}' is not installed in {helpers.store_dir()}; "
                        "run: python download_models.py --profile test")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        helpers.missing(f"llama-cpp-python's server is not installed ({exc.name}); pip install -e '.[engine]'")
    log = tmp_path_factory.mktemp("engine") / "server.log"
    with LlamaServer(gguf(), threads=2, n_ctx=4096, alias=SMOLLM, log=log) as running:
        yield running


@pytest.fixture(scope="module")
def llm(server: LlamaServer) -> Iterator[HTTPLLM]:
    model = HTTPLLM(server.url)
    yield model
    model.close()


def test_the_engine_is_probed(llm: HTTPLLM) -> None:
    info = llm.describe()
    assert info["engine"] == "llama-cpp-python" and info["model"] == SMOLLM
    assert llm.count_tokens("hello world") in (2, 3) and llm.count_source == "engine"  # (its count adds a BOS)


def test_the_plan_grammar_parses_in_llama_cpp(server: LlamaServer) -> None:
    # a grammar llama.cpp cannot parse ends llama-cpp-python's server process; the rewritten schemas must parse
    import llama_cpp
    from llama_cpp import llama_grammar

    vocab_model = llama_cpp.Llama(str(gguf()), vocab_only=True, verbose=False)
    try:
        for schema in (plan_schema(steps=True), plan_schema(steps=False), Selector.schema(["a-b", "c.d"])):
            # the grammar localgpt writes, and the converter's grammar of the rewritten schema (Ollama's way)
            for grammar in (grammar_for(schema), llama_grammar.json_schema_to_gbnf(json.dumps(for_gbnf(schema)))):
                sampler = llama_cpp.llama_sampler_init_grammar(vocab_model._model.vocab, grammar.encode(), b"root")
                assert sampler, f"llama.cpp could not parse the grammar of {json.dumps(schema)[:80]}"
                llama_cpp.llama_sampler_free(sampler)
    finally:
        vocab_model.close()


def test_fifty_requests_through_the_engine_all_decode_to_valid_plans(llm: HTTPLLM) -> None:
    assert len(REQUESTS) == 50
    result, invalid = plan_all(llm, list(REQUESTS))
    summary = {"engine": "llama-cpp-python server (python -m llama_cpp.server)", "model": SMOLLM,
               "constraint": "GBNF grammar written from plan_schema (engine_schema.GBNF), the request's 'grammar'",
               **result, "threads": 2}
    print("\nplanning through the engine:", json.dumps(summary))
    out = os.environ.get("LOCALGPT_BENCH_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "engine_validity.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    assert result["valid"] == len(REQUESTS) and not invalid, \
        f"{len(invalid)} replies broke the schema, first: {invalid[0]}"


def test_an_answer_streams_from_the_engine(llm: HTTPLLM) -> None:
    chunks: list[str] = []
    msgs = [{"role": "user", "content": "Write two sentences about the sea."}]
    text = llm.generate(msgs, max_tokens=40, on_token=chunks.append, repeat_penalty=1.1)
    assert len(chunks) > 3 and "".join(chunks) == text and text.strip()


class Connections:
    """Records the address of every socket connection this process opens (and refuses non-loopback ones)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.addresses: list[Any] = []
        real = socket.socket.connect

        def connect(sock: socket.socket, address: Any) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.addresses.append(address[:2])
                if address[0] not in ("127.0.0.1", "::1"):
                    raise ConnectionRefusedError(f"network access refused by the test: {address!r}")
            return real(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)


def test_say_then_transcribe_through_the_engine(server: LlamaServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.test_e2e_real import OFFLINE_SWITCHES, PIPER, WHISPER

    store = helpers.store_dir()
    for model_id in (PIPER, WHISPER):
        if not (store / model_id / "model.json").is_file():
            helpers.missing(f"model '{model_id}' is not installed in {store}")
    for name in OFFLINE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    connections = Connections(monkeypatch)
    settings = Settings(store=store, runs_dir=tmp_path / "runs", threads=2, planner=f"{server.url}#{SMOLLM}")
    pipe = Pipeline.from_settings(settings)
    assert isinstance(pipe.llm, HTTPLLM)
    try:
        # the engine plans the request (a valid plan, or the planner's clear error: SmolLM2 is 135M)
        planned = pipe.plan(REQUEST)
        assert isinstance(planned, Plan) and planned.tasks
        # the run itself: the fixed TTS -> ASR plan on the real experts, the answer streamed by the engine
        deltas: list[str] = []
        plan = Plan.model_validate({"tasks": PLAN})
        result = pipe.run(REQUEST, plan=plan, on_event=lambda e: e.type == "answer_delta" and deltas.append(
            e.data["text"]))
    finally:
        pipe.close()
    tts, asr = result.results
    assert [r.status for r in result.results] == ["done", "done"], [r.error for r in result.results]
    assert "quick brown fox" in normalise(asr.outputs["text"]), asr.outputs["text"]
    assert len(deltas) > 2 and "".join(deltas).strip() == result.answer.strip()
    assert tts.outputs["audio"] in result.answer  # the file list closes every answer
    assert result.llm_calls >= 1
    contacted = {tuple(a) for a in connections.addresses}
    assert contacted == {("127.0.0.1", server.port)}, contacted
