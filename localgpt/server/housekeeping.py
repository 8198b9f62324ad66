"""Retention of the server's data folder: uploads and run folders do not grow forever.

An *item* is one upload (``uploads/u-.../``, its folder) or one run folder (``runs/<id>/``, removed whole). A sweep
removes, oldest first, every item older than ``retention_hours``, then more until the folder holds at
most ``max_bytes``; it never removes an item a running request uses (``in_use``, asked again just
before each removal) nor a run recorded as running. Leftover temporary files (``*.part``) older than an
hour go too. ``localgpt serve`` sweeps on start and then periodically, and logs what it removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from localgpt.runtime.runs import is_temporary, read_record

log = logging.getLogger(__name__)
TEMP_GRACE_SECONDS = 3600  # a temporary file this old belongs to no live writer


@dataclass
class Item:
    """One removable unit of the data folder."""

    path: Path
    bytes: int
    mtime: float


@dataclass
class SweepReport:
    """What one sweep removed (paths relative to the data folder), and the folder's size after it."""

    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_bytes: int = 0
    skipped_in_use: int = 0

    def text(self) -> str:
        return (f"removed {len(self.removed)} item(s), {self.freed_bytes / 1e6:.1f} MB; "
                f"{self.kept_bytes / 1e6:.1f} MB kept")


def _size(path: Path) -> tuple[int, float]:
    """Bytes under ``path`` and the newest modification time among its files (its own when empty)."""
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime
    total, newest = 0, path.stat().st_mtime
    for f in path.rglob("*"):
        try:
            st = f.stat()
        except OSError:  # removed meanwhile
            continue
        if f.is_file():
            total += st.st_size
        newest = max(newest, st.st_mtime)
    return total, newest


def items(root: Path) -> Iterator[Item]:
    """The uploads and run folders under the data folder ``root``."""
    for sub in ("uploads", "runs"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if is_temporary(path):
                continue
            try:
                size, mtime = _size(path)
            except OSError:
                continue
            yield Item(path, size, mtime)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep(root: Path, retention_hours: float, max_bytes: int, in_use: Callable[[], set[Path]] = set,
          now: float | None = None) -> SweepReport:
    """Apply the retention rules to the data folder ``root`` (see the module's text). ``retention_hours``
    0 keeps items of any age; ``max_bytes`` 0 sets no size limit. ``in_use()`` gives the paths (upload
    files, run folders) that running requests use."""
    now = time.time() if now is None else now
    report = SweepReport()
    for sub in ("uploads", "runs"):  # crash leftovers
        for tmp in (root / sub).glob("**/*.part") if (root / sub).is_dir() else ():
            try:
                if now - tmp.stat().st_mtime > TEMP_GRACE_SECONDS:
                    tmp.unlink(missing_ok=True)
            except OSError:
                continue
    found = sorted(items(root), key=lambda i: i.mtime)
    total = sum(i.bytes for i in found)
    cutoff = now - retention_hours * 3600 if retention_hours > 0 else None
    for item in found:
        too_old = cutoff is not None and item.mtime < cutoff
        too_big = max_bytes > 0 and total > max_bytes
        if not (too_old or too_big):
            continue
        if _used(item.path, in_use()) or _running(item.path):
            report.skipped_in_use += 1
            continue
        _remove(item.path)
        total -= item.bytes
        report.freed_bytes += item.bytes
        report.removed.append(item.path.relative_to(root).as_posix())
    report.kept_bytes = total
    return report


def _used(path: Path, in_use: set[Path]) -> bool:
    """Whether ``path`` (an item) or a file in it (an upload's file, a run's input) is in use."""
    path = path.resolve()
    return any(p == path or path in p.parents for p in in_use)


def _running(path: Path) -> bool:
    """Whether ``path`` is a run folder whose record says it is running."""
    if not path.is_dir():
        return False
    record = read_record(path)
    return record is not None and record.get("state") == "running"


def sweep_and_log(root: Path, retention_hours: float, max_bytes: int,
                  in_use: Callable[[], set[Path]] = set) -> SweepReport:
    """:func:`sweep`, logging what it removed (each item at INFO, a summary when anything went)."""
    report = sweep(root, retention_hours, max_bytes, in_use)
    for name in report.removed:
        log.info("housekeeping removed %s", name)
    if report.removed:
        log.info("housekeeping: %s", report.text())
    return report
