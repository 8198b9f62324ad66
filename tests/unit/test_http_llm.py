"""HTTPLLM against fake engines on 127.0.0.1: the request forms each engine gets, streaming, token counting and
context size from the engine or a stated estimate, retries on connection errors only, and the clear error when an
engine ignores the constraint. (The real engine, llama.cpp's server with SmolLM2, is in
tests/integration/test_engine_real.py.)"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest

from localgpt.config import Settings
from localgpt.errors import ConfigError
from localgpt.llm import KEEP, complete
from localgpt.llm.engine_schema import GBNF, constraint_fields, for_gbnf, grammar_for, word_class_body
from localgpt.llm.http import HTTPLLM, EngineError, estimate_tokens, is_engine_url, parse_engine_url
from localgpt.pipeline import Pipeline, controller_name
from localgpt.planning.planner import Planner
from localgpt.planning.schema import STEP_MAX, plan_schema
from tests.helpers import free_port

ODD = {"type": "object", "properties": {"code": {"enum": ["zq-alpha-7", "xv-omega-3"]}}, "required": ["code"],
       "additionalProperties": False}


class FakeEngine:
    """A tiny OpenAI-compatible engine. ``kind`` decides the routes it answers (as llama.cpp's server,
    llama-cpp-python's, vLLM, Ollama or a plain OpenAI-compatible one); ``reply`` makes each reply from the
    request body; every request is logged (path, body, headers)."""

    def __init__(self, kind: str = "llama.cpp", reply: Any = None, finish: str = "stop") -> None:
        self.kind = kind
        self.reply = reply or (lambda body: "Hello there, friend.")
        self.finish = finish
        self.log: list[tuple[str, Any, dict[str, str]]] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, code: int, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                engine.log.append((self.path, None, dict(self.headers)))
                self._json(*engine.get(self.path))

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                engine.log.append((self.path, body, dict(self.headers)))
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for chunk in engine.stream(self.path, body):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    return
                self._json(*engine.post(self.path, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self, path: str) -> tuple[int, Any]:
        if path == "/v1/models":
            entry: dict[str, Any] = {"id": "tiny", "object": "model", "owned_by": "me"}
            if self.kind == "vllm":
                entry.update(owned_by="vllm", max_model_len=2048)
            return 200, {"object": "list", "data": [entry]}
        if path == "/props" and self.kind == "llama.cpp":
            return 200, {"default_generation_settings": {"n_ctx": 3072}, "total_slots": 2}
        if path == "/api/version" and self.kind == "ollama":
            return 200, {"version": "0.9.0"}
        return 404, {"error": "not found"}

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        if path == "/tokenize" and self.kind == "llama.cpp":
            return 200, {"tokens": list(range(len(body["content"].split())))}
        if path == "/tokenize" and self.kind == "vllm":
            return 200, {"count": len(body["prompt"].split()), "tokens": []}
        if path == "/extras/tokenize/count" and self.kind == "llama-cpp-python":
            return 200, {"count": len(body["input"].split())}
        if path == "/api/show" and self.kind == "ollama":
            return 200, {"parameters": "num_ctx 8192\nstop \"<|im_end|>\"", "model_info": {}}
        if path == "/api/chat" and self.kind == "ollama":
            return 200, {"message": {"role": "assistant", "content": self.reply(body)}, "done": True,
                         "done_reason": self.finish, "prompt_eval_count": 5, "eval_count": 3}
        if path == "/v1/chat/completions":
            return 200, {"choices": [{"message": {"role": "assistant", "content": self.reply(body)},
                                      "finish_reason": self.finish}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
        return 404, {"error": "not found"}

    def stream(self, path: str, body: Any) -> Iterator[bytes]:
        text = self.reply(body)
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        if self.kind == "ollama":
            for piece in pieces:
                yield (json.dumps({"message": {"content": piece}, "done": False}) + "\n").encode()
            yield (json.dumps({"message": {"content": ""}, "done": True, "done_reason": "stop"}) + "\n").encode()
            return
        for piece in pieces:
            event = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
            yield f"data: {json.dumps(event)}\n\n".encode()
        yield f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': 'stop'}]})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def bodies(self, path: str) -> list[Any]:
        return [b for p, b, _ in self.log if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engines() -> Iterator[list[FakeEngine]]:
    made: list[FakeEngine] = []
    yield made
    for engine in made:
        engine.close()


def start(engines: list[FakeEngine], kind: str, **kwargs: Any) -> FakeEngine:
    engine = FakeEngine(kind, **kwargs)
    engines.append(engine)
    return engine


CHAT = [{"role": "user", "content": "Say hi"}]


def test_planner_urls_are_parsed() -> None:
    assert is_engine_url("http://127.0.0.1:8080/v1") and not is_engine_url("qwen2.5-coder-1.5b-instruct")
    assert parse_engine_url("http://127.0.0.1:8080/v1/#qwen") == ("http://127.0.0.1:8080/v1", "qwen")
    assert parse_engine_url("https://gpu-box:8000/v1") == ("https://gpu-box:8000/v1", None)
    with pytest.raises(ConfigError, match="not an http"):
        parse_engine_url("http://")


@pytest.mark.parametrize("kind,field", [("llama.cpp", "grammar"), ("llama-cpp-python", "grammar"),
                                        ("vllm", "response_format"), ("openai", "response_format"),
                                        ("ollama", "format")])
def test_each_engine_is_detected_and_gets_the_schema_in_its_form(engines: list[FakeEngine], kind: str,
                                                                 field: str) -> None:
    engine = start(engines, kind, reply=lambda body: '{"code":"xv-omega-3"}')
    llm = HTTPLLM(engine.url + "/v1")
    assert json.loads(llm.generate(CHAT, schema=ODD, max_tokens=20)) == {"code": "xv-omega-3"}
    assert llm.engine == kind and llm.model == "tiny"
    path = "/api/chat" if kind == "ollama" else "/v1/chat/completions"
    body = engine.bodies(path)[-1]
    sent = body[field]
    if kind in ("llama.cpp", "llama-cpp-python"):  # a grammar written here (GBNF), not the engine's converter
        assert sent == grammar_for(ODD) and "response_format" not in body
        assert '("\\"zq-alpha-7\\"" | "\\"xv-omega-3\\"")' in sent
    elif kind == "ollama":
        assert sent == for_gbnf(ODD) and body["options"]["num_predict"] == 20
    else:
        assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
        assert sent["json_schema"]["schema"] == (ODD if kind in ("vllm", "openai") else for_gbnf(ODD))
    llm.close()


def test_a_message_marked_to_keep_is_sent_as_role_and_content(engines: list[FakeEngine]) -> None:
    engine = start(engines, "vllm")
    llm = HTTPLLM(engine.url + "/v1")
    marked = [{**CHAT[0], KEEP: "1"}, *CHAT[1:]]
    llm.generate(marked, max_tokens=8)
    assert engine.bodies("/v1/chat/completions")[-1]["messages"] == [dict(m) for m in CHAT]
    llm.close()


def test_an_engine_that_ignores_the_schema_is_a_clear_error(engines: list[FakeEngine]) -> None:
    # a plain OpenAI-compatible server that takes response_format and decodes without it
    engine = start(engines, "openai", reply=lambda body: "Sure! Here is a poem about the sea.")
    llm = HTTPLLM(engine.url + "/v1")
    with pytest.raises(EngineError) as caught:
        llm.generate(CHAT, schema=ODD)
    err = caught.value
    assert "'openai'" in err.message and engine.url in err.message and "did not apply the constraint" in err.message
    assert err.hint is not None and "LOCALGPT_ENGINE" in err.hint
    # valid JSON of the wrong shape is refused the same way (a schema-less "JSON mode")
    engine.reply = lambda body: '{"code": "something else"}'
    with pytest.raises(EngineError, match="outside the JSON schema"):
        llm.generate(CHAT, schema=ODD)
    # the planner passes the error on: no plan is made from an unconstrained reply
    engine.reply = lambda body: '{"steps":["Step 1: speak"],"tasks":[{"id":0,"task":"text-to-speech","dep":[-1],' \
                                '"args":{"text":"hi"},"note":"extra"}]}'
    with pytest.raises(EngineError):
        Planner(llm).plan("Say hi aloud")
    # free text is not checked
    assert llm.generate(CHAT).startswith("{")
    llm.close()


def test_a_reply_cut_at_max_tokens_is_asked_again_with_the_room_left(engines: list[FakeEngine]) -> None:
    cut = {"n": 0}

    def reply(body: Any) -> str:
        if body["max_tokens"] <= 10:
            cut["n"] += 1
            return '{"code":"xv-om'
        return '{"code":"xv-omega-3"}'

    engine = start(engines, "llama.cpp", reply=reply)
    engine.finish = "length"
    llm = HTTPLLM(engine.url + "/v1")

    def finish(body: Any) -> str:
        return "length" if body["max_tokens"] <= 10 else "stop"

    engine.post = _with_finish(engine, finish)  # type: ignore[method-assign]
    assert llm.generate(CHAT, schema=ODD, max_tokens=10) == '{"code":"xv-omega-3"}'
    sent = [b["max_tokens"] for b in engine.bodies("/v1/chat/completions")]
    assert sent[0] == 10 and sent[1] > 1000 and cut["n"] == 1  # the room left in the engine's 3072 tokens
    llm.close()


def test_a_completion_carries_the_engines_usage_summed_over_a_reply_asked_again(engines: list[FakeEngine]) -> None:
    engine = start(engines, "llama.cpp", reply=lambda body: '{"code":"xv-omega-3"}')
    llm = HTTPLLM(engine.url + "/v1")
    once = complete(llm, CHAT, schema=ODD, max_tokens=50)
    assert (once.text, once.prompt_tokens, once.completion_tokens) == ('{"code":"xv-omega-3"}', 5, 3)
    engine.post = _with_finish(engine, lambda body: "length" if body["max_tokens"] <= 10 else "stop")  # type: ignore[method-assign]
    twice = llm.complete(CHAT, schema=ODD, max_tokens=10)  # cut, then asked again: two requests' usage
    assert (twice.prompt_tokens, twice.completion_tokens) == (10, 6)
    llm.close()


def _with_finish(engine: FakeEngine, finish: Any) -> Any:
    plain = FakeEngine.post

    def post(path: str, body: Any) -> tuple[int, Any]:
        code, data = plain(engine, path, body)
        if path == "/v1/chat/completions":
            data["choices"][0]["finish_reason"] = finish(body)
        return code, data

    return post


@pytest.mark.parametrize("kind", ["llama.cpp", "ollama", "openai"])
def test_free_text_streams_and_the_chunks_join_to_the_reply(engines: list[FakeEngine], kind: str) -> None:
    engine = start(engines, kind, reply=lambda body: "The quick brown fox jumps over the lazy dog.")
    llm = HTTPLLM(engine.url + "/v1")
    chunks: list[str] = []
    text = llm.generate(CHAT, on_token=chunks.append, repeat_penalty=1.1)
    assert len(chunks) > 3 and "".join(chunks) == text == "The quick brown fox jumps over the lazy dog."
    body = engine.bodies("/api/chat" if kind == "ollama" else "/v1/chat/completions")[-1]
    assert body["stream"] is True
    if kind == "ollama":
        assert body["options"]["repeat_penalty"] == 1.1
    else:
        assert body["repeat_penalty"] == 1.1 and body["temperature"] == 0.0
    assert llm.stats.calls == 1
    llm.close()


def test_tokens_and_context_come_from_the_engine(engines: list[FakeEngine]) -> None:
    cpp = start(engines, "llama.cpp")
    llm = HTTPLLM(cpp.url + "/v1")
    assert llm.n_ctx == 3072 and llm.n_ctx_source == "engine"
    assert llm.count_tokens("one two three four") == 4 and llm.count_source == "engine"
    llm.count_tokens("one two three four")
    assert len(cpp.bodies("/tokenize")) == 1  # counted once, then cached
    vllm = start(engines, "vllm")
    other = HTTPLLM(vllm.url + "/v1")
    assert other.n_ctx == 2048 and other.count_tokens("a b c") == 3
    ollama = start(engines, "ollama")
    assert HTTPLLM(ollama.url + "/v1").n_ctx == 8192


def test_without_an_engine_count_the_estimate_is_used_and_said(engines: list[FakeEngine]) -> None:
    engine = start(engines, "openai")
    llm = HTTPLLM(engine.url + "/v1")
    assert llm.n_ctx == 4096 and "assumed" in llm.n_ctx_source
    assert llm.count_tokens("hello world, how are you") == estimate_tokens("hello world, how are you") == 8
    assert llm.count_source == "estimate"
    assert estimate_tokens("你好世界") == 4  # 12 bytes: CJK is not under-counted
    assert HTTPLLM(engine.url + "/v1", n_ctx=1024).n_ctx == 1024


def test_the_key_is_sent_and_a_refused_key_is_named(engines: list[FakeEngine]) -> None:
    engine = start(engines, "llama.cpp")
    llm = HTTPLLM(engine.url + "/v1", api_key="s3cret", model="tiny")
    llm.generate(CHAT)
    assert all(h.get("Authorization") == "Bearer s3cret" for _, _, h in engine.log)
    engine.post = lambda path, body: (401, {"error": "bad key"})  # type: ignore[method-assign]
    with pytest.raises(EngineError, match="refused the key") as caught:
        llm.generate(CHAT)
    assert "LOCALGPT_LLM_API_KEY" in str(caught.value.hint)


def test_connection_errors_are_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("localgpt.llm.http.time.sleep", lambda s: None)
    port = free_port()  # nothing listens there
    llm = HTTPLLM(f"http://127.0.0.1:{port}/v1", model="tiny")
    calls = {"n": 0}
    real = llm._http  # noqa: SLF001

    def counting() -> Any:
        calls["n"] += 1
        return real()

    monkeypatch.setattr(llm, "_http", counting)
    with pytest.raises(EngineError, match=f"cannot reach the LLM engine at http://127.0.0.1:{port}/v1"):
        llm.generate(CHAT)
    assert calls["n"] == 1  # one client, four attempts inside _request


def test_a_server_error_is_not_retried(engines: list[FakeEngine]) -> None:
    engine = start(engines, "llama.cpp")
    engine.post = lambda path, body: (500, {"error": "boom"})  # type: ignore[method-assign]
    llm = HTTPLLM(engine.url + "/v1", model="tiny")
    with pytest.raises(EngineError, match="answered 500"):
        llm.generate(CHAT)
    assert len([p for p, _, _ in engine.log if p == "/v1/chat/completions"]) == 1


def test_settings_choose_the_engine_planner(engines: list[FakeEngine], tmp_path: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    engine = start(engines, "llama.cpp")
    monkeypatch.setenv("LOCALGPT_PLANNER", engine.url + "/v1#tiny")
    monkeypatch.setenv("LOCALGPT_LLM_API_KEY", "k")
    settings = Settings(store=tmp_path, runs_dir=tmp_path / "runs")
    pipe = Pipeline.from_settings(settings)
    assert isinstance(pipe.llm, HTTPLLM) and pipe.llm.model == "tiny" and pipe.llm.api_key == "k"
    assert controller_name(settings) == "tiny" and pipe.catalog.controller == "tiny"
    assert engine.log == []  # nothing is contacted before the first use
    pipe.close()


def test_gbnf_schema_is_within_the_original() -> None:
    # every plan the rewritten schema admits must pass the original one (the local check)
    original = plan_schema(max_tasks=3, steps=True)  # (3 places: validating 8 takes seconds)
    rewritten = for_gbnf(original)
    plan = {"steps": ["Step 1: say it"], "tasks": [
        {"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "say hi, 你好"}},
        {"id": 1, "task": "automatic-speech-recognition", "dep": [0], "args": {"audio": "<resource>-0"}}]}
    for schema in (original, rewritten):
        jsonschema.validate(plan, schema)
    for bad in ("<resource>-0", ""):  # a literal text may not open like a reference, nor be empty
        for schema in (original, rewritten):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({**plan, "tasks": [{**plan["tasks"][0], "args": {"text": bad}}]}, schema)
    for steps in (["say it"], ["Step 2: say it"], ["Step 1: "]):  # each step opens with its own label, then words
        for schema in (original, rewritten):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({**plan, "steps": steps}, schema)
    for schema in (original, rewritten):
        jsonschema.validate({**plan, "steps": ["Step 1: sag es", "Step 2: 读出来"]}, schema)
        with pytest.raises(jsonschema.ValidationError):  # (the bound on a step's length holds in both)
            jsonschema.validate({**plan, "steps": ["Step 1: " + "x" * STEP_MAX]}, schema)
    too_many = {"steps": ["Step 1: a"], "tasks": plan["tasks"] * 2}
    for schema in (original, rewritten):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(too_many, schema)
    text = json.dumps(rewritten)
    assert "\\\\w" not in text and "prefixItems" in text and "[^<]" not in text
    assert re.fullmatch(f"[{word_class_body()}]+", "照片_файл_photo2") and not re.fullmatch(
        f"[{word_class_body()}]+", "a：b")
    assert constraint_fields("vllm", original)["response_format"]["json_schema"]["schema"] is original


def test_the_engine_compose_file_points_localgpt_at_its_engines() -> None:
    import yaml

    from tests.helpers import REPO

    compose = yaml.safe_load((REPO / "docker" / "compose.engine.yml").read_text())
    services = compose["services"]
    for name, engine, port in (("localgpt", "llama-server", "8080"), ("localgpt-vllm", "vllm", "8000")):
        planner = services[name]["environment"]["LOCALGPT_PLANNER"]
        url, model = parse_engine_url(planner)
        assert url == f"http://{engine}:{port}/v1" and model == "planner"
        assert port in services[engine]["expose"] and "ports" not in services[engine]  # the engine stays inside
        assert services[name]["ports"][0].startswith("127.0.0.1:")
    assert "--parallel" in services["llama-server"]["command"]
    assert "--tensor-parallel-size" in services["vllm"]["command"]


def test_the_grammar_nests_the_task_list_and_keeps_strings_json_safe() -> None:
    grammar = GBNF(plan_schema(max_tasks=3, steps=True)).text
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())
    assert rules["root"] == "plan"
    tasks = rules["plan-tasks"]  # one to three tasks: t0 ("," t1 ("," t2)?)?, not three whole-list alternatives
    assert tasks == ('"[" space plan-tasks-0 ("," space plan-tasks-1 ("," space plan-tasks-2)?)? "]" space')
    assert rules["plan-tasks-1-0-id"] == '"1" space'
    assert rules["plan-tasks-2-0-dep-item"] == '("-1" | "0" | "1") space'
    literal = next(body for body in rules.values() if body.startswith('"\\"" ([^<'))
    assert '[^<"\\\\\\x00-\\x1f]' in literal and "{0,239}" in literal  # first character, then up to 239 more
    with pytest.raises(ValueError):
        GBNF({"type": "object", "properties": {"x": {}}, "required": ["x"], "additionalProperties": False})


def test_gbnf_schema_with_the_users_files_is_within_the_original() -> None:
    original = plan_schema(max_tasks=2, steps=True, files=["a (1).jpg", "照片.png", "talk.wav"])
    rewritten = for_gbnf(original)
    for name, valid in (("a (1).jpg", True), ("照片.png", True), ("a 1.jpg", False), ("other.jpg", False)):
        plan = {"steps": ["Step 1: caption it"],
                "tasks": [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": name}}]}
        for schema in (original, rewritten):
            if valid:
                jsonschema.validate(plan, schema)
            else:
                with pytest.raises(jsonschema.ValidationError):
                    jsonschema.validate(plan, schema)
    assert GBNF(original).text  # the grammar writer takes the names too
