"""Tidying passes over every accepted plan (see docs/planning.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from localgpt import tasks as registry
from localgpt.config import MAX_TASKS_LIMIT
from localgpt.planning.mend import _CAPTION_ASKED, asks_an_image, image_question_type
from localgpt.planning.quotes import outside_quotes
from localgpt.planning.references import is_pure_reference, references, renumber
from localgpt.planning.validate import _media_file, named_files, user_files, validate_plan
from localgpt.schema import Plan
from localgpt.tasks import Kind, TaskSpec, kind_by_name

# A step that speaks of the user's own file, not of what an earlier task made of it.
_ORIGINAL = re.compile(r"\b(original|initial|given|input|provided|uploaded|source|unedited)\b", re.IGNORECASE)


# Tasks whose image is the input with marks drawn on it (boxes), not a new picture to work on.
_ANNOTATES = ("object-detection",)


def _merge_duplicates(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks renumbered in order, a task equal to an earlier one (same type, same arguments once
    references are renumbered) dropped and its references pointed at the earlier one."""
    new_id: dict[int, int] = {}
    seen: dict[tuple[str, str], int] = {}
    out: list[dict[str, Any]] = []
    for task in tasks:
        args = {k: renumber(v, new_id) for k, v in task["args"].items()}
        key = (task["task"], json.dumps(args, sort_keys=True))
        if key in seen:
            new_id[task["id"]] = seen[key]
            continue
        new_id[task["id"]] = seen[key] = len(out)
        out.append({"id": len(out), "task": task["task"], "dep": [-1], "args": args})
    return out


def _ask_the_image(tasks: list[dict[str, Any]], request: str, specs: dict[str, TaskSpec]) -> list[dict[str, Any]]:
    """Tasks where a question answered from what image-to-text said of an image (its caption, or the
    text it read) asks the image itself: visual question answering, or document question answering
    when the request speaks of a document; the image-to-text task goes when nothing else uses it and
    the request does not ask for it (a caption, a description, the text extracted)."""
    by_id = {t["id"]: t for t in tasks}
    asked: set[int] = set()
    for task in tasks:
        context, question = task["args"].get("context", ""), task["args"].get("question", "")
        if task["task"] != "question-answering" or not is_pure_reference(context):
            continue
        spec = specs.get(image_question_type(request, question))
        if spec is None:
            continue
        source = by_id.get(references(context)[0])
        if source is None or source["task"] != "image-to-text" or not question.strip():
            continue
        task["task"] = spec.name
        task["args"] = {spec.inputs[0].name: source["args"]["image"], spec.inputs[1].name: question}
        asked.add(source["id"])
    if _CAPTION_ASKED.search(outside_quotes(request)):
        return tasks  # what image-to-text writes is asked for too: it stays
    used = {r for t in tasks for v in t["args"].values() for r in references(v)}
    return [t for t in tasks if t["id"] not in asked - used]


def _is_map(spec: TaskSpec) -> bool:
    """Whether a task's image is a map of the one it was given (boxes drawn on it, a mask, depth, a
    pose, edges) rather than a new picture: it takes one image and nothing else, and makes an image."""
    return spec.output is Kind.IMAGE and [i.kind for i in spec.inputs] == [Kind.IMAGE]


def _picture(tasks: list[dict[str, Any]], pos: int, question: str, user_images: Sequence[str]) -> str | None:
    """The image a question of the task at ``pos`` is about: the user's image file it names, else (unless
    it speaks of the original) the latest earlier picture made, a map standing for the image it maps,
    else the user's first image; None when there is no image."""
    named = [f for f in named_files(question) if f in user_images]  # never a file nobody gave
    if named:
        return named[0]
    by_id = {t["id"]: t for t in tasks}
    made = None if _ORIGINAL.search(question) else next(
        (t for t in reversed(tasks[:pos]) if Kind.IMAGE in registry.get(t["task"]).produces), None)
    value = f"<resource>-{made['id']}" if made is not None else None
    while made is not None and _is_map(spec := registry.get(made["task"])):
        value = made["args"][spec.inputs[0].name]
        made = by_id.get(references(value)[0]) if is_pure_reference(value) else None
    return value or next(iter(user_images), None)


def _look_at_the_image(tasks: list[dict[str, Any]], request: str, files: Sequence[str],
                       specs: dict[str, TaskSpec]) -> None:
    """Question-answering tasks whose question speaks of an image or a document ("what is the main
    colour of the object in the image?", "what is the main topic of the document?":
    :func:`asks_an_image`) ask an image instead (in place), by :func:`image_question_type`, the image
    :func:`_picture` finds. Question answering reads only a text, so it cannot see what such a question
    asks about; where there is no image, or the type is not offered, it stays. The tasks that fed it
    stay too: their outputs are still the user's."""
    user_images = [f for f in user_files(request, files) if _media_file(f) is Kind.IMAGE]
    for pos, task in enumerate(tasks):
        question = task["args"].get("question", "")
        if task["task"] != "question-answering" or not asks_an_image(question):
            continue
        spec = specs.get(image_question_type(request, question))
        image = _picture(tasks, pos, question, user_images)
        if spec is None or image is None:
            continue
        task["task"] = spec.name
        task["args"] = {spec.inputs[0].name: image, spec.inputs[1].name: question}


def _follow_transforms(tasks: list[dict[str, Any]], steps: Sequence[str]) -> None:
    """Point a media argument that names the user's file at what an earlier task made of that file
    (in place): in "enhance example.wav, then transcribe it", the transcription takes the enhanced
    audio, not the noisy file. Only the latest earlier output of that kind counts, only when it was
    made from that very file (directly or through other tasks), never from a task of the same type
    nor from one that only draws on the file (object detection's boxes), and not when the task's own
    step or text speaks of the original (steps are matched to tasks only when there is one step per
    task; "what colour was the car in the original image?")."""
    made_from: dict[int, set[str]] = {}  # task id -> the user's files its output was made from
    for pos, task in enumerate(tasks):
        step = steps[pos] if len(steps) == len(tasks) else ""
        step += " " + " ".join(v for v in task["args"].values() if not references(v))
        for inp in registry.get(task["task"]).inputs:
            value = task["args"].get(inp.name)
            if (value is None or inp.kind is Kind.TEXT or is_pure_reference(value)
                    or kind_by_name(value) is not inp.kind or _ORIGINAL.search(step)):
                continue
            source = next((t for t in reversed(tasks[:pos]) if inp.kind in registry.get(t["task"]).produces), None)
            if (source is not None and source["task"] not in (task["task"], *_ANNOTATES)
                    and value in made_from[source["id"]]):
                task["args"][inp.name] = f"<resource>-{source['id']}"
        origins: set[str] = set()
        for value in task["args"].values():
            if is_pure_reference(value):
                origins |= made_from.get(references(value)[0], set())
            elif kind_by_name(value) is not None:
                origins.add(value.strip())
        made_from[task["id"]] = origins


# Stems by which a step names a one-word task type's output ("translated", "summary"); the first six
# letters unless listed ("conver" would also be "convert").
_STEMS = {"conversational": "conversation"}


def _names_task(step: str, task_type: str) -> bool:
    """Whether ``step`` speaks of a task type: its words ("token classification", "text to speech"),
    or for a one-word type its stem ("translat" in "the translated text", "summar" in "the summary")."""
    words = task_type.replace("-", " ")
    stem = words if " " in words else _STEMS.get(words, words[:6])
    return re.search(r"\b" + re.escape(stem), step.lower().replace("-", " ")) is not None


def _follow_steps(tasks: list[dict[str, Any]], steps: Sequence[str]) -> None:
    """Point a text argument at the earlier output its step speaks of (in place): for "Step 2: Compare
    the translated text with the reference", a similarity task fed the detected labels takes the
    translation instead. Only when there is one step per task, the step does not speak of the task the
    argument refers to, and it speaks of another earlier task of a type other than its own that
    produces text (the latest such task)."""
    if len(steps) != len(tasks):
        return
    for pos, task in enumerate(tasks):
        for inp in registry.get(task["task"]).inputs:
            value = task["args"].get(inp.name, "")
            if inp.kind is not Kind.TEXT or not is_pure_reference(value):
                continue
            ref = references(value)[0]
            current = next((t for t in tasks[:pos] if t["id"] == ref), None)
            if current is None or _names_task(steps[pos], current["task"]):
                continue
            named = [t for t in tasks[:pos] if t["id"] != ref and t["task"] != task["task"]
                     and Kind.TEXT in registry.get(t["task"]).produces and _names_task(steps[pos], t["task"])]
            if named:
                task["args"][inp.name] = f"<resource>-{named[-1]['id']}"


def tidy_plan(plan: Plan, request: str = "", files: Sequence[str] = (), max_tasks: int = MAX_TASKS_LIMIT,
              specs: Sequence[TaskSpec] = registry.TASKS) -> Plan:
    """A valid plan with five slips of a small planner undone: a question answered from an image's
    caption asks the image itself (:func:`_ask_the_image`), so does one that speaks of an image or a
    document (:func:`_look_at_the_image`), a task repeated with the very same arguments is run once
    (its dependants take the first one's output), a media argument that names the user's file takes
    what an earlier task made of that file (:func:`_follow_transforms`), and a text argument takes the
    earlier output its step speaks of (:func:`_follow_steps`). ``specs`` are the task types the planner
    offers: a question moves to visual or document question answering only when that type is among
    them. Returns ``plan`` itself when there is nothing to undo.

    Example::

        tidy_plan(validate_plan([
            {"id": 0, "task": "audio-to-audio", "dep": [-1], "args": {"audio": "noisy.wav"}},
            {"id": 1, "task": "automatic-speech-recognition", "dep": [-1], "args": {"audio": "noisy.wav"}},
        ], "clean up noisy.wav and transcribe it"))   # the transcription takes <resource>-0
    """
    offered = {s.name: s for s in specs}  # a question goes to VQA / DQA only when the planner offers it
    raw = [t.model_dump() for t in plan.tasks]
    tasks = _merge_duplicates(_ask_the_image([dict(t) for t in raw], request, offered))
    _look_at_the_image(tasks, request, files, offered)
    steps = plan.steps if len(tasks) == len(raw) else ()
    _follow_transforms(tasks, steps)
    _follow_steps(tasks, steps)
    tasks = _merge_duplicates(tasks)
    if [(t["task"], t["args"]) for t in tasks] == [(t["task"], t["args"]) for t in raw]:
        return plan
    return validate_plan({"steps": plan.steps, "tasks": tasks}, request, files, max_tasks)
