"""Batch runs: one request per JSONL line in, one structured result per line out.

A single writer appends each result with one ``write`` and an ``fsync``, so a crash or a kill at any
moment leaves whole lines (at worst a torn last line, which the next start cuts off); a rerun skips
the ids already in the output. Items run on threads that share one pipeline (experts stay loaded
across items), or on Ray actors that each hold their own pipeline; the driver writes either way.

Example::

    entries = read_items(Path("requests.jsonl"))
    summary = run_batch(entries, Path("results.jsonl"), Settings(), workers=2, progress=sys.stderr)
    print(summary.text())
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from localgpt.config import Settings
from localgpt.errors import ConfigError, InputError, LocalGPTError, PlanError
from localgpt.planner import validate_plan
from localgpt.schema import Plan, RunResult

if TYPE_CHECKING:
    from localgpt.pipeline import Pipeline

PipelineFactory = Callable[[Settings], "Pipeline"]
Records = Generator[dict[str, Any], None, None]
RAY_START_TIMEOUT = 300.0  # seconds the Ray workers get to build their pipelines


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
               max_tasks: int = 8) -> Entry:
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


def read_items(path: Path, default_plan: Any = None, max_tasks: int = 8) -> list[Entry]:
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
                 max_tasks: int = 8) -> list[Entry]:
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


# ---- records -----------------------------------------------------------------------------------

def _record(item_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A result line; every line has the same keys."""
    base: dict[str, Any] = {
        "id": item_id, "status": status, "line": None, "request": None, "files": [], "plan": None,
        "planned": False, "models": {}, "outputs": {}, "tasks": [], "produced_files": [], "answer": "",
        "error": None, "run_dir": None, "timings": {}, "llm_calls": 0, "worker": None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    base.update(fields)
    return base


def _error(exc: BaseException) -> dict[str, Any]:
    """An exception as the ``error`` field of a record."""
    if isinstance(exc, LocalGPTError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__, "hint": None}


def invalid_record(bad: BadLine) -> dict[str, Any]:
    """The record of an input line that could not run."""
    return _record(bad.id, "invalid", line=bad.line, input=bad.text,
                   error={"type": "InputError", "message": bad.message,
                          "hint": "fix the line and give it a new id (or remove this record) to run it"})


def failure_record(item: Item, exc: BaseException, seconds: float, worker: str) -> dict[str, Any]:
    """The record of an item whose run raised."""
    plan = [t.model_dump() for t in item.plan.tasks] if item.plan else None
    return _record(item.id, "failed", line=item.line, request=item.request, files=item.files, plan=plan,
                   planned=item.plan is None, error=_error(exc), timings={"total": round(seconds, 4)},
                   worker=worker)


def result_record(item: Item, result: RunResult, seconds: float, worker: str) -> dict[str, Any]:
    """The record of a finished run: ``done`` when every task is done, ``partial`` when some are,
    ``failed`` when none is."""
    statuses = {r.status for r in result.results}
    status = "done" if statuses <= {"done"} else "partial" if "done" in statuses else "failed"
    problems = [f"task {r.id} ({r.task}) {r.status}: {r.error}" for r in result.results if r.status != "done"]
    error = {"type": "TaskFailed", "message": "; ".join(problems), "hint": None} if problems else None
    tasks = [{"id": r.id, "task": r.task, "status": r.status, "model": r.model, "outputs": r.outputs,
              "error": r.error, "seconds": round(r.seconds, 4)} for r in result.results]
    timings = {k: round(v, 4) for k, v in result.timings.items()} | {"total": round(seconds, 4)}
    return _record(item.id, status, line=item.line, request=item.request, files=item.files,
                   plan=[t.model_dump() for t in result.plan.tasks], planned=item.plan is None,
                   models={str(s.task_id): s.model for s in result.selections},
                   outputs={str(r.id): r.outputs for r in result.results if r.outputs}, tasks=tasks,
                   produced_files=result.files, answer=result.answer, error=error, run_dir=result.run_dir,
                   timings=timings, llm_calls=result.llm_calls, worker=worker)


def run_item(pipeline: Pipeline, item: Item, respond: bool = True, worker: str = "") -> dict[str, Any]:
    """Run one item on ``pipeline``; any failure becomes a ``failed`` record instead of an exception."""
    start = time.perf_counter()
    try:
        result = pipeline.run(item.request, item.files, plan=item.plan, respond=respond)
    except Exception as exc:
        if not isinstance(exc, LocalGPTError):
            logging.getLogger(__name__).exception("batch item %s failed", item.id)
        return failure_record(item, exc, time.perf_counter() - start, worker)
    return result_record(item, result, time.perf_counter() - start, worker)


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


# ---- running -----------------------------------------------------------------------------------

def _group_key(item: Item) -> tuple[int, tuple[str, ...]]:
    """Items with the same fixed plan shape together; items still to be planned last."""
    return (0, tuple(t.task for t in item.plan.tasks)) if item.plan else (1, ())


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


def _local_records(items: Sequence[Item], pipeline: Pipeline, workers: int, respond: bool,
                   stop: threading.Event) -> Records:
    """Run ``items`` on ``workers`` threads sharing ``pipeline``; yield records as they finish.

    Once ``stop`` is set no item starts; the records of those running still come.
    """
    todo: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    done: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    halt = threading.Event()

    def work(name: str) -> None:
        try:
            while not (stop.is_set() or halt.is_set()):
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put(run_item(pipeline, item, respond, name))
                except BaseException as exc:  # never leave the writer waiting for an item
                    done.put(failure_record(item, exc, 0.0, name))
        finally:
            done.put(None)  # this thread has ended

    threads = min(workers, len(items))
    for n in range(threads):
        threading.Thread(target=work, args=(f"thread-{n}",), name=f"localgpt-batch-{n}", daemon=True).start()
    try:
        while threads:
            record = done.get()
            if record is None:
                threads -= 1
            else:
                yield record
    finally:
        halt.set()  # abandoned (a second Ctrl-C, an error): take no new item


class BatchWorker:
    """The state of one Ray actor: a pipeline built on the actor from the driver's settings."""

    def __init__(self, settings: dict[str, Any], factory: PipelineFactory | None, respond: bool,
                 cwd: str | None) -> None:
        if cwd and os.path.isdir(cwd):  # relative paths in items mean the same as on the driver
            os.chdir(cwd)
        if factory is None:
            from localgpt.pipeline import Pipeline

            factory = Pipeline.from_settings
        self.pipeline = factory(Settings(**settings))
        self.respond = respond
        import ray

        self.name = f"ray:{ray.util.get_node_ip_address()}:{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        """The worker's name, once its pipeline is built."""
        return self.name

    def run(self, item: Item) -> dict[str, Any]:
        """The record of one item."""
        return run_item(self.pipeline, item, self.respond, self.name)


def _start_ray(address: str | None, workers: int, cpus: float) -> bool:
    """Connect to the cluster at ``address``, or start a private local instance; True when started here."""
    local = address in (None, "", "local")
    if local and "ray" not in sys.modules:  # Ray then takes the loopback address for its node and its ports
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("Ray is not installed", "pip install 'localgpt[batch]'") from exc
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if local:  # "local" even when RAY_ADDRESS names a cluster
            ray.init(address="local", num_cpus=max(1, int(workers * cpus + 0.999)), include_dashboard=False,
                     _node_ip_address="127.0.0.1", **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or reach Ray at {address or 'a local instance'}: {exc}",
                          "start the cluster first (ray start --head), or run without --ray") from exc
    return True


def _ray_records(items: Sequence[Item], settings: Settings, workers: int, respond: bool, address: str | None,
                 factory: PipelineFactory | None, cpus: float, stop: threading.Event) -> Records:
    """Run ``items`` on ``workers`` Ray actors; yield records as they finish.

    An actor that dies (killed, out of memory) is replaced and its items are tried once more. Once
    ``stop`` is set no item is handed out; the records of those handed out still come.
    """
    started = _start_ray(address, workers, cpus)  # before Ray is imported here: it may set Ray's environment
    import ray

    actors: list[Any] = []
    try:
        actor_cls = ray.remote(BatchWorker).options(num_cpus=cpus)
        data = settings.model_dump()
        data["store"] = Path(settings.store).resolve()
        data["runs_dir"] = Path(settings.runs_dir).resolve()
        cwd = os.getcwd()

        def await_ready(actor: Any) -> Any:
            try:
                ray.get(actor.ready.remote(), timeout=RAY_START_TIMEOUT)
            except ray.exceptions.GetTimeoutError as exc:
                raise ConfigError(f"a Ray worker did not start within {RAY_START_TIMEOUT:.0f} s",
                                  "the cluster may lack free CPUs: lower --workers or --ray-cpus") from exc
            except ray.exceptions.RayError as exc:
                raise ConfigError(f"a Ray worker could not build its pipeline: {exc}",
                                  "check the settings and that the model store is on every node") from exc
            return actor

        def new_actor() -> Any:
            return actor_cls.remote(data, factory, respond, cwd)

        pending = deque(items)
        starting = [new_actor() for _ in range(min(workers, len(items)))]
        actors.extend(starting)  # killed in the end even when one fails to start
        for actor in starting:  # started together, checked one by one
            await_ready(actor)
        inflight: dict[Any, tuple[int, Any, Item]] = {}
        retried: set[str] = set()

        def submit(slot: int) -> None:
            if pending and not stop.is_set():
                item = pending.popleft()
                inflight[actors[slot].run.remote(item)] = (slot, actors[slot], item)

        for _ in range(2):  # one running and one queued, so an actor never waits for the driver
            for slot in range(len(actors)):
                submit(slot)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            slot, actor, item = inflight.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                if actors[slot] is actor:  # replace a dead actor once, for all its items
                    ray.kill(actor)
                    actors[slot] = await_ready(new_actor())
                if item.id not in retried:
                    retried.add(item.id)
                    pending.appendleft(item)
                    submit(slot)
                    continue
                record = failure_record(item, exc, 0.0, "ray")
            except ray.exceptions.RayError as exc:
                record = failure_record(item, exc, 0.0, "ray")
            submit(slot)
            yield record
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def run_batch(entries: Sequence[Entry], output: Path, settings: Settings | None = None, *,
              workers: int | None = None, ray: str | None = None, ray_cpus: float = 1.0,
              group_by_plan: bool = False, respond: bool = True, progress: TextIO | None = None,
              pipeline_factory: PipelineFactory | None = None) -> BatchSummary:
    """Run every entry not yet in ``output`` and append its result there.

    Args:
        entries: items and bad lines, from :func:`read_items` or :func:`folder_items`.
        output: the JSONL results file; created, or resumed (ids already there are skipped).
        settings: the pipeline's settings (default: from the environment).
        workers: items run at once (default: ``settings.batch_workers``).
        ray: None to run on local threads; ``"local"`` for a private local Ray instance (on the loopback
            address, without usage reports: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` and
            ``RAY_USAGE_STATS_ENABLED`` are set to 0 in the environment unless already set); else a Ray
            address (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``) of a running cluster.
        ray_cpus: CPUs each Ray actor reserves.
        group_by_plan: run items with the same fixed plan shape one after another.
        respond: False skips the LLM's answer (faster; the outputs are still recorded).
        progress: where the progress line goes (None: nowhere).
        pipeline_factory: builds a pipeline from settings (default ``Pipeline.from_settings``); for
            Ray it must be importable on the workers (a module-level function).

    Example::

        run_batch(read_items(Path("in.jsonl")), Path("out.jsonl"), Settings(), workers=2, respond=False)
    """
    settings = settings or Settings.load()
    workers = settings.batch_workers if workers is None else workers
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    summary = BatchSummary(output=str(output))
    start = time.monotonic()
    with OutputLog(output) as log:
        summary.repaired_bytes = log.repaired
        todo: list[Entry] = []
        for entry in entries:
            if entry.id in log.ids:
                summary.skipped += 1
            else:
                todo.append(entry)
        summary.total = len(todo)
        bar = Progress(len(todo), progress)
        items = [e for e in todo if isinstance(e, Item)]
        if group_by_plan:
            items.sort(key=_group_key)
        stop = StopSignal(progress)
        try:
            with stop:
                for entry in todo:
                    if isinstance(entry, BadLine):
                        log.write(invalid_record(entry))
                        summary.count("invalid")
                        bar.update("invalid")
                if items:
                    _run_items(items, log, summary, bar, settings, workers, ray, ray_cpus, respond,
                               pipeline_factory, stop.event)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            summary.interrupted = summary.interrupted or stop.is_set()
            summary.seconds = time.monotonic() - start
            if summary.processed:
                bar.draw(final=True)
    return summary


def _run_items(items: list[Item], log: OutputLog, summary: BatchSummary, bar: Progress, settings: Settings,
               workers: int, ray: str | None, ray_cpus: float, respond: bool,
               factory: PipelineFactory | None, stop: threading.Event) -> None:
    """Run ``items`` locally or on Ray, writing each record as it arrives."""
    pipeline = None
    if ray is None:
        if factory is None:
            from localgpt.pipeline import Pipeline

            factory = Pipeline.from_settings
        pipeline = factory(settings)
        records = _local_records(items, pipeline, workers, respond, stop)
    else:
        records = _ray_records(items, settings, workers, respond, ray, factory, ray_cpus, stop)
    try:
        for record in records:
            log.write(record)
            summary.count(record["status"])
            bar.update(record["status"])
    finally:
        records.close()
        if pipeline is not None:
            pipeline.close()

