"""Reading a batch: JSONL lines or a folder's files as items, bad lines kept with their reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.config import DEFAULT_MAX_TASKS
from localgpt.errors import InputError, PlanError
from localgpt.planning.validate import validate_plan
from localgpt.schema import Plan

if TYPE_CHECKING:
    pass


@dataclass
class Item:
    """One request of a batch: its id, the request text, its files and an optional fixed plan."""

    id: str
    request: str
    files: list[str] = field(default_factory=list)
    plan: Plan | None = None
    line: int | None = None


@dataclass
class BadLine:
    """An input line that cannot run; it is recorded as an ``invalid`` result and the batch goes on."""

    id: str
    line: int
    message: str
    text: str = ""


Entry = Item | BadLine


# ---- reading the input -------------------------------------------------------------------------

def load_plan(value: str) -> Any:
    """A plan given on the command line: a JSON file's path or the JSON itself (list of tasks)."""
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else value
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"--plan is neither a readable JSON file nor JSON: {exc}",
                         'give a file or e.g. \'[{"id": 0, "task": "automatic-speech-recognition", '
                         '"args": {"audio": "{file}"}}]\'') from exc


def _fill(value: Any, file: str, name: str) -> Any:
    """``value`` (JSON) with ``{file}`` and ``{name}`` replaced in every string."""
    if isinstance(value, str):
        return value.replace("{file}", file).replace("{name}", name)
    if isinstance(value, list):
        return [_fill(v, file, name) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, file, name) for k, v in value.items()}
    return value


def _default_plan(raw: Any, request: str, files: list[str], max_tasks: int) -> Plan:
    """A plan given for every item, checked for this item; a bad one stops the batch before it starts."""
    try:
        return validate_plan(raw, request, files, max_tasks)
    except PlanError as exc:
        raise PlanError(f"the plan given for every item is invalid: {exc.message}", exc.hint) from exc


def parse_line(text: str, number: int, seen: dict[str, int], default_plan: Any = None,
               max_tasks: int = DEFAULT_MAX_TASKS) -> Entry:
    """One input line as an :class:`Item`, or a :class:`BadLine` saying what is wrong with it.

    ``seen`` maps ids already read to their line and is updated; ids are compared as strings.
    """
    short = text if len(text) <= 300 else text[:297] + "..."
    synthetic = f"!line{number}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return BadLine(synthetic, number, f"line {number} is not JSON: {exc}", short)
    if not isinstance(data, dict):
        return BadLine(synthetic, number, f"line {number} is not a JSON object", short)
    raw_id = data.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        return BadLine(synthetic, number, f"line {number} has no id (a non-empty string or an integer)", short)
    item_id = str(raw_id)
    if item_id in seen:
        return BadLine(synthetic, number, f"line {number} repeats the id {item_id!r} of line {seen[item_id]}", short)
    seen[item_id] = number
    request = data.get("request")
    if not isinstance(request, str) or not request.strip():
        return BadLine(item_id, number, f"line {number} (id {item_id!r}) has no request text", short)
    files = data.get("files", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        return BadLine(item_id, number, f"line {number} (id {item_id!r}): files must be a list of paths", short)
    plan: Plan | None = None
    if data.get("plan") is not None:
        try:
            plan = validate_plan(data["plan"], request, files, max_tasks)
        except PlanError as exc:
            return BadLine(item_id, number, f"line {number} (id {item_id!r}) has a bad plan: {exc.message}", short)
    elif default_plan is not None:
        plan = _default_plan(_fill(default_plan, files[0] if files else "", item_id), request, files, max_tasks)
    return Item(item_id, request, files, plan, number)


def read_items(path: Path, default_plan: Any = None, max_tasks: int = DEFAULT_MAX_TASKS) -> list[Entry]:
    """Every line of a JSONL input as an item or a bad line; blank lines are ignored.

    Each line is ``{"id": ..., "request": ..., "files": [...]?, "plan": [...]?}``; ``default_plan``
    (with ``{file}`` replaced by the item's first file) serves items without a plan.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the batch input {path}: {exc.strerror or exc}", "check the path") from exc
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), 1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            entries.append(BadLine(f"!line{number}", number, f"line {number} is not UTF-8 text"))
            continue
        if text:
            entries.append(parse_line(text, number, seen, default_plan, max_tasks))
    return entries


def folder_items(folder: Path, template: str, pattern: str = "*", default_plan: Any = None,
                 max_tasks: int = DEFAULT_MAX_TASKS) -> list[Entry]:
    """One item per file under ``folder`` matching ``pattern`` (recursively; hidden files left out).

    The id is the path relative to ``folder``; in ``template`` and ``default_plan``, ``{file}`` becomes
    the file's path and ``{name}`` its relative path.
    """
    if not folder.is_dir():
        raise InputError(f"--files {folder} is not a folder", "give the folder that holds the files to process")
    if "{file}" not in template and "{name}" not in template:
        raise InputError("the --request template names no file", 'put {file} in it, e.g. "Transcribe {file}"')
    paths = sorted(p for p in folder.rglob(pattern)
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    items: list[Entry] = []
    for path in paths:
        name = path.relative_to(folder).as_posix()
        request = template.replace("{file}", str(path)).replace("{name}", name)
        plan = None
        if default_plan is not None:
            plan = _default_plan(_fill(default_plan, str(path), name), request, [str(path)], max_tasks)
        items.append(Item(name, request, [str(path)], plan))
    return items
