"""Progress line, summary and signal handling of a batch run."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    pass


# ---- progress and summary ----------------------------------------------------------------------

def _clock(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress line on a stream: a bar, counts, items per minute and the time left.

    On a terminal the line is redrawn in place; elsewhere a line is printed every ``every`` seconds.
    """

    def __init__(self, total: int, stream: TextIO | None, every: float = 10.0, width: int = 24) -> None:
        self.total = total
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.every = 0.2 if self.tty else every
        self.width = width
        self.counts: dict[str, int] = {}
        self.start = time.monotonic()
        self.last = 0.0
        self.shown = 0

    def update(self, status: str) -> None:
        """Count one finished item."""
        self.counts[status] = self.counts.get(status, 0) + 1
        self.draw()

    def line(self) -> str:
        """The progress line as it would be shown now."""
        n = sum(self.counts.values())
        elapsed = max(time.monotonic() - self.start, 1e-9)
        filled = self.width * n // self.total if self.total else self.width
        bad = sum(v for k, v in self.counts.items() if k != "done")
        rate = n / elapsed * 60
        eta = _clock((self.total - n) / (n / elapsed)) if n else "?"
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {n}/{self.total} "
                f"({self.counts.get('done', 0)} ok, {bad} not) {rate:.1f} items/min, ETA {eta}")

    def draw(self, final: bool = False) -> None:
        """Show the line if it is time to (always when ``final``)."""
        if self.stream is None or not self.total:
            return
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        text = self.line()
        if self.tty:
            self.stream.write("\r" + text.ljust(self.shown) + ("\n" if final else ""))
            self.shown = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


@dataclass
class BatchSummary:
    """What a batch run did: counts per status, items skipped as already done, and the time."""

    output: str
    total: int = 0
    done: int = 0
    partial: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    repaired_bytes: int = 0

    @property
    def processed(self) -> int:
        """Items written by this run."""
        return self.done + self.partial + self.failed + self.invalid

    @property
    def items_per_minute(self) -> float:
        """Items written per minute of this run."""
        return self.processed / self.seconds * 60 if self.seconds > 0 else 0.0

    def count(self, status: str) -> None:
        """Count one written record."""
        setattr(self, status, getattr(self, status) + 1)

    def text(self) -> str:
        """One line for a person."""
        head = "batch interrupted (rerun the same command to continue)" if self.interrupted else "batch finished"
        return (f"{head}: {self.done} done, {self.partial} partial, {self.failed} failed, {self.invalid} invalid, "
                f"{self.skipped} skipped (already in {self.output}) in {_clock(self.seconds)} "
                f"({self.items_per_minute:.1f} items/min)")


class StopSignal:
    """Ctrl-C during a batch: the first stops handing out items (those running finish and are written),
    a second abandons them (KeyboardInterrupt). Only in the main thread, and only where Python's own
    SIGINT handler is in place; elsewhere Ctrl-C interrupts as usual."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.event = threading.Event()
        self.stream = stream
        self.previous: Any = None

    def is_set(self) -> bool:
        """Whether the batch is stopping."""
        return self.event.is_set()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        if self.stream is not None:
            self.stream.write("\nstopping: finishing the items in progress (Ctrl-C again to abandon them)\n")
            self.stream.flush()

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
