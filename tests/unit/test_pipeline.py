"""The whole pipeline with FakeLLM, a temp model store of fake backends and fake experts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from localgpt import tasks
from localgpt.config import Settings
from localgpt.errors import InputError
from localgpt.experts.base import ExpertContext
from localgpt.llm import FREE_TEXT_REPEAT_PENALTY, Message
from localgpt.pipeline import Pipeline
from localgpt.runtime.pool import ModelPool
from localgpt.schema import Event
from localgpt.store.catalog import CONTROLLER_ID, Catalog
from localgpt.tasks import Kind
from localgpt.testing import FakeLLM, Recorder, fake_factory, install, png_bytes

ANSWER = "Here is what the models did."




def router(choose: str | None = None) -> Callable[[Sequence[Message], dict[str, Any] | None], str]:
    """A FakeLLM reply that answers selector, text-expert and responder calls by what they ask."""
    def reply(messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
        if messages[0]["content"].startswith("You are localgpt, an assistant that answered"):
            return ANSWER
        if schema is not None and "reason" in schema.get("properties", {}):
            ids = schema["properties"]["id"]["enum"]
            return json.dumps({"id": choose or ids[-1], "reason": "it fits the request best"})
        if messages[-1]["content"].startswith("Summarize"):
            return "  A short summary.  "
        raise AssertionError(f"unexpected LLM call: {messages[-1]['content'][:80]}")
    return reply


def t(i: int, task: str, args: dict[str, str], dep: list[int] | None = None) -> dict[str, Any]:
    return {"id": i, "task": task, "dep": dep or [-1], "args": args}


class Setup:
    def __init__(self, tmp: Path, replies: list[Any], controller: str | None = None) -> None:
        self.store = tmp / "store"
        self.store.mkdir()
        self.settings = Settings(store=self.store, runs_dir=tmp / "runs", max_workers=4, task_timeout=10)
        self.llm = FakeLLM(replies + [router()] * 10)
        self.catalog = Catalog(self.store, controller=controller)
        self.rec = Recorder()
        self.ctx = ExpertContext(settings=self.settings, llm=self.llm, extra={"recorder": self.rec})
        self.tmp = tmp

    def pipeline(self) -> Pipeline:
        pool = ModelPool(self.ctx, 1 << 30, factory=fake_factory(self.ctx))
        return Pipeline(self.settings, self.llm, self.catalog, pool)


FULL_PLAN = [t(0, "text-to-speech", {"text": "hello there"}),
             t(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, [0]),
             t(2, "image-to-text", {"image": "photo.png"}),
             t(3, "text-to-image", {"text": "a drawing of <resource>-2"}, [2])]
REQUEST = "Say 'hello there' aloud and transcribe it; caption photo.png and draw the caption"


@pytest.fixture
def full(tmp_path: Path) -> tuple[Setup, Path]:
    s = Setup(tmp_path, [json.dumps(FULL_PLAN)])
    install(s.store, "tts-fake", ["text-to-speech"])
    install(s.store, "asr-fake", ["automatic-speech-recognition"])
    install(s.store, "caption-a", ["image-to-text"])
    install(s.store, "caption-b", ["image-to-text"])
    install(s.store, "draw-fake", ["text-to-image"])
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes("photo"))
    return s, photo


def test_run_end_to_end(full: tuple[Setup, Path]) -> None:
    s, photo = full
    events: list[Event] = []
    result = s.pipeline().run(REQUEST, [photo], on_event=events.append)

    assert [x.task for x in result.plan.tasks] == [x["task"] for x in FULL_PLAN]
    assert {sel.task_id: sel.model for sel in result.selections} == {
        0: "tts-fake", 1: "asr-fake", 2: "caption-b", 3: "draw-fake"}
    caption = next(sel for sel in result.selections if sel.task_id == 2)
    assert caption.candidates == ["caption-a", "caption-b"] and caption.reason == "it fits the request best"
    assert [r.status for r in result.results] == ["done"] * 4, [r.error for r in result.results]

    audio, image = result.results[0].outputs["audio"], result.results[3].outputs["image"]
    assert result.files == [audio, image]
    assert all(Path(f).is_file() and Path(f).parent == Path(result.run_dir or "") for f in result.files)
    assert Path(result.run_dir or "").parent == s.settings.runs_dir
    assert result.results[1].args["audio"] == audio
    assert result.results[2].args["image"] == str(photo.resolve())
    assert result.results[3].args["text"] == "a drawing of " + result.results[2].outputs["text"]

    assert result.answer.startswith(ANSWER)
    assert result.answer.endswith(f"Files produced:\n- {audio}\n- {image}")
    assert set(result.timings) == {"plan", "select", "execute", "respond", "first_token"}
    assert all(v >= 0 for v in result.timings.values())
    assert result.timings["first_token"] <= result.timings["respond"]
    assert result.llm_calls == 3 == len(s.llm.calls)  # plan, choice between captioners, answer

    # the planner saw the user's file; the responder saw every result
    assert s.llm.calls[0].messages[-1]["content"].endswith("\nFiles: photo.png")  # by its bare name
    assert result.results[1].outputs["text"] in s.llm.calls[-1].messages[-1]["content"]
    # the free-text answer is decoded with a repeat penalty (so a greedy answer cannot loop); the
    # constrained plan and model choice without one, as measured
    assert [c.repeat_penalty for c in s.llm.calls] == [1.0, 1.0, FREE_TEXT_REPEAT_PENALTY]
    assert FREE_TEXT_REPEAT_PENALTY > 1.0


def test_event_order(full: tuple[Setup, Path]) -> None:
    s, photo = full
    events: list[Event] = []
    result = s.pipeline().run(REQUEST, [photo], on_event=events.append)
    types = [e.type for e in events]
    assert types[0] == "plan" and types[-1] == "done"
    assert types[1:5] == ["select"] * 4
    first_delta = types.index("answer_delta")
    assert sorted(types[5:first_delta]) == sorted(["task_start", "task_done"] * 4)
    assert set(types[first_delta:-1]) == {"answer_delta"}
    for i in range(4):
        ids = [e.type for e in events if e.type.startswith("task_") and e.data["id"] == i]
        assert ids == ["task_start", "task_done"]
    streamed = "".join(e.data["text"] for e in events if e.type == "answer_delta")
    assert streamed == result.answer
    assert events[-1].data["answer"] == result.answer
    assert events[0].data["tasks"][1]["dep"] == [0]


def test_given_plan_keeps_its_steps(full: tuple[Setup, Path]) -> None:
    from localgpt.planning.validate import validate_plan

    s, photo = full
    s.llm.replies.pop(0)  # no planner call: the plan is given
    steps = ["Step 1: Say it.", "Step 2: Transcribe it.", "Step 3: Caption the photo.", "Step 4: Draw it."]
    given = validate_plan({"steps": steps, "tasks": FULL_PLAN}, REQUEST, [str(photo)])
    events: list[Event] = []
    result = s.pipeline().run(REQUEST, [photo], on_event=events.append, plan=given)
    assert result.plan.steps == steps and events[0].data["steps"] == steps
    assert all("Split the user's request" not in c.messages[0]["content"] for c in s.llm.calls)


def test_stream_yields_same_events(full: tuple[Setup, Path]) -> None:
    s, photo = full
    called: list[Event] = []
    s.pipeline().run(REQUEST, [photo], on_event=called.append)
    s.llm.replies[:0] = [json.dumps(FULL_PLAN)]
    streamed = list(s.pipeline().stream(REQUEST, [photo]))
    assert Counter(e.type for e in streamed) == Counter(e.type for e in called)
    assert streamed[0] == called[0]
    assert [Path(f).name for f in streamed[-1].data["files"]] == [Path(f).name for f in called[-1].data["files"]]
    assert streamed[-1].data["run_dir"] != called[-1].data["run_dir"]  # each run gets its own folder
    assert streamed[0].type == "plan" and streamed[-1].type == "done"
    assert [e.type for e in streamed].count("task_done") == 4
    assert "error" not in [e.type for e in streamed]
    assert streamed[-1].data["files"] and streamed[-1].data["llm_calls"] == 3


def test_stream_plan_error_is_an_event(tmp_path: Path) -> None:
    # a file the user never gave, and no image to put in its place: not even mending keeps a task
    bad = json.dumps([t(0, "image-to-text", {"image": "nothere.jpg"})])
    s = Setup(tmp_path, [bad, bad])
    events = list(s.pipeline().stream("describe my picture"))
    assert [e.type for e in events] == ["error"]
    assert events[0].data["type"] == "PlanError"
    assert "'nothere.jpg', which the user did not give" in events[0].data["message"]
    assert events[0].data["hint"]


def test_stream_internal_error_is_an_event(tmp_path: Path) -> None:
    s = Setup(tmp_path, [json.dumps([t(0, "text-to-speech", {"text": "hi"})])])
    install(s.store, "tts", ["text-to-speech"])

    def broken(messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
        raise RuntimeError("responder exploded")

    s.llm.replies[1:] = [broken]
    events = list(s.pipeline().stream("say hi aloud"))
    assert [e.type for e in events] == ["plan", "select", "task_start", "task_done", "error"]
    assert events[-1].data["type"] == "RuntimeError" and "responder exploded" in events[-1].data["message"]


def test_run_raises_plan_error(tmp_path: Path) -> None:
    from localgpt.errors import PlanError

    s = Setup(tmp_path, [])
    with pytest.raises(PlanError):
        s.pipeline().run("  ")
    assert s.llm.calls == []


def test_task_without_model_fails_and_skips_dependants(tmp_path: Path) -> None:
    plan = [t(0, "depth-estimation", {"image": "room.png"}),
            t(1, "image-to-text", {"image": "<resource>-0"}, [0]),
            t(2, "text-to-speech", {"text": "still works"})]
    s = Setup(tmp_path, [json.dumps(plan)])
    install(s.store, "caption", ["image-to-text"])
    install(s.store, "tts", ["text-to-speech"])
    room = tmp_path / "room.png"
    room.write_bytes(png_bytes("room"))
    events: list[Event] = []
    result = s.pipeline().run("how deep is room.png? describe the depth map, and say 'still works'", [room],
                              on_event=events.append)
    res = {r.id: r for r in result.results}
    assert res[0].status == "failed"
    assert "no installed model can run task 0 (depth-estimation" in (res[0].error or "")
    assert res[1].status == "skipped" and "task 0" in (res[1].error or "")
    assert res[2].status == "done"
    assert [sel.task_id for sel in result.selections] == [1, 2]
    assert [e.data["task_id"] for e in events if e.type == "select"] == [1, 2]
    assert [r["task"] for r in s.rec.runs] == ["text-to-speech"]
    # the responder is told what failed
    assert "no installed model" in s.llm.calls[-1].messages[-1]["content"]
    assert result.answer.endswith(f"- {res[2].outputs['audio']}")


def test_text_task_served_by_controller_llm(tmp_path: Path) -> None:
    article = "The committee met on Tuesday and agreed to build a new bridge over the river by 2027."
    plan = [t(0, "summarization", {"text": article})]
    s = Setup(tmp_path, [json.dumps(plan)], controller="my-planner")
    events: list[Event] = []
    result = s.pipeline().run(f"Summarize: {article}", on_event=events.append)
    assert result.selections[0].model == CONTROLLER_ID and result.selections[0].backend == "llm"
    assert result.results[0].status == "done", result.results[0].error
    assert result.results[0].outputs["text"] == "A short summary."
    assert result.results[0].model == CONTROLLER_ID
    expert_calls = [c for c in s.llm.calls if c.messages[-1]["content"].startswith("Summarize the following")]
    assert len(expert_calls) == 1 and article in expert_calls[0].messages[-1]["content"]
    assert expert_calls[0].schema is None and expert_calls[0].repeat_penalty == FREE_TEXT_REPEAT_PENALTY
    assert result.llm_calls == 3
    assert result.files == [] and "Files produced" not in result.answer


def test_dedicated_model_preferred_list_includes_controller(tmp_path: Path) -> None:
    plan = [t(0, "summarization", {"text": "some long text"})]
    s = Setup(tmp_path, [json.dumps(plan)], controller="my-planner")
    install(s.store, "bart-fake", ["summarization"])
    s.llm.replies[1:] = [router(choose="bart-fake")] * 5
    result = s.pipeline().run("summarize some long text")
    assert result.selections[0].candidates == ["bart-fake", CONTROLLER_ID]
    assert result.results[0].model == "bart-fake"
    assert result.results[0].outputs["text"].startswith("bart-fake(summarization)")


def test_history_reaches_planner(tmp_path: Path) -> None:
    plan = [t(0, "text-to-speech", {"text": "Ada"})]
    s = Setup(tmp_path, [json.dumps(plan)])
    install(s.store, "tts", ["text-to-speech"])
    history = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada!"}]
    s.pipeline().run("say my name aloud", history=history)
    planner_msgs = [m["content"] for m in s.llm.calls[0].messages]
    assert planner_msgs[-3:-1] == ["My name is Ada.", "Hello Ada!"]
    assert "My name is Ada." in [m["content"] for m in s.llm.calls[-1].messages]


def test_missing_user_file_is_an_input_error(tmp_path: Path) -> None:
    from localgpt.errors import InputError

    s = Setup(tmp_path, [])
    with pytest.raises(InputError, match="does not exist"):
        s.pipeline().run("caption gone.png", [tmp_path / "gone.png"])
    assert s.llm.calls == []


def test_answer_falls_back_to_the_results_when_the_llm_cannot_write_it(tmp_path: Path) -> None:
    from localgpt.runtime.responder import Responder
    from localgpt.schema import TaskResult

    results = [TaskResult(id=0, task="text-to-speech", status="done", model="tts", outputs={"audio": "/r/a.wav"}),
               TaskResult(id=1, task="automatic-speech-recognition", status="done", model="asr",
                          outputs={"text": "hello there"}),
               TaskResult(id=2, task="summarization", status="skipped", error="skipped because task 9 failed")]
    text = Responder.fallback(results, reason="context window exceeded")
    assert "context window exceeded" in text and "hello there" in text
    assert "skipped because task 9 failed" in text and text.rstrip().endswith("- /r/a.wav")


def test_responder_keeps_the_latest_history_that_fits_its_budget() -> None:
    from localgpt.runtime.responder import Responder
    from localgpt.schema import TaskResult

    llm = FakeLLM(n_ctx=100_000)
    responder = Responder(llm, max_tokens=100)
    results = [TaskResult(id=0, task="summarization", status="done", model="sum", outputs={"text": "short"})]
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 200} for i in range(4)]
    full = responder.messages("sum it up", results, history)
    assert [m["content"] for m in full[1:-1]] == [h["content"] for h in history]
    system, user = full[0]["content"], full[-1]["content"]
    per_message = llm.count_tokens(history[0]["content"]) + 8
    llm.n_ctx = 100 + llm.count_tokens(system + user) + 32 + 2 * per_message  # the answer, the prompt, a margin of 32
    assert [m["content"] for m in responder.messages("sum it up", results, history)[1:-1]] == [
        history[2]["content"], history[3]["content"]]
    llm.n_ctx -= 1
    assert [m["content"] for m in responder.messages("sum it up", results, history)[1:-1]] == [history[3]["content"]]


def test_input_size_limit_comes_from_settings(tmp_path: Path) -> None:
    s = Setup(tmp_path, [])
    s.settings = s.settings.model_copy(update={"max_input_mb": 1})
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + b"\0" * 1_100_000)
    with pytest.raises(InputError, match="big.wav"):
        s.pipeline().input_files([]).check(big, explicit=True, kind=Kind.AUDIO)


def test_planner_is_offered_only_the_tasks_installed_models_serve(tmp_path: Path) -> None:
    s = Setup(tmp_path, [], controller="smollm2-135m-instruct")
    # the default offers every task type, so a request for a missing one is told which model is missing
    assert len(s.pipeline().planner.specs) == len(tasks.TASKS)
    s.settings = s.settings.model_copy(update={"plan_tasks": "installed"})
    install(s.store, "tts", ["text-to-speech"])
    install(s.store, "asr", ["automatic-speech-recognition"])
    planner = s.pipeline().planner
    names = {spec.name for spec in planner.specs}
    llm_text = {spec.name for spec in tasks.TASKS if spec.llm_servable}
    assert names == {"text-to-speech", "automatic-speech-recognition"} | llm_text
    assert "text-to-image" not in names and "pose-text-to-image" not in names
    places = planner.schema["properties"]["tasks"]["prefixItems"]
    offered = [{v["properties"]["task"]["const"] for v in place["anyOf"]} for place in places]
    assert offered == [names] * len(places)
    assert "text-to-image" not in planner.system_prompt()
    assert planner.demos and all(step["task"] in names for d in planner.demos for step in d.plan)
    # nothing serving any task (no controller either): the whole registry again
    (tmp_path / "bare").mkdir()
    bare = Setup(tmp_path / "bare", [])
    bare.settings = bare.settings.model_copy(update={"plan_tasks": "installed"})
    assert len(bare.pipeline().planner.specs) == len(tasks.TASKS)
