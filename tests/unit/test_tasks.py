"""The task registry and the plan schema generated from it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from localgpt import tasks
from localgpt.planning.demos import DEMOS
from localgpt.planning.passes import apply_passes
from localgpt.planning.schema import plan_schema
from localgpt.planning.validate import validate_plan
from localgpt.tasks import Kind

HF_TAGS = {
    "text-classification", "token-classification", "text2text-generation", "summarization", "translation",
    "question-answering", "conversational", "text-generation", "sentence-similarity", "tabular-classification",
    "object-detection", "image-classification", "image-to-text", "text-to-image", "image-to-image",
    "image-segmentation", "depth-estimation", "document-question-answering", "visual-question-answering",
    "text-to-video", "text-to-speech", "automatic-speech-recognition", "audio-to-audio", "audio-classification",
}


CONTROL = {"pose-detection", "canny-control", "line-control", "pose-text-to-image", "canny-text-to-image",
           "depth-text-to-image", "segmentation-text-to-image", "line-text-to-image", "scribble-text-to-image"}


def test_registry_has_hf_tags_image_editing_and_control() -> None:
    assert len(HF_TAGS) == 24
    assert set(tasks.names()) == HF_TAGS | {"image-editing"} | CONTROL
    assert len(tasks.TASKS) == 34


def test_names_unique_and_lookup() -> None:
    names = tasks.names()
    assert len(names) == len(set(names))
    for name in names:
        assert tasks.is_known(name)
        assert tasks.get(name).name == name
    assert not tasks.is_known("image-editting")
    with pytest.raises(KeyError):
        tasks.get("nope")


@pytest.mark.parametrize("spec", tasks.TASKS, ids=lambda s: s.name)
def test_every_spec_is_complete(spec: tasks.TaskSpec) -> None:
    assert spec.required, f"{spec.name} has no required input"
    assert spec.produces and all(isinstance(k, Kind) for k in spec.produces)
    assert spec.output is spec.produces[0]
    assert spec.description
    arg_names = [i.name for i in spec.inputs]
    assert len(arg_names) == len(set(arg_names))
    for inp in spec.inputs:
        assert spec.input(inp.name) is inp
    assert spec.input("no-such-arg") is None


def test_llm_servable_tasks_are_text_only() -> None:
    servable = [s for s in tasks.TASKS if s.llm_servable]
    assert {s.name for s in servable} >= {"summarization", "translation", "question-answering"}
    for spec in servable:
        assert all(i.kind is Kind.TEXT for i in spec.inputs), spec.name
        assert spec.output is Kind.TEXT, spec.name


def test_extensions_cover_every_media_kind() -> None:
    for kind in (Kind.IMAGE, Kind.AUDIO, Kind.VIDEO):
        assert tasks.EXTENSIONS[kind]
    assert ".png" in tasks.EXTENSIONS[Kind.IMAGE] and ".wav" in tasks.EXTENSIONS[Kind.AUDIO]
    all_endings = [e for endings in tasks.EXTENSIONS.values() for e in endings]
    assert len(all_endings) == len(set(all_endings)), "an ending belongs to two kinds"


# --- the plan schema ---

@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = plan_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _ok(validator: Draft202012Validator, plan: Any) -> bool:
    return not list(validator.iter_errors(plan))


def test_schema_is_valid_json_schema() -> None:
    for max_tasks in (1, 8, 32):
        Draft202012Validator.check_schema(plan_schema(max_tasks=max_tasks))


@pytest.mark.parametrize("demo", DEMOS, ids=lambda d: d.request[:40])
def test_schema_accepts_every_demo(validator: Draft202012Validator, demo: Any) -> None:
    plan = list(demo.plan)
    errors = [e.message for e in validator.iter_errors(plan)]
    assert not errors, errors
    # decomposed: one plain-words step per task, and the object form fits its schema
    assert len(demo.steps) == len(demo.plan) and all(step.startswith("Step ") for step in demo.steps)
    decomposed = Draft202012Validator(plan_schema(steps=True))
    assert not list(decomposed.iter_errors({"steps": list(demo.steps), "tasks": plan}))


@pytest.mark.parametrize("demo", DEMOS, ids=lambda d: d.request[:40])
def test_every_demo_is_a_plan_localgpt_would_keep(demo: Any) -> None:
    # valid for its own request and files as written, and tidying leaves it as it is: a demo that
    # tidying would rewrite teaches the planner a plan localgpt itself does not run
    plan = validate_plan({"steps": list(demo.steps), "tasks": list(demo.plan)}, demo.request, demo.files)
    assert [t.model_dump() for t in plan.tasks] == [dict(step, dep=[d for d in step["dep"] if d >= 0])
                                                    for step in demo.plan]
    assert apply_passes(plan, demo.request, demo.files)[0].tasks == plan.tasks


BASE = [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "cat.png"}}]


def _variant(**changes: Any) -> list[dict[str, Any]]:
    plan = copy.deepcopy(BASE)
    plan[0].update(changes)
    return plan


def test_schema_base_plan_is_accepted(validator: Draft202012Validator) -> None:
    assert _ok(validator, BASE)
    second = {"id": 1, "task": "image-classification", "dep": [0], "args": {"image": "<resource>-0"}}
    assert _ok(validator, [*BASE, second])


def _tts(i: int, text: str, dep: list[int] | None = None) -> dict[str, Any]:
    return {"id": i, "task": "text-to-speech", "dep": dep or [-1], "args": {"text": text}}


def test_schema_refers_only_to_earlier_tasks(validator: Draft202012Validator) -> None:
    # the task at place i has the id i, and its deps and references name only tasks before it
    caption = {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "cat.png"}}
    assert _ok(validator, [caption, _tts(1, "<resource>-0", [0])])
    assert not _ok(validator, [caption, _tts(1, "<resource>-1", [0])])  # itself, as text
    assert not _ok(validator, [caption, _tts(1, "hello", [1])])  # depends on itself
    assert not _ok(validator, [caption, _tts(2, "<resource>-0", [0])])  # id out of place
    assert not _ok(validator, _variant(args={"image": "<resource>-0"}))  # the first task has nothing to use
    assert not _ok(validator, [_variant(args={"image": "<resource>-1"})[0], caption])  # forward
    # a literal text may mention an output inside a sentence, but may not open like a reference
    assert _ok(validator, [caption, _tts(1, "The caption is <resource>-0", [0])])
    assert not _ok(validator, [caption, _tts(1, "<resource>-0 and more", [0])])


def test_schema_rejects_unknown_task(validator: Draft202012Validator) -> None:
    assert not _ok(validator, _variant(task="image-colouring"))


def test_schema_rejects_plain_text_for_image(validator: Draft202012Validator) -> None:
    assert not _ok(validator, _variant(args={"image": "a cat"}))
    assert not _ok(validator, _variant(args={"image": "cat.wav"}))  # a file, but of another kind


def test_schema_rejects_extra_and_missing_args(validator: Draft202012Validator) -> None:
    assert not _ok(validator, _variant(args={"image": "cat.png", "text": "extra"}))
    assert not _ok(validator, _variant(args={}))
    # a task with two required args lacking one of them
    vqa = [{"id": 0, "task": "visual-question-answering", "dep": [-1], "args": {"image": "cat.png"}}]
    assert not _ok(validator, vqa)
    vqa[0]["args"]["text"] = "what is it?"
    assert _ok(validator, vqa)


def test_schema_rejects_empty_text_and_extra_task_keys(validator: Draft202012Validator) -> None:
    tts = [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": ""}}]
    assert not _ok(validator, tts)
    assert not _ok(validator, _variant(model="some-model"))
    no_dep = copy.deepcopy(BASE)
    del no_dep[0]["dep"]
    assert not _ok(validator, no_dep)


def test_schema_rejects_too_many_tasks() -> None:
    schema = plan_schema(max_tasks=3)
    v = Draft202012Validator(schema)
    tasks_ = [{"id": i, "task": "text-to-speech", "dep": [-1], "args": {"text": f"hi {i}"}} for i in range(4)]
    assert _ok(v, tasks_[:3])
    assert not _ok(v, tasks_)
    assert not _ok(v, [])


def test_schema_restricted_to_given_specs() -> None:
    only = [tasks.get("text-to-speech")]
    v = Draft202012Validator(plan_schema(only))
    assert _ok(v, [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hi"}}])
    assert not _ok(v, BASE)
