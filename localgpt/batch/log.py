"""The durable output log: one write and an fsync per record, a torn last line cut on restart, done ids skipped."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import InputError

if TYPE_CHECKING:
    pass


# ---- the output file ---------------------------------------------------------------------------

class OutputLog:
    """The output JSONL, held by one writer (an exclusive lock) and appended one fsynced line at a time.

    Opening it cuts off a torn last line left by a kill or a crash and reads the ids already done.

    Example::

        with OutputLog(Path("out.jsonl")) as log:
            if "a" not in log.ids:
                log.write({"id": "a", "status": "done"})
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise InputError(f"{path} is being written by another batch run",
                                 "wait for it to finish, or write to another output file") from exc
            if created:
                _fsync_dir(path.parent)
            self.ids: set[str] = set()
            self.repaired = self._load()
        except BaseException:
            os.close(self.fd)
            raise

    def _load(self) -> int:
        """Read the ids written so far; returns how many bytes of a torn tail were cut off."""
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size, 0)
        keep = data.rfind(b"\n") + 1
        lines = data[:keep].split(b"\n")[:-1]
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self.ids.add(str(rec["id"]))
            except (ValueError, TypeError, KeyError) as exc:
                if number == len(lines):  # a last line cut short by a power cut (no fsync yet): drop it
                    keep -= len(line) + 1
                    break
                raise InputError(f"line {number} of {self.path} is not a batch result",
                                 "the file was changed by something else; fix or delete that line, "
                                 "or write to another output file") from exc
        if keep < size:
            os.ftruncate(self.fd, keep)
            os.fsync(self.fd)
        return size - keep

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line and make it durable before returning."""
        data = memoryview((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
        os.fsync(self.fd)
        self.ids.add(str(record["id"]))

    def close(self) -> None:
        """Release the lock and the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OutputLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
