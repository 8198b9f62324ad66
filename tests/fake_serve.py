"""``localgpt serve`` (the real command, in its own process) over the fake world of :mod:`localgpt.testing`:
FakeLLM plans by keywords and fake experts run, so crash tests can kill a real server.

Usage: ``python -m tests.fake_serve WORLD_DIR -- SERVE-ARGS...`` (e.g. ``--port 8123 --data-dir DATA``);
the draw model sleeps ``FAKE_DRAW_SECONDS`` (default 0) per task.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import localgpt.server.app as server_app
from localgpt.cli import main
from localgpt.testing import FakeWorld


def run(argv: list[str]) -> int:
    world_dir, rest = Path(argv[0]), argv[argv.index("--") + 1:]
    world = FakeWorld(world_dir, options={"draw-fake": {"sleep": float(os.environ.get("FAKE_DRAW_SECONDS", "0"))}})
    os.environ["LOCALGPT_STORE"] = str(world.store)
    server_app.default_factory = world.factory  # what `localgpt serve` builds its pipeline with
    return main(["serve", *rest])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
