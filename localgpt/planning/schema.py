"""The JSON schema the planner decodes under, generated from the task registry: each task refers
only to tasks before it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from localgpt import tasks as registry
from localgpt.config import DEFAULT_MAX_TASKS
from localgpt.tasks import EXTENSIONS, Kind, TaskSpec, kind_by_name

TEXT_MAX = 240  # longest literal text argument the constraint admits, in characters
FILE_MAX = 120  # longest file name
STEP_MAX = 160  # longest step of a decomposed plan, in characters

def _earlier(position: int) -> str:
    """Regex of a reference a task at ``position`` may make: ``<resource>-N`` for N in 0 .. position-1."""
    return "<resource>-(" + "|".join(str(i) for i in range(position)) + ")"


_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")
_UNSAFE_NAME = re.compile(r'["\\\x00-\x1f]')  # characters a file name in the constraint may not have


def _literal(text: str) -> str:
    """``text`` as a regex that matches it alone, only the regex's own special characters escaped (``re.escape``
    also escapes spaces and ``-``, escapes the GBNF rewrite would pass on rather than read as plain characters)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _media_pattern(kind: Kind, position: int, files: Sequence[str] | None = None) -> str | None:
    """Regex for a media argument of the task at ``position``: a reference to an earlier task, or a
    file of that kind (the first task can only take a file). With ``files`` (those the plan may take), the
    file is one of them whose ending is of that kind, written exactly; without, any file name with such an
    ending. None when nothing can fill the argument (the first task, no such file).

    The file name's characters are listed (word characters, space and ``./~()+,=@&:-``) rather than
    excluded: llguidance let a negated class such as ``[^"]`` take escaped quotes (SmolLM2 decoded
    ``"photo.jpg\\"image\\"...m4a"``, which the schema forbids).
    """
    if files is None:
        endings = "|".join(sorted(e.lstrip(".") for e in EXTENSIONS[kind]))
        names = [f"[\\w ./~()+,=@&:-]{{1,{FILE_MAX}}}\\.({endings})"]
    else:  # (a name a JSON string or a grammar could not carry as it is stays out: validation names it)
        names = [_literal(f) for f in files if kind_by_name(f) is kind and not _UNSAFE_NAME.search(f)]
    either = ([_earlier(position)] if position else []) + names
    return f"^({'|'.join(either)})$" if either else None


def _text_schema(position: int) -> dict[str, Any]:
    """A text argument of the task at ``position``: a reference to an earlier task's output, or a
    literal text that does not open like a reference."""
    literal = {"type": "string", "minLength": 1, "maxLength": TEXT_MAX, "pattern": "^[^<]"}
    if not position:
        return literal
    return {"anyOf": [{"type": "string", "pattern": f"^{_earlier(position)}$"}, literal]}


def _arg_schema(spec: TaskSpec, position: int, files: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The ``args`` of ``spec`` at ``position`` (see :func:`_media_pattern` for ``files``); None when a required
    argument cannot be filled there. An optional one that cannot is left out."""
    props: dict[str, Any] = {}
    for inp in spec.inputs:
        if inp.kind is Kind.TEXT:
            props[inp.name] = _text_schema(position)
            continue
        pattern = _media_pattern(inp.kind, position, files)
        if pattern is not None:
            props[inp.name] = {"type": "string", "pattern": pattern}
        elif inp.required:
            return None
    return {
        "type": "object",
        "properties": props,
        "required": [i.name for i in spec.required],
        "additionalProperties": False,
    }


def _task_schema(specs: Sequence[TaskSpec], position: int, step: bool = False,
                 files: Sequence[str] | None = None) -> dict[str, Any]:
    """The task at ``position`` of a plan: its id is ``position``, its deps and references name only
    earlier tasks, and its ``args`` are those of its task type (a type none of whose files can be had there is
    left out: :func:`_arg_schema`). With ``step``, the task opens with ``"step"``: the action it does, in plain
    words."""
    variants = []
    head = {"step": {"type": "string", "minLength": 1, "maxLength": STEP_MAX}} if step else {}
    for spec in specs:
        args = _arg_schema(spec, position, files)
        if args is None:
            continue
        variants.append({
            "type": "object",
            "properties": {
                **head,
                "id": {"const": position},
                "task": {"const": spec.name},
                "dep": {"type": "array", "items": {"enum": [-1, *range(position)]}, "minItems": 1, "maxItems": 3},
                "args": args,
            },
            "required": [*head, "id", "task", "dep", "args"],
            "additionalProperties": False,
        })
    return {"anyOf": variants}


def _step_schema(number: int) -> dict[str, Any]:
    """Step ``number`` of a decomposed plan: ``"Step N: "`` and then the action in words, as the prompt and every
    demo write it. The label is fixed by the constraint, so the engine can take its tokens without decoding them
    one by one (forced tokens, docs/latency.md); the words after it are free, in any language."""
    label = f"Step {number}: "
    return {"type": "string", "pattern": f"^{label}", "minLength": len(label) + 1, "maxLength": STEP_MAX}


def plan_schema(specs: Sequence[TaskSpec] = registry.TASKS, max_tasks: int = DEFAULT_MAX_TASKS, *,
                steps: bool = False, inline: bool = False, files: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON schema of a plan: a list of tasks, each typed by its task name and by its place.

    The task at place i has the id i, and its deps and ``<resource>-N`` references name only tasks before it (so a
    decoded plan can neither refer forward nor form a cycle). Each task's ``args`` admits only that task's
    arguments; media arguments admit only such a reference or a file name of the right kind; strings and lists are
    bounded so decoding always ends. With ``steps`` the plan is an object: ``"steps"``, the request decomposed into
    short sentences (step N opening with ``"Step N: "``), then ``"tasks"``, the list above
    (:meth:`Planner.schema_for` may raise the steps' ``minItems`` for one request). With ``steps`` and ``inline``,
    the plan is ``{"tasks": [...]}`` and each task writes its own step first (``"step"``), so a task's type is
    decoded right after the words of the action it does.
    """
    places = [_task_schema(specs, i, steps and inline, files) for i in range(max_tasks)]
    tasks = {"type": "array", "prefixItems": places, "items": False, "minItems": 1, "maxItems": max_tasks}
    if not steps:
        return tasks
    if inline:
        return {"type": "object", "properties": {"tasks": tasks}, "required": ["tasks"],
                "additionalProperties": False}
    steps_list = {"type": "array", "prefixItems": [_step_schema(i) for i in range(1, max_tasks + 1)], "items": False,
                  "minItems": 1, "maxItems": max_tasks}
    return {
        "type": "object",
        "properties": {"steps": steps_list,
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
