"""Stage 3: run the task graph.

Every task whose deps are done starts at once on a thread pool; ``<resource>-N`` arguments are
replaced by task N's output (text, or a produced file); a failed task marks its dependants
skipped with the cause; each task has a timeout. A task may run through a stand-in (see
:class:`~localgpt.runtime.selector.StandIn`): in place of its model, or after its model reported that it
found nothing (``data["empty"]``). This module imports no model library.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait

from localgpt import tasks as registry
from localgpt.errors import InputError, LocalGPTError
from localgpt.planning.references import REFERENCE, is_pure_reference, references
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.runs import InputFiles, RunDir
from localgpt.runtime.selector import StandIn
from localgpt.schema import Event, ModelCard, Plan, Task, TaskResult
from localgpt.tasks import Kind

Emit = Callable[[Event], None]
POLL_SECONDS = 0.5  # how often running tasks are checked against the timeout


def resolve_args(task: Task, results: dict[int, TaskResult], files: InputFiles) -> dict[str, str]:
    """The task's arguments with references replaced and user files checked.

    A media argument becomes an absolute file path of the right kind; text arguments get each
    ``<resource>-N`` replaced by task N's text output.
    """
    spec = registry.get(task.task)
    resolved: dict[str, str] = {}
    for name, value in task.args.items():
        inp = spec.input(name)
        kind = inp.kind if inp else Kind.TEXT
        if kind is not Kind.TEXT:
            if is_pure_reference(value):
                ref = references(value)[0]
                produced = results[ref].outputs.get(kind.value)
                if produced is None:
                    raise InputError(f"task {ref} produced no {kind.value} for task {task.id}")
                resolved[name] = produced
            else:
                try:  # checked at the door: exists, allowed, the right kind, decodable, not too big
                    resolved[name] = str(files.check(value.strip(), kind=kind))
                except InputError as exc:
                    raise InputError(f"task {task.id} ({task.task}), argument '{name}': {exc.message}",
                                     exc.hint) from exc
            continue

        def text_of(match: object) -> str:
            ref = int(match.group(1))  # type: ignore[attr-defined]
            out = results[ref].outputs
            if "text" in out:
                return out["text"]
            return next(iter(out.values()), "")

        resolved[name] = REFERENCE.sub(text_of, value)
    return resolved


class Executor:
    """Runs plans with experts from a pool.

    Example::

        results = Executor(pool, max_workers=4, timeout=600).run(plan, cards, files, run_dir, emit)
    """

    def __init__(self, pool: ModelPool, *, max_workers: int = 4, timeout: float = 600.0) -> None:
        self.pool = pool
        self.max_workers = max_workers
        self.timeout = timeout

    def _run_one(self, task: Task, card: ModelCard, args: dict[str, str], out: RunDir,
                 started: dict[int, float], stand: StandIn | None = None,
                 fallback: StandIn | None = None) -> TaskResult:
        begin = time.perf_counter()
        if stand is not None:
            return self._run_stand_in(task, stand, args, out, started, begin)
        with self.pool.use(card) as expert:
            started[task.id] = time.monotonic()  # the timeout counts from here, not from the queue
            produced = expert.run(task.task, args, out)
        spec = registry.get(task.task)
        if spec.output.value not in produced.outputs:
            raise LocalGPTError(f"model '{card.id}' returned no {spec.output.value} for task {task.id} ({task.task})")
        if fallback is not None and isinstance(produced.data, dict) and produced.data.get("empty"):
            why = f"model '{card.id}' found nothing for {task.task} ({produced.outputs.get('text', '')})"
            return self._run_stand_in(task, fallback, args, out, started, begin, why)
        return TaskResult(id=task.id, task=task.task, args=args, status="done", model=card.id,
                          outputs=produced.outputs, data=produced.data, seconds=time.perf_counter() - begin)

    def _run_stand_in(self, task: Task, stand: StandIn, args: dict[str, str], out: RunDir,
                      started: dict[int, float], begin: float, why: str = "") -> TaskResult:
        """Run ``stand.task`` on the arguments it takes, then its ``then`` step with the planned task's
        ``text`` as the question and the stand-in's text as the context."""
        sub_spec = registry.get(stand.task)
        sub_args = {k: v for k, v in args.items() if sub_spec.input(k) is not None}
        with self.pool.use(stand.card) as expert:
            started.setdefault(task.id, time.monotonic())
            produced = expert.run(stand.task, sub_args, out)
        outputs, data = produced.outputs, produced.data
        if stand.then is not None and stand.then_card is not None:
            then_args = {"question": args.get("text", ""), "context": produced.outputs.get("text", "")}
            with self.pool.use(stand.then_card) as expert:
                answer = expert.run(stand.then, then_args, out)
            outputs, data = answer.outputs, {"stand_in": produced.data, "then": answer.data}
        spec = registry.get(task.task)
        if spec.output.value not in outputs:
            raise LocalGPTError(f"model '{stand.card.id}' (standing in) returned no {spec.output.value} for task "
                                f"{task.id} ({task.task})")
        return TaskResult(id=task.id, task=task.task, args=args, status="done", model=stand.card.id,
                          outputs=outputs, data=data, seconds=time.perf_counter() - begin,
                          stand_in=stand.task, note=stand.note(why))

    @staticmethod
    def _spawn(fn: Callable[..., TaskResult], *args: object) -> Future[TaskResult]:
        """Run ``fn`` on a daemon thread: a task that times out must not keep the process alive."""
        fut: Future[TaskResult] = Future()

        def work() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to the collector, which reports it
                fut.set_exception(exc)

        threading.Thread(target=work, name="localgpt-task", daemon=True).start()
        return fut

    def run(self, plan: Plan, cards: dict[int, ModelCard], files: InputFiles, out: RunDir,
            emit: Emit = lambda e: None, failed: dict[int, str] | None = None,
            stand_ins: dict[int, StandIn] | None = None,
            fallbacks: dict[int, StandIn] | None = None) -> list[TaskResult]:
        """Run every task of ``plan``; ``failed`` lists tasks already failed (e.g. no model) with why;
        ``stand_ins`` run in place of a task's model, ``fallbacks`` when its model finds nothing.

        At most ``max_workers`` tasks run at once. A task that runs longer than the timeout is
        failed; its thread cannot be stopped and finishes in the background.
        """
        results: dict[int, TaskResult] = {}
        waiting = {t.id: t for t in plan.tasks}

        def finish(result: TaskResult) -> None:
            results[result.id] = result
            waiting.pop(result.id, None)
            emit(Event(type="task_done" if result.status == "done" else "task_failed", data=result.model_dump()))

        for tid, why in (failed or {}).items():
            task = plan.by_id(tid)
            finish(TaskResult(id=tid, task=task.task, args=task.args, status="failed", error=why))

        running: dict[Future[TaskResult], Task] = {}
        started: dict[int, float] = {}
        while waiting or running:
            before = len(waiting)
            self._skip_dependants(waiting, results, finish)
            for task in [t for t in waiting.values() if all(d in results for d in t.dep)]:
                if len(running) >= self.max_workers:
                    break
                del waiting[task.id]
                try:
                    args = resolve_args(task, results, files)
                except LocalGPTError as exc:
                    finish(TaskResult(id=task.id, task=task.task, args=task.args, status="failed",
                                      model=cards[task.id].id, error=exc.message))
                    continue
                emit(Event(type="task_start", data={"id": task.id, "task": task.task,
                                                    "model": cards[task.id].id, "args": args}))
                running[self._spawn(self._run_one, task, cards[task.id], args, out, started,
                                    (stand_ins or {}).get(task.id), (fallbacks or {}).get(task.id))] = task
            if not running:
                if len(waiting) == before:  # nothing can ever start: an unvalidated plan's bad deps
                    stuck = [(t, [d for d in t.dep if d not in results]) for t in waiting.values()]
                    for task, blocked in stuck:
                        finish(TaskResult(id=task.id, task=task.task, args=task.args, status="failed",
                                          error=f"task {task.id} waits for task(s) {blocked}, which are "
                                                "not in the plan or form a cycle"))
                continue
            active = [started[t.id] for t in running.values() if t.id in started]
            limit = POLL_SECONDS if not active else min(POLL_SECONDS, min(active) + self.timeout - time.monotonic())
            done, _ = wait(list(running), timeout=max(0.0, limit), return_when=FIRST_COMPLETED)
            for fut in done:
                task = running.pop(fut)
                finish(self._collect(fut, task, cards[task.id], started.get(task.id, time.monotonic())))
            now = time.monotonic()
            for fut, task in list(running.items()):
                if task.id in started and now - started[task.id] >= self.timeout:
                    running.pop(fut)
                    finish(TaskResult(id=task.id, task=task.task, args=task.args, status="failed",
                                      model=cards[task.id].id, seconds=now - started[task.id],
                                      error=f"timed out after {self.timeout:g} s"))
        return [results[t.id] for t in plan.tasks]

    @staticmethod
    def _collect(fut: Future[TaskResult], task: Task, card: ModelCard, started: float) -> TaskResult:
        """The result of a finished future; an exception becomes a failed result naming the model."""
        try:
            return fut.result()
        except LocalGPTError as exc:
            error = str(exc)
        except Exception as exc:  # an expert's own bug must not stop the other tasks
            error = f"{type(exc).__name__}: {exc}"
        return TaskResult(id=task.id, task=task.task, args=task.args, status="failed", model=card.id,
                          seconds=time.monotonic() - started, error=f"model '{card.id}' failed: {error}")

    @staticmethod
    def _skip_dependants(waiting: dict[int, Task], results: dict[int, TaskResult],
                         finish: Callable[[TaskResult], None]) -> None:
        """Mark waiting tasks whose deps failed or were skipped as skipped, with the cause."""
        changed = True
        while changed:
            changed = False
            for task in list(waiting.values()):
                bad = [d for d in task.dep if d in results and results[d].status != "done"]
                if bad:
                    cause = results[bad[0]]
                    finish(TaskResult(id=task.id, task=task.task, args=task.args, status="skipped",
                                      error=f"skipped because task {cause.id} ({cause.task}) "
                                            f"{'failed' if cause.status == 'failed' else 'was skipped'}: "
                                            f"{cause.error}"))
                    changed = True
