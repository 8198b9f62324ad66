"""Run folders and produced files (content-addressed names), each run's record (``run.json``), and the
user's input files."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from localgpt import tasks as registry
from localgpt.errors import InputError
from localgpt.fileio import sha256_file
from localgpt.runtime.media import MAX_INPUT_BYTES, check_media
from localgpt.schema import Plan
from localgpt.tasks import Kind


class RunDir:
    """The folder of one run: produced files get content-addressed names that never collide.

    Example::

        out = RunDir.create(Path("runs"))
        wav = out.save(b"RIFF...", ".wav")
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: Path) -> RunDir:
        """A new, empty run folder under ``root``."""
        name = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
        return cls(Path(root) / name)

    def save(self, data: bytes, suffix: str) -> Path:
        """Write ``data`` as a new file named by its content hash; returns its path."""
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return self.adopt(Path(tmp), suffix)

    def temp_path(self, suffix: str) -> Path:
        """A fresh path inside the run folder for a writer that needs a file name."""
        return self.path / f".{uuid.uuid4().hex}{suffix}.part"

    def adopt(self, tmp: Path, suffix: str) -> Path:
        """Rename a finished temporary file to its content-addressed name."""
        final = self.path / f"{sha256_file(tmp)[:16]}{suffix}"
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
        return final

    @property
    def id(self) -> str:
        """The run's id: its folder's name."""
        return self.path.name

    def record(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the run's record (``run.json``), written atomically; returns the record."""
        data = read_record(self.path) or {"id": self.id}
        data.update(fields, updated=time.time())
        write_json_atomic(self.path / RECORD, data)
        return data


RECORD = "run.json"  # a run's record: id, state (running, finished, failed), times, error, files
RUN_STATES = ("running", "finished", "failed")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so a reader (or a crash)
    sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(folder: Path) -> dict[str, Any] | None:
    """A run folder's record, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a writer's temporary file (``*.part``), left behind only by a crash."""
    return path.name.endswith(".part")


def recover_runs(root: Path) -> tuple[list[str], int]:
    """After a crash: every run under ``root`` still recorded as running becomes failed ("interrupted:
    server stopped"), and temporary files in run folders are removed. Returns the ids of the runs
    failed and the number of files removed. Call it only when no run is in progress."""
    failed: list[str] = []
    removed = 0
    if not root.is_dir():
        return failed, removed
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for leftover in [f for f in folder.iterdir() if f.is_file() and is_temporary(f)]:
            leftover.unlink(missing_ok=True)
            removed += 1
        record = read_record(folder)
        if record is not None and record.get("state") == "running":
            RunDir(folder).record(state="failed", error="interrupted: server stopped")
            failed.append(folder.name)
    return failed, removed


def planner_names(files: Sequence[str | Path]) -> list[str]:
    """``files`` as the planner is shown them: each by its bare name, as users and the planner's demos
    write file names (fewer tokens to read and to copy into a plan), unless another of them has the same
    name; then as given."""
    counts = Counter(Path(f).name for f in files)
    return [Path(f).name if counts[Path(f).name] == 1 else str(f) for f in files]


def with_paths(plan: Plan, files: Sequence[str | Path]) -> Plan:
    """``plan`` with every file argument (an input of a media kind) that is one of ``files``'
    :func:`planner_names` written as that file again, as the rest of a run (events, results, the server's
    ids) names the user's files. A text is left as written, even one that reads as a file name."""
    given = {name: str(f) for name, f in zip(planner_names(files), files, strict=True)}

    def is_file(task: str, arg: str) -> bool:
        if not registry.is_known(task):
            return True
        inp = registry.get(task).input(arg)
        return inp is not None and inp.kind is not Kind.TEXT

    tasks = [t.model_copy(update={"args": {k: given.get(v, v) if isinstance(v, str) and is_file(t.task, k) else v
                                           for k, v in t.args.items()}}) for t in plan.tasks]
    return plan.model_copy(update={"tasks": tasks})


class InputFiles:
    """The files a user may refer to, checked for existence, readability and kind.

    Paths outside ``roots`` (and not handed in explicitly) are refused; a file checked for a
    kind must decode as that kind and be at most ``max_bytes`` (None: no limit).
    """

    def __init__(self, files: Iterable[str | Path] = (), roots: Iterable[str | Path] = (),
                 max_bytes: int | None = MAX_INPUT_BYTES) -> None:
        self.files: list[Path] = []
        self.roots = [Path(r).resolve() for r in roots]
        self.max_bytes = max_bytes
        for f in files:
            self.files.append(self.check(f, explicit=True))

    def names(self) -> list[str]:
        """The given files as the planner sees them (:func:`planner_names`); :meth:`find` resolves each."""
        return planner_names(self.files)

    def allowed(self, path: Path) -> bool:
        """Whether ``path`` lies inside an allowed root or is a given file."""
        resolved = path.resolve()
        if resolved in self.files:
            return True
        return any(resolved == r or r in resolved.parents for r in self.roots)

    def find(self, value: str) -> Path | None:
        """A given file matching ``value`` by path or by bare name."""
        want = Path(value)
        bare = want.name == value  # a bare name matches a given file of that name; a path must match exactly
        for f in self.files:
            if f == want.expanduser().resolve() or (bare and f.name == want.name):
                return f
        return None

    def check(self, value: str | Path, explicit: bool = False, kind: Kind | None = None) -> Path:
        """Resolve a user file, refusing missing, unreadable, disallowed or wrong-kind files."""
        path = Path(value).expanduser()
        if not explicit:
            found = self.find(str(value))
            if found is not None:
                path = found
            elif not self.allowed(path):
                raise InputError(
                    f"file '{value}' is outside the folders localgpt may read",
                    "pass it with --file, or run from the folder that holds it",
                )
        if not path.exists():
            raise InputError(f"file '{value}' does not exist", "check the path")
        if not path.is_file():
            raise InputError(f"'{value}' is not a file")
        if not os.access(path, os.R_OK):
            raise InputError(f"file '{value}' cannot be read (permission denied)")
        if kind is not None:
            try:
                check_media(path, kind, self.max_bytes)
            except InputError as exc:
                raise InputError(exc.message.replace(f"'{path.name}'", f"'{value}'", 1), exc.hint) from exc
        return path.resolve()
