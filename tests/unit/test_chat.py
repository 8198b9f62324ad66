"""``localgpt chat`` driven through its stdin, on a FakeLLM pipeline with fake experts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from localgpt import cli
from localgpt.cli.commands import cmd_chat
from localgpt.testing import png_bytes
from tests.helpers import ANSWER, FakeWorld


def run_chat(world: FakeWorld, lines: list[str], monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    """``localgpt chat`` with ``lines`` on stdin and the world's pipeline injected."""
    args = cli.build_parser().parse_args(["chat", "--store", str(world.store), *extra])
    args.pipeline_factory = lambda settings: world.factory(world.settings(runs_dir=world.tmp / "runs"))
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    return int(cmd_chat(args))


def test_turns_share_history_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    world = FakeWorld(tmp_path)
    assert run_chat(world, ["draw a red square", "", "now caption the image you drew", "/files", "/quit",
                            "never read"], monkeypatch) == 0
    out, err = capsys.readouterr()
    assert out.count(ANSWER) == 2 and "you> " in err
    drawn, caption = world.recorder.runs
    assert drawn["task"] == "text-to-image" and caption["task"] == "image-to-text"
    produced = sorted((tmp_path / "runs").glob("*/*.png"))
    assert len(produced) == 1
    assert caption["read"]["image"] == produced[0].read_bytes()  # turn 2 used turn 1's file
    second_plan = world.planner_prompts[1]
    assert second_plan[-3]["content"] == "draw a red square"  # the history reached the planner
    assert ANSWER in second_plan[-2]["content"]
    assert str(produced[0]) in err  # /files lists it
    assert len(world.planner_prompts) == 2  # nothing after /quit ran


def test_attach_reset_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    world = FakeWorld(tmp_path)
    photo = tmp_path / "cat.png"
    photo.write_bytes(png_bytes("cat"))
    later = tmp_path / "dog.png"
    later.write_bytes(png_bytes("dog"))
    lines = [f"/file {tmp_path / 'missing.png'}", "caption the picture", f"/file {later}", "/reset",
             "say hello", "/nonsense"]
    assert run_chat(world, lines, monkeypatch, "--file", str(photo)) == 0  # EOF ends the chat
    out, err = capsys.readouterr()
    assert "error: file" in err and "does not exist" in err  # a bad /file is reported, the chat goes on
    assert f"attached {later}" in err and "conversation forgotten" in err and "Commands:" in err
    assert world.recorder.runs[0]["read"]["image"] == photo.read_bytes()  # --file reached the first turn
    assert all(m["content"] != "caption the picture" for m in world.planner_prompts[1][1:-1])  # reset
    assert out.count(ANSWER) == 2
