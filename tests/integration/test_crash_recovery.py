"""``kill -9`` of a real ``localgpt serve`` process during a run, then a restart on the same data folder:
uploads and finished results are intact and served, the interrupted run is reported failed, and no
temporary file is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localgpt.testing import png_bytes
from tests.helpers import REPO, chat, free_port


class Process:
    """A ``localgpt serve`` subprocess over the fake world (:mod:`tests.fake_serve`)."""

    def __init__(self, world: Path, data: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = os.environ | {"PYTHONPATH": str(REPO), "FAKE_DRAW_SECONDS": "30", "LOCALGPT_HOUSEKEEPING_MINUTES": "60"}
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fake_serve", str(world), "--", "--port",
                                      str(self.port), "--data-dir", str(data)], cwd=REPO, env=env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


def test_kill_9_during_a_run_then_restart(tmp_path: Path, procs: list[Process]) -> None:
    data = tmp_path / "data"
    first = Process(tmp_path / "world1", data, tmp_path / "first.log")
    procs.append(first)
    with httpx.Client(base_url=first.url, timeout=30) as c:
        image = png_bytes("keep me")
        upload = c.post("/v1/files", files={"file": ("p.png", image, "image/png")}).json()
        done = c.post("/v1/chat/completions", json=chat("caption this", files=[upload["id"]]))
        assert done.status_code == 200, done.text
        finished_run = done.json()["localgpt"]["run"]
        with c.stream("POST", "/v1/chat/completions", json=chat("draw a cat", stream=True)) as r:
            interrupted_run = r.headers["x-localgpt-run"]
            for line in r.iter_lines():
                if '"task_start"' in line:  # the draw (30 s) is running
                    break
            record = json.loads((data / "runs" / interrupted_run / "run.json").read_text())
            assert record["state"] == "running"
            first.kill()
    second = Process(tmp_path / "world2", data, tmp_path / "second.log")
    procs.append(second)
    with httpx.Client(base_url=second.url, timeout=30) as c:
        assert c.get(f"/v1/files/{upload['id']}").content == image
        record = c.get(f"/v1/runs/{finished_run}").json()
        assert record["state"] == "finished"
        lost = c.get(f"/v1/runs/{interrupted_run}").json()
        assert lost["state"] == "failed" and lost["error"] == "interrupted: server stopped"
        assert c.post("/v1/chat/completions", json=chat("say hello")).status_code == 200
    assert not list(data.rglob("*.part")), list(data.rglob("*.part"))
    assert "1 run(s) marked failed" in (tmp_path / "second.log").read_text()
