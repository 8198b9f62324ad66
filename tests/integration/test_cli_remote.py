"""``localgpt run/plan/chat`` hand requests to a running ``localgpt serve``: a real server on 127.0.0.1 (its
pipeline a FakeLLM and fake experts) and the CLI in a subprocess. The output is what a local run prints,
events stream, produced files are downloaded into the local runs folder; ``--local`` (or no server, or
``--planner``) runs in-process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localgpt.config import Settings
from localgpt.pipeline import Pipeline
from localgpt.testing import png_bytes
from tests.helpers import ANSWER, REPO, FakeWorld, Served, free_port, serve


@pytest.fixture
def world(tmp_path: Path) -> FakeWorld:
    return FakeWorld(tmp_path / "server")


@pytest.fixture
def served(world: FakeWorld) -> Iterator[Served]:
    server = serve(world)
    yield server
    server.stop()


def localgpt(*args: str, cwd: Path, server: str, stdin: str | None = None,
             **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALGPT_")}
    # the client's own store is empty: a run in this process would fail to find its planner
    env |= {"PYTHONPATH": str(REPO), "LOCALGPT_SERVER": server, "LOCALGPT_STORE": str(cwd / "empty-store"),
            "LOCALGPT_RUNS_DIR": str(cwd / "runs"), **env_extra}
    return subprocess.run([sys.executable, "-m", "localgpt.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120, input=stdin)


def test_run_uses_the_server_and_downloads_what_it_produced(served: Served, world: FakeWorld,
                                                            tmp_path: Path) -> None:
    proc = localgpt("run", "draw a red square and caption it", cwd=tmp_path, server=served.url)
    assert proc.returncode == 0, proc.stderr
    assert f"Using the localgpt server at {served.url}" in proc.stderr
    assert "Plan (2 tasks):" in proc.stderr and "[0] text-to-image" in proc.stderr
    assert "[0] model draw-fake" in proc.stderr and "[1] done in" in proc.stderr
    assert world.planner_prompts  # the server planned it
    assert "Answer:" in proc.stdout and ANSWER in proc.stdout
    files = [line[2:] for line in proc.stdout.splitlines() if line.startswith("- ")]
    assert files and all(Path(f).is_file() and Path(f).is_relative_to(tmp_path / "runs") for f in files)
    assert "r-" not in proc.stdout  # no server ids left in what the user reads
    assert f"Run folder: {Path(files[0]).parent}" in proc.stderr and "plan " in proc.stderr


def test_run_json_and_an_uploaded_file(served: Served, world: FakeWorld, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes("mine"))
    proc = localgpt("run", "caption photo.png", "--file", "photo.png", "--json", cwd=tmp_path, server=served.url)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert proc.stderr == ""  # --json prints nothing else
    # the server's planner saw its copy of the file by the user's own name, the same in the request and the
    # file list, as a local run's planner does (neither an upload id nor a server path)
    request = world.planner_prompts[-1][-1]["content"]
    assert request == "Request: caption photo.png\nFiles: photo.png"
    # and the client reads its own path back
    (task,) = result["plan"]["tasks"]
    assert task["args"]["image"] == str(photo.resolve())
    assert result["results"][0]["status"] == "done" and result["answer"].startswith(ANSWER)
    assert result["timings"]["plan"] >= 0 and "first_token" in result["timings"]
    assert result["plan"]["steps"] == ["Step 1: run image-to-text"]


def test_files_of_one_name_through_the_server(served: Served, world: FakeWorld, tmp_path: Path) -> None:
    """Two files of one name in different folders: the server's planner tells them apart (as a local planner
    does, by path), and each task reads its own file."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.png").write_bytes(png_bytes(folder))
    proc = localgpt("run", "caption each of a/photo.png and b/photo.png", "--file", "a/photo.png",
                    "--file", "b/photo.png", "--json", cwd=tmp_path, server=served.url)
    assert proc.returncode == 0, proc.stderr
    request = world.planner_prompts[-1][-1]["content"]
    shown = request.split("\nFiles: ")[1].split(", ")
    assert len(set(shown)) == 2 and request.startswith(f"Request: caption each of {shown[0]} and {shown[1]}\n")
    tasks = json.loads(proc.stdout)["plan"]["tasks"]
    assert [t["args"]["image"] for t in tasks] == [str((tmp_path / f / "photo.png").resolve()) for f in ("a", "b")]
    assert sorted(r["read"]["image"] for r in world.recorder.runs[-2:]) == [png_bytes("a"), png_bytes("b")]


def test_plan_through_the_server(served: Served, world: FakeWorld, tmp_path: Path) -> None:
    proc = localgpt("plan", "caption shot.png", "--file", "shot.png", "--json", cwd=tmp_path, server=served.url)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["tasks"][0]["args"] == {"image": "shot.png"}  # a name only: it need not exist
    assert plan["steps"] == ["Step 1: run image-to-text"] and len(world.planner_prompts) == 1
    text = localgpt("plan", "draw a red square", cwd=tmp_path, server=served.url)
    assert text.returncode == 0 and text.stdout.splitlines()[0] == "# Step 1: run text-to-image"


def test_chat_through_the_server(served: Served, world: FakeWorld, tmp_path: Path) -> None:
    proc = localgpt("chat", cwd=tmp_path, server=served.url,
                    stdin="draw a red square\nnow caption it\n/files\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert "Using the localgpt server" in proc.stderr and proc.stdout.count(ANSWER) == 2
    (drawing,) = (tmp_path / "runs").rglob("*.png")
    # the second turn used the first turn's drawing: the server read its own copy, sent by id, not uploaded
    second = world.planner_prompts[-1][-1]["content"]
    given = second.split("\nFiles: ")[1]  # by its name in the server's runs folder, not by a path
    assert re.fullmatch(r"[0-9a-f]{16}\.png", given) and "/runs/" not in second and "image-to-text" in proc.stderr
    assert not list((world.tmp / "data" / "uploads").glob("u-*"))
    assert str(drawing.resolve()) in proc.stderr  # /files lists the local copy


def test_local_no_server_or_own_planner_run_in_process(served: Served, world: FakeWorld, tmp_path: Path) -> None:
    cases = [(("run", "draw it", "--local"), served.url),
             (("run", "draw it"), f"http://127.0.0.1:{free_port()}"),  # nothing listens there
             (("run", "draw it"), "off"),
             (("plan", "draw it", "--planner", "missing.gguf"), served.url)]
    for args, server in cases:
        start = time.monotonic()
        proc = localgpt(*args, cwd=tmp_path, server=server)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "does not exist" in proc.stderr or "is not installed" in proc.stderr, (args, proc.stderr)
        assert "Using the localgpt server" not in proc.stderr
        assert time.monotonic() - start < 30
    assert world.planner_prompts == []


def test_a_loading_server_is_waited_for(world: FakeWorld, tmp_path: Path) -> None:
    from localgpt.server import create_app

    world.load_gate = threading.Event()
    server = Served(create_app(world.settings(), world.factory))
    try:
        threading.Timer(2.0, world.load_gate.set).start()
        proc = localgpt("run", "draw a red square", cwd=tmp_path, server=server.url)
    finally:
        world.load_gate.set()
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert "is loading its models; waiting" in proc.stderr and ANSWER in proc.stdout


def test_a_server_warming_its_planner_takes_the_request(world: FakeWorld, tmp_path: Path) -> None:
    """A server that accepts requests while its planner warms up: the CLI hands the request over at once
    (it does not run it here), and the request waits there for the warm-up."""
    from localgpt.server import create_app

    gate = threading.Event()

    def factory(settings: Settings) -> Pipeline:
        pipe = world.factory(settings)
        pipe.llm.warm_gate = gate  # type: ignore[attr-defined]
        return pipe

    server = Served(create_app(world.settings(), factory))
    try:
        server.wait_ready()

        def release_once_running() -> None:  # the warm-up ends only once the request is in
            deadline = time.monotonic() + 60
            while httpx.get(server.url + "/health").json()["running"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            gate.set()

        threading.Thread(target=release_once_running, daemon=True).start()
        proc = localgpt("run", "draw a red square", cwd=tmp_path, server=server.url)
    finally:
        gate.set()
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert "is still warming its planner" in proc.stderr and f"Using the localgpt server at {server.url}" in proc.stderr
    assert ANSWER in proc.stdout and world.planner_prompts  # planned by the server, after its warm-up
    llm = world.llms[0]
    assert len(llm.warmed) == 3 and llm.warmed[0].at <= llm.calls[0].at  # two planner prompts, the responder's


def test_a_server_error_is_one_clear_line(served: Served, tmp_path: Path) -> None:
    proc = localgpt("run", "read it", "--file", "nothing.wav", cwd=tmp_path, server=served.url)
    assert proc.returncode == 1 and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr


def test_the_plan_route_refuses_bad_bodies_with_a_hint(served: Served) -> None:
    import httpx

    empty = httpx.post(served.url + "/v1/plan", json={"messages": []})
    assert empty.status_code == 422 and "error" in empty.json()
    unknown = httpx.post(served.url + "/v1/plan", json={"messages": [{"role": "user", "content": "caption it"}],
                                                        "files": ["u-" + "0" * 32 + ".png"]})
    assert 400 <= unknown.status_code < 500 and unknown.json()["error"]["hint"]
    good = httpx.post(served.url + "/v1/plan", json={"messages": [{"role": "user", "content": "draw a cat"}]})
    assert good.status_code == 200 and good.json()["tasks"][0]["task"] == "text-to-image"
