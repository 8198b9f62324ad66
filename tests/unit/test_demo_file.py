"""The user's own planning demos (``demos_file`` / ``--demos``): both forms read, bad lines named, and
the planner shown them beside the built-in ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localgpt import tasks
from localgpt.config import Settings
from localgpt.errors import ConfigError
from localgpt.pipeline import Pipeline
from localgpt.planning.demo_file import demo_line, load_demo_file
from localgpt.planning.demos import DEMOS
from localgpt.planning.validate import validate_plan
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeLLM, install
from tests.helpers import missing, store_dir

REPO = Path(__file__).resolve().parents[2]
DEV = REPO.parent / "shared" / "taskbench" / "hf_dev.jsonl"

OWN = {"request": "Count the cats in yard.jpg and say the number aloud", "files": ["yard.jpg"],
       "steps": ["Step 1: Find the cats in yard.jpg.", "Step 2: Say how many there are."],
       "tasks": [{"id": 7, "task": "object-detection", "dep": [-1], "args": {"image": "yard.jpg"}},
                 {"id": 9, "task": "text-to-speech", "dep": [7], "args": {"text": "<resource>-7"}}]}
GOLD = {"id": "5", "user_request": "Caption example.jpg, then translate the caption into French.",
        "task_nodes": [{"task": "Translation", "arguments": ["<node-1>"]},
                       {"task": "Image-to-Text", "arguments": ["example.jpg"]}],
        "task_steps": ["Step 1: Caption the image.", "Step 2: Translate the caption."], "type": "chain"}
CYCLE = {"id": "6", "user_request": "loop", "task_nodes": [{"task": "Summarization", "arguments": ["<node-1>"]},
                                                          {"task": "Translation", "arguments": ["<node-0>"]}]}


def write(path: Path, *lines: Any) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def test_own_demo_is_renumbered_by_place_and_keeps_its_files_and_steps(tmp_path: Path) -> None:
    found = load_demo_file(write(tmp_path / "d.jsonl", OWN))
    (demo,) = found.demos
    assert demo.request == OWN["request"] and demo.files == ("yard.jpg",) and demo.steps == tuple(OWN["steps"])
    # the planner is asked for task i at id i, referring only backwards: the demo must show that form
    assert [t["id"] for t in demo.plan] == [0, 1]
    assert demo.plan[1]["args"] == {"text": "<resource>-0"} and demo.plan[1]["dep"] == [0]
    assert validate_plan(list(demo.plan), demo.request, demo.files).tasks[1].dep == [0]


def test_renumbering_maps_every_reference_once(tmp_path: Path) -> None:
    # ids 1, 0, 2: renaming 1 -> 0 and then 0 -> 1 one after the other would send both to task 1
    tasks = [{"id": 1, "task": "text-generation", "dep": [-1], "args": {"text": "a poem"}},
             {"id": 0, "task": "text-generation", "dep": [-1], "args": {"text": "a story"}},
             {"id": 2, "task": "text-generation", "dep": [1, 0], "args": {"text": "<resource>-1 then <GENERATED>-0"}}]
    (demo,) = load_demo_file(write(tmp_path / "d.jsonl", {"request": "write a poem and a story", "tasks": tasks})).demos
    assert demo.plan[2]["args"] == {"text": "<resource>-0 then <resource>-1"} and demo.plan[2]["dep"] == [0, 1]


def test_plan_json_output_is_a_demo_once_the_request_is_added(tmp_path: Path) -> None:
    # what `localgpt plan --json` prints ({"tasks", "steps"}), with "request" added
    printed = validate_plan(OWN["tasks"], OWN["request"], OWN["files"]).model_dump()
    found = load_demo_file(write(tmp_path / "d.jsonl", {"request": OWN["request"], "files": ["yard.jpg"], **printed}))
    assert [t["task"] for t in found.demos[0].plan] == ["object-detection", "text-to-speech"]


def test_a_demo_line_reads_back_as_the_same_demo(tmp_path: Path) -> None:
    plan = validate_plan({"steps": OWN["steps"], "tasks": OWN["tasks"]}, OWN["request"], OWN["files"])
    line = demo_line(OWN["request"], OWN["files"], plan)
    assert "\n" not in line
    (demo,) = load_demo_file(write(tmp_path / "d.jsonl", line)).demos
    assert demo == load_demo_file(write(tmp_path / "e.jsonl", OWN)).demos[0]


def test_taskbench_records_are_converted_and_unusable_ones_counted(tmp_path: Path) -> None:
    found = load_demo_file(write(tmp_path / "d.jsonl", GOLD, "", CYCLE))
    (demo,) = found.demos
    assert [t["task"] for t in demo.plan] == ["image-to-text", "translation"]  # dependency order
    assert demo.plan[1]["args"] == {"text": "<resource>-0"} and demo.files == ("example.jpg",)
    assert found.skipped == ["line 3: its graph has a cycle or an argument no input of its tool takes"]
    assert found.summary() == (f"1 demo from {tmp_path / 'd.jsonl'}; 1 TaskBench record(s) left out, first "
                               "line 3: its graph has a cycle or an argument no input of its tool takes")


@pytest.mark.parametrize("line, expected", [
    ("{not json", "line 2: not JSON"),
    ("[1, 2]", "line 2: a demo is a JSON object, not list"),
    ({"request": "x"}, "line 2: no tasks"),
    ({"tasks": OWN["tasks"]}, "line 2: no request text"),
    ({**OWN, "files": "yard.jpg"}, "line 2: files is not a list of file names"),
    ({**OWN, "steps": ["Step 1: only one."]}, "line 2: 1 steps for 2 tasks"),
    ({**OWN, "tasks": [{"id": 0, "task": "juggling", "dep": [-1], "args": {}}]},
     "line 2: the demo's plan is not valid: task 0 has unknown task type 'juggling'"),
    ({**OWN, "files": [], "request": "Count the cats"}, "line 2: the demo's plan is not valid"),
    ({"user_request": "x", "task_nodes": "Translation"}, "line 2: a TaskBench record needs"),
])
def test_a_bad_line_is_named_with_its_reason(tmp_path: Path, line: Any, expected: str) -> None:
    path = write(tmp_path / "d.jsonl", OWN, line)
    with pytest.raises(ConfigError) as err:
        load_demo_file(path)
    assert str(path) in err.value.message and expected in err.value.message


def test_missing_or_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_demo_file(tmp_path / "none.jsonl")
    with pytest.raises(ConfigError, match="holds no usable demo"):
        load_demo_file(write(tmp_path / "d.jsonl", CYCLE))


def test_pipeline_shows_the_planner_a_demo_from_the_file(tmp_path: Path) -> None:
    plan = [{"id": 0, "task": "object-detection", "dep": [-1], "args": {"image": "field.jpg"}}]
    store = tmp_path / "store"
    store.mkdir()
    install(store, "detect", ["object-detection"])
    settings = Settings(store=store, runs_dir=tmp_path / "runs", demos_file=write(tmp_path / "d.jsonl", OWN),
                        demo_similarity="words")
    llm = FakeLLM([json.dumps({"steps": ["Step 1: Find the cats in field.jpg."], "tasks": plan})])
    pipe = Pipeline(settings, llm, Catalog(store))
    assert len(pipe.planner.demos) == len(DEMOS) + 1
    pipe.plan("Count the cats in field.jpg and say the number aloud", ["field.jpg"])
    shown = [m["content"] for m in llm.calls[0].messages]
    # the user's demo is the closest one, so it sits last, just before the request
    assert shown[-3] == f"Request: {OWN['request']}\nFiles: yard.jpg"
    assert '"tasks":[{"id":0,"task":"object-detection"' in shown[-2]


def test_pipeline_without_a_file_shows_only_the_built_in_demos(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    pipe = Pipeline(Settings(store=store, runs_dir=tmp_path / "runs"), FakeLLM([]), Catalog(store))
    assert pipe.demo_file is None and len(pipe.planner.demos) == len(DEMOS)


def test_plan_tasks_demos_offers_only_the_types_the_demo_file_uses(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    settings = Settings(store=store, runs_dir=tmp_path / "runs", demos_file=write(tmp_path / "d.jsonl", OWN, GOLD),
                        demo_similarity="words", plan_tasks="demos")
    pipe = Pipeline(settings, FakeLLM([]), Catalog(store))
    offered = ["object-detection", "image-to-text", "translation", "text-to-speech"]
    assert sorted(s.name for s in pipe.planner.specs) == sorted(offered)
    # in the registry's order, in the prompt and the constraint alike
    assert [s.name for s in pipe.planner.specs] == [s.name for s in tasks.TASKS if s.name in offered]
    assert "text-to-image(" not in pipe.planner.system_prompt() and "- translation(" in pipe.planner.system_prompt()
    # the built-in demos shown are only those that use none of the other types
    built_in = [d for d in pipe.planner.demos if d in DEMOS]
    assert built_in == [d for d in DEMOS if all(step["task"] in offered for step in d.plan)]
    assert len(pipe.planner.demos) == len(built_in) + 2 and len(built_in) < len(DEMOS)
    with pytest.raises(ConfigError, match="no demo file is given"):
        Pipeline(settings.model_copy(update={"demos_file": None}), FakeLLM([]), Catalog(store))


def test_cli_refuses_plan_tasks_demos_without_a_demo_file_before_loading_the_llm(tmp_path: Path) -> None:
    dummy = tmp_path / "dummy.gguf"
    dummy.write_bytes(b"not really a gguf")  # never read: the setting is checked first
    proc = _cli("plan", "count the cats", "--planner", str(dummy), "--store", str(tmp_path / "store"), cwd=tmp_path,
                env={"LOCALGPT_PLAN_TASKS": "demos"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: plan_tasks is 'demos' but no demo file is given" in proc.stderr


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCALGPT_")}
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "localgpt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, **(env or {})}, timeout=60)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_cli_reports_a_bad_demo_file_in_one_line_before_loading_the_llm(tmp_path: Path, how: str) -> None:
    dummy = tmp_path / "dummy.gguf"
    dummy.write_bytes(b"not really a gguf")  # never read: the demo file is checked first
    bad = write(tmp_path / "mine.jsonl", OWN, {**OWN, "tasks": []})
    args = ["plan", "count the cats", "--planner", str(dummy), "--store", str(tmp_path / "store")]
    if how == "option":
        proc = _cli(*args, "--demos", str(bad), cwd=tmp_path)
    else:
        proc = _cli(*args, cwd=tmp_path, env={"LOCALGPT_DEMOS_FILE": str(bad)})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: demo file {bad}, line 2: no tasks (a list, as `localgpt plan --json` prints them)"]


def test_the_taskbench_dev_file_is_a_demo_file() -> None:
    if not DEV.exists():
        missing(f"the TaskBench dev file is not at {DEV}")
    found = load_demo_file(DEV)
    lines = sum(1 for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip())
    assert lines == 290 and len(found.demos) + len(found.skipped) == lines
    # 22 gold records have a cycle or an argument no input of its tool takes (the harness's bank lacks them too)
    assert len(found.demos) == 268
    assert all(reason.endswith("its graph has a cycle or an argument no input of its tool takes")
               for reason in found.skipped)
    for demo in found.demos:
        validate_plan(list(demo.plan), demo.request, demo.files)


@pytest.mark.slow
def test_cli_prints_a_plan_as_a_demo_line_that_plans_the_next_request(tmp_path: Path) -> None:
    gguf = store_dir() / "smollm2-135m-instruct" / "model.gguf"
    if not gguf.exists():
        missing(f"SmolLM2 is not installed at {gguf}; run: python download_models.py --profile test")
    store = ["--planner", str(gguf), "--store", str(store_dir()), "--threads", "2"]
    proc = _cli("plan", "Read 'good night, moon' aloud", "--as-demo", *store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    mine = tmp_path / "mine.jsonl"
    mine.write_text(line + "\n", encoding="utf-8")
    (demo,) = load_demo_file(mine).demos
    assert demo.request == "Read 'good night, moon' aloud" and demo.plan
    proc = _cli("plan", "Read 'good morning' aloud", "--demos", str(mine), *store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"Planning with 1 demo from {mine}" in proc.stderr
