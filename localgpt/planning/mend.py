"""Mending an invalid plan task by task, keeping what is sound (see docs/planning.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from localgpt import tasks as registry
from localgpt.config import MAX_TASKS_LIMIT
from localgpt.errors import PlanError
from localgpt.planning.passes import ANNOTATES, image_question_type, make_context
from localgpt.planning.quotes import quoted_passages
from localgpt.planning.references import REFERENCE, is_pure_reference, references
from localgpt.planning.schema import TEXT_MAX
from localgpt.planning.validate import _media_file, _split_reply, glued_to, user_files, validate_plan
from localgpt.schema import Plan
from localgpt.tasks import Kind, TaskSpec, kind_by_name

# The task that turns one kind into another, used to mend a plan that wires mismatched kinds together.
CONVERTERS: dict[tuple[Kind, Kind], str] = {
    (Kind.IMAGE, Kind.TEXT): "image-to-text",
    (Kind.AUDIO, Kind.TEXT): "automatic-speech-recognition",
    (Kind.TEXT, Kind.AUDIO): "text-to-speech",
    (Kind.TEXT, Kind.IMAGE): "text-to-image",
    (Kind.TEXT, Kind.VIDEO): "text-to-video",
}


# The converters that make a new thing of a kind from a text: a plan that takes such a thing from a file
# the user never gave has forgotten to make it, when the request holds words asking for one.
_MAKERS = {"text-to-image": Kind.IMAGE, "text-to-video": Kind.VIDEO, "text-to-speech": Kind.AUDIO}


def _user_text(request: str, files: Sequence[str]) -> str | None:
    """The text a request gives to work on: its first quoted passage (other than a quoted file name),
    else a file it names that is no image, audio or video (a text file), else the request itself."""
    for quoted in quoted_passages(request, bounded=True):
        if _media_file(quoted.text) is None:  # a quoted file name is a file, not a text
            return quoted.text.strip()[:TEXT_MAX] or None
    other = next((f for f in files if kind_by_name(f) is None), None)
    return other or request.strip()[:TEXT_MAX] or None


class _Mender:
    """Rebuilds a plan task by task, keeping what is sound (see :func:`salvage_plan`)."""

    def __init__(self, specs: Sequence[TaskSpec], request: str, files: Sequence[str]) -> None:
        self.known = {s.name: s for s in specs}
        self.out: list[dict[str, Any]] = []
        self.id_map: dict[int, int] = {}
        self.dropped: set[int] = set()  # ids of the raw plan's tasks that could not be kept
        self.user_files = user_files(request, files)
        self.allowed = set(self.user_files) | {n.replace("\\", "/").rsplit("/", 1)[-1] for n in self.user_files}
        self.user_text = _user_text(request, self.user_files)
        self.context = make_context(request, files, specs)
        self.asked_for = ({Kind(k) for k in self.context.lexicon.made(request)}
                          | {kind for name, kind in _MAKERS.items() if name in self.context.asked})

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

    def latest(self, kind: Kind, *, files_first: bool = False) -> str | None:
        """The latest output of ``kind`` so far, else the first user file of that kind that no task
        takes yet (the first of that kind when every one is taken): a plan that names two files nobody
        gave, for a user who gave two, gets one each. With ``files_first``, such a user file comes
        before the outputs."""
        mine = [f for f in self.user_files if kind_by_name(f) is kind]
        taken = {v for t in self.out for v in t["args"].values()}
        fresh = next((f for f in mine if f not in taken), None)
        if files_first and fresh is not None:
            return fresh
        for new_id in range(len(self.out) - 1, -1, -1):
            # for a file nobody gave, an output that only draws on the user's file (object detection's
            # boxes) is no picture to work on: the user's file comes before it
            if kind in self.produces(new_id) and not (files_first and mine and self.out[new_id]["task"] in ANNOTATES):
                return f"<resource>-{new_id}"
        return fresh or next(iter(mine), None)

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
        glued = glued_to(value, self.user_files)
        if found is not None and glued is not None and value not in self.allowed:
            value = glued  # a user's file with words of the request glued before it ("分析一下客厅.png")
        base = value.replace("\\", "/").rsplit("/", 1)[-1]
        given = found is not None and (value in self.allowed or base in self.allowed)
        if kind is Kind.TEXT:
            if given and found is not None and found is not kind:  # a user's media file: read it
                return self.convert(value, found, kind)
            if found is not None and _media_file(value) is not None:
                # a media file nobody gave, where a text belongs: a user's file of its kind not read yet
                # (else the latest output of that kind), read
                source = self.latest(found, files_first=True)
                return self.convert(source, found, kind) if source is not None else None

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

    def is_image(self, value: Any, *, mended: bool = False) -> bool:
        """Whether ``value`` is an image: a file name of that kind, or a reference to an image output.
        A reference names a task of the raw plan (mapped through :attr:`id_map`), or with ``mended`` a
        task of the mended plan (an argument already made sound)."""
        if not isinstance(value, str):
            return False
        if is_pure_reference(value):
            old = references(value)[0]
            new = (old if old < len(self.out) else None) if mended else self.id_map.get(old)
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
        question holds a word for a document: :func:`image_question_type`). So does one whose context is lost
        when there is no text to read but an image: the latest image output, else the user's image.
        (One that only asks about an image is left to the passes, which look at every plan.)
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
        return self._turn(item, args, image)

    def _turn(self, item: dict[str, Any], args: dict[str, Any], image: str) -> dict[str, Any]:
        """``item`` as visual (or document) question answering over ``args[image]``, asking the other of
        context and question; ``item`` itself when that other is empty or the type is not offered."""
        other = args.get("question" if image == "context" else "context")
        name = image_question_type(self.context, other)
        if name not in self.known or not isinstance(other, str) or not other.strip():
            return item
        spec = self.known[name]
        return {**item, "task": name, "args": {spec.inputs[0].name: args[image], spec.inputs[1].name: other}}

    def ask_filled_image(self, name: str, fixed: dict[str, str]) -> tuple[str, dict[str, str]]:
        """The type and arguments of a task just made sound: a question answering whose context or question
        came out as an image (an argument filled with, or kept as, an output that is also an image: object
        detection's) asks the image, as :meth:`ask_image` would on that mended task. Without this a second
        mending would turn it, and mending would not be idempotent."""
        if name != "question-answering":
            return name, fixed
        image = next((k for k in ("context", "question") if self.is_image(fixed.get(k), mended=True)), None)
        if image is None:
            return name, fixed
        turned = self._turn({"task": name, "args": fixed}, fixed, image)
        return turned["task"], turned["args"]

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
                    new = self.latest(inp.kind, files_first=bool(value)) or self.make(inp.kind)
                elif not value or references(value):
                    new = self.latest(Kind.TEXT)
                    if new is None and not (references(value) and set(references(value)) <= self.dropped):
                        # the user's text, unless it was to work on what a dropped task would have made
                        # (and there is no earlier text output nor user's text file to take): then it goes too
                        new = self.user_text
            if new is None:
                if inp.required:
                    del self.out[mark:]  # converters added for a task that is dropped go too
                    self.dropped.add(old_id)
                    return
                continue
            fixed[inp.name] = new
        name, fixed = self.ask_filled_image(spec.name, fixed)
        self.id_map[old_id] = len(self.out)
        self.out.append({"id": len(self.out), "task": name, "dep": [-1], "args": fixed})


def salvage_plan(raw: Any, request: str = "", files: Sequence[str] = (), max_tasks: int = MAX_TASKS_LIMIT,
                 specs: Sequence[TaskSpec] = registry.TASKS) -> Plan:
    """Mend a decoded plan that failed validation, keeping every task that can be kept.

    Tasks are renumbered in order. A reference to a task that does not exist, or a file the
    user did not give, becomes the latest earlier output of the kind needed (or the user's
    file of that kind; for a text, the text the user gave: a quoted passage, a text file the
    request names, else the request itself); a reference to an output of the wrong kind takes the
    latest earlier output of the kind needed too, or the user's file of that kind, and only when there
    is neither gets a converter task in between (image-to-text, speech recognition, text-to-speech,
    text-to-image, text-to-video), as does a user's file of the wrong kind; an image, video or speech
    that is nowhere, when the request holds a word asking for one to be made (the lexicon of its
    language: "draw", "画", "vorlesen"), is made first
    from the latest text output, else the user's text; a question-answering task
    given an image, or with nothing to read but an image, becomes visual (or document) question
    answering; a task
    whose required input cannot be found is dropped, with the converters made for it, and so is a task
    whose text was to be a dropped task's output when there is no earlier text output to take instead
    (reading the request itself aloud would answer nothing). The steps of
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
