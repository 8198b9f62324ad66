"""File helpers shared by the model store and the runtime: hashing, copying while hashing, the free-disk
check, byte counts for people, a progress line on stderr.

Example::

    digest = sha256_file(Path("model.onnx"))
    check_disk(Path("model_store"), 300_000_000, "for whisper-tiny-en")
    print_err(f"fetched {human_size(1_117_320_768)}")  # "fetched 1.1 GB"
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from localgpt.errors import StoreError

BLOCK = 1 << 20  # bytes read at a time
SPARE = 64 * 1000 * 1000  # bytes left free on a disk after an install


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    with Path(path).open("rb") as f:
        return copy_hashing([f])[0]


def copy_hashing(sources: Iterable[IO[bytes]], sink: IO[bytes] | None = None) -> tuple[str, int]:
    """Stream ``sources`` one after the other into ``sink`` (None: nowhere), hashing as it goes;
    returns the sha256 hex digest and the byte count of everything read."""
    digest = hashlib.sha256()
    size = 0
    for src in sources:
        while block := src.read(BLOCK):
            digest.update(block)
            if sink is not None:
                sink.write(block)
            size += len(block)
    return digest.hexdigest(), size


def check_disk(folder: Path, needed: int, what: str) -> None:
    """StoreError when the disk of ``folder`` (or of its nearest existing parent) has less than ``needed``
    bytes plus :data:`SPARE` free; ``what`` ends the message's opening ("for X", "to install X")."""
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + SPARE:
        raise StoreError(f"not enough disk space {what}: it needs {human_size(needed)} more, "
                         f"{probe} has {human_size(free)} free",
                         hint="free some space or use another --store")


def human_size(n: int) -> str:
    """A byte count in decimal units: ``1117320768`` -> ``'1.1 GB'``, ``612`` -> ``'612 bytes'``."""
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def print_err(line: str) -> None:
    """Print one progress or error line on stderr at once (the default progress of long store operations)."""
    print(line, file=sys.stderr, flush=True)
