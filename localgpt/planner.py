"""Stage 1: turn a request into a validated task graph.

The LLM decomposes, then plans, in one reply: the request's steps in plain words, then one task
per step. It decodes under a JSON-schema constraint generated from the task registry, so its reply
always parses and its tasks refer only to tasks before them; :func:`validate_plan` then checks the
meaning, an invalid plan is mended (:func:`salvage_plan`: converter tasks between mismatched kinds,
tasks that cannot be kept dropped), and only a reply mending keeps nothing of gets one repair round
(the error fed back) before giving up with a :class:`PlanError`. Every accepted plan is tidied
(:func:`tidy_plan`: a question answered from an image's caption asks the image, a repeated task runs
once, a user's file that an earlier task transformed is taken as transformed, a text argument takes
the output its step names). Self-consistency over sampled plans is an option.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from localgpt import tasks as registry
from localgpt.demos import DEMOS, Demo
from localgpt.errors import PlanError
from localgpt.llm import LLM, Message
from localgpt.resources import REFERENCE, is_pure_reference, kind_by_name, references, renumber
from localgpt.schema import Plan, Task
from localgpt.tasks import EXTENSIONS, Kind, TaskSpec

TEXT_MAX = 240  # longest literal text argument the constraint admits, in characters
FILE_MAX = 120  # longest file name
STEP_MAX = 160  # longest step of a decomposed plan, in characters
DEMO_POOL = 30  # demos most similar to a request among which the diverse ones are chosen
SAMPLE_SEED = 1000  # seed of the first self-consistency sample (the next ones count up)
_FILE_WORD = re.compile(r"[\w./\\~-]+\.[A-Za-z0-9]{2,5}\b")
# What makes a request read as several actions (see :func:`min_steps`): words that chain actions, and
# words naming an action or what it makes. Quoted passages are left out first: they are data, not asks.
_QUOTED_DATA = re.compile(r"'[^']{3,}'|\"[^\"]{3,}\"|`[^`]+`")
_CHAIN_WORDS = re.compile(r"\b(then|after|afterwards|finally|next|also|once|followed|and|lastly|later|subsequently|"
                          r"as well)\b")
_ACTION_WORDS = re.compile(r"\b(classify|detect|segment|generate|create|convert|translate|summari[sz]e|transcribe|"
                           r"answer|describe|edit|modify|change|identify|extract|estimate|read|speak|produce|make|"
                           r"turn|enhance|analy[sz]e|recogni[sz]e|tell|find|determine|compare|caption|write|"
                           r"paraphrase|video|image|speech|audio|label)\w*")


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


def _task_schema(specs: Sequence[TaskSpec], position: int) -> dict[str, Any]:
    """The task at ``position`` of a plan: its id is ``position``, its deps and references name only
    earlier tasks, and its ``args`` are those of its task type."""
    variants = []
    for spec in specs:
        variants.append({
            "type": "object",
            "properties": {
                "id": {"const": position},
                "task": {"const": spec.name},
                "dep": {"type": "array", "items": {"enum": [-1, *range(position)]}, "minItems": 1, "maxItems": 3},
                "args": _arg_schema(spec, position),
            },
            "required": ["id", "task", "dep", "args"],
            "additionalProperties": False,
        })
    return {"anyOf": variants}


def plan_schema(specs: Sequence[TaskSpec] = registry.TASKS, max_tasks: int = 8, *,
                steps: bool = False) -> dict[str, Any]:
    """The JSON schema of a plan: a list of tasks, each typed by its task name and by its place.

    The task at place i has the id i, and its deps and ``<resource>-N`` references name only tasks
    before it (so a decoded plan can neither refer forward nor form a cycle). Each task's ``args``
    admits only that task's arguments; media arguments admit only such a reference or a file name of
    the right kind; strings and lists are bounded so decoding always ends. With ``steps`` the plan is
    an object: ``"steps"``, the request decomposed into short sentences, then ``"tasks"``, the list
    above (:meth:`Planner.schema_for` may raise the steps' ``minItems`` for one request).
    """
    tasks = {"type": "array", "prefixItems": [_task_schema(specs, i) for i in range(max_tasks)], "items": False,
             "minItems": 1, "maxItems": max_tasks}
    if not steps:
        return tasks
    step = {"type": "string", "minLength": 1, "maxLength": STEP_MAX}
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_tasks},
                       "tasks": tasks},
        "required": ["steps", "tasks"],
        "additionalProperties": False,
    }


def min_steps(request: str) -> int:
    """The fewest steps a request plainly asks for: 2 when, outside its quoted passages, it has two
    or more words that chain actions ("then", "and", "finally", ...) or four or more different
    words naming an action ("translate", "describe", "video", ...), else 1.

    A small planner often closes its step list after the first step of such a request (on the
    TaskBench dev file, 44 of its 162 multi-tool requests got one step); this floor, given to the
    schema, makes it go on. On that file it falls on 127 of the 162 multi-tool requests and 15 of
    the 128 single-tool ones. (A floor of 3 for requests with three chaining words or five action
    words, 89 of whose 91 need three tools or more, was measured too: it changed 4 plans and
    nothing in the scores.)
    """
    text = _QUOTED_DATA.sub(" ", request).lower()
    chained = len(_CHAIN_WORDS.findall(text)) >= 2
    actions = len({m.group(1) for m in _ACTION_WORDS.finditer(text)}) >= 4
    return 2 if chained or actions else 1


def named_files(text: str) -> list[str]:
    """Words of ``text`` that look like file names, each once, in the order they come."""
    return list(dict.fromkeys(w.strip(".,;:!?'\"()") for w in _FILE_WORD.findall(text)))


def user_files(request: str, files: Sequence[str]) -> list[str]:
    """The files a plan may take: those the user gave, then those the request names, each once."""
    return list(dict.fromkeys([*map(str, files), *named_files(request)]))


def validate_plan(raw: Any, request: str = "", files: Sequence[str] = (), max_tasks: int = 32) -> Plan:
    """Check a decoded plan's meaning and return it with deps derived from references.

    Raises :class:`PlanError` naming the first problem: an unknown task, a dep or reference to a
    task that does not exist or comes later, a cycle, a missing or unknown argument, or an
    argument of the wrong kind (an image argument must be a user file or an image output; a text
    argument may not be a bare image, audio or video file name). A ``{"steps", "tasks"}`` object
    keeps its steps.
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


# The task that turns one kind into another, used to mend a plan that wires mismatched kinds together.
CONVERTERS: dict[tuple[Kind, Kind], str] = {
    (Kind.IMAGE, Kind.TEXT): "image-to-text",
    (Kind.AUDIO, Kind.TEXT): "automatic-speech-recognition",
    (Kind.TEXT, Kind.AUDIO): "text-to-speech",
    (Kind.TEXT, Kind.IMAGE): "text-to-image",
    (Kind.TEXT, Kind.VIDEO): "text-to-video",
}


# A request that speaks of a document: a question about its image goes to document-question-answering.
_DOCUMENT = re.compile(r"\b(document|page|form|invoice|receipt|scan\w*|table|text on|written)\b", re.IGNORECASE)

# A request that asks for what image-to-text writes: a caption, a description, the text in an image.
_CAPTION_ASKED = re.compile(r"\b(caption\w*|describ\w*|description|extract\w*|ocr)\b", re.IGNORECASE)

# A question that speaks of an image, or of a document (narrower than _DOCUMENT: "what form of energy",
# "the table of results" need no image): question answering cannot see either.
_ABOUT_IMAGE = re.compile(r"\b(image|picture|photo|photograph)\b", re.IGNORECASE)
_DOCUMENT_QUESTION = re.compile(r"\b(document|invoice|receipt|scan\w*|page)\b", re.IGNORECASE)


def asks_an_image(question: Any) -> bool:
    """Whether ``question`` (a text of its own, not a reference) speaks of an image or a document, or
    names an image file."""
    return (isinstance(question, str) and not references(question)
            and bool(_ABOUT_IMAGE.search(question) or _DOCUMENT_QUESTION.search(question)
                     or any(_media_file(f) is Kind.IMAGE for f in named_files(question))))


def image_question_type(request: str, question: Any = "") -> str:
    """The task that answers a question about an image: document question answering when the request
    or the question speaks of a document, visual question answering otherwise."""
    document = _DOCUMENT.search(request) or isinstance(question, str) and _DOCUMENT_QUESTION.search(question)
    return "document-question-answering" if document else "visual-question-answering"

# A request that asks for a picture, a video or speech to be made ("I want an image of ...", "create a
# video ..."): a plan that takes such a thing from a file the user never gave has forgotten to make it.
# A verb of making a few words before the thing, or a wish for "a"/"an"/"some"/"new" one ("make the audio
# clearer" asks for no new audio).
_MAKE = re.compile(r"\b(?:(?:create|generate|produce|draw|paint|design|render)\w*\s+(?:\w+\s+){0,3}?"
                   r"|(?:want|need|like|make)\s+(?:\w+\s+){0,2}?(?:a|an|some|new)\s+(?:\w+\s+)?)"
                   r"(image|picture|photo|illustration|drawing|video|clip|speech|audio)s?\b", re.IGNORECASE)
_MADE_KIND = {"image": Kind.IMAGE, "picture": Kind.IMAGE, "photo": Kind.IMAGE, "illustration": Kind.IMAGE,
              "drawing": Kind.IMAGE, "video": Kind.VIDEO, "clip": Kind.VIDEO, "speech": Kind.AUDIO, "audio": Kind.AUDIO}

_QUOTED = re.compile(r"""(?:^|[\s:(])(['"])(.{3,}?)\1(?=[\s.,;:!?)]|$)""")


def _user_text(request: str, files: Sequence[str]) -> str | None:
    """The text a request gives to work on: its first quoted passage (other than a quoted file name),
    else a file it names that is no image, audio or video (a text file), else the request itself."""
    for quoted in _QUOTED.finditer(request):
        if _media_file(quoted.group(2)) is None:  # a quoted file name is a file, not a text
            return quoted.group(2).strip()[:TEXT_MAX] or None
    other = next((f for f in files if kind_by_name(f) is None), None)
    return other or request.strip()[:TEXT_MAX] or None


class _Mender:
    """Rebuilds a plan task by task, keeping what is sound (see :func:`salvage_plan`)."""

    def __init__(self, specs: Sequence[TaskSpec], request: str, files: Sequence[str]) -> None:
        self.known = {s.name: s for s in specs}
        self.out: list[dict[str, Any]] = []
        self.id_map: dict[int, int] = {}
        self.user_files = user_files(request, files)
        self.allowed = set(self.user_files) | {n.replace("\\", "/").rsplit("/", 1)[-1] for n in self.user_files}
        self.user_text = _user_text(request, self.user_files)
        self.request = request
        self.asked_for = {_MADE_KIND[m.group(1).lower()] for m in _MAKE.finditer(request)}

    def produces(self, new_id: int) -> tuple[Kind, ...]:
        return self.known[self.out[new_id]["task"]].produces

    def convert(self, source: str, have: Kind, want: Kind) -> str | None:
        """A reference to a converter task added now, fed ``source`` (of kind ``have``)."""
        name = CONVERTERS.get((have, want))
        if name is None or name not in self.known:
            return None
        spec = self.known[name]
        self.out.append({"id": len(self.out), "task": name, "dep": [-1], "args": {spec.inputs[0].name: source}})
        return f"<resource>-{len(self.out) - 1}"

    def latest(self, kind: Kind) -> str | None:
        """The latest output of ``kind`` so far, else the first user file of that kind."""
        for new_id in range(len(self.out) - 1, -1, -1):
            if kind in self.produces(new_id):
                return f"<resource>-{new_id}"
        return next((f for f in self.user_files if kind_by_name(f) is kind), None)

    def fix(self, value: str, kind: Kind) -> str | None:
        """``value`` made sound for an argument of ``kind``, or None when it cannot be."""
        value = value.strip()
        if is_pure_reference(value):
            old = references(value)[0]
            if old not in self.id_map:
                return None
            new = self.id_map[old]
            have = self.produces(new)
            if kind in have:
                return f"<resource>-{new}"
            # the wrong task was named: the latest output of the kind needed, or the user's file of that
            # kind, is what it meant; a converter only when there is neither
            return self.latest(kind) or self.convert(f"<resource>-{new}", have[0], kind)
        found = kind_by_name(value)
        base = value.replace("\\", "/").rsplit("/", 1)[-1]
        given = found is not None and (value in self.allowed or base in self.allowed)
        if kind is Kind.TEXT:
            if given and found is not None and found is not kind:  # a user's media file: read it
                return self.convert(value, found, kind)

            def remap(m: re.Match[str]) -> str:
                old = int(m.group(1))
                new = self.id_map.get(old)
                return f"<resource>-{new}" if new is not None and Kind.TEXT in self.produces(new) else ""
            fixed = REFERENCE.sub(remap, value).strip()
            return fixed or None
        if given and found is not None:
            return value if found is kind else self.convert(value, found, kind)
        return None

    def make(self, kind: Kind) -> str | None:
        """A reference to a task added now that makes ``kind`` from the latest text output (else the user's
        text), when the request asks for such a thing to be made; else None."""
        text = self.latest(Kind.TEXT) or self.user_text
        if kind not in self.asked_for or text is None:
            return None
        return self.convert(text, Kind.TEXT, kind)

    def is_image(self, value: Any) -> bool:
        """Whether ``value`` is an image: a file name of that kind, or a reference to an image output."""
        if not isinstance(value, str):
            return False
        if is_pure_reference(value):
            new = self.id_map.get(references(value)[0])
            return new is not None and Kind.IMAGE in self.produces(new)
        return _media_file(value) is Kind.IMAGE

    def lost(self, value: Any) -> bool:
        """Whether an argument is missing, empty, or a reference to a task that is not there."""
        if not isinstance(value, str) or not value.strip():
            return True
        return is_pure_reference(value) and references(value)[0] not in self.id_map

    def ask_image(self, item: dict[str, Any]) -> dict[str, Any]:
        """A question-answering task given an image where a text belongs asks about the image: it
        becomes visual question answering (document question answering when the request or the
        question speaks of a document: :func:`image_question_type`). So does one whose context is lost
        when there is no text to read but an image: the latest image output, else the user's image.
        (One that only asks about an image is left to :func:`tidy_plan`, which looks at every plan.)
        Other tasks are returned as they are."""
        args = item.get("args")
        if item.get("task") != "question-answering" or not isinstance(args, dict):
            return item
        image = next((k for k in ("context", "question") if self.is_image(args.get(k))), None)
        if image is None and self.lost(args.get("context")) and self.latest(Kind.TEXT) is None:
            # there is nothing to read the answer from but an image
            picture = self.latest(Kind.IMAGE)
            if picture is not None:
                args, image = {**args, "context": picture}, "context"
        if image is None:
            return item
        other = args.get("question" if image == "context" else "context")
        name = image_question_type(self.request, other)
        if name not in self.known or not isinstance(other, str) or not other.strip():
            return item
        spec = self.known[name]
        return {**item, "task": name, "args": {spec.inputs[0].name: args[image], spec.inputs[1].name: other}}

    def add(self, item: Any) -> None:
        """Add one task of the raw plan if it can be made sound; drop it otherwise."""
        if not isinstance(item, dict) or item.get("task") not in self.known:
            return
        item = self.ask_image(item)
        old_id, args = item.get("id"), item.get("args")
        if not isinstance(old_id, int) or old_id in self.id_map:
            return
        spec = self.known[item["task"]]
        args = args if isinstance(args, dict) else {}
        mark = len(self.out)
        fixed: dict[str, str] = {}
        for inp in spec.inputs:
            value = args.get(inp.name)
            value = value if isinstance(value, str) and value.strip() else ""
            new = self.fix(value, inp.kind) if value else None
            # a lost media input takes the latest fitting output (or the user's file of that kind); a lost
            # text, or one that was only references, the latest text output, else the text the user gave
            if new is None and inp.required:
                if inp.kind is not Kind.TEXT:
                    new = self.latest(inp.kind) or self.make(inp.kind)
                elif not value or references(value):
                    new = self.latest(Kind.TEXT) or self.user_text
            if new is None:
                if inp.required:
                    del self.out[mark:]  # converters added for a task that is dropped go too
                    return
                continue
            fixed[inp.name] = new
        self.id_map[old_id] = len(self.out)
        self.out.append({"id": len(self.out), "task": spec.name, "dep": [-1], "args": fixed})


def salvage_plan(raw: Any, request: str = "", files: Sequence[str] = (), max_tasks: int = 32,
                 specs: Sequence[TaskSpec] = registry.TASKS) -> Plan:
    """Mend a decoded plan that failed validation, keeping every task that can be kept.

    Tasks are renumbered in order. A reference to a task that does not exist, or a file the
    user did not give, becomes the latest earlier output of the kind needed (or the user's
    file of that kind; for a text, the text the user gave: a quoted passage, a text file the
    request names, else the request itself); a reference to an output of the wrong kind takes the
    latest earlier output of the kind needed too, or the user's file of that kind, and only when there
    is neither gets a converter task in between (image-to-text, speech recognition, text-to-speech,
    text-to-image, text-to-video), as does a user's file of the wrong kind; an image, video or speech
    that is nowhere, when the request asks for one to be made ("I want an image of ..."), is made first
    from the latest text output, else the user's text; a question-answering task
    given an image, or with nothing to read but an image, becomes visual (or document) question
    answering; a task
    whose required input cannot be found is dropped, with the converters made for it. The steps of
    a ``{"steps", "tasks"}`` reply are kept. Raises :class:`PlanError` when nothing valid remains.

    Example::

        salvage_plan([{"id": 0, "task": "sentence-similarity", "dep": [-1],
                       "args": {"text": "example.jpg", "other": "a cat"}}], "compare example.jpg ...")
    """
    steps, raw = _split_reply(raw)
    mender = _Mender(specs, request, files)
    for item in raw:
        mender.add(item)
    if not mender.out:
        raise PlanError("no task of the plan could be kept")
    return validate_plan({"steps": steps, "tasks": mender.out[:max_tasks]}, request, files, max_tasks)


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
    if _CAPTION_ASKED.search(_QUOTED_DATA.sub(" ", request)):
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


def tidy_plan(plan: Plan, request: str = "", files: Sequence[str] = (), max_tasks: int = 32,
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


def word_overlap(request: str, candidates: Sequence[str]) -> list[float]:
    """Similarity of ``request`` to each candidate: Jaccard overlap of lower-case words."""
    wa = set(re.findall(r"[a-z]+", request.lower()))
    scores = []
    for text in candidates:
        wb = set(re.findall(r"[a-z]+", text.lower()))
        scores.append(len(wa & wb) / max(1, len(wa | wb)))
    return scores


Embedder = Callable[[list[str]], Any]


class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings (e.g. the MiniLM expert's ``embed``).

    Demo embeddings are computed once and kept, so each request costs one embedding.
    """

    def __init__(self, embed: Embedder) -> None:
        self.embed = embed
        self._known: dict[str, Any] = {}

    def __call__(self, request: str, candidates: Sequence[str]) -> list[float]:
        """Cosine similarity of ``request`` to each candidate (vectors are unit length)."""
        import numpy as np

        missing = [c for c in dict.fromkeys(candidates) if c not in self._known]
        if missing:
            for text, vec in zip(missing, self.embed(missing), strict=True):
                self._known[text] = np.asarray(vec, dtype=np.float32)
        known = self._known.get(request)
        query = known if known is not None else np.asarray(self.embed([request])[0], dtype=np.float32)
        return [float(self._known[c] @ query) for c in candidates]


Similarity = Callable[[str, Sequence[str]], list[float]]


class Planner:
    """Plans a request with an LLM under the plan-schema constraint.

    Example::

        planner = Planner(llm)
        plan = planner.plan("Read 'hello' aloud", files=[])
    """

    def __init__(self, llm: LLM, *, max_tasks: int = 8, n_demos: int = 3,
                 demos: Sequence[Demo] = DEMOS, specs: Sequence[TaskSpec] = registry.TASKS,
                 repair: bool = True, salvage: bool = True, similarity: Similarity = word_overlap,
                 decompose: bool = True, samples: int = 0, sample_temperature: float = 0.7,
                 step_floor: bool = True, demo_diversity: float = 0.0, type_shortlist: int = 0) -> None:
        self.llm = llm
        self.max_tasks = max_tasks
        self.n_demos = n_demos
        self.demos = list(demos)
        self.specs = list(specs)
        self.repair = repair
        self.salvage = salvage
        self.last_salvaged = False
        self.similarity = similarity
        self.decompose = decompose
        self.samples = samples
        self.sample_temperature = sample_temperature
        self.step_floor = step_floor
        self.demo_diversity = demo_diversity
        self.type_shortlist = type_shortlist
        self.schema = plan_schema(self.specs, max_tasks, steps=decompose)
        self.last_raw: list[str] = []
        self.last_seconds = 0.0

    def system_prompt(self) -> str:
        """The fixed instructions: the task types and the rules of a plan."""
        lines = []
        for spec in self.specs:
            args = ", ".join(f"{i.name}: {i.kind.value}{'' if i.required else ' (optional)'}" for i in spec.inputs)
            lines.append(f"- {spec.name}({args}) -> {spec.output.value}: {spec.description}")
        return (
            "You are the planner of localgpt, an assistant that answers by running AI models on this machine.\n"
            "Split the user's request into tasks, " + self._reply_shape()
            + " Each task has an \"id\" (0, 1, 2, ...), a \"task\" type from the list below, \"dep\" "
            "(ids of the tasks whose output it uses, or [-1] when none) and \"args\".\n"
            "To use the output of task N as an argument, write \"<resource>-N\". File arguments are file names "
            "the user gave or \"<resource>-N\". Copy texts from the request into args; do not invent files, and "
            "add no task the request does not ask for.\n"
            "Task types:\n" + "\n".join(lines)
        )

    def _reply_shape(self) -> str:
        if self.decompose:
            return ("as JSON: first \"steps\": every action the request asks for, one step each, in order, in plain "
                    "words (\"Step 1: ...\"); then \"tasks\", one task per step.")
        return "as a JSON list."

    def demo_reply(self, demo: Demo) -> str:
        """A demo's plan as the LLM is asked to write it (compact JSON, with its steps when decomposing)."""
        tasks = list(demo.plan)
        if not self.decompose:
            return json.dumps(tasks, separators=(",", ":"), ensure_ascii=False)
        steps = list(demo.steps) or [f"Step {i}: {t['task']}" for i, t in enumerate(tasks, 1)]
        return json.dumps({"steps": steps, "tasks": tasks}, separators=(",", ":"), ensure_ascii=False)

    def user_prompt(self, request: str, files: Sequence[str]) -> str:
        """The request as the planner sees it, with the user's files."""
        listed = ", ".join(files) if files else "none"
        return f"Request: {request}\nFiles: {listed}"

    def choose_demos(self, request: str) -> list[Demo]:
        """``n_demos`` demos for ``request``, least similar first (the closest sits nearest): the most
        similar ones.

        With ``demo_diversity`` > 0 (off by default), a request that reads as several actions
        (:func:`min_steps`) gets varied demos instead: the most similar first, then each time the
        demo of the :data:`DEMO_POOL` most similar that best balances its similarity to the request
        against its likeness to a demo already chosen (maximal marginal relevance). It shows more of
        the tasks a request may need, but on TaskBench it planned no better (bench/README.md).
        """
        if self.n_demos <= 0 or not self.demos:
            return []
        scores, ranked = self._ranked(request)
        if self.demo_diversity <= 0 or min_steps(request) < 2:
            chosen = ranked[: self.n_demos]
        else:
            chosen, pool = ranked[:1], ranked[1:DEMO_POOL]
            likeness = dict.fromkeys(pool, float("-inf"))
            w = self.demo_diversity
            while pool and len(chosen) < self.n_demos:
                near = self.similarity(self.demos[chosen[-1]].request, [self.demos[i].request for i in pool])
                for i, sim in zip(pool, near, strict=True):
                    likeness[i] = max(likeness[i], sim)
                best = max(pool, key=lambda i: (1 - w) * scores[i] - w * likeness[i])
                chosen.append(best)
                pool.remove(best)
        return [self.demos[i] for i in sorted(chosen, key=ranked.index, reverse=True)]

    def _ranked(self, request: str) -> tuple[list[float], list[int]]:
        """The similarity of ``request`` to each demo, and the demos' indices most similar first."""
        scores = self.similarity(request, [d.request for d in self.demos])
        return scores, sorted(range(len(self.demos)), key=lambda i: scores[i], reverse=True)

    def shortlist(self, request: str) -> list[TaskSpec]:
        """The task types the constraint admits for ``request``: with ``type_shortlist`` = K > 0 (off
        by default), those used by the K demos most similar to it, and those no demo uses at all (the
        demos say nothing against them); all of :attr:`specs` otherwise, when there are no more than
        K demos, or when none of those types is offered. The system prompt still lists every type, so
        its cached state is reused.
        """
        k = self.type_shortlist
        if k <= 0 or len(self.demos) <= k:
            return self.specs
        _, ranked = self._ranked(request)
        near = {t.get("task") for i in ranked[:k] for t in self.demos[i].plan}
        used = {t.get("task") for d in self.demos for t in d.plan}
        return [s for s in self.specs if s.name in near or s.name not in used] or self.specs

    def messages(self, request: str, files: Sequence[str], history: Sequence[Message] = ()) -> list[Message]:
        """The full chat sent to the LLM: instructions, demos, trimmed history, the request."""
        msgs: list[Message] = [{"role": "system", "content": self.system_prompt()}]
        for demo in self.choose_demos(request):
            msgs.append({"role": "user", "content": self.user_prompt(demo.request, demo.files)})
            msgs.append({"role": "assistant", "content": self.demo_reply(demo)})
        current = {"role": "user", "content": self.user_prompt(request, files)}
        budget = self.llm.n_ctx - self.max_tokens() - sum(self.llm.count_tokens(m["content"]) + 8 for m in msgs)
        budget -= self.llm.count_tokens(current["content"]) + 8
        msgs.extend(trim_history(self.llm, history, budget))
        msgs.append(current)
        return msgs

    def schema_for(self, request: str) -> dict[str, Any] | None:
        """The constraint for ``request``: :attr:`schema` (its task types narrowed to
        :meth:`shortlist` when that leaves some out), with as many steps at least as a request that
        reads as several actions plainly asks for when decomposing (:func:`min_steps`, unless
        ``step_floor`` is off)."""
        schema = self.schema
        if schema is None:
            return schema
        allowed = self.shortlist(request)
        if len(allowed) < len(self.specs):
            schema = plan_schema(allowed, self.max_tasks, steps=self.decompose)
        if not self.decompose or not self.step_floor:
            return schema
        steps = schema["properties"]["steps"]
        floor = min(min_steps(request), steps.get("maxItems", 1))
        if floor <= steps.get("minItems", 1):
            return schema
        return {**schema, "properties": {**schema["properties"], "steps": {**steps, "minItems": floor}}}

    def max_tokens(self) -> int:
        """Enough tokens for the longest plan the schema admits, within reason (and its steps)."""
        return min(1536, 120 * self.max_tasks) + (STEP_MAX // 3 * self.max_tasks if self.decompose else 0)

    def plan(self, request: str, files: Sequence[str] = (), history: Sequence[Message] = ()) -> Plan:
        """Plan ``request``; raises :class:`PlanError` when no valid plan can be made.

        A reply that is not a valid plan is mended first (:func:`salvage_plan`); only when mending
        cannot keep a single task (or the reply is not JSON) is the error fed back to the LLM for one
        repair round, whose reply may be mended in turn.
        """
        self.last_raw = []  # reset first: a call that fails early leaves none of the last call's replies
        self.last_salvaged = False
        if not request.strip():
            raise PlanError("the request is empty", "say what you want done")
        start = time.perf_counter()
        msgs = first = self.messages(request, files, history)
        error: PlanError | None = None
        schema = self.schema_for(request)
        for _ in range(2 if self.repair else 1):
            raw = self.llm.generate(msgs, schema=schema, max_tokens=self.max_tokens())
            self.last_raw.append(raw)
            try:
                plan = self._accept(raw, request, files)
            except PlanError as exc:
                error = exc
                msgs = msgs + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"That plan is invalid: {exc.message}. Reply with a corrected plan."},
                ]
                continue
            plan = self._consensus(plan, first, schema, request, files)
            self.last_seconds = time.perf_counter() - start
            return plan
        assert error is not None
        self.last_seconds = time.perf_counter() - start
        raise PlanError(f"could not make a valid plan: {error.message}",
                        "rephrase the request, or name the files it uses", raw=error.raw)

    def _accept(self, raw: str, request: str, files: Sequence[str]) -> Plan:
        """The plan in ``raw`` (see :func:`accept_reply`), noting whether it was mended."""
        plan, self.last_salvaged = accept_reply(raw, request, files, self.max_tasks, self.specs, salvage=self.salvage)
        return plan

    def _consensus(self, plan: Plan, msgs: list[Message], schema: dict[str, Any] | None, request: str,
                   files: Sequence[str]) -> Plan:
        """Self-consistency (``samples`` > 0): ``plan`` or one of ``samples`` replies sampled at
        ``sample_temperature`` (each validated, or mended), whichever agrees most with all the others
        (:func:`plan_agreement`); ``plan`` wins a tie. Samples that cannot be made valid do not vote."""
        if self.samples <= 0:
            return plan
        candidates = [plan]
        for k in range(self.samples):
            raw = self.llm.generate(msgs, schema=schema, max_tokens=self.max_tokens(),
                                    temperature=self.sample_temperature, seed=SAMPLE_SEED + k)
            self.last_raw.append(raw)
            try:
                found, _ = accept_reply(raw, request, files, self.max_tasks, self.specs, salvage=self.salvage)
            except PlanError:
                continue
            candidates.append(found)
        votes = [sum(plan_agreement(c, other) for other in candidates) for c in candidates]
        return candidates[votes.index(max(votes))]


def accept_reply(raw: str, request: str = "", files: Sequence[str] = (), max_tasks: int = 8,
                 specs: Sequence[TaskSpec] = registry.TASKS, *, salvage: bool = True) -> tuple[Plan, bool]:
    """The plan in a planner reply, valid as it is or mended (:func:`salvage_plan`), then tidied
    (:func:`tidy_plan`), with its steps, and whether it was mended. Raises the first error found when
    the reply is not JSON, or when mending (if ``salvage``) cannot keep a single task."""
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PlanError(f"the planner's reply is not complete JSON ({exc.msg})", raw=raw) from exc
    mended = False
    try:
        plan = validate_plan(decoded, request, files, max_tasks)
    except PlanError as exc:
        error = PlanError(exc.message, exc.hint, raw=raw)
        if not salvage:
            raise error from exc
        try:
            plan = salvage_plan(decoded, request, files, max_tasks, specs)
        except PlanError:
            raise error from exc
        mended = True
    return tidy_plan(plan, request, files, max_tasks, specs), mended


def plan_agreement(a: Plan, b: Plan) -> float:
    """How alike two plans are, 0 to 2: the Jaccard overlap of their task types plus that of their
    edges (source type, target type)."""

    def jaccard(x: set[Any], y: set[Any]) -> float:
        return len(x & y) / len(x | y) if x | y else 1.0

    def edges(p: Plan) -> set[tuple[str, str]]:
        return {(p.by_id(d).task, t.task) for t in p.tasks for d in t.dep}

    return jaccard({t.task for t in a.tasks}, {t.task for t in b.tasks}) + jaccard(edges(a), edges(b))


def _split_reply(decoded: Any) -> tuple[list[str], list[Any]]:
    """The steps (none for a bare task list) and the task list of a decoded plan; raises
    :class:`PlanError` when there is no task list."""
    steps = []
    if isinstance(decoded, dict):
        if isinstance(decoded.get("steps"), list):
            steps = [str(s) for s in decoded["steps"]]
        decoded = decoded.get("tasks", decoded)
    if not isinstance(decoded, list):
        raise PlanError("the plan is not a list of tasks")
    return steps, decoded


def trim_history(llm: LLM, history: Sequence[Message], budget: int) -> list[Message]:
    """The most recent history messages that fit in ``budget`` tokens, oldest first."""
    kept: list[Message] = []
    for msg in reversed(list(history)):
        cost = llm.count_tokens(msg["content"]) + 8
        if cost > budget:
            break
        budget -= cost
        kept.append({"role": msg["role"], "content": msg["content"]})
    return list(reversed(kept))


__all__ = ["Planner", "plan_schema", "min_steps", "validate_plan", "salvage_plan", "tidy_plan", "accept_reply",
           "plan_agreement", "trim_history", "REFERENCE"]
