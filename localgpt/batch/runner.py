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

import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from localgpt.config import Settings
from localgpt.errors import ConfigError

if TYPE_CHECKING:
    from localgpt.pipeline import Pipeline
from localgpt.batch.inputs import BadLine, Entry, Item
from localgpt.batch.log import OutputLog
from localgpt.batch.progress import BatchSummary, Progress, StopSignal
from localgpt.batch.ray_runner import _ray_records
from localgpt.batch.records import PipelineFactory, Records, failure_record, invalid_record, run_item

# ---- running -----------------------------------------------------------------------------------

def _group_key(item: Item) -> tuple[int, tuple[str, ...]]:
    """Items with the same fixed plan shape together; items still to be planned last."""
    return (0, tuple(t.task for t in item.plan.tasks)) if item.plan else (1, ())


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
