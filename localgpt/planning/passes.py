"""The passes over every accepted plan: one ordered list, :data:`PASSES` (see docs/planning.md).

Each pass is a pure function ``(tasks, context) -> tasks`` over the plan's tasks (dicts with ``id``,
``task``, ``dep``, ``args``, in order); it reasons about the kinds tasks take and make and about the
task registry, and reads words only through the lexicon of the request's language, where a word
found may add evidence and a word absent never changes anything. :func:`apply_passes` runs them in
order and validates the result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localgpt import tasks as registry
from localgpt.config import MAX_TASKS_LIMIT
from localgpt.planning.language import Lexicon, detect, lexicon
from localgpt.planning.quotes import outside_quotes
from localgpt.planning.references import is_pure_reference, references, renumber
from localgpt.planning.retrieval import tokens
from localgpt.planning.validate import _media_file, named_files, user_files, validate_plan
from localgpt.schema import Plan
from localgpt.tasks import Kind, TaskSpec, kind_by_name

Tasks = list[dict[str, Any]]


@dataclass(frozen=True)
class Context:
    """What the passes know besides the plan: the request, the user's files (given or named), the task
    types the planner offers, the plan's steps (the planner's own words, one per task when they align),
    and the lexicon of the request's language."""

    request: str
    files: tuple[str, ...]
    specs: Mapping[str, TaskSpec]
    steps: tuple[str, ...]
    lexicon: Lexicon
    max_tasks: int = MAX_TASKS_LIMIT

    @property
    def asked(self) -> set[str]:
        """The task types the request (outside its quoted passages) holds a word for."""
        return self.lexicon.evidence(outside_quotes(self.request))


def make_context(request: str, files: Sequence[str] = (), specs: Sequence[TaskSpec] = registry.TASKS,
                 steps: Sequence[str] = (), max_tasks: int = MAX_TASKS_LIMIT) -> Context:
    """The :class:`Context` of a request (its language detected, see :mod:`localgpt.planning.language`)."""
    return Context(request, tuple(user_files(request, files)), {s.name: s for s in specs}, tuple(steps),
                   lexicon(detect(request)), max_tasks)


# ------------------------------------------------------------------ evidence shared with mending

def image_question_type(ctx: Context, question: Any = "") -> str:
    """The task that answers a question about an image: document question answering when the request
    or the question holds a word for a document (a lexicon's evidence), visual question answering
    otherwise."""
    text = outside_quotes(ctx.request) + " " + (question if isinstance(question, str) else "")
    return ("document-question-answering" if "document-question-answering" in ctx.lexicon.evidence(text)
            else "visual-question-answering")


def asks_an_image(ctx: Context, question: Any) -> bool:
    """Whether ``question`` (a text of its own, not a reference) names an image file, or holds a word
    of the lexicon for a picture or a document."""
    return (isinstance(question, str) and not references(question)
            and (any(_media_file(f) is Kind.IMAGE for f in named_files(question))
                 or bool(ctx.lexicon.found(question, ctx.lexicon.picture))))


def _copy(tasks: Tasks) -> Tasks:
    return [{**t, "dep": list(t.get("dep", [-1])), "args": dict(t["args"])} for t in tasks]


def _spec(name: str) -> TaskSpec:
    return registry.get(name)


# ------------------------------------------------------------------ the passes

def ask_the_image(tasks: Tasks, ctx: Context) -> Tasks:
    """A question answered from what image-to-text said of an image asks the image itself.

    Question answering reads a text; given the caption of a picture it can only answer what the
    caption says. Such a task becomes visual question answering (document question answering when a
    word of the lexicon speaks of a document) over that image, when the planner offers the type. The
    image-to-text task goes when nothing else uses it, unless the request holds a word asking for what
    it writes (a caption, a description)."""
    tasks = _copy(tasks)
    by_id = {t["id"]: t for t in tasks}
    asked: set[int] = set()
    for task in tasks:
        context, question = task["args"].get("context", ""), task["args"].get("question", "")
        if task["task"] != "question-answering" or not is_pure_reference(context) or not question.strip():
            continue
        spec = ctx.specs.get(image_question_type(ctx, question))
        source = by_id.get(references(context)[0])
        if spec is None or source is None or source["task"] != "image-to-text":
            continue
        task["task"] = spec.name
        task["args"] = {spec.inputs[0].name: source["args"]["image"], spec.inputs[1].name: question}
        asked.add(source["id"])
    if not asked or "image-to-text" in ctx.asked:
        return tasks
    used = {r for t in tasks for v in t["args"].values() for r in references(v)}
    return [t for t in tasks if t["id"] not in asked - used]


def _is_map(spec: TaskSpec) -> bool:
    """Whether a task's image is a map of the one it was given (boxes, a mask, depth, a pose, edges)
    rather than a new picture: it takes one image and nothing else, and makes an image."""
    return spec.output is Kind.IMAGE and [i.kind for i in spec.inputs] == [Kind.IMAGE]


def _speaks_of_original(ctx: Context, text: str) -> bool:
    return bool(ctx.lexicon.found(text, ctx.lexicon.original))


def _picture(tasks: Tasks, pos: int, question: str, ctx: Context) -> str | None:
    """The image a question of the task at ``pos`` is about: the user's image file it names, else
    (unless it speaks of the original) the latest earlier picture made, a map standing for the image it
    maps, else the user's first image; None when there is no image."""
    user_images = [f for f in ctx.files if _media_file(f) is Kind.IMAGE]
    named = [f for f in named_files(question) if f in user_images]  # never a file nobody gave
    if named:
        return named[0]
    by_id = {t["id"]: t for t in tasks}
    made = None if _speaks_of_original(ctx, question) else next(
        (t for t in reversed(tasks[:pos]) if Kind.IMAGE in _spec(t["task"]).produces), None)
    value = f"<resource>-{made['id']}" if made is not None else None
    while made is not None and _is_map(spec := _spec(made["task"])):
        value = made["args"][spec.inputs[0].name]
        made = by_id.get(references(value)[0]) if is_pure_reference(value) else None
    return value or next(iter(user_images), None)


def look_at_the_image(tasks: Tasks, ctx: Context) -> Tasks:
    """A question-answering task whose question is about a picture asks the picture.

    Question answering reads only a text, so it cannot see a question that names an image file or
    holds a lexicon word for a picture or a document ("what colour is the car in the photo?"). Such a
    task becomes visual (or document) question answering over the image :func:`_picture` finds; where
    there is no image, or the type is not offered, it stays. The tasks that fed it stay too."""
    tasks = _copy(tasks)
    for pos, task in enumerate(tasks):
        question = task["args"].get("question", "")
        if task["task"] != "question-answering" or not asks_an_image(ctx, question):
            continue
        spec = ctx.specs.get(image_question_type(ctx, question))
        image = _picture(tasks, pos, question, ctx)
        if spec is None or image is None:
            continue
        task["task"] = spec.name
        task["args"] = {spec.inputs[0].name: image, spec.inputs[1].name: question}
    return tasks


def merge_duplicates(tasks: Tasks, ctx: Context) -> Tasks:
    """A task equal to an earlier one (same type, same arguments once references are renumbered) runs
    once: it is dropped and its dependants take the earlier one's output. Tasks are renumbered."""
    new_id: dict[int, int] = {}
    seen: dict[tuple[str, str], int] = {}
    out: Tasks = []
    for task in tasks:
        args = {k: renumber(v, new_id) for k, v in task["args"].items()}
        key = (task["task"], json.dumps(args, sort_keys=True))
        if key in seen:
            new_id[task["id"]] = seen[key]
            continue
        new_id[task["id"]] = seen[key] = len(out)
        out.append({"id": len(out), "task": task["task"], "dep": [-1], "args": args})
    return out


ANNOTATES = ("object-detection",)  # its image is the input with boxes drawn on it, not a picture to work on


def follow_transforms(tasks: Tasks, ctx: Context) -> Tasks:
    """A media argument that names the user's file takes what an earlier task made of that file.

    In "enhance example.wav, then transcribe it" the transcription takes the enhanced audio, not the
    noisy file. Only the latest earlier output of that kind counts, only when it was made from that
    very file (directly or through other tasks), never from a task of the same type nor from one that
    only draws on the file (object detection's boxes), and not when the task's own step (when there is
    one step per task) or its text holds a lexicon word for the original."""
    tasks = _copy(tasks)
    made_from: dict[int, set[str]] = {}  # task id -> the user's files its output was made from
    for pos, task in enumerate(tasks):
        step = ctx.steps[pos] if len(ctx.steps) == len(tasks) else ""
        step += " " + " ".join(v for v in task["args"].values() if not references(v))
        for inp in _spec(task["task"]).inputs:
            value = task["args"].get(inp.name)
            if (value is None or inp.kind is Kind.TEXT or is_pure_reference(value)
                    or kind_by_name(value) is not inp.kind or _speaks_of_original(ctx, step)):
                continue
            source = next((t for t in reversed(tasks[:pos]) if inp.kind in _spec(t["task"]).produces), None)
            if (source is not None and source["task"] not in (task["task"], *ANNOTATES)
                    and value in made_from[source["id"]]):
                task["args"][inp.name] = f"<resource>-{source['id']}"
        origins: set[str] = set()
        for value in task["args"].values():
            if is_pure_reference(value):
                origins |= made_from.get(references(value)[0], set())
            elif kind_by_name(value) is not None:
                origins.add(value.strip())
        made_from[task["id"]] = origins
    return tasks


def _names_task(step: str, task_type: str) -> bool:
    """Whether ``step`` names a task type of the registry: its words ("token classification", "text to
    speech"), or for a one-word type the first six letters ("translat" in "the translated text",
    "summar" in "the summary"; "conversation" for conversational, whose six would also be "convert")."""
    words = task_type.replace("-", " ")
    stem = words if " " in words else ("conversation" if words == "conversational" else words[:6])
    return re.search(r"(?<![^\W_])" + re.escape(stem), step.casefold().replace("-", " ")) is not None


def follow_steps(tasks: Tasks, ctx: Context) -> Tasks:
    """A text argument takes the earlier output its step names.

    The planner writes a step per task before the tasks; a step names the output it works on by the
    task type that made it ("Step 2: Compare the translated text with the reference"). When there is
    one step per task, a text argument that refers to an earlier task whose type its step does not
    name, while the step names another earlier task of a type other than its own that makes text, takes
    the latest such task's output instead. The planner's steps are matched against the registry's type
    names, so steps written in another language than English never change anything."""
    if len(ctx.steps) != len(tasks):
        return tasks
    tasks = _copy(tasks)
    for pos, task in enumerate(tasks):
        for inp in _spec(task["task"]).inputs:
            value = task["args"].get(inp.name, "")
            if inp.kind is not Kind.TEXT or not is_pure_reference(value):
                continue
            ref = references(value)[0]
            current = next((t for t in tasks[:pos] if t["id"] == ref), None)
            if current is None or _names_task(ctx.steps[pos], current["task"]):
                continue
            named = [t for t in tasks[:pos] if t["id"] != ref and t["task"] != task["task"]
                     and Kind.TEXT in _spec(t["task"]).produces and _names_task(ctx.steps[pos], t["task"])]
            if named:
                task["args"][inp.name] = f"<resource>-{named[-1]['id']}"
    return tasks


# The tasks the LLM runs on an instruction (a prompt, a message, "the instruction and the text"): their text
# may be the planner's own words or the user's whole message, not only data the user gave.
PROMPTED = ("text-generation", "conversational", "text2text-generation")


def _written_by_planner(asked: set[str], value: str) -> bool:
    """Whether ``value`` is a text of the planner's own: three tokens or more (words in any script,
    bigrams of unspaced scripts; one or two are a placeholder such as "input", not a text), most of
    them not among the request's tokens ``asked``."""
    words = tokens(value)
    return len(words) >= 3 and 2 * len(words & asked) < len(words)


def _whole_request(asked: set[str], value: str) -> bool:
    """Whether ``value`` holds every one of the request's tokens ``asked``: the user's message itself,
    instruction and all, not a text it gives to work on."""
    return bool(asked) and asked <= tokens(value)


def answer_from_knowledge(tasks: Tasks, ctx: Context) -> Tasks:
    """A plan that analyses the planner's own words, or the user's message itself, is the LLM answering.

    Given "who wrote pride and prejudice?", a small planner may name the entities of a sentence it
    wrote ("Pride and Prejudice was written by Jane Austen."), answer from a context it made up, or
    classify the question as it stands: the answer, if any, is in its arguments, and the task only
    analyses it. When the user gave no file, every task is a text task the LLM serves (the registry's
    ``llm_servable``), and some task other than one run on an instruction (:data:`PROMPTED`) takes as
    a required text one of the planner's own (:func:`_written_by_planner`), or, as its one required
    text, the whole request (:func:`_whole_request`; a question answered from a context may well be the
    request), the plan becomes one text-generation task given the request. Tokens are
    compared, so it reads every language alike and no word list."""
    if ctx.files or "text-generation" not in ctx.specs or not tasks:
        return tasks
    specs = [_spec(t["task"]) for t in tasks]
    if not all(s.llm_servable and all(i.kind is Kind.TEXT for i in s.inputs) for s in specs):
        return tasks
    asked = tokens(ctx.request)
    made_up = any(not references(value) and (_written_by_planner(asked, value)
                                              or (len(spec.required) == 1 and _whole_request(asked, value)))
                  for task, spec in zip(tasks, specs, strict=True) if spec.name not in PROMPTED
                  for inp in spec.required if (value := task["args"].get(inp.name, "")).strip())
    if not made_up:
        return tasks
    return [{"id": 0, "task": "text-generation", "dep": [-1], "args": {"text": ctx.request.strip()}}]


def _media_literals(task: dict[str, Any]) -> list[tuple[str, str, Kind]]:
    """(argument, file, kind) for each media argument of ``task`` that is a file, not a task's output."""
    found: list[tuple[str, str, Kind]] = []
    for inp in _spec(task["task"]).inputs:
        value = task["args"].get(inp.name, "")
        if inp.kind is not Kind.TEXT and value and not is_pure_reference(value):
            found.append((inp.name, value.strip(), inp.kind))
    return found


def _base(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def cover_every_file(tasks: Tasks, ctx: Context) -> Tasks:
    """Every image, audio or video file of the user is consumed by some task that takes that kind.

    A small planner often plans "how many people are in a.jpg, b.jpg and c.jpg?" as one task on a.jpg.
    For each file of the user that no task takes, the first task that takes another of the user's
    files of the same kind is repeated for it, with the tasks that follow from it alone (those whose
    every reference points into it: "transcribe a.wav and b.wav and translate them" repeats the
    transcription and its translation); a task that joins outputs of several branches is not repeated.
    Files of a kind no task takes stay unused (nothing says what to do with them), and nothing is
    added past the plan's task limit."""
    tasks = _copy(tasks)
    media = {f: kind_by_name(f) for f in ctx.files if _media_file(f) is not None}
    for file, kind in media.items():
        taken = {_base(v) for t in tasks for _, v, _ in _media_literals(t)}
        if _base(file) in taken:
            continue
        seed = next((t for t in tasks for name, v, k in _media_literals(t)
                     if k is kind and _base(v) != _base(file) and _base(v) in {_base(f) for f in media}), None)
        if seed is None:
            continue
        branch = [seed]
        inside = {seed["id"]}
        for t in tasks[tasks.index(seed) + 1:]:
            refs = [r for v in t["args"].values() for r in references(v)]
            if refs and all(r in inside for r in refs) and not _media_literals(t):
                branch.append(t)
                inside.add(t["id"])
        if len(tasks) + len(branch) > ctx.max_tasks:
            continue
        sibling = next(v for _, v, k in _media_literals(seed) if k is kind)
        new_id: dict[int, int] = {}
        next_id = max(t["id"] for t in tasks) + 1
        for t in branch:
            new_id[t["id"]] = next_id
            args = {k: renumber(v, new_id) for k, v in t["args"].items()}
            if t is seed:
                args = {k: (file if v.strip() == sibling else v) for k, v in args.items()}
            tasks.append({"id": next_id, "task": t["task"], "dep": [-1], "args": args})
            next_id += 1
    return tasks


Pass = Callable[[Tasks, Context], Tasks]

# The passes in the order they run. Each name is what a PlanAttempt lists when that pass changed the plan.
PASSES: tuple[tuple[str, Pass], ...] = (
    ("answer_from_knowledge", answer_from_knowledge),
    ("ask_the_image", ask_the_image),
    ("look_at_the_image", look_at_the_image),
    ("merge_duplicates", merge_duplicates),
    ("follow_transforms", follow_transforms),
    ("follow_steps", follow_steps),
    ("cover_every_file", cover_every_file),
    ("merge_duplicates_again", merge_duplicates),
)


def _shape(tasks: Tasks) -> list[tuple[str, dict[str, str]]]:
    return [(t["task"], t["args"]) for t in tasks]


def apply_passes(plan: Plan, request: str = "", files: Sequence[str] = (), max_tasks: int = MAX_TASKS_LIMIT,
                 specs: Sequence[TaskSpec] = registry.TASKS,
                 passes: Sequence[tuple[str, Pass]] = PASSES) -> tuple[Plan, tuple[str, ...]]:
    """``plan`` after every pass of ``passes`` (valid again), and the names of the passes that changed it.
    ``specs`` are the task types the planner offers (a pass only ever turns a task into one of them).
    Returns ``plan`` itself when no pass changed anything.

    Example::

        plan, changed = apply_passes(validate_plan([
            {"id": 0, "task": "object-detection", "dep": [-1], "args": {"image": "a.jpg"}},
        ], "how many people are in a.jpg and b.jpg?"))
        # two object-detection tasks, one per file; changed == ("cover_every_file",)
    """
    ctx = make_context(request, files, specs, plan.steps, max_tasks)
    tasks: Tasks = [t.model_dump() for t in plan.tasks]
    before = _shape(tasks)
    changed: list[str] = []
    for name, run in passes:
        if len(ctx.steps) and len(ctx.steps) != len(tasks):
            ctx = Context(ctx.request, ctx.files, ctx.specs, (), ctx.lexicon, ctx.max_tasks)
        out = run(tasks, ctx)
        if _shape(out) != _shape(tasks) or [t["id"] for t in out] != [t["id"] for t in tasks]:
            if _shape(out) != _shape(tasks):
                changed.append(name)
            tasks = out
    if _shape(tasks) == before:
        return plan, ()
    # deps come from the references alone, as the passes left them (a declared dep may name a task gone)
    tasks = [{**t, "dep": [-1]} for t in tasks]
    return validate_plan({"steps": plan.steps, "tasks": tasks}, request, files, max_tasks), tuple(changed)
