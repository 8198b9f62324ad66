"""Checking a decoded plan's meaning: known tasks, deps that exist and come first, arguments of the right kind."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from localgpt import tasks as registry
from localgpt.config import MAX_TASKS_LIMIT
from localgpt.errors import PlanError
from localgpt.planning.references import is_pure_reference, references
from localgpt.schema import Plan, Task
from localgpt.tasks import Kind, kind_by_name

# A file name ends where its extension does, also before a letter of a script that writes particles onto
# words ("a.wav를", "a.wavを"), where \b would find no end
_FILE_WORD = re.compile(r"[\w./\\~-]+\.[A-Za-z0-9]{2,5}(?![A-Za-z0-9_])")


def named_files(text: str) -> list[str]:
    """Words of ``text`` that look like file names, each once, in the order they come."""
    return list(dict.fromkeys(w.strip(".,;:!?'\"()") for w in _FILE_WORD.findall(text)))


def glued_to(name: str, files: Sequence[str]) -> str | None:
    """The file of ``files`` that ``name`` ends with, other than ``name`` itself: ``name`` is that file with
    words of an unspaced script glued before it ("保留杯子.png" for "杯子.png"); None when there is none."""
    return next((f for f in files if name != f and name.endswith(f)), None)


def user_files(request: str, files: Sequence[str]) -> list[str]:
    """The files a plan may take: those the user gave, then those the request names, each once. A name
    the request writes with words of an unspaced script glued before it ("保留杯子.png的轮廓") is the given
    file it ends with ("杯子.png"), not another file."""
    given = [str(f) for f in files]
    named = [n for n in named_files(request) if glued_to(n, given) is None]
    return list(dict.fromkeys([*given, *named]))


def validate_plan(raw: Any, request: str = "", files: Sequence[str] = (), max_tasks: int = MAX_TASKS_LIMIT) -> Plan:
    """Check a decoded plan's meaning and return it with deps derived from references.

    Raises :class:`PlanError` naming the first problem: an unknown task, a dep or reference to a
    task that does not exist or comes later, a cycle, a missing or unknown argument, or an
    argument of the wrong kind (an image argument must be a user file or an image output; a text
    argument may not be a bare image, audio or video file name). A ``{"steps", "tasks"}`` object
    keeps its steps, and so does ``{"tasks": [{"step", ...}]}`` where every task wrote its own.
    """
    steps, raw = _split_reply(raw)
    try:
        parsed = [Task.model_validate(item) for item in raw]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlanError(f"a task is malformed at '{where}': {first['msg']}") from exc
    if len(parsed) > max_tasks:
        raise PlanError(f"the plan has {len(parsed)} tasks; at most {max_tasks} are allowed")

    position: dict[int, int] = {}
    for pos, task in enumerate(parsed):
        if task.id in position:
            raise PlanError(f"two tasks have the id {task.id}")
        position[task.id] = pos
    given = {str(f) for f in files} | {str(f).replace("\\", "/").rsplit("/", 1)[-1] for f in files}
    mentioned = set(named_files(request))
    specs = {}
    for task in parsed:
        if not registry.is_known(task.task):
            raise PlanError(f"task {task.id} has unknown task type '{task.task}'",
                            "use one of: " + ", ".join(registry.names()))
        specs[task.id] = registry.get(task.task)
    _check_declared_deps(parsed, position)

    result = []
    for task in parsed:
        spec = specs[task.id]
        deps = {d for d in task.dep if d != -1}
        for name, value in task.args.items():
            inp = spec.input(name)
            if inp is None:
                raise PlanError(f"task {task.id} ({task.task}) has no argument '{name}'",
                                "its arguments are: " + ", ".join(i.name for i in spec.inputs))
            for ref in references(value):
                if ref not in position:
                    raise PlanError(f"task {task.id} refers to <resource>-{ref}, but there is no task {ref}")
                if position[ref] >= position[task.id]:
                    raise PlanError(f"task {task.id} refers to <resource>-{ref}, which does not come before it")
                source = specs[ref]
                if inp.kind not in source.produces:
                    raise PlanError(
                        f"task {task.id} ({task.task}) needs {inp.kind.value} for '{name}', but task {ref} "
                        f"({source.name}) produces {source.output.value}")
                deps.add(ref)
            if inp.kind is not Kind.TEXT and not is_pure_reference(value):
                _check_media_literal(task, name, value, inp.kind, given, mentioned)
            elif inp.kind is Kind.TEXT and (found := _media_file(value)) is not None:
                raise PlanError(f"task {task.id} ({task.task}) needs text for '{name}', but '{value.strip()}' is "
                                f"{'an' if found.value[0] in 'aeiou' else 'a'} {found.value} file",
                                "read the file with a task first, or use a task that takes it")
        for inp in spec.required:
            if not task.args.get(inp.name, "").strip():
                raise PlanError(f"task {task.id} ({task.task}) is missing its required argument '{inp.name}'")
        result.append(Task(id=task.id, task=task.task, dep=sorted(deps, key=position.__getitem__), args=task.args))
    return Plan(tasks=result, steps=steps)


def _media_file(value: str) -> Kind | None:
    """The kind of ``value`` when it is a bare image, audio or video file name (no text around it)."""
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        return None
    return kind_by_name(value)


def _check_declared_deps(parsed: list[Task], position: dict[int, int]) -> None:
    """Declared deps must exist, form no cycle and point to earlier tasks."""
    graph = {t.id: [d for d in t.dep if d != -1] for t in parsed}
    for tid, deps in graph.items():
        for d in deps:
            if d not in graph:
                raise PlanError(f"task {tid} depends on task {d}, which does not exist")
            if d == tid:
                raise PlanError(f"task {tid} depends on itself")
    state: dict[int, int] = {}

    def visit(node: int, trail: list[int]) -> None:
        state[node] = 1
        for d in graph[node]:
            if state.get(d) == 1:
                cycle = trail[trail.index(d):] + [d] if d in trail else [node, d]
                raise PlanError("the plan's dependencies form a cycle: " + " -> ".join(map(str, cycle)))
            if d not in state:
                visit(d, trail + [d])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    for tid, deps in graph.items():
        for d in deps:
            if position[d] > position[tid]:
                raise PlanError(f"task {tid} depends on task {d}, which comes after it")


def _check_media_literal(task: Task, name: str, value: str, kind: Kind, given: set[str], mentioned: set[str]) -> None:
    """A literal media argument must name a file of that kind that the user gave or mentioned."""
    value = value.strip()
    found = kind_by_name(value)
    if found is not kind:
        article = "an" if kind.value[0] in "aeiou" else "a"
        raise PlanError(f"task {task.id} ({task.task}) needs {kind.value} for '{name}', "
                        f"but '{value}' is not {article} {kind.value} file or a reference to a task's output")
    base = value.replace("\\", "/").rsplit("/", 1)[-1]
    if value not in given and base not in given and value not in mentioned and base not in mentioned:
        raise PlanError(f"task {task.id} ({task.task}) uses the file '{value}', which the user did not give",
                        "use a file from the request or the output of an earlier task")


def _split_reply(decoded: Any) -> tuple[list[str], list[Any]]:
    """The steps (none for a bare task list; each task's own ``"step"`` when every task has one) and the
    task list of a decoded plan; raises
    :class:`PlanError` when there is no task list."""
    steps = []
    if isinstance(decoded, dict):
        if isinstance(decoded.get("steps"), list):
            steps = [str(s) for s in decoded["steps"]]
        decoded = decoded.get("tasks", decoded)
    if not isinstance(decoded, list):
        raise PlanError("the plan is not a list of tasks")
    if not steps and decoded and all(isinstance(t, dict) and "step" in t for t in decoded):
        # each task wrote its own step first (PlannerOptions.inline_steps)
        steps = [str(t["step"]) for t in decoded]
        decoded = [{k: v for k, v in t.items() if k != "step"} for t in decoded]
    return steps, decoded
