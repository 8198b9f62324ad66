"""Plan validation and the Planner driven by FakeLLM."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from localgpt import tasks as registry
from localgpt.errors import PlanError
from localgpt.llm import KEEP, MESSAGE_OVERHEAD, context_budget, trim_history
from localgpt.planning.demos import DEMOS, PROMPT_DEMOS, Demo
from localgpt.planning.planner import Planner, PlannerOptions, min_steps, plan_agreement
from localgpt.planning.validate import validate_plan
from localgpt.testing import FakeLLM


def t(i: int, task: str, args: dict[str, str], dep: list[int] | None = None) -> dict[str, Any]:
    return {"id": i, "task": task, "dep": dep if dep is not None else [-1], "args": args}


def plan_error(raw: Any, request: str = "", files: tuple[str, ...] = (), **kw: Any) -> str:
    with pytest.raises(PlanError) as err:
        validate_plan(raw, request, files, **kw)
    return err.value.message


# --- validate_plan ---

def test_valid_plan_roundtrip() -> None:
    plan = validate_plan([t(0, "text-to-speech", {"text": "hello"}),
                          t(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, [0])])
    assert [x.task for x in plan.tasks] == ["text-to-speech", "automatic-speech-recognition"]
    assert plan.by_id(1).dep == [0]
    # the {"tasks": [...]} wrapping is accepted too, and keeps its steps
    assert validate_plan({"tasks": [t(0, "summarization", {"text": "x"})]}).tasks[0].task == "summarization"
    assert validate_plan({"steps": ["Step 1: Sum up x."], "tasks": [t(0, "summarization", {"text": "x"})]}).steps \
        == ["Step 1: Sum up x."]


def test_not_a_list_or_malformed() -> None:
    assert "not a list" in plan_error("oops")
    assert "malformed" in plan_error([{"id": 0, "task": "summarization", "args": {"text": 1}}])
    assert "malformed" in plan_error([{"id": 0, "task": "summarization", "args": {"text": "a"}, "extra": 1}])


def test_duplicate_ids() -> None:
    assert "two tasks have the id 0" in plan_error([t(0, "summarization", {"text": "a"}),
                                                    t(0, "summarization", {"text": "b"})])


def test_unknown_task_is_named() -> None:
    msg = plan_error([t(0, "summarization", {"text": "a"}), t(1, "picture-painting", {"text": "a"})])
    assert "picture-painting" in msg and "task 1" in msg


def test_dep_on_missing_task() -> None:
    msg = plan_error([t(0, "summarization", {"text": "a"}, [5])])
    assert "task 0 depends on task 5" in msg and "does not exist" in msg


def test_self_dep() -> None:
    assert "depends on itself" in plan_error([t(0, "summarization", {"text": "a"}, [0])])


def test_forward_dep() -> None:
    msg = plan_error([t(0, "summarization", {"text": "a"}, [1]), t(1, "summarization", {"text": "b"})])
    assert "task 0 depends on task 1" in msg and "after" in msg


def test_cycle() -> None:
    msg = plan_error([t(0, "summarization", {"text": "a"}, [1]), t(1, "summarization", {"text": "b"}, [0])])
    assert "cycle" in msg
    msg = plan_error([t(0, "summarization", {"text": "a"}, [2]), t(1, "summarization", {"text": "b"}, [0]),
                      t(2, "summarization", {"text": "c"}, [1])])
    assert "cycle" in msg


def test_reference_to_later_task() -> None:
    msg = plan_error([t(0, "summarization", {"text": "<resource>-1"}), t(1, "summarization", {"text": "b"})])
    assert "<resource>-1" in msg and "does not come before" in msg


def test_reference_to_missing_task() -> None:
    msg = plan_error([t(0, "summarization", {"text": "shorten <resource>-4"})])
    assert "no task 4" in msg


def test_image_arg_referencing_text_task() -> None:
    msg = plan_error([t(0, "summarization", {"text": "a"}),
                      t(1, "image-classification", {"image": "<resource>-0"}, [0])])
    assert "needs image" in msg and "task 0" in msg and "summarization" in msg


def test_text_arg_referencing_image_only_task() -> None:
    msg = plan_error([t(0, "text-to-image", {"text": "a cat"}),
                      t(1, "text-to-speech", {"text": "<resource>-0"}, [0])])
    assert "needs text" in msg and "text-to-image" in msg


def test_text_arg_may_reference_task_producing_image_and_text() -> None:
    plan = validate_plan([t(0, "object-detection", {"image": "cat.png"}),
                          t(1, "summarization", {"text": "<resource>-0"}, [0])], files=["cat.png"])
    assert plan.by_id(1).dep == [0]


def test_literal_file_must_be_given_or_mentioned() -> None:
    msg = plan_error([t(0, "image-classification", {"image": "dog.png"})], request="what is in the picture?")
    assert "dog.png" in msg and "did not give" in msg
    # mentioned in the request
    validate_plan([t(0, "image-classification", {"image": "dog.png"})], request="what is in dog.png?")
    # given as a file (full path or bare name)
    validate_plan([t(0, "image-classification", {"image": "dog.png"})], files=["/data/pics/dog.png"])
    validate_plan([t(0, "image-classification", {"image": "/data/pics/dog.png"})], files=["/data/pics/dog.png"])


def test_literal_media_of_wrong_kind_or_plain_text() -> None:
    msg = plan_error([t(0, "image-classification", {"image": "a cat"})])
    assert "'a cat'" in msg and "needs image" in msg
    msg = plan_error([t(0, "image-classification", {"image": "song.wav"})], files=["song.wav"])
    assert "song.wav" in msg and "needs image" in msg


def test_text_arg_given_a_bare_media_file_is_named() -> None:
    msg = plan_error([t(0, "question-answering", {"question": "what is the deadline?", "context": "example.jpg"})],
                     request="when is the deadline in example.jpg?")
    assert "needs text for 'context'" in msg and "'example.jpg' is an image file" in msg
    msg = plan_error([t(0, "summarization", {"text": "talk.wav"})], files=["talk.wav"])
    assert "'talk.wav' is an audio file" in msg
    # a text that only mentions a file, or a text file, is text
    validate_plan([t(0, "text-to-speech", {"text": "I saved the photo as cat.jpg"})])
    validate_plan([t(0, "summarization", {"text": "notes.txt"})], request="summarize notes.txt")


def test_generated_reference_is_accepted() -> None:
    plan = validate_plan([t(0, "text-to-image", {"text": "a cat"}),
                          t(1, "image-classification", {"image": "<GENERATED>-0"}, [0]),
                          t(2, "text-to-speech", {"text": "it is <generated>-1"}, [1])])
    assert plan.by_id(1).dep == [0] and plan.by_id(2).dep == [1]


def test_dep_derived_from_reference_and_minus_one_dropped() -> None:
    plan = validate_plan([t(0, "text-to-speech", {"text": "hi"}),
                          t(1, "summarization", {"text": "x"}),
                          t(2, "automatic-speech-recognition", {"audio": "<resource>-0"}, [-1]),
                          t(3, "translation", {"text": "<resource>-1 and <resource>-2"}, [-1])])
    assert plan.by_id(0).dep == []
    assert plan.by_id(2).dep == [0]
    assert plan.by_id(3).dep == [1, 2]


def test_required_arg_missing_or_empty() -> None:
    msg = plan_error([t(0, "visual-question-answering", {"image": "a.png"})], files=["a.png"])
    assert "missing its required argument 'text'" in msg
    msg = plan_error([t(0, "summarization", {"text": "   "})])
    assert "missing its required argument 'text'" in msg


def test_unknown_arg_name() -> None:
    msg = plan_error([t(0, "summarization", {"text": "a", "length": "short"})])
    assert "no argument 'length'" in msg


def test_too_many_tasks() -> None:
    raw = [t(i, "summarization", {"text": "a"}) for i in range(3)]
    assert "at most 2" in plan_error(raw, max_tasks=2)


# --- the Planner ---

def test_max_tasks_limits_come_from_the_settings() -> None:
    from localgpt.config import DEFAULT_MAX_TASKS, MAX_TASKS_LIMIT, Settings
    from localgpt.errors import ConfigError
    from localgpt.planning.schema import plan_schema

    assert (DEFAULT_MAX_TASKS, MAX_TASKS_LIMIT) == (8, 32)
    assert Settings.model_fields["max_tasks"].default == DEFAULT_MAX_TASKS
    with pytest.raises(ConfigError, match="max_tasks"):
        Settings.load(max_tasks=MAX_TASKS_LIMIT + 1)
    assert Planner(FakeLLM()).max_tasks == DEFAULT_MAX_TASKS
    assert plan_schema()["maxItems"] == DEFAULT_MAX_TASKS
    many = [t(i, "text-to-speech", {"text": "hello"}) for i in range(MAX_TASKS_LIMIT + 1)]
    assert len(validate_plan(many[:MAX_TASKS_LIMIT], "x").tasks) == MAX_TASKS_LIMIT  # the checks' default: the limit
    assert f"at most {MAX_TASKS_LIMIT}" in plan_error(many, "x")


TTS_PLAN = [t(0, "text-to-speech", {"text": "hello"})]
BAD_PLAN = [t(0, "text-to-speech", {"text": "hello"}, [3])]  # mendable: the dep to a missing task is dropped
LOST_PLAN = [t(0, "image-classification", {"image": "cat.png"})]  # not mendable: no image was given


def test_planner_valid_first_reply() -> None:
    llm = FakeLLM([json.dumps(TTS_PLAN)])
    planner = Planner(llm)
    attempt = planner.attempt("say hello aloud")
    assert attempt.plan is not None and [x.task for x in attempt.plan.tasks] == ["text-to-speech"]
    assert len(llm.calls) == 1
    assert llm.calls[0].schema == planner.schema_for("say hello aloud", ())
    msgs = llm.calls[0].messages
    assert msgs[0]["role"] == "system" and "text-to-speech" in msgs[0]["content"]
    assert msgs[-1]["role"] == "user" and "say hello aloud" in msgs[-1]["content"]
    assert attempt.raws == (json.dumps(TTS_PLAN),) and not attempt.salvaged and attempt.seconds >= 0


def test_planner_mends_before_it_repairs() -> None:
    llm = FakeLLM([json.dumps(BAD_PLAN), json.dumps(TTS_PLAN)])
    planner = Planner(llm)
    attempt = planner.attempt("say hello aloud")
    assert attempt.plan is not None and attempt.plan.tasks[0].dep == [] and attempt.salvaged
    assert len(llm.calls) == 1  # mended at once: no repair round


def test_planner_repairs_once_when_mending_keeps_nothing() -> None:
    llm = FakeLLM([json.dumps(LOST_PLAN), json.dumps(TTS_PLAN)])
    planner = Planner(llm)
    attempt = planner.attempt("say hello aloud")
    assert attempt.plan is not None and [x.task for x in attempt.plan.tasks] == ["text-to-speech"]
    assert not attempt.salvaged and attempt.raws == (json.dumps(LOST_PLAN), json.dumps(TTS_PLAN))
    assert len(llm.calls) == 2
    second = llm.calls[1].messages
    assert second[-2] == {"role": "assistant", "content": json.dumps(LOST_PLAN)}
    assert "cat.png" in second[-1]["content"] and "did not give" in second[-1]["content"]
    assert llm.calls[1].schema == llm.calls[0].schema
    # without mending, a mendable plan goes to the repair round too
    llm = FakeLLM([json.dumps(BAD_PLAN), json.dumps(TTS_PLAN)])
    Planner(llm, options=PlannerOptions(salvage=False)).plan("say hello aloud")
    assert len(llm.calls) == 2 and "task 0 depends on task 3" in llm.calls[1].messages[-1]["content"]


def test_planner_gives_up_after_two_invalid() -> None:
    llm = FakeLLM([json.dumps(BAD_PLAN), json.dumps(BAD_PLAN)])
    with pytest.raises(PlanError) as err:
        Planner(llm, options=PlannerOptions(salvage=False)).plan("say hello aloud")
    assert err.value.raw == json.dumps(BAD_PLAN)
    assert "task 0 depends on task 3" in err.value.message
    assert len(llm.calls) == 2
    llm = FakeLLM([json.dumps(LOST_PLAN), json.dumps(LOST_PLAN)])
    with pytest.raises(PlanError, match="could not make a valid plan"):
        Planner(llm).plan("say hello aloud")
    assert len(llm.calls) == 2


def test_planner_without_repair_calls_once() -> None:
    llm = FakeLLM([json.dumps(BAD_PLAN), json.dumps(TTS_PLAN)])
    with pytest.raises(PlanError):
        Planner(llm, options=PlannerOptions(repair=False, salvage=False)).plan("say hello aloud")
    assert len(llm.calls) == 1


def test_planner_repairs_non_json() -> None:
    llm = FakeLLM(['[{"id": 0, "task": "text-to-sp', json.dumps(TTS_PLAN)])
    plan = Planner(llm).plan("say hello aloud")
    assert plan.tasks[0].task == "text-to-speech"
    assert "not complete JSON" in llm.calls[1].messages[-1]["content"]


def test_planner_empty_request_makes_no_call() -> None:
    llm = FakeLLM([json.dumps(TTS_PLAN)])
    with pytest.raises(PlanError, match="empty"):
        Planner(llm).plan("   ")
    assert llm.calls == []


def test_planner_checks_files() -> None:
    plan = [t(0, "image-classification", {"image": "photo.png"})]
    llm = FakeLLM([json.dumps(plan)])
    assert Planner(llm).plan("what is this?", files=["/somewhere/photo.png"]).tasks[0].args["image"] == "photo.png"
    assert "/somewhere/photo.png" in llm.calls[0].messages[-1]["content"]
    llm = FakeLLM([json.dumps(plan), json.dumps(plan)])
    with pytest.raises(PlanError, match="did not give"):
        Planner(llm).plan("what is this?")


def test_demos_by_similarity() -> None:
    planner = Planner(FakeLLM(), n_demos=3)
    chosen = planner.choose_demos("Read this sentence aloud: see you tomorrow.")
    assert len(chosen) == 3
    assert chosen[-1].plan[0]["task"] == "text-to-speech"
    assert chosen[-1] is DEMOS[0]
    chosen = planner.choose_demos("Transcribe lecture.mp3 and give me a short summary of it.")
    assert [x["task"] for x in chosen[-1].plan] == ["automatic-speech-recognition", "summarization"]


def test_demos_in_messages_never_exceed_n_demos() -> None:
    for n in (0, 1, 4):
        llm = FakeLLM()
        msgs = Planner(llm, n_demos=n).messages("Read this aloud: hi", [])
        assistant = [m for m in msgs if m["role"] == "assistant"]
        assert len(assistant) == n
        assert len(msgs) == 2 + 2 * n
    many = [Demo(f"request {i}", (), ({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "x"}},))
            for i in range(10)]
    assert len(Planner(FakeLLM(), demos=many, n_demos=4).choose_demos("request")) == 4


def test_diverse_demos_leave_out_a_near_duplicate() -> None:
    def demo(request: str, task: str) -> Demo:
        return Demo(request, (), ({"id": 0, "task": task, "dep": [-1], "args": {"text": "x"}},))
    twin_a = demo("translate this french text into english please", "translation")
    twin_b = demo("translate this french text into english now please", "translation")
    other = demo("read this text aloud", "text-to-speech")
    far = demo("draw a cat", "text-to-image")
    request = "translate this french text into english and then read it aloud"
    # by similarity alone the two near-identical translation demos fill both places
    plain = Planner(FakeLLM(), demos=[twin_a, twin_b, other, far], n_demos=2, options=PlannerOptions(demo_diversity=0))
    assert plain.choose_demos(request) == [twin_b, twin_a]
    # with diversity the second place goes to the demo that shows another task; the closest stays last
    diverse = Planner(FakeLLM(), demos=[twin_a, twin_b, other, far], n_demos=2,
                      options=PlannerOptions(demo_diversity=0.5))
    assert diverse.choose_demos(request) == [other, twin_a]
    assert len(Planner(FakeLLM(), demos=[twin_a, other], n_demos=3).choose_demos(request)) == 2
    # a request that reads as one action gets the most similar demos, diversity or not
    assert diverse.choose_demos("translate this french text into english") == [twin_b, twin_a]


def test_the_chat_up_to_the_first_demo_is_marked_to_keep() -> None:
    """``demo_state`` (on): the system prompt and the first demo shown, a prefix other requests repeat, are
    marked for the engine; the prompt itself is the same with it off, and a chat without chosen demos (a
    request not in English) marks nothing."""
    request = "Transcribe lecture.mp3 and give me a short summary of it."
    on = Planner(FakeLLM(), n_demos=3).messages(request, ["lecture.mp3"])
    off = Planner(FakeLLM(), n_demos=3, options=PlannerOptions(demo_state=False)).messages(request, ["lecture.mp3"])
    assert [i for i, m in enumerate(on) if m.get(KEEP)] == [2] and on[2]["role"] == "assistant"
    assert not any(m.get(KEEP) for m in off)
    assert [(m["role"], m["content"]) for m in on] == [(m["role"], m["content"]) for m in off]
    german = Planner(FakeLLM()).messages("Übersetze diesen Text ins Französische und lies ihn vor", [])
    assert len(german) == 2 and not any(m.get(KEEP) for m in german)  # its demos are in the system prompt


def test_closest_demo_sits_just_before_request() -> None:
    msgs = Planner(FakeLLM(), n_demos=4).messages("Read this sentence aloud: see you", [])
    assert "Read this sentence aloud: good morning" in msgs[-3]["content"]
    assert json.loads(msgs[-2]["content"])["tasks"][0]["task"] == "text-to-speech"



def test_system_demos_sit_in_the_system_prompt_and_are_not_shown_again() -> None:
    planner = Planner(FakeLLM(), n_demos=1, options=PlannerOptions(system_demos=3))
    shown = planner.system_demos()
    assert shown == list(PROMPT_DEMOS[:3])
    system = planner.system_prompt()
    for demo in shown:  # each as the LLM must write it, after its request
        assert f"{planner.user_prompt(demo.request, demo.files)}\nReply: {planner.demo_reply(demo)}" in system
    # the system prompt is the same for every request (its state is cached); the per-request demo differs
    request = PROMPT_DEMOS[0].request  # the closest demo of all is in the system prompt already
    msgs = planner.messages(request, list(PROMPT_DEMOS[0].files))
    assert msgs[0]["content"] == system and len(msgs) == 4
    assert PROMPT_DEMOS[0].request not in msgs[1]["content"]
    assert planner.choose_demos(request)[0] not in shown
    # a prompt demo whose task types are not offered is left out; none are written by default
    speech_only = [s for s in registry.TASKS if s.name in ("text-to-speech", "automatic-speech-recognition")]
    narrow = Planner(FakeLLM(), specs=speech_only, options=PlannerOptions(system_demos=10))
    assert narrow.system_demos() == [] and "Examples" not in narrow.system_prompt()
    assert "Examples" not in Planner(FakeLLM()).system_prompt()


# --- decompose, then plan ---

def test_decomposing_planner_asks_for_steps_then_tasks() -> None:
    planner = Planner(FakeLLM(), n_demos=2)
    schema = planner.schema
    assert schema["type"] == "object" and schema["required"] == ["steps", "tasks"]
    assert list(schema["properties"]) == ["steps", "tasks"]  # the steps are written first
    assert schema["properties"]["tasks"]["type"] == "array"
    assert '"steps"' in planner.system_prompt() and '"tasks"' in planner.system_prompt()
    msgs = planner.messages("Transcribe lecture.mp3 and give me a short summary of it.", ["lecture.mp3"])
    reply = json.loads(msgs[-2]["content"])  # the closest demo, written as the LLM must write
    assert reply["steps"] == ["Step 1: Transcribe the speech in interview.mp3.", "Step 2: Summarize the transcript."]
    assert [x["task"] for x in reply["tasks"]] == ["automatic-speech-recognition", "summarization"]
    assert " " not in msgs[-2]["content"].split('"tasks"')[1].split('"args"')[0]  # compact JSON


@pytest.mark.parametrize("request_text", [
    "Edit example.jpg as 'Make the car blue.' After editing, classify the image and give the label in French.",
    "Transcribe example.wav, then summarize it and read the summary aloud.",
    "Describe example.jpg, translate the description and make a video of it.",
])
def test_request_of_several_actions_needs_two_steps(request_text: str) -> None:
    assert min_steps(request_text) == 2


def test_floor_never_exceeds_the_plan_length() -> None:
    request = "Transcribe a.wav, then translate it, then summarize the translation and finally read it aloud."
    assert Planner(FakeLLM()).schema_for(request)["properties"]["steps"]["minItems"] == 2
    assert Planner(FakeLLM(), max_tasks=1).schema_for(request)["properties"]["steps"]["minItems"] == 1


@pytest.mark.parametrize("request_text", [
    "Please classify example.jpg.",
    "Read 'hello there' aloud.",
    # the chaining words inside the quoted text are data, not asks
    "Translate 'first this and then that, and finally the other thing, then stop' into French.",
])
def test_request_of_one_action_needs_one_step(request_text: str) -> None:
    assert min_steps(request_text) == 1


def test_floor_of_two_steps_reaches_the_constraint() -> None:
    reply = {"steps": ["Step 1: Transcribe it.", "Step 2: Summarize it."],
             "tasks": [t(0, "automatic-speech-recognition", {"audio": "a.wav"}),
                       t(1, "summarization", {"text": "<resource>-0"}, [0])]}
    llm = FakeLLM([json.dumps(reply), json.dumps({"steps": ["Step 1: Say hi."], "tasks": TTS_PLAN})])
    planner = Planner(llm)
    planner.plan("Transcribe a.wav, then summarize it and read it aloud.", ["a.wav"])
    planner.plan("say hello aloud")
    floored, plain = llm.calls[0].schema, llm.calls[1].schema
    assert floored["properties"]["steps"]["minItems"] == 2
    assert plain == planner.schema_for("say hello aloud", ()) and plain["properties"]["steps"]["minItems"] == 1
    several = planner.schema_for("Transcribe a.wav, then summarize it and read it aloud.", ["a.wav"])
    assert floored["properties"]["tasks"] == several["properties"]["tasks"]  # the files' constraint and the floor
    assert planner.schema["properties"]["steps"]["minItems"] == 1  # the planner's own schema is untouched


def test_floor_is_off_when_asked_or_without_steps() -> None:
    several = "Transcribe a.wav, then summarize it and read it aloud."
    no_floor = Planner(FakeLLM(), options=PlannerOptions(step_floor=False))
    assert no_floor.schema_for(several)["properties"]["steps"]["minItems"] == 1
    plain = Planner(FakeLLM(), options=PlannerOptions(decompose=False))
    assert plain.schema_for(several) == plain.schema and plain.schema["type"] == "array"
    unconstrained = Planner(FakeLLM())
    unconstrained.schema = None  # type: ignore[assignment]
    assert unconstrained.schema_for(several) is None


def test_decomposed_reply_gives_plan_with_steps() -> None:
    reply = {"steps": ["Step 1: Say hello aloud."], "tasks": TTS_PLAN}
    planner = Planner(FakeLLM([json.dumps(reply)]))
    plan = planner.plan("say hello aloud")
    assert [x.task for x in plan.tasks] == ["text-to-speech"]
    assert plan.steps == ["Step 1: Say hello aloud."]
    # a bare task list (an older reply shape) is still a plan, with no steps
    plan = Planner(FakeLLM([json.dumps(TTS_PLAN)])).plan("say hello aloud")
    assert plan.steps == [] and plan.tasks[0].task == "text-to-speech"


def test_decomposed_reply_is_mended_and_repaired_like_a_list() -> None:
    bad = {"steps": ["Step 1: Say hello."], "tasks": BAD_PLAN}
    planner = Planner(FakeLLM([json.dumps(bad)]))
    attempt = planner.attempt("say hello aloud")  # mended: the bad dep dropped, the steps kept
    plan = attempt.plan
    assert plan is not None and attempt.salvaged and plan.tasks[0].dep == [] and plan.steps == ["Step 1: Say hello."]
    lost = {"steps": ["Step 1: Classify cat.png."], "tasks": LOST_PLAN}
    llm = FakeLLM([json.dumps(lost), json.dumps({"steps": ["Step 1: Say hello aloud."], "tasks": TTS_PLAN})])
    plan = Planner(llm).plan("say hello aloud")
    assert "did not give" in llm.calls[1].messages[-1]["content"]
    assert plan.steps == ["Step 1: Say hello aloud."]


def test_inline_steps_put_each_step_just_before_its_task() -> None:
    inline = PlannerOptions(inline_steps=True)
    planner = Planner(FakeLLM(), n_demos=2, options=inline)
    schema = planner.schema
    assert schema["required"] == ["tasks"] and list(schema["properties"]) == ["tasks"]
    first = schema["properties"]["tasks"]["prefixItems"][0]["anyOf"][0]
    assert list(first["properties"])[:3] == ["step", "id", "task"]  # the step is decoded before the type
    assert first["required"][0] == "step"
    assert '"step"' in planner.system_prompt() and '"steps"' not in planner.system_prompt()
    msgs = planner.messages("Transcribe lecture.mp3 and give me a short summary of it.", ["lecture.mp3"])
    reply = json.loads(msgs[-2]["content"])  # the closest demo, written the same way
    assert [x["step"] for x in reply["tasks"]] == ["Step 1: Transcribe the speech in interview.mp3.",
                                                   "Step 2: Summarize the transcript."]
    assert [x["task"] for x in reply["tasks"]] == ["automatic-speech-recognition", "summarization"]
    # the step floor becomes a floor of tasks; the planner's own schema is untouched
    several = "Write a poem, then summarize it and read it aloud."
    assert planner.schema_for(several)["properties"]["tasks"]["minItems"] == 2
    assert planner.schema["properties"]["tasks"]["minItems"] == 1
    assert planner.schemas() == [planner.schema_for("", ()), planner.schema_for(several, ())]
    # the steps-first layout is the default
    assert Planner(FakeLLM()).schema["required"] == ["steps", "tasks"]
    # a demo whose steps are not one per task is still written inline, each task's type as its step
    odd = Demo("Caption a.jpg and read it", ("a.jpg",),
               ({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "a.jpg"}},
                {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<text>-0"}}),
               ("Step 1: Caption a.jpg and read the caption aloud.",))
    written = json.loads(planner.demo_reply(odd))
    assert list(written) == ["tasks"]
    assert [x["step"] for x in written["tasks"]] == ["Step 1: image-to-text", "Step 2: text-to-speech"]


def test_inline_steps_reply_gives_a_plan_with_its_steps() -> None:
    reply = {"tasks": [{"step": "Step 1: Transcribe it.", **t(0, "automatic-speech-recognition", {"audio": "a.wav"})},
                       {"step": "Step 2: Sum it up.", **t(1, "summarization", {"text": "<resource>-0"}, [0])}]}
    llm = FakeLLM([json.dumps(reply)])
    plan = Planner(llm, options=PlannerOptions(inline_steps=True)).plan("Transcribe a.wav, then sum it up.", ["a.wav"])
    assert plan.steps == ["Step 1: Transcribe it.", "Step 2: Sum it up."]
    assert [x.task for x in plan.tasks] == ["automatic-speech-recognition", "summarization"]
    assert plan.tasks[1].dep == [0]
    # a reply of the inline shape that needs mending keeps its steps too
    bad = {"tasks": [{"step": "Step 1: Say hello.", **BAD_PLAN[0]}]}
    attempt = Planner(FakeLLM([json.dumps(bad)]), options=PlannerOptions(inline_steps=True)).attempt("say hello aloud")
    assert attempt.plan is not None and attempt.salvaged and attempt.plan.steps == ["Step 1: Say hello."]
    # only when every task has a step are they steps; otherwise the stray key is an error as before
    assert "malformed" in plan_error({"tasks": [{"step": "x", **TTS_PLAN[0]}, t(1, "summarization", {"text": "y"})]})


def test_plain_planner_replies_a_list() -> None:
    planner = Planner(FakeLLM([json.dumps(TTS_PLAN)]), n_demos=1, options=PlannerOptions(decompose=False))
    assert planner.schema["type"] == "array"
    msgs = planner.messages("Read this sentence aloud: see you", [])
    assert json.loads(msgs[-2]["content"])[0]["task"] == "text-to-speech"
    assert "JSON list" in planner.system_prompt() and '"steps"' not in planner.system_prompt()


def test_demo_without_steps_gets_one_step_per_task() -> None:
    demo = Demo("request", (), (t(0, "summarization", {"text": "x"}),
                                t(1, "text-to-speech", {"text": "<resource>-0"}, [0])))
    reply = json.loads(Planner(FakeLLM()).demo_reply(demo))
    assert reply["steps"] == ["Step 1: summarization", "Step 2: text-to-speech"]


def test_history_trimmed_oldest_first() -> None:
    llm = FakeLLM(n_ctx=100_000)
    planner = Planner(llm, n_demos=2)
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " + "x" * 400}
               for i in range(6)]
    full = planner.messages("Read this aloud: hi", [], history)
    assert [m["content"] for m in full[-7:-1]] == [h["content"] for h in history]

    base = planner.messages("Read this aloud: hi", [], [])
    used = planner.max_tokens() + sum(llm.count_tokens(m["content"]) + 8 for m in base)
    per_message = llm.count_tokens(history[0]["content"]) + 8
    llm.n_ctx = used + 2 * per_message + 5  # room for exactly two history messages
    msgs = planner.messages("Read this aloud: hi", [], history)
    assert len(msgs) == len(base) + 2
    assert [m["content"] for m in msgs[-3:-1]] == [history[4]["content"], history[5]["content"]]
    assert msgs[-1]["content"].startswith("Request: Read this aloud: hi")

    llm.n_ctx = used  # no room at all: history dropped, request kept
    msgs = planner.messages("Read this aloud: hi", [], history)
    assert len(msgs) == len(base) and msgs[-1] == base[-1]


def test_history_reaches_planner_call() -> None:
    llm = FakeLLM([json.dumps(TTS_PLAN)])
    history = [{"role": "user", "content": "my name is Ada"}, {"role": "assistant", "content": "hi Ada"}]
    Planner(llm).plan("say hello aloud", history=history)
    contents = [m["content"] for m in llm.calls[0].messages]
    assert contents[-3:-1] == ["my name is Ada", "hi Ada"]


def test_trim_history_keeps_latest_and_strips_extra_keys() -> None:
    llm = FakeLLM()
    history = [{"role": "user", "content": "a" * 40, "extra": "x"}, {"role": "assistant", "content": "b" * 40}]
    assert trim_history(llm, history, 1000) == [{"role": "user", "content": "a" * 40},
                                                {"role": "assistant", "content": "b" * 40}]
    assert trim_history(llm, history, 18) == [{"role": "assistant", "content": "b" * 40}]
    assert trim_history(llm, history, 5) == []
    assert trim_history(llm, history, -10) == []


def test_context_budget_counts_reply_messages_text_and_margin() -> None:
    llm = FakeLLM(n_ctx=1000)
    msgs = [{"role": "system", "content": "s" * 40}, {"role": "user", "content": "u" * 80}]
    assert MESSAGE_OVERHEAD == 8  # what the planner has always added per message
    assert context_budget(llm, 100) == 900
    assert context_budget(llm, 100, msgs) == 1000 - 100 - (10 + 8) - (20 + 8)
    assert context_budget(llm, 100, text="t" * 40, margin=64) == 1000 - 100 - 10 - 64  # text: no overhead
    assert context_budget(llm, 100, msgs, text="t" * 40, margin=32) == 1000 - 100 - 46 - 10 - 32


# --- self-consistency (an option, off by default) ---

TTS_ASR = [t(0, "text-to-speech", {"text": "hello"}),
           t(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, [0])]


def test_self_consistency_takes_the_plan_the_samples_agree_on() -> None:
    llm = FakeLLM([json.dumps(TTS_PLAN), json.dumps(TTS_ASR), json.dumps(TTS_ASR)])
    planner = Planner(llm, options=PlannerOptions(samples=2, sample_temperature=0.7))
    attempt = planner.attempt("say hello aloud, then transcribe it")
    assert attempt.plan is not None
    assert [x.task for x in attempt.plan.tasks] == ["text-to-speech", "automatic-speech-recognition"]
    assert [(c.temperature, c.seed) for c in llm.calls] == [(0.0, None), (0.7, 1000), (0.7, 1001)]
    assert llm.calls[1].messages == llm.calls[0].messages  # the same prompt: its state is reused
    assert len(attempt.raws) == 3


def test_self_consistency_tie_keeps_greedy_and_bad_samples_do_not_vote() -> None:
    llm = FakeLLM([json.dumps(TTS_PLAN), json.dumps(TTS_ASR)])
    plan = Planner(llm, options=PlannerOptions(samples=1)).plan("say hello aloud, then transcribe it")
    assert [x.task for x in plan.tasks] == ["text-to-speech"]  # one against one: the greedy plan
    llm = FakeLLM([json.dumps(TTS_PLAN), "not json", json.dumps([t(0, "made-up", {})]), json.dumps(TTS_PLAN)])
    plan = Planner(llm, options=PlannerOptions(samples=3)).plan("say hello aloud")
    assert [x.task for x in plan.tasks] == ["text-to-speech"] and len(llm.calls) == 4
    llm = FakeLLM([json.dumps(TTS_PLAN)])
    Planner(llm).plan("say hello aloud")
    assert len(llm.calls) == 1  # off by default: no extra call


def test_plan_agreement_counts_tasks_and_edges() -> None:
    a, b = validate_plan(TTS_PLAN), validate_plan(TTS_ASR)
    assert plan_agreement(a, a) == 2.0 and plan_agreement(b, b) == 2.0
    assert plan_agreement(a, b) == 0.5  # tasks 1 of 2 shared, edges 0 of 1


def _task_names(schema: dict[str, Any], position: int = 0) -> set[str]:
    tasks = schema["properties"]["tasks"] if schema.get("type") == "object" else schema
    return {v["properties"]["task"]["const"] for v in tasks["prefixItems"][position]["anyOf"]}


def test_type_shortlist_admits_the_near_demos_types_and_those_no_demo_uses() -> None:
    def demo(request: str, task: str) -> Demo:
        return Demo(request, (), (t(0, task, {"text": "x"}),))
    demos = [demo("read this text aloud please", "text-to-speech"),
             demo("read the news aloud", "text-to-speech"),
             demo("summarize this long text", "summarization"),
             demo("translate this text into french", "translation"),
             demo("draw a cat on a sofa", "text-to-image")]
    planner = Planner(FakeLLM(), demos=demos, n_demos=1, options=PlannerOptions(type_shortlist=2))
    allowed = {s.name for s in planner.shortlist("read this text aloud")}
    used = {"text-to-speech", "summarization", "translation", "text-to-image"}
    # the two nearest demos both read aloud: of the types demos use, only that one stays
    assert allowed & used == {"text-to-speech"}
    # a type no demo shows is never ruled out (nothing speaks against it)
    assert "image-classification" in allowed and "question-answering" in allowed
    schema = planner.schema_for("read this text aloud")
    assert schema is not None
    assert all(_task_names(schema, i) == allowed for i in range(planner.max_tasks))
    # the system prompt, the part whose state is cached, still lists every type
    assert "- summarization(" in planner.system_prompt()
    # the constraint reaches the LLM
    llm = FakeLLM([json.dumps({"steps": ["Step 1: Say it."], "tasks": TTS_PLAN})])
    shortlisted = Planner(llm, demos=demos, n_demos=1, options=PlannerOptions(type_shortlist=2))
    shortlisted.plan("read this text aloud")
    assert _task_names(llm.calls[0].schema, 1) == allowed  # (the first task takes no file: none was given)


def test_type_shortlist_is_off_by_default_and_with_few_demos() -> None:
    request = "Transcribe a.wav, then summarize it and read it aloud."
    default = Planner(FakeLLM())
    assert default.options.type_shortlist == 0 and default.shortlist(request) == list(default.specs)
    # no more demos than K: the demos cannot tell what is far, so every type stays
    few = Planner(FakeLLM(), options=PlannerOptions(type_shortlist=len(DEMOS)))
    assert few.shortlist(request) == list(few.specs)
    assert few.schema_for(request)["properties"]["tasks"] == default.schema_for(request)["properties"]["tasks"]
    # with many demos, a shortlist keeps the step floor of a request that reads as several actions
    narrow = Planner(FakeLLM(), options=PlannerOptions(type_shortlist=3))
    schema = narrow.schema_for(request)
    assert schema["properties"]["steps"]["minItems"] == 2
    assert len(_task_names(schema)) < len(narrow.specs)
    assert {"automatic-speech-recognition", "summarization"} <= _task_names(schema)
    # the near demos use only types the planner is not offered: rather than a constraint nothing can
    # satisfy, every offered type stays
    offered = [registry.get("summarization")]
    demos = [Demo(f"read text {i} aloud", (), (t(0, "text-to-speech", {"text": "x"}),)) for i in range(4)]
    demos.append(Demo("sum up this text", (), (t(0, "summarization", {"text": "x"}),)))
    lone = Planner(FakeLLM(), demos=demos, specs=offered, options=PlannerOptions(type_shortlist=2))
    assert lone.shortlist("read text 9 aloud") == offered


def _tokens(llm: FakeLLM, raws: tuple[str, ...]) -> tuple[int, int]:
    """The prompt and generated tokens of every call ``llm`` saw, as its tokenizer counts them."""
    prompt = sum(llm.count_tokens(m["content"]) + MESSAGE_OVERHEAD for c in llm.calls for m in c.messages)
    return prompt, sum(llm.count_tokens(r) for r in raws)


@pytest.mark.parametrize("replies, options", [
    ([json.dumps(TTS_PLAN)], PlannerOptions()),
    ([json.dumps(LOST_PLAN), json.dumps(TTS_PLAN)], PlannerOptions()),  # first try and repair
    ([json.dumps(TTS_PLAN), json.dumps(TTS_ASR), "not json"], PlannerOptions(samples=2)),  # and samples
    (["not json", "not json either"], PlannerOptions()),  # no plan: the tokens are still counted
])
def test_an_attempt_counts_the_tokens_of_every_call_that_made_it(replies: list[str],
                                                                 options: PlannerOptions) -> None:
    llm = FakeLLM(replies)
    attempt = Planner(llm, options=options).attempt("say hello aloud, then transcribe it")
    assert len(llm.calls) == len(replies) and attempt.raws == tuple(replies)
    prompt, generated = _tokens(llm, attempt.raws)
    assert (attempt.prompt_tokens, attempt.generated_tokens) == (prompt, generated)
    assert prompt > 100 * len(replies) and generated > 0
    again = Planner(FakeLLM(replies), options=options).attempt("say hello aloud, then transcribe it")
    assert (again.prompt_tokens, again.generated_tokens) == (prompt, generated)  # per call: nothing carried over


# --- the step repair: a step left without a task ---

STEP_REQUEST = "把这段话翻译成英语，总结一下，再读出来：今天天气很好"  # (any language: the steps are only counted)
THREE_STEPS = ["第一步：翻译成英语", "第二步：总结", "第三步：朗读"]
TWO_TASKS = [t(0, "translation", {"text": "今天天气很好"}), t(1, "summarization", {"text": "<resource>-0"}, [0])]
THREE_TASKS = [*TWO_TASKS, t(2, "text-to-speech", {"text": "<resource>-1"}, [1])]


def _reply(steps: list[str], tasks: list[dict[str, Any]]) -> str:
    return json.dumps({"steps": steps, "tasks": tasks}, ensure_ascii=False)


def test_a_step_left_without_a_task_gets_one_repair_conditioned_on_the_steps() -> None:
    import jsonschema

    llm = FakeLLM([_reply(THREE_STEPS, TWO_TASKS), _reply(THREE_STEPS, THREE_TASKS)])
    planner = Planner(llm, options=PlannerOptions(step_repair=True))
    attempt = planner.attempt(STEP_REQUEST)
    assert len(llm.calls) == 2 and attempt.step_repair and attempt.step_repair_kept
    assert attempt.plan is not None
    assert [x.task for x in attempt.plan.tasks] == ["translation", "summarization", "text-to-speech"]
    first, repair = llm.calls
    assert repair.messages == first.messages  # the same messages
    schema = repair.schema
    assert schema is not None and schema["properties"]["tasks"]["minItems"] == 3
    jsonschema.validate(json.loads(_reply(THREE_STEPS, THREE_TASKS)), schema)
    for wrong in (_reply(THREE_STEPS, TWO_TASKS), _reply(THREE_STEPS[:2] + ["别的"], THREE_TASKS)):
        with pytest.raises(jsonschema.ValidationError):  # two tasks, or other steps: refused
            jsonschema.validate(json.loads(wrong), schema)
    assert attempt.raws == (_reply(THREE_STEPS, TWO_TASKS), _reply(THREE_STEPS, THREE_TASKS))


def test_as_many_tasks_as_steps_asks_for_no_repair_and_the_switch_is_off_by_default() -> None:
    llm = FakeLLM([_reply(THREE_STEPS, THREE_TASKS)])
    attempt = Planner(llm, options=PlannerOptions(step_repair=True)).attempt(STEP_REQUEST)
    assert len(llm.calls) == 1 and not attempt.step_repair and not attempt.step_repair_kept
    llm = FakeLLM([_reply(THREE_STEPS, TWO_TASKS)])
    attempt = Planner(llm).attempt(STEP_REQUEST)  # the default planner: no repair
    assert len(llm.calls) == 1 and not attempt.step_repair and attempt.plan is not None
    assert len(attempt.plan.tasks) == 2


@pytest.mark.parametrize("bad", [
    "not json",
    _reply(THREE_STEPS, [*TWO_TASKS, t(2, "image-classification", {"image": "cat.png"})]),  # a file never given
    _reply(THREE_STEPS, TWO_TASKS),  # no more tasks than before
])
def test_a_step_repair_that_is_invalid_or_covers_no_more_keeps_the_original(bad: str) -> None:
    llm = FakeLLM([_reply(THREE_STEPS, TWO_TASKS), bad])
    attempt = Planner(llm, options=PlannerOptions(step_repair=True)).attempt(STEP_REQUEST)
    assert len(llm.calls) == 2 and attempt.step_repair and not attempt.step_repair_kept
    assert attempt.plan is not None and [x.task for x in attempt.plan.tasks] == ["translation", "summarization"]
    assert attempt.raws == (_reply(THREE_STEPS, TWO_TASKS), bad) and not attempt.salvaged


# --- a step list closed without being sure: one more try with one step more ---

ONE_STEP, TWO_STEPS = THREE_STEPS[:1], THREE_STEPS[:2]
ONE_TASK = TWO_TASKS[:1]


def _compact(steps: list[str], tasks: list[dict[str, Any]]) -> str:  # as decoded under the constraint
    return json.dumps({"steps": steps, "tasks": tasks}, ensure_ascii=False, separators=(",", ":"))


class OddsLLM(FakeLLM):
    """A FakeLLM that says how likely each ending is: P(close the steps) = ``close``, else another step."""

    def __init__(self, replies: list[str], close: float) -> None:
        super().__init__(replies)
        self.close = close
        self.asked: list[tuple[str, list[str]]] = []

    def ending_logprobs(self, messages: Any, prefix: str, endings: list[str]) -> list[float]:
        self.asked.append((prefix, list(endings)))
        return [math.log(self.close), math.log(1 - self.close)]


def test_a_step_list_closed_unsure_is_asked_again_with_one_step_more() -> None:
    llm = OddsLLM([_compact(ONE_STEP, ONE_TASK), _compact(TWO_STEPS, TWO_TASKS)], close=0.3)
    attempt = Planner(llm, options=PlannerOptions(step_close=0.8)).attempt(STEP_REQUEST)
    assert attempt.plan is not None and [x.task for x in attempt.plan.tasks] == ["translation", "summarization"]
    assert attempt.close_odds == pytest.approx(0.3) and attempt.more_steps_kept and len(llm.calls) == 2
    # the odds were read where the first reply closed its steps (any language: only the shape is read)
    ((prefix, endings),) = llm.asked
    assert prefix == '{"steps":["第一步：翻译成英语' and endings == ['"],"tasks":[{"id":0', '","Step 2:']
    first, again = llm.calls
    assert again.messages == first.messages and again.schema is not None
    assert again.schema["properties"]["steps"]["minItems"] == 2
    assert attempt.raws == (_compact(ONE_STEP, ONE_TASK), _compact(TWO_STEPS, TWO_TASKS))


@pytest.mark.parametrize(("close", "second", "calls"), [
    (0.95, None, 1),  # sure to close: no second call
    (0.3, "not json", 2),  # the second reply cannot be made a plan
    (0.3, _compact(TWO_STEPS, ONE_TASK), 2),  # it has no more tasks
])
def test_a_step_list_closed_surely_or_a_second_try_no_better_keeps_the_plan(close: float, second: str | None,
                                                                            calls: int) -> None:
    llm = OddsLLM([_compact(ONE_STEP, ONE_TASK), *([second] if second else [])], close=close)
    attempt = Planner(llm, options=PlannerOptions(step_close=0.8)).attempt(STEP_REQUEST)
    assert attempt.plan is not None and [x.task for x in attempt.plan.tasks] == ["translation"]
    assert len(llm.calls) == calls and attempt.close_odds == pytest.approx(close) and not attempt.more_steps_kept


def test_the_close_odds_are_off_by_default_and_need_an_engine_that_can_say() -> None:
    llm = OddsLLM([_compact(ONE_STEP, ONE_TASK)], close=0.1)
    attempt = Planner(llm).attempt(STEP_REQUEST)
    assert llm.asked == [] and len(llm.calls) == 1 and attempt.close_odds is None
    plain = FakeLLM([_compact(ONE_STEP, ONE_TASK)])  # no ending_logprobs
    attempt = Planner(plain, options=PlannerOptions(step_close=0.8)).attempt(STEP_REQUEST)
    assert len(plain.calls) == 1 and attempt.close_odds is None and attempt.plan is not None


    class FailingOdds(OddsLLM):
        def ending_logprobs(self, messages: Any, prefix: str, endings: list[str]) -> list[float]:
            raise RuntimeError("llama_decode returned -3")

    failing = FailingOdds([_compact(ONE_STEP, ONE_TASK)], close=0.1)  # the plan in hand stands
    attempt = Planner(failing, options=PlannerOptions(step_close=0.8)).attempt(STEP_REQUEST)
    assert len(failing.calls) == 1 and attempt.close_odds is None and attempt.plan is not None


def test_the_rewrite_option_plans_an_english_rewrite_and_keeps_the_users_quotes_and_files() -> None:
    from localgpt.planning.planner import REWRITE_PROMPT, REWRITE_SCHEMA

    request = "Beschreibe foto.jpg und übersetze „Guten Morgen“ ins Englische"
    english = 'Describe foto.jpg. Then translate "Guten Morgen" into English.'
    plan = {"steps": ["Step 1: Describe foto.jpg.", "Step 2: Translate the words."],
            "tasks": [{"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "foto.jpg"}},
                      {"id": 1, "task": "translation", "dep": [-1],
                       "args": {"text": "Guten Morgen", "target_language": "English"}}]}
    llm = FakeLLM([json.dumps({"english": english}), json.dumps(plan)])
    attempt = Planner(llm, n_demos=0, options=PlannerOptions(rewrite=True)).attempt(request, ["foto.jpg"])
    assert attempt.plan is not None and [t.task for t in attempt.plan.tasks] == ["image-to-text", "translation"]
    rewrite, planned = llm.calls
    assert rewrite.messages[0]["content"] == REWRITE_PROMPT and rewrite.schema == REWRITE_SCHEMA
    assert rewrite.messages[-1]["content"] == request
    assert english in planned.messages[-1]["content"] and request not in planned.messages[-1]["content"]
    assert len(attempt.raws) == 2  # both replies are kept, and their tokens summed
    # a rewrite that loses a quoted passage or a file is not used: the request is planned as written
    for lost in ("Describe the photo. Then translate the greeting.", "not json"):
        llm = FakeLLM([json.dumps({"english": lost}) if lost != "not json" else lost, json.dumps(plan)])
        Planner(llm, n_demos=0, options=PlannerOptions(rewrite=True)).attempt(request, ["foto.jpg"])
        assert request in llm.calls[1].messages[-1]["content"]
    # a quoted passage is checked without the spaces inside its marks; a request too long to come back
    # whole is planned as written, without asking
    french = "Décris photo.jpg et lis « bonjour à tous » à voix haute"
    llm = FakeLLM([json.dumps({"english": 'Describe photo.jpg and read "bonjour à tous" aloud.'}), json.dumps(plan)])
    Planner(llm, n_demos=0, options=PlannerOptions(rewrite=True)).attempt(french, ["photo.jpg"])
    assert "bonjour à tous" in llm.calls[1].messages[-1]["content"] and french not in llm.calls[1].messages[-1][
        "content"]
    llm = FakeLLM([json.dumps(plan)])
    Planner(llm, n_demos=0, options=PlannerOptions(rewrite=True)).attempt(request + " bitte" * 120, ["foto.jpg"])
    assert len(llm.calls) == 1
    # an English request is planned at once, and without the option nothing is rewritten
    llm = FakeLLM([json.dumps(plan)])
    Planner(llm, n_demos=0, options=PlannerOptions(rewrite=True)).attempt(english, ["foto.jpg"])
    assert len(llm.calls) == 1
    llm = FakeLLM([json.dumps(plan)])
    Planner(llm, n_demos=0).attempt(request, ["foto.jpg"])
    assert len(llm.calls) == 1


def test_a_request_not_in_english_gets_the_prompt_demos_and_none_chosen() -> None:
    # other_language_demos (default 10): measured on the tuning half's 76 requests not in English
    # (docs/planning.md); an English request is planned as before.
    planner = Planner(FakeLLM())
    english = planner.messages("Describe photo.jpg and read it aloud", ["photo.jpg"])
    german = planner.messages("Beschreibe foto.jpg und lies die Beschreibung vor", ["foto.jpg"])
    chinese = planner.messages("把 lecture.mp3 转成文字", ["lecture.mp3"])
    assert len(english) == 1 + 2 * planner.n_demos + 1 and "Examples" not in english[0]["content"]
    assert len(german) == len(chinese) == 2  # the system prompt and the request
    assert german[0] == chinese[0] and "Examples" in german[0]["content"]
    assert german[0]["content"].count("\nReply: ") == 10
    assert planner.system_prompts() == [english[0]["content"], german[0]["content"]]
    off = Planner(FakeLLM(), options=PlannerOptions(other_language_demos=0))
    assert len(off.messages("Beschreibe foto.jpg und lies die Beschreibung vor", ["foto.jpg"])) == 2 * off.n_demos + 2
    assert off.system_prompts() == [english[0]["content"]]
    mine = planner.with_demos(DEMOS[:5])  # the user's own demos are chosen from in every language
    assert len(mine.messages("Beschreibe foto.jpg und lies die Beschreibung vor", ["foto.jpg"])) == 2 * 3 + 2
    assert mine.system_prompts() == [english[0]["content"]]


# --- exact_files: the constraint names the files a plan may take ---

def test_the_constraint_admits_only_the_files_the_plan_may_take_written_exactly() -> None:
    import jsonschema

    llm = FakeLLM([_reply(["Step 1: 识别发票."], [t(0, "image-to-text", {"image": "发票 (1).png"})])])
    planner = Planner(llm)
    request = "发票 (1).png 上写了什么？再听一下 memo.m4a"
    attempt = planner.attempt(request, ["发票 (1).png"])
    assert attempt.plan is not None
    schema = llm.calls[0].schema

    def ok(task: str, args: dict[str, str], at: int = 0) -> bool:
        tasks = [t(i, "text-generation", {"text": "x"}) for i in range(at)] + [t(at, task, args)]
        try:
            jsonschema.validate({"steps": ["Step 1: x"], "tasks": tasks}, schema)
        except jsonschema.ValidationError:
            return False
        return True

    assert ok("image-to-text", {"image": "发票 (1).png"})  # the given file, parentheses and all
    assert ok("automatic-speech-recognition", {"audio": "memo.m4a"})  # a file the request names
    for invented in ("invoice.png", "发票 1.png", "发票 (1).pngx", "none.png"):  # translated, near, or made up
        assert not ok("image-to-text", {"image": invented})
    assert not ok("image-to-text", {"image": "memo.m4a"})  # a file of another kind
    assert not ok("audio-classification", {"audio": "talk.wav"})  # an audio file nobody gave or named
    assert ok("image-to-text", {"image": "<resource>-0"}, at=1)  # a later task may take an earlier output
    # off: any name of the right ending, as validation and mending then judge
    loose = Planner(FakeLLM(), options=PlannerOptions(exact_files=False)).schema_for(request, ["发票 (1).png"])
    assert loose == Planner(FakeLLM()).schema_for(request)
    jsonschema.validate({"steps": ["Step 1: x"], "tasks": [t(0, "image-to-text", {"image": "invoice.png"})]}, loose)


def test_a_request_without_files_gets_no_task_that_needs_one_first() -> None:
    schema = Planner(FakeLLM()).schema_for("Tell me a joke", ())
    first = _task_names(schema, 0)
    needs_a_file = {s.name for s in registry.TASKS if any(i.kind.value != "text" and i.required for i in s.inputs)}
    assert first and not first & needs_a_file
    assert needs_a_file <= _task_names(schema, 1)  # they may take the first task's output
