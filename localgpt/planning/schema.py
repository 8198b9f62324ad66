"""The JSON schema the planner decodes under, generated from the task registry: each task refers
only to tasks before it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localgpt import tasks as registry
from localgpt.config import DEFAULT_MAX_TASKS
from localgpt.tasks import EXTENSIONS, Kind, TaskSpec

TEXT_MAX = 240  # longest literal text argument the constraint admits, in characters
FILE_MAX = 120  # longest file name
STEP_MAX = 160  # longest step of a decomposed plan, in characters

def _earlier(position: int) -> str:
    """Regex of a reference a task at ``position`` may make: ``<resource>-N`` for N in 0 .. position-1."""
    return "<resource>-(" + "|".join(str(i) for i in range(position)) + ")"


def _media_pattern(kind: Kind, position: int) -> str:
    """Regex for a media argument of the task at ``position``: a reference to an earlier task, or a
    file name with an ending of that kind (the first task can only take a file).

    The file name's characters are listed (word characters, space and ``./~()+,=@&:-``) rather than
    excluded: llguidance let a negated class such as ``[^"]`` take escaped quotes (SmolLM2 decoded
    ``"photo.jpg\\"image\\"...m4a"``, which the schema forbids).
    """
    endings = "|".join(sorted(e.lstrip(".") for e in EXTENSIONS[kind]))
    name = f"[\\w ./~()+,=@&:-]{{1,{FILE_MAX}}}\\.({endings})"
    return f"^({_earlier(position)}|{name})$" if position else f"^{name}$"


def _text_schema(position: int) -> dict[str, Any]:
    """A text argument of the task at ``position``: a reference to an earlier task's output, or a
    literal text that does not open like a reference."""
    literal = {"type": "string", "minLength": 1, "maxLength": TEXT_MAX, "pattern": "^[^<]"}
    if not position:
        return literal
    return {"anyOf": [{"type": "string", "pattern": f"^{_earlier(position)}$"}, literal]}


def _arg_schema(spec: TaskSpec, position: int) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for inp in spec.inputs:
        if inp.kind is Kind.TEXT:
            props[inp.name] = _text_schema(position)
        else:
            props[inp.name] = {"type": "string", "pattern": _media_pattern(inp.kind, position)}
    return {
        "type": "object",
        "properties": props,
        "required": [i.name for i in spec.required],
        "additionalProperties": False,
    }


def _task_schema(specs: Sequence[TaskSpec], position: int, step: bool = False) -> dict[str, Any]:
    """The task at ``position`` of a plan: its id is ``position``, its deps and references name only
    earlier tasks, and its ``args`` are those of its task type. With ``step``, the task opens with
    ``"step"``: the action it does, in plain words."""
    variants = []
    head = {"step": {"type": "string", "minLength": 1, "maxLength": STEP_MAX}} if step else {}
    for spec in specs:
        variants.append({
            "type": "object",
            "properties": {
                **head,
                "id": {"const": position},
                "task": {"const": spec.name},
                "dep": {"type": "array", "items": {"enum": [-1, *range(position)]}, "minItems": 1, "maxItems": 3},
                "args": _arg_schema(spec, position),
            },
            "required": [*head, "id", "task", "dep", "args"],
            "additionalProperties": False,
        })
    return {"anyOf": variants}


def plan_schema(specs: Sequence[TaskSpec] = registry.TASKS, max_tasks: int = DEFAULT_MAX_TASKS, *,
                steps: bool = False, inline: bool = False) -> dict[str, Any]:
    """The JSON schema of a plan: a list of tasks, each typed by its task name and by its place.

    The task at place i has the id i, and its deps and ``<resource>-N`` references name only tasks
    before it (so a decoded plan can neither refer forward nor form a cycle). Each task's ``args``
    admits only that task's arguments; media arguments admit only such a reference or a file name of
    the right kind; strings and lists are bounded so decoding always ends. With ``steps`` the plan is
    an object: ``"steps"``, the request decomposed into short sentences, then ``"tasks"``, the list
    above (:meth:`Planner.schema_for` may raise the steps' ``minItems`` for one request). With
    ``steps`` and ``inline``, the plan is ``{"tasks": [...]}`` and each task writes its own step first
    (``"step"``), so a task's type is decoded right after the words of the action it does.
    """
    tasks = {"type": "array", "prefixItems": [_task_schema(specs, i, steps and inline) for i in range(max_tasks)],
             "items": False, "minItems": 1, "maxItems": max_tasks}
    if not steps:
        return tasks
    if inline:
        return {"type": "object", "properties": {"tasks": tasks}, "required": ["tasks"],
                "additionalProperties": False}
    step = {"type": "string", "minLength": 1, "maxLength": STEP_MAX}
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_tasks},
                       "tasks": tasks},
        "required": ["steps", "tasks"],
        "additionalProperties": False,
    }


def steps_kept_schema(schema: dict[str, Any], steps: Sequence[str], min_tasks: int) -> dict[str, Any]:
    """A decomposed plan's ``schema`` (:func:`plan_schema` with ``steps``) for a reply that writes exactly
    ``steps`` again (each a ``const``, in order: the reply is conditioned on them) and then at least
    ``min_tasks`` tasks (no more than the schema admits). Used by the planner's step repair."""
    props = schema["properties"]
    tasks = props["tasks"]
    low = max(int(tasks.get("minItems", 1)), min(min_tasks, int(tasks.get("maxItems", min_tasks))))
    fixed = {"type": "array", "prefixItems": [{"const": s} for s in steps], "items": False,
             "minItems": len(steps), "maxItems": len(steps)}
    return {**schema, "properties": {**props, "steps": fixed, "tasks": {**tasks, "minItems": low}}}
