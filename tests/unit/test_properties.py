"""Property tests (hypothesis, derandomized, bounded) of what an outsider controls: the planner LLM's reply
(any JSON) and a file id (any string).

- any JSON value as the reply: :func:`accept_reply` returns a plan that passes :func:`validate_plan`, or
  raises :class:`PlanError`; never anything else;
- a valid plan stays valid through mending and tidying, and accepting an accepted plan again changes
  nothing (idempotence);
- renumbering references (and the mender's renumbering of task ids) preserves the task graph;
- any string as a file id: :class:`InputError` or a path inside the data folder, never outside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from localgpt import tasks as registry
from localgpt.errors import InputError, PlanError
from localgpt.planning.mend import salvage_plan
from localgpt.planning.passes import PASSES, apply_passes
from localgpt.planning.planner import accept_reply
from localgpt.planning.references import references, renumber
from localgpt.planning.validate import validate_plan
from localgpt.schema import Plan
from localgpt.server.files import FileStore

# CI: 300 examples each, the same every run; LOCALGPT_PROPERTY_EXAMPLES=N (and a random seed) searches deeper
DEEP = int(os.environ.get("LOCALGPT_PROPERTY_EXAMPLES", "0"))
PROFILE = settings(max_examples=DEEP or 300, derandomize=not DEEP, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

FILES = ["photo.png", "song.wav", "clip.mp4", "notes.txt"]
REQUESTS = ["draw a cat and describe it", "transcribe song.wav then translate it to French",
            "caption photo.png and read the caption aloud", "画一只猫，然后描述它", "ترجم هذا النص",
            "summarize notes.txt", ""]
ARG_NAMES = sorted({i.name for spec in registry.TASKS for i in spec.inputs} | {"junk"})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)

arg_values = st.one_of(
    st.sampled_from(FILES + ["other.jpg", "a cat on a mat", "", "   ", "<resource>-0", "<GENERATED>-1",
                             "the <resource>-2 text", "<resource>-7", "<resource>--1", "猫"]),
    st.builds(lambda n: f"<resource>-{n}", st.integers(-2, 9)),
    st.text(max_size=15))

task_items = st.fixed_dictionaries(
    {"id": st.integers(-2, 9), "task": st.sampled_from(registry.names() + ["no-such-task", ""]),
     "dep": st.lists(st.integers(-2, 9), max_size=3),
     "args": st.dictionaries(st.sampled_from(ARG_NAMES), arg_values, max_size=3)},
    optional={"extra": st.text(max_size=3)})

plan_shaped = st.one_of(
    st.lists(task_items, max_size=6),
    st.builds(lambda steps, tasks: {"steps": steps, "tasks": tasks},
              st.lists(st.text(max_size=30), max_size=4), st.lists(task_items, max_size=6)))

replies = st.one_of(json_values, plan_shaped, st.lists(json_values | task_items, max_size=4))


def dump(plan: Plan) -> dict[str, Any]:
    return {"steps": list(plan.steps), "tasks": [t.model_dump() for t in plan.tasks]}


def revalidates(plan: Plan, request: str, files: list[str]) -> None:
    again = validate_plan(dump(plan), request, files)
    assert [t.model_dump() for t in again.tasks] == [t.model_dump() for t in plan.tasks]


@PROFILE
@given(reply=replies, request=st.sampled_from(REQUESTS), files=st.lists(st.sampled_from(FILES), max_size=2))
@example(reply="not json", request="", files=[])
def test_any_reply_gives_a_valid_plan_or_a_plan_error(reply: Any, request: str, files: list[str]) -> None:
    raw = reply if isinstance(reply, str) and reply == "not json" else json.dumps(reply)
    try:
        plan, _ = accept_reply(raw, request, files)
    except PlanError:
        return
    assert isinstance(plan, Plan) and len(plan.tasks) <= 8  # an empty plan is valid: nothing to run
    revalidates(plan, request, files)


@PROFILE
@given(reply=plan_shaped, request=st.sampled_from(REQUESTS), files=st.lists(st.sampled_from(FILES), max_size=2))
def test_mending_and_tidying_keep_a_valid_plan_valid(reply: Any, request: str, files: list[str]) -> None:
    try:
        plan = validate_plan(reply, request, files)
    except PlanError:
        return
    if plan.tasks:  # (an empty plan is valid; mending refuses it: nothing to keep)
        revalidates(salvage_plan(reply, request, files), request, files)  # mending a valid plan keeps it valid
    tidied = apply_passes(plan, request, files)[0]
    revalidates(tidied, request, files)
    assert dump(apply_passes(tidied, request, files)[0]) == dump(tidied)  # the passes are idempotent


@pytest.mark.parametrize("name", [name for name, _ in PASSES])
@PROFILE
@given(reply=plan_shaped, request=st.sampled_from(REQUESTS), files=st.lists(st.sampled_from(FILES), max_size=2))
def test_each_pass_keeps_a_valid_plan_valid_and_is_idempotent(name: str, reply: Any, request: str,
                                                              files: list[str]) -> None:
    """Every pass of PASSES on its own (not only the whole list): a valid plan (as validated, or as mended)
    stays valid, and running the pass again on its result changes nothing."""
    one = [(n, run) for n, run in PASSES if n == name]
    for plan in _valid_plans(reply, request, files):
        once = apply_passes(plan, request, files, passes=one)[0]
        revalidates(once, request, files)
        assert dump(apply_passes(once, request, files, passes=one)[0]) == dump(once)


def _valid_plans(reply: Any, request: str, files: list[str]) -> list[Plan]:
    """The plan ``reply`` is, when it is valid, and the plan mending makes of it, when mending keeps a task."""
    plans = []
    for make in (validate_plan, salvage_plan):
        try:
            plans.append(make(reply, request, files))
        except PlanError:
            continue
    return plans


@PROFILE
@given(reply=plan_shaped, request=st.sampled_from(REQUESTS), files=st.lists(st.sampled_from(FILES), max_size=2))
def test_mending_is_idempotent(reply: Any, request: str, files: list[str]) -> None:
    try:
        mended = salvage_plan(reply, request, files)
    except PlanError:
        return
    revalidates(mended, request, files)
    assert dump(salvage_plan(dump(mended), request, files)) == dump(mended)


@PROFILE
@given(reply=plan_shaped, request=st.sampled_from(REQUESTS), files=st.lists(st.sampled_from(FILES), max_size=2))
def test_accepting_is_idempotent(reply: Any, request: str, files: list[str]) -> None:
    """A plan accept_reply returned comes back unchanged when given to it again."""
    try:
        plan, _ = accept_reply(json.dumps(reply), request, files)
    except PlanError:
        return
    again, mended = accept_reply(json.dumps(dump(plan)), request, files)
    assert not mended
    assert [t.model_dump() for t in again.tasks] == [t.model_dump() for t in plan.tasks]


@PROFILE
@given(value=st.lists(st.one_of(st.text(max_size=6), st.builds(lambda n, g: f"<{g}>-{n}", st.integers(0, 30),
                                                                   st.sampled_from(["resource", "GENERATED"]))),
                      max_size=6).map("".join),
       mapping=st.dictionaries(st.integers(0, 30), st.integers(0, 99), max_size=8))
def test_renumbering_maps_every_reference(value: str, mapping: dict[int, int]) -> None:
    assert references(renumber(value, mapping)) == [mapping.get(r, r) for r in references(value)]


@PROFILE
@given(data=st.data(), n=st.integers(1, 6))
def test_mender_renumbering_preserves_the_graph(data: st.DataObject, n: int) -> None:
    """A valid chain of text tasks with arbitrary increasing ids: mending renumbers them 0..n-1 and keeps
    every edge (mapped by position) and every task type."""
    ids = sorted(data.draw(st.sets(st.integers(0, 500), min_size=n, max_size=n)))
    tasks = []
    for pos, tid in enumerate(ids):
        parents = data.draw(st.lists(st.integers(0, pos - 1), max_size=2, unique=True)) if pos else []
        text = " and ".join(f"<resource>-{ids[p]}" for p in parents) or "hello world"
        tasks.append({"id": tid, "task": "summarization", "dep": [ids[p] for p in parents] or [-1],
                      "args": {"text": text}})
    plan = validate_plan(tasks)
    mended = salvage_plan(tasks)
    position = {tid: pos for pos, tid in enumerate(ids)}
    assert [t.id for t in mended.tasks] == list(range(n))
    assert [t.task for t in mended.tasks] == [t.task for t in plan.tasks]
    assert [sorted(t.dep) for t in mended.tasks] == [sorted(position[d] for d in t.dep) for t in plan.tasks]


@settings(max_examples=500, derandomize=True, deadline=None)
@given(file_id=st.one_of(st.text(max_size=60), st.sampled_from([
    "..", "../../etc/passwd", "u-" + "0" * 32 + ".png/../../x", "r-20200101-000000-00000000-" + "0" * 16 + ".png",
    "u-" + "a" * 32 + ".png\x00", "/etc/passwd", "%2e%2e", "u-" + "0" * 32 + ".PNG", "\\..\\..\\win.ini"])))
def test_any_file_id_names_a_file_inside_the_data_folder_or_is_refused(tmp_path_factory: Any,
                                                                          file_id: str) -> None:
    root = _store(tmp_path_factory)
    try:
        path = root.path_of(file_id)
    except InputError:
        return
    assert path.is_file() and root.root in path.parents


_STORES: dict[int, FileStore] = {}


def _store(factory: Any) -> FileStore:
    """One data folder with an upload and a produced file in it, and a file beside it that must stay unreachable."""
    if not _STORES:
        base = Path(factory.mktemp("ids"))
        (base / "secret.png").write_bytes(b"secret")
        store = FileStore(base / "data")
        (store.uploads / ("u-" + "0" * 32 + ".png")).write_bytes(b"x")
        run = store.runs / "20200101-000000-00000000"
        run.mkdir()
        (run / ("0" * 16 + ".png")).write_bytes(b"y")
        _STORES[0] = store
    return _STORES[0]


def test_mending_twice_changes_nothing_counterexample() -> None:
    """The counterexample hypothesis found (LOCALGPT_PROPERTY_EXAMPLES=4000): a QA task with no arguments after an
    object detection gets <resource>-1 (text and image) as question and context. Mending used to turn it into
    VQA only the second time; now the filled task is turned at once (_Mender.ask_filled_image)."""
    reply = [{"id": -1, "task": "text-classification", "dep": [], "args": {}},
             {"id": 0, "task": "object-detection", "dep": [], "args": {}},
             {"id": 1, "task": "question-answering", "dep": [], "args": {}}]
    request = "caption photo.png and read the caption aloud"
    mended = salvage_plan(reply, request)
    revalidates(mended, request, [])  # valid, as the property requires
    assert dump(salvage_plan(dump(mended), request)) == dump(mended)
    assert [t.task for t in mended.tasks] == ["text-classification", "object-detection", "visual-question-answering"]
