"""The record written for each batch item: its result, its failure, or why its line was invalid."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from localgpt.config import Settings
from localgpt.errors import LocalGPTError
from localgpt.schema import RunResult

if TYPE_CHECKING:
    from localgpt.pipeline import Pipeline
from localgpt.batch.inputs import BadLine, Item

PipelineFactory = Callable[[Settings], "Pipeline"]
Records = Generator[dict[str, Any], None, None]
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
