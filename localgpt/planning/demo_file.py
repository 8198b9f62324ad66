"""A file of the user's own planning demonstrations, added to localgpt's built-in ones.

One JSON object a line (JSONL), in either of two forms:

- **localgpt's**: ``{"request": "...", "files": ["photo.jpg"], "tasks": [...], "steps": [...]}`` — the
  tasks as ``localgpt plan --json`` prints them (``files`` and ``steps`` optional; ``plan`` may stand for
  ``tasks``). Such a line must be a valid plan: a bad one stops the load with its line and the reason.
- **TaskBench's**: ``{"user_request": "...", "task_nodes": [{"task": "Image Classification",
  "arguments": ["example.jpg"]}], "task_steps": [...]}`` — a gold record, converted to a localgpt plan
  (TaskBench's 23 tool names become localgpt's task types; ``<node-j>`` references become
  ``<resource>-N``). Gold records that cannot be converted (a cycle, an argument of a kind no input of
  its tool takes) or whose plan is not valid are left out and counted, since the published data has a
  few.

Example::

    found = load_demo_file(Path("my_demos.jsonl"))
    planner = Planner(llm, demos=[*DEMOS, *found.demos])
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from localgpt import tasks as registry
from localgpt.config import MAX_TASKS_LIMIT
from localgpt.errors import ConfigError, PlanError
from localgpt.planning.demos import Demo
from localgpt.planning.references import renumber
from localgpt.planning.validate import validate_plan
from localgpt.schema import Plan
from localgpt.tasks import Kind, kind_by_name

# TaskBench's 23 tool names (Hugging Face tools domain) and localgpt's task types (pipeline tags).
TB_TO_LOCAL: dict[str, str] = {
    "Token Classification": "token-classification",
    "Translation": "translation",
    "Summarization": "summarization",
    "Question Answering": "question-answering",
    "Conversational": "conversational",
    "Text Generation": "text-generation",
    "Sentence Similarity": "sentence-similarity",
    "Tabular Classification": "tabular-classification",
    "Object Detection": "object-detection",
    "Image Classification": "image-classification",
    "Image-to-Image": "image-to-image",
    "Image-to-Text": "image-to-text",
    "Text-to-Image": "text-to-image",
    "Text-to-Video": "text-to-video",
    "Visual Question Answering": "visual-question-answering",
    "Document Question Answering": "document-question-answering",
    "Image Segmentation": "image-segmentation",
    "Depth Estimation": "depth-estimation",
    "Text-to-Speech": "text-to-speech",
    "Automatic Speech Recognition": "automatic-speech-recognition",
    "Audio-to-Audio": "audio-to-audio",
    "Audio Classification": "audio-classification",
    "Image Editing": "image-editing",
}
NODE_REF = re.compile(r"<node-(\d+)>")
_OUTPUT_OF = re.compile(r"<output of ([^>]+)>")


def tool_name(name: Any) -> str | None:
    """A TaskBench tool name with underscores read as spaces; None when not one of the 23."""
    if not isinstance(name, str):
        return None
    name = name.replace("_", " ").strip()
    return name if name in TB_TO_LOCAL else None


def _arg_kind(arg: str, nodes: Sequence[dict[str, Any]]) -> Kind:
    """The kind of a gold argument: a referenced node's output, a file's kind, or text."""
    m = NODE_REF.fullmatch(arg.strip())
    if m and int(m.group(1)) < len(nodes):
        local = TB_TO_LOCAL.get(tool_name(nodes[int(m.group(1))].get("task")) or "")
        if local:
            return registry.get(local).output
    return kind_by_name(arg) or Kind.TEXT


def _question_first(args: dict[str, str]) -> dict[str, str]:
    """A gold question-answering task's two texts, each in its place: TaskBench writes the context first
    and the question second (so they land in localgpt's ``question`` and ``context`` the wrong way
    round), except where only the first of them reads as a question."""
    first, second = args.get("question"), args.get("context")
    if first is None or second is None:
        return args

    def asks(text: str) -> bool:
        return text.strip().strip("'\"").endswith("?")
    if asks(first) and not asks(second):
        return args
    return {**args, "question": second, "context": first}


def as_reference(arg: Any, nodes: Sequence[dict[str, Any]]) -> Any:
    """A gold argument that names another node's output in one of TaskBench's rare other forms
    (``"<output of Text Generation>"``, ``"Text_Generation"``) as the ``<node-j>`` reference it means;
    any other argument as it is."""
    if not isinstance(arg, str):
        return arg
    m = _OUTPUT_OF.fullmatch(arg.strip())
    name = tool_name(m.group(1)) if m else tool_name(arg) if "_" in arg else None
    if name is None:
        return arg
    found = [j for j, n in enumerate(nodes) if tool_name(n.get("task")) == name]
    return f"<node-{found[0]}>" if len(found) == 1 else arg


def record_to_demo(rec: dict[str, Any]) -> Demo | None:
    """A TaskBench gold record as a localgpt demo (tasks in dependency order, named args); None if
    unusable. Other forms of reference than ``<node-j>`` become references too (the plan schema admits
    no literal text that opens like a reference)."""
    nodes = [{**n, "arguments": [as_reference(a, rec["task_nodes"]) for a in n.get("arguments") or []]}
             for n in rec["task_nodes"]]
    names = [local for n in nodes if (local := TB_TO_LOCAL.get(tool_name(n.get("task")) or ""))]
    if not nodes or len(names) != len(nodes):
        return None
    deps: dict[int, set[int]] = {}
    for i, node in enumerate(nodes):
        deps[i] = {int(j) for a in node["arguments"] if isinstance(a, str) for j in NODE_REF.findall(a)
                   if int(j) != i and int(j) < len(nodes)}
    order: list[int] = []
    placed: set[int] = set()
    while len(order) < len(nodes):
        ready = [i for i in range(len(nodes)) if i not in placed and deps[i] <= placed]
        if not ready:
            return None  # a cycle in the gold graph
        order.append(ready[0])
        placed.add(ready[0])
    new_id = {old: k for k, old in enumerate(order)}
    tasks = []
    for old in order:
        spec = registry.get(names[old])
        args: dict[str, str] = {}
        for arg in nodes[old]["arguments"]:
            if not isinstance(arg, str):
                return None
            kind = _arg_kind(arg, nodes)
            if any(int(j) == old for j in NODE_REF.findall(arg)):
                return None  # a self-reference: a quirk of the gold data
            slot = next((i for i in spec.inputs if i.kind is kind and i.name not in args), None)
            if slot is None:
                return None  # the gold argument's kind fits no input of the task
            args[slot.name] = NODE_REF.sub(lambda m: f"<resource>-{new_id.get(int(m.group(1)), 0)}", arg)
        if names[old] == "question-answering":
            args = _question_first(args)
        dep = sorted(new_id[d] for d in deps[old])
        tasks.append({"id": new_id[old], "task": names[old], "dep": dep or [-1], "args": args})
    files = tuple(sorted({a for n in nodes for a in n["arguments"] if isinstance(a, str) and kind_by_name(a)}))
    steps = tuple(str(s) for s in rec.get("task_steps") or () if isinstance(s, str))
    return Demo(request=rec["user_request"], files=files, plan=tuple(tasks), steps=steps)


@dataclass
class DemoFile:
    """What :func:`load_demo_file` read: the demos, and the lines it left out (TaskBench records only)
    with the reason for each."""

    path: Path
    demos: list[Demo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a person: how many demos came from the file, and how many were left out."""
        text = f"{len(self.demos)} demo{'s' if len(self.demos) != 1 else ''} from {self.path}"
        if self.skipped:
            text += f"; {len(self.skipped)} TaskBench record(s) left out, first {self.skipped[0]}"
        return text


def json_objects(lines: Iterable[str], source: str, what: str,
                 error: Callable[[str], Exception]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, "SOURCE, line N", object)`` for each line of a JSONL text that is not blank;
    ``error`` (raised) names the line of one that is not JSON, or not an object (``what``: "a demo")."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}, line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{where}: {what} is a JSON object, not {type(obj).__name__}")
        yield n, where, obj


def demo_line(request: str, files: Sequence[str], plan: Plan) -> str:
    """A checked plan as one line of a demo file, in localgpt's form (what ``localgpt plan --as-demo``
    prints); :func:`load_demo_file` reads it back as the same demo."""
    return json.dumps({"request": request, "files": [str(f) for f in files], **plan.model_dump()},
                      ensure_ascii=False)


def _own_demo(obj: dict[str, Any], where: str, max_tasks: int) -> Demo:
    """A line in localgpt's form as a demo whose plan is valid and numbered by place (task *i* has id
    *i*, as the planner is asked to write); a :class:`ConfigError` naming the line otherwise."""
    request = obj.get("request")
    if not isinstance(request, str) or not request.strip():
        raise ConfigError(f"{where}: no request text", 'a demo is {"request": ..., "tasks": [...]}')
    files = obj.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{where}: files is not a list of file names")
    steps = obj.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise ConfigError(f"{where}: steps is not a list of texts")
    tasks = obj.get("tasks", obj.get("plan"))
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"{where}: no tasks (a list, as `localgpt plan --json` prints them)")
    try:
        plan = validate_plan(tasks, request, files, max_tasks)
    except PlanError as exc:
        raise ConfigError(f"{where}: the demo's plan is not valid: {exc.message}", exc.hint) from None
    if steps and len(steps) != len(plan.tasks):
        raise ConfigError(f"{where}: {len(steps)} steps for {len(plan.tasks)} tasks (one step per task)")
    place = {t.id: i for i, t in enumerate(plan.tasks)}
    numbered = tuple(
        {"id": i, "task": t.task, "dep": sorted(place[d] for d in t.dep) or [-1],
         "args": {name: renumber(value, place) for name, value in t.args.items()}}
        for i, t in enumerate(plan.tasks))
    return Demo(request=request.strip(), files=tuple(files), plan=numbered, steps=tuple(steps))


def load_demo_file(path: Path, max_tasks: int = MAX_TASKS_LIMIT) -> DemoFile:
    """The demos of a JSONL file in localgpt's or TaskBench's form (see the module's docstring).

    Raises :class:`ConfigError` naming the file and line for a missing file, a line that is not a JSON
    object, a localgpt demo whose plan is not valid, or a file with no usable demo at all."""
    path = Path(path)
    found = DemoFile(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"demo file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"demo file {path} cannot be read: {exc}") from None
    for n, where, obj in json_objects(text.splitlines(), f"demo file {path}", "a demo", ConfigError):
        if "user_request" in obj or "task_nodes" in obj:
            nodes = obj.get("task_nodes")
            if (not isinstance(obj.get("user_request"), str) or not isinstance(nodes, list)
                    or not all(isinstance(t, dict) and "task" in t for t in nodes)):
                raise ConfigError(f"{where}: a TaskBench record needs a user_request text and task_nodes, "
                                  'a list of {"task", "arguments"}')
            demo = record_to_demo(obj)
            if demo is None:
                found.skipped.append(f"line {n}: its graph has a cycle or an argument no input of its tool takes")
                continue
            try:
                validate_plan(list(demo.plan), demo.request, demo.files, max_tasks)
            except PlanError as exc:
                found.skipped.append(f"line {n}: {exc.message}")
                continue
            found.demos.append(replace(demo, request=demo.request.strip()))
        else:
            found.demos.append(_own_demo(obj, where, max_tasks))
    if not found.demos:
        raise ConfigError(f"demo file {path} holds no usable demo",
                          "one JSON object a line: {\"request\": ..., \"tasks\": [...]} or a TaskBench record")
    return found
