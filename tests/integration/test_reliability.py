"""The server under inputs an outsider sends: requests too long for the LLM (413 with a hint, the server
unharmed), bugs (a 500 with only an error id), run records (``GET /v1/runs/{id}``), a client that
disconnects mid-stream (its run stops between tasks and frees its slot), and retention while serving."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localgpt.llm import Message
from localgpt.testing import png_bytes
from tests.helpers import FakeWorld, Served, chat, serve, sse_chunks

LONG = "paint " * 33_334  # 200,004 characters


class BuggyWorld(FakeWorld):
    """A fake world whose planner hits a bug (an exception naming a server path) on the word 'crash'."""

    def brain(self, messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
        if "crash" in messages[-1]["content"]:
            raise RuntimeError(f"boom in {self.tmp}/secret/module.py")
        return super().brain(messages, schema)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> BuggyWorld:
    return BuggyWorld(tmp_path_factory.mktemp("reliability"),
                      options={"draw-fake": {"sleep": 1.0}, "caption-fake": {"sleep": 0.5}})


@pytest.fixture(scope="module")
def server(world: BuggyWorld) -> Iterator[Served]:
    served = serve(world, api_key="k3y", concurrency=1, queue_size=2)
    yield served
    served.stop()


@pytest.fixture
def client(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": "Bearer k3y"}) as c:
        yield c


def healthy(client: httpx.Client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["running"] == 0 and health["waiting"] == 0
    assert client.post("/v1/chat/completions", json=chat("say hello")).status_code == 200


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/chat/completions stream", "/hugginggpt",
                                   "/tasks", "/results"])
def test_long_message_is_413_with_a_hint(client: httpx.Client, world: BuggyWorld, route: str) -> None:
    path, _, stream = route.partition(" ")
    calls_before = sum(len(llm.calls) for llm in world.llms)
    reply = client.post(path, json=chat(LONG, stream=bool(stream)))
    assert reply.status_code == 413, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["type"] == "request_too_long"
    assert error["tokens"] > error["limit"] > 0
    assert f"{error['tokens']:,} tokens" in error["message"] and "shorten" in error["hint"]
    assert sum(len(llm.calls) for llm in world.llms) == calls_before  # refused before any LLM call
    healthy(client)


def test_long_history_is_trimmed_not_refused(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": "ok"},
                         {"role": "user", "content": "say hello"}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


def test_a_bug_is_a_500_with_an_error_id_only(client: httpx.Client, world: BuggyWorld,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="localgpt"):
        reply = client.post("/v1/chat/completions", json=chat("crash now"))
    assert reply.status_code == 500
    body = reply.json()
    error_id = body["error_id"]
    assert re.fullmatch(r"[0-9a-f]{12}", error_id) and body["error"]["error_id"] == error_id
    assert "boom" not in reply.text and "secret" not in reply.text and str(world.tmp) not in reply.text
    assert "RuntimeError" not in reply.text
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info and "boom" in str(logged[0].exc_info[1])
    # streamed: the error event carries an id, not the exception
    streamed = client.post("/v1/chat/completions", json=chat("crash now", stream=True))
    assert streamed.status_code == 200
    last = [c for c in sse_chunks(streamed) if isinstance(c, dict) and "error" in c][-1]
    assert re.fullmatch(r"internal error \(error_id [0-9a-f]{12}\)", last["error"]["message"])
    assert "boom" not in streamed.text and str(world.tmp) not in streamed.text
    healthy(client)


def test_run_record_is_served(client: httpx.Client, world: BuggyWorld) -> None:
    upload = client.post("/v1/files", files={"file": ("p.png", png_bytes("rec"), "image/png")}).json()
    reply = client.post("/v1/chat/completions", json=chat("caption this", files=[upload["id"]]))
    assert reply.status_code == 200, reply.text
    run_id = reply.json()["localgpt"]["run"]
    record = client.get(f"/v1/runs/{run_id}").json()
    assert record["state"] == "finished" and record["id"] == run_id and record["files"] == [upload["id"]]
    assert record["request"].startswith("caption this") and record["error"] is None
    assert str(world.tmp) not in str(record)
    # two uploads of one name are shown to the planner by server path; the record, cut to its length, keeps
    # their ids and no part of a path
    twins = [client.post("/v1/files", files={"file": ("p.png", png_bytes(f"t{i}"), "image/png")}).json()["id"]
             for i in range(2)]
    long = client.post("/v1/chat/completions", json=chat(f"caption {'x' * 400} {twins[0]} and {twins[1]}"))
    assert long.status_code == 200, long.text
    record = client.get(f"/v1/runs/{long.json()['localgpt']['run']}").json()
    assert "/" not in record["request"] and record["request"].endswith(f"{twins[0]} and {twins[1]}")
    failed = client.post("/v1/chat/completions", json=chat("crash it")).json()
    assert failed["error_id"]
    assert client.get("/v1/runs/20990101-000000-00000000").status_code == 404
    for bad in ("..", "x", "20990101-000000-0000000g", "../uploads"):
        assert client.get(f"/v1/runs/{bad}").status_code in (400, 404)
    assert client.get("/v1/runs/nope").json()["error"]["type"] == "invalid_request"
    runs = world.tmp / "data" / "runs"
    states = {p.name: __import__("json").loads((p / "run.json").read_text())["state"] for p in runs.iterdir()}
    assert "failed" in states.values() and "running" not in states.values()
    assert not [p for p in runs.rglob("*.part")]


def test_client_disconnect_cancels_the_run_between_tasks(server: Served, world: BuggyWorld) -> None:
    """The run draws (1 s), then captions (0.5 s); the client leaves as the draw starts: the caption never runs and
    the slot is free within one task's time."""
    runs_before = len(world.recorder.runs)
    headers = {"Authorization": "Bearer k3y"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as c, \
            c.stream("POST", "/v1/chat/completions", json=chat("draw a cat and caption it", stream=True)) as r:
        assert r.status_code == 200
        run_id = r.headers["x-localgpt-run"]
        for line in r.iter_lines():
            if '"task_start"' in line:
                break
        left = time.monotonic()
    freed = None
    while time.monotonic() - left < 10:
        if httpx.get(server.url + "/health").json()["running"] == 0:
            freed = time.monotonic() - left
            break
        time.sleep(0.01)
    assert freed is not None and freed < 1.0 + 1.0, freed  # the draw (1 s) ends, the caption never starts
    print(f"slot free {freed:.2f} s after the client left")
    time.sleep(0.7)
    tasks = [r["task"] for r in world.recorder.runs[runs_before:]]
    assert "image-to-text" not in tasks  # the second task never started
    record = httpx.get(f"{server.url}/v1/runs/{run_id}", headers=headers).json()
    assert record["state"] == "failed" and record["error"].startswith("cancelled")


def test_retention_spares_files_in_use(tmp_path: Path) -> None:
    """An old upload a waiting request uses survives a sweep; old unused ones go; the log says so."""
    world = FakeWorld(tmp_path)
    stale = world.tmp / "data" / "uploads" / ("u-" + "e" * 32 + ".png")  # left by an earlier server
    stale.parent.mkdir(parents=True)
    stale.write_bytes(png_bytes("stale"))
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    served = serve(world, concurrency=1, queue_size=2, retention_hours=1)
    try:
        deadline = time.monotonic() + 10
        while stale.exists():  # the sweep at start removes it
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with httpx.Client(base_url=served.url, timeout=30) as c:
            ids = [c.post("/v1/files", files={"file": (f"{i}.png", png_bytes(f"keep{i}"), "image/png")}).json()["id"]
                   for i in range(2)]
            uploads = world.tmp / "data" / "uploads"
            state = served.server.config.app.state.localgpt
            for i in ids:  # an upload is its folder and the file in it
                for p in (state.files.path_of(i), uploads / i):
                    os.utime(p, (time.time() - 7200, time.time() - 7200))
            token = state.claim([state.files.path_of(ids[0])])  # as a request claims its files
            state.housekeeping()
            assert (uploads / ids[0]).exists() and not (uploads / ids[1]).exists()
            state.release(token)
            assert c.get(f"/v1/files/{ids[1]}").status_code == 404
    finally:
        served.stop()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(file_id=st.text(min_size=1, max_size=40) | st.sampled_from(["..", ".", "%2e%2e", "../../etc/passwd"]))
def test_any_file_id_over_http_is_400_or_404(server: Served, world: BuggyWorld, file_id: str) -> None:
    encoded = "".join(f"%{b:02X}" for b in file_id.encode())  # every byte escaped: no client normalises it
    reply = httpx.get(f"{server.url}/v1/files/{encoded}", headers={"Authorization": "Bearer k3y"})
    assert reply.status_code in (400, 404), (file_id, reply.status_code)
    assert str(world.tmp) not in reply.text
