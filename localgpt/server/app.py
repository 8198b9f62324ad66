"""The FastAPI application: OpenAI-compatible chat, HuggingGPT's routes, files, health, models, the web page.

The pipeline (LLM, catalog, model pool) is built in a background thread started by the lifespan, so
``/health`` answers 503 while models load. Once it is built the server accepts requests, and the same thread
warms the planner (:meth:`Pipeline.warm`: the LLM loaded, its constraint compiled, the planner's and the
responder's system prompts evaluated or read from the disk prompt state); ``/health``'s ``planner`` says
``loading`` until then and ``ready`` after, and a request that comes meanwhile waits for the LLM, never
doing that work twice. Pipeline runs are blocking and go to a thread pool of
``settings.concurrency`` threads; up to ``settings.queue_size`` more requests wait, and beyond that a
request gets 429 with ``Retry-After``. A request too long for the LLM's context window gets 413
(``request_too_long``) before any LLM call. Each run has a folder with a record (``run.json``,
``GET /v1/runs/{id}``); on start, runs a crash left "running" are marked failed, and the retention
rules (:mod:`localgpt.server.housekeeping`) run on start and periodically. A 500 tells the client only
an ``error_id``, which the log shows beside the traceback. Expert loads are serialised by
:class:`localgpt.runtime.pool.ModelPool` (it holds its lock through ``Expert.load``), so two experts never
load onto the GPU at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, File, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from localgpt import __version__
from localgpt.config import Settings
from localgpt.errors import (
    ConfigError,
    ExpertError,
    InputError,
    LocalGPTError,
    NoModelError,
    PlanError,
    RequestTooLong,
    RunCancelled,
)
from localgpt.llm import Message
from localgpt.pipeline import Pipeline
from localgpt.runtime.runs import RUN_STATES, RunDir, is_temporary, planner_names, read_record, recover_runs
from localgpt.schema import Event, RunResult, Task
from localgpt.server.files import (
    RUN_ID,
    UPLOAD_ID,
    FileStore,
    UnknownFile,
    UnsupportedMedia,
    UploadTooLarge,
    media_type,
)
from localgpt.server.gate import Gate, QueueFull
from localgpt.server.housekeeping import sweep_and_log

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = ("/", "/health", "/favicon.ico")  # answered without the API key (the page asks for it)
PipelineFactory = Callable[[Settings], Pipeline]
T = TypeVar("T")
RUN_FOLDER = re.compile(RUN_ID.pattern.split("-(", 1)[1].split(")", 1)[0])  # a run id: its folder's name
REQUEST_IN_RECORD = 500  # characters of the request a run's record keeps
# the shapes of ids, stated in the OpenAPI schema (the routes check them themselves: 400 for another shape)
FILE_ID_SHAPE = {"pattern": f"^(?:{UPLOAD_ID.pattern}|{RUN_ID.pattern})$"}
RUN_ID_SHAPE = {"pattern": f"^{RUN_FOLDER.pattern}$"}
FileId = Annotated[str, Field(json_schema_extra=FILE_ID_SHAPE)]


# --- request bodies ---

class ChatMessage(BaseModel):
    """One OpenAI chat message; ``content`` is text or a list of parts (only text parts are read)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class MessagesBody(BaseModel):
    """HuggingGPT's request shape, plus ``files``: ids from ``POST /v1/files`` the request uses."""

    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessage] = Field(min_length=1)
    files: list[FileId] = Field(default_factory=list)


class PlanBody(MessagesBody):
    """A plan-only request; ``file_names`` are names the plan may use (not read, need not exist)."""

    file_names: list[str] = Field(default_factory=list)


class ChatBody(MessagesBody):
    """An OpenAI chat-completions request; sampling options are accepted and ignored."""

    model: str = "localgpt"
    stream: bool = False


class ErrorInfo(BaseModel):
    """The ``error`` object of every error reply (further fields may follow: ``details``, ``tokens``...)."""

    model_config = ConfigDict(extra="allow")
    type: str
    message: str
    hint: str | None = None


class ErrorReply(BaseModel):
    """An error reply; a 500 carries an ``error_id`` to quote (the log has the details)."""

    model_config = ConfigDict(extra="allow")
    error: ErrorInfo
    error_id: str | None = None


ERROR_TEXT = {400: "bad request (malformed JSON, an unknown file id...)", 401: "missing or wrong API key",
              404: "no such file or run", 411: "an upload needs a Content-Length", 413: "too large: an upload "
              "over the limit, or a request too long for the LLM's context window (request_too_long)",
              415: "an upload that is not an image, audio or video file", 422: "invalid body, no plan or no model",
              429: "the queue is full; retry after Retry-After seconds", 500: "a server failure: an error_id to quote",
              503: "the models are still loading (or failed to load)"}
FILE_TYPES = ("image/*", "audio/*", "video/*", "text/plain", "application/json", "application/octet-stream")


def documented(*codes: int, ok: tuple[str, ...] = ()) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route: its error replies, and the media types of its 200 when not JSON."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorReply, "description": ERROR_TEXT[c]}
                                            for c in (*codes, 500)}
    if ok:
        out[200] = {"description": "the reply", "content": {t: {} for t in ok}}
    return out


PIPELINE_ERRORS = (400, 401, 404, 413, 422, 429, 503)


class NotReady(Exception):
    """The pipeline is still loading (or failed to load)."""


class NoModelForAnyTask(LocalGPTError):
    """No task of the plan could run because no installed model serves it."""

    def __init__(self, message: str, hint: str, details: dict[str, Any]) -> None:
        super().__init__(message, hint)
        self.details = details


class UnknownRun(InputError):
    """A well-formed run id that names no run (never made, or removed by retention)."""


# --- errors ---

def error_response(status: int, kind: str, message: str, hint: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The JSON error every route answers with: ``{"error": {"type", "message", "hint"?}}``."""
    body: dict[str, Any] = {"type": kind, "message": message}
    if hint:
        body["hint"] = hint
    top = extra.pop("top", {})
    body.update(extra)
    return JSONResponse({"error": body, **top}, status_code=status, headers=headers)


ERROR_STATUS: list[tuple[type[LocalGPTError], int, str]] = [
    (RequestTooLong, 413, "request_too_long"),
    (UploadTooLarge, 413, "payload_too_large"),
    (UnknownFile, 404, "file_not_found"),
    (UnknownRun, 404, "run_not_found"),
    (UnsupportedMedia, 415, "unsupported_media_type"),
    (NoModelForAnyTask, 422, "no_model"),
    (NoModelError, 422, "no_model"),
    (PlanError, 422, "plan_error"),
    (InputError, 400, "invalid_request"),
    (ConfigError, 500, "config_error"),
    (ExpertError, 500, "expert_error"),
]


def error_id_of(exc: BaseException, what: str = "request failed") -> str:
    """A short id for an unexpected failure, logged once with the traceback; the client gets only the id."""
    known = getattr(exc, "localgpt_error_id", None)
    if isinstance(known, str):
        return known
    error_id = uuid.uuid4().hex[:12]
    with contextlib.suppress(AttributeError):
        exc.localgpt_error_id = error_id  # type: ignore[attr-defined]
    log.error("%s [error_id %s]", what, error_id, exc_info=(type(exc), exc, exc.__traceback__))
    return error_id


def internal_error(exc: BaseException) -> JSONResponse:
    """The reply to a bug: a 500 with an id to quote, and nothing of the exception (text, paths)."""
    error_id = error_id_of(exc)
    return error_response(500, "internal_error", f"internal error (error_id {error_id})",
                          "quote the error_id to the server's operator; its log has the details",
                          top={"error_id": error_id}, error_id=error_id)


def _localgpt_error(exc: LocalGPTError, files: FileStore) -> JSONResponse:
    status, kind = next(((s, k) for cls, s, k in ERROR_STATUS if isinstance(exc, cls)), (500, "localgpt_error"))
    extra: dict[str, Any] = {"localgpt": files.scrub(exc.details)} if isinstance(exc, NoModelForAnyTask) else {}
    if isinstance(exc, RequestTooLong):
        extra |= {"tokens": exc.tokens, "limit": exc.limit, "characters": exc.characters}
    if status >= 500:  # a server-side failure (a model, a setting): the message stays in the log
        error_id = error_id_of(exc, f"{kind}: {exc}")
        extra |= {"error_id": error_id, "top": {"error_id": error_id}}
        return error_response(status, kind, f"the server failed to serve this request (error_id {error_id})",
                              "quote the error_id to the server's operator; its log has the details", **extra)
    return error_response(status, kind, files.scrub(exc.message), files.scrub(exc.hint), **extra)


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "the request body is not valid JSON",
                              "send a JSON object with Content-Type: application/json")
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return error_response(400, "invalid_request", "the request has no body", "send a JSON object")
    details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]
    first = details[0]
    return error_response(422, "validation_error", f"{'.'.join(first['loc'])}: {first['msg']}", details=details)


# --- the server's state ---

class ServerState:
    """What the app holds between requests: settings, files, the pipeline once loaded, the gate."""

    def __init__(self, settings: Settings, factory: PipelineFactory) -> None:
        self.files = FileStore(settings.data_dir)
        self.settings = settings.model_copy(update={"runs_dir": self.files.runs})
        self.factory = factory
        self.pipeline: Pipeline | None = None
        self.reason = "loading models"
        self.planner = "loading"  # the planner's warm-up: loading, ready or failed (planner_reason says why)
        self.planner_reason: str | None = None
        self.gate: Gate | None = None
        self.threads: ThreadPoolExecutor | None = None
        self.closed = False
        self._claims: dict[int, set[Path]] = {}  # paths running or waiting requests use, by claim
        self._claims_lock = threading.Lock()
        self._next_claim = 0

    # --- what requests use, and the runs' records ---

    def claim(self, paths: list[Path]) -> int:
        """Mark ``paths`` in use (retention leaves them alone) until :meth:`release`; re-checks that every
        file still exists, since a sweep may have removed it just before (then :class:`UnknownFile`)."""
        with self._claims_lock:
            self._next_claim += 1
            token = self._next_claim
            self._claims[token] = {p.resolve() for p in paths}
        for p in paths:
            if not p.exists():
                self.release(token)
                raise UnknownFile(f"there is no file '{self.files.scrub(str(p))}'", "upload it with POST /v1/files")
        return token

    def release(self, token: int) -> None:
        with self._claims_lock:
            self._claims.pop(token, None)

    def add_claim(self, token: int, path: Path) -> None:
        with self._claims_lock:
            if token in self._claims:
                self._claims[token].add(path.resolve())

    def in_use(self) -> set[Path]:
        """Every path a running or waiting request uses."""
        with self._claims_lock:
            return set().union(*self._claims.values()) if self._claims else set()

    def start_run(self, token: int, request: str, files: list[Path], route: str) -> RunDir:
        """A new run folder, claimed, with its record saying it is running."""
        run = RunDir.create(self.files.runs)
        self.add_claim(token, run.path)
        ids = [i for i in (self.files.id_of(f) for f in files) if i is not None]
        run.record(state="running", created=time.time(), route=route, files=ids,
                   request=self.files.scrub(request)[:REQUEST_IN_RECORD])  # cut after: no path half kept
        return run

    def end_run(self, run: RunDir, error: BaseException | None = None) -> None:
        """Record how a run ended: finished, or failed with a message that reveals nothing of the server."""
        if error is None:
            run.record(state="finished")
            return
        if isinstance(error, RunCancelled):
            message = f"cancelled: {error}"
        elif isinstance(error, LocalGPTError) and not isinstance(error, (ConfigError, ExpertError)):
            message = str(self.files.scrub(str(error)))
        else:
            message = f"internal error (error_id {error_id_of(error, 'run failed')})"
        run.record(state="failed", error=message)

    def describe_run(self, run_id: str) -> dict[str, Any]:
        """``GET /v1/runs/{id}``: the run's record and the files it produced (as ids)."""
        if not RUN_FOLDER.fullmatch(run_id):
            raise InputError(f"'{run_id[:80]}' is not a run id", "use the run id a reply gave (localgpt.run)")
        folder = self.files.runs / run_id
        record = read_record(folder) if folder.is_dir() else None
        if record is None or record.get("state") not in RUN_STATES:
            raise UnknownRun(f"there is no run '{run_id}'", "runs are kept for LOCALGPT_RETENTION_HOURS")
        produced = []
        for f in sorted(folder.iterdir()):
            file_id = self.files.id_of(f) if f.is_file() and not is_temporary(f) else None
            if file_id is not None:
                with contextlib.suppress(InputError):
                    produced.append(self.files.describe(file_id))
        keep = ("id", "state", "created", "updated", "error", "route", "files", "request")
        out = {k: record.get(k) for k in keep} | {"object": "run", "id": run_id, "produced": produced}
        return dict(self.files.scrub(out))

    def recover(self) -> None:
        """On start: runs a crash left running are failed; temporary files are removed."""
        failed, removed = recover_runs(self.files.runs)
        for leftover in self.files.uploads.glob("*.part"):
            leftover.unlink(missing_ok=True)
            removed += 1
        if failed or removed:
            log.warning("recovered from an unclean stop: %d run(s) marked failed (%s), %d temporary file(s) removed",
                        len(failed), ", ".join(failed[:10]), removed)

    def housekeeping(self) -> None:
        """Apply the retention rules once (logs what it removed)."""
        sweep_and_log(self.files.root, self.settings.retention_hours, self.settings.data_max_mb << 20, self.in_use)

    def load(self) -> None:
        """Build the pipeline (runs in its own thread); a failure becomes /health's reason."""
        try:
            pipe = self.factory(self.settings)
            if pipe.settings.runs_dir != self.files.runs:  # produced files must stay in the data folder
                pipe.settings = pipe.settings.model_copy(update={"runs_dir": self.files.runs})
            pipe.file_roots = [self.files.root]
        except LocalGPTError as exc:
            self.reason = f"loading failed: {exc}"
            log.error("loading the pipeline failed: %s", exc)
            return
        except Exception as exc:
            self.reason = f"loading failed: {type(exc).__name__}: {exc}"
            log.exception("loading the pipeline failed")
            return
        if self.closed:
            pipe.close()
            return
        self.pipeline = pipe
        self.reason = "ready"
        self.warm(pipe)

    def warm(self, pipe: Pipeline) -> None:
        """Warm the planner (:meth:`Pipeline.warm`) while requests are already accepted; a failure is logged
        and shown by /health (``planner: failed``), and requests then meet the same error themselves."""
        if self.closed:  # stopped while loading: nothing to warm for
            return
        start = time.perf_counter()
        try:
            done = pipe.warm()
        except Exception as exc:
            if self.closed:  # the pipeline was closed under the warm-up: the server is stopping
                return
            self.planner = "failed"
            if isinstance(exc, LocalGPTError):
                self.planner_reason = str(exc)
                log.error("warming the planner failed: %s", exc)
            else:
                self.planner_reason = f"{type(exc).__name__}: {exc}"
                log.exception("warming the planner failed")
            return
        self.planner = "ready"
        states = ", ".join(f"{part} {how}" for part, how in done.items() if how)
        log.info("planner ready in %.1f s%s", time.perf_counter() - start,
                 f" (prompt state: {states})" if states else "")

    def ready(self) -> Pipeline:
        """The pipeline, or :class:`NotReady`."""
        if self.pipeline is None:
            raise NotReady(self.reason)
        return self.pipeline

    async def run(self, work: Callable[[Pipeline, int], T], files: list[Path]) -> T:
        """Run blocking ``work(pipeline, claim)`` in the thread pool, after waiting for a slot; ``files``
        are claimed (kept from retention) from now until the work ends."""
        pipe = self.ready()
        assert self.gate is not None and self.threads is not None
        token = self.claim(files)
        try:
            started = await self.gate.enter()
        except BaseException:
            self.release(token)
            raise
        gate = self.gate

        def done(_: Any) -> None:  # the slot is held until the thread ends
            gate.leave(started)
            self.release(token)

        future = asyncio.get_running_loop().run_in_executor(self.threads, work, pipe, token)
        future.add_done_callback(done)
        return await asyncio.shield(future)

    async def run_recorded(self, request: str, files: list[Path], history: list[Message], route: str,
                           respond: bool = True) -> RunResult:
        """A whole run, recorded in its folder's ``run.json`` (running, then finished or failed)."""
        def work(p: Pipeline, token: int) -> RunResult:
            p.check_request(request, history, files)
            run = self.start_run(token, request, files, route)
            try:
                result = p.run(request, files, history, respond=respond, run_dir=run)
            except BaseException as exc:
                self.end_run(run, exc)
                raise
            self.end_run(run)
            return result

        return await self.run(work, files)

    # --- turning requests into pipeline calls, and results into replies ---

    def prepare(self, body: MessagesBody) -> tuple[str, list[Message], list[Path]]:
        """The request text, the history and the files of a body; file ids become server paths."""
        texts = [(m.role, _text_of(m.content)) for m in body.messages]
        last = max((i for i, (role, _) in enumerate(texts) if role == "user"), default=None)
        if last is None:
            raise InputError("the messages hold no user message", "end the messages with {'role': 'user', ...}")
        files: list[Path] = []
        for file_id in body.files:
            path = self.files.path_of(file_id)
            if path not in files:
                files.append(path)
        for file_id in self.files.ids_in(text for _, text in texts[: last + 1]):
            try:
                path = self.files.path_of(file_id)
            except InputError:  # an id-like word naming no file is just text
                continue
            if path not in files:
                files.append(path)
        shown = dict(zip(files, planner_names(files), strict=True))  # as the run's planner lists them
        request = self.files.unscrub(texts[last][1], shown)
        if not request.strip():
            raise InputError("the last user message is empty", "say what you want done")
        history: list[Message] = [{"role": role, "content": self.files.unscrub(text, shown)}
                                  for role, text in texts[:last] if role in ("user", "assistant") and text]
        return request, history, files

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        """The ``localgpt`` field of a reply: plan, selections, results, produced files (as ids), timings."""
        produced = []
        for r in result.get("results", []):
            for kind, value in r.get("outputs", {}).items():
                file_id = self.files.id_of(value) if kind != "text" else None
                if file_id is not None:
                    try:
                        produced.append(self.files.describe(file_id) | {"task": r["id"]})
                    except InputError:
                        continue
        out = {"plan": result.get("plan", {}).get("tasks", []), "selections": result.get("selections", []),
               "results": result.get("results", []), "files": produced, "timings": result.get("timings", {}),
               "llm_calls": result.get("llm_calls", 0), "run": Path(result.get("run_dir") or "").name or None}
        return self.files.scrub(out)

    def check_served(self, result: RunResult) -> None:
        """Raise :class:`NoModelForAnyTask` when nothing ran because no model serves the plan's tasks."""
        chosen = {s.task_id for s in result.selections}
        unserved = [t for t in result.plan.tasks if t.id not in chosen]
        if result.plan.tasks and unserved and not any(r.status == "done" for r in result.results):
            names = ", ".join(f"{t.task} (task {t.id})" for t in unserved)
            raise NoModelForAnyTask(f"no installed model can run {names}",
                                    "install one (localgpt models pull, download_models.py) and see GET /v1/models",
                                    self.summary(result.model_dump(mode="json")))


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message's content (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content if p.get("type") in ("text", "input_text"))


class DeltaScrubber:
    """Scrubs streamed answer text: a word that may hold a path is held back until it is complete,
    so a server path split across tokens still leaves as an id."""

    def __init__(self, files: FileStore) -> None:
        self.files = files
        self.pending = ""

    def feed(self, text: str) -> str:
        """The text that can be sent now."""
        self.pending += text
        cut = max(self.pending.rfind(c) for c in " \n\t")
        tail = self.pending[cut + 1:]
        if "/" not in tail:
            tail = ""
        ready = self.pending[: len(self.pending) - len(tail)]
        self.pending = tail
        return str(self.files.scrub(ready))

    def flush(self) -> str:
        """Whatever is held back (at the end of the answer)."""
        ready, self.pending = self.pending, ""
        return str(self.files.scrub(ready))


def _hugginggpt_task(task: Task) -> dict[str, Any]:
    """A task as HuggingGPT writes it: ``dep`` is ``[-1]`` when the task depends on nothing."""
    return task.model_dump() | {"dep": task.dep or [-1]}


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    """One SSE ``data:`` line holding an OpenAI ``chat.completion.chunk``."""
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without an API key, unless ``insecure``."""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if not loopback and not api_key and not insecure:
        raise ConfigError(f"refusing to listen on {host} without an API key: anyone who can reach it could use it",
                          "set --api-key (or LOCALGPT_API_KEY), bind to 127.0.0.1, or pass --insecure")


def default_factory(settings: Settings) -> Pipeline:
    """The real pipeline: the controller LLM, the catalog and the model pool."""
    return Pipeline.from_settings(settings)


def create_app(settings: Settings, pipeline_factory: PipelineFactory | None = None) -> FastAPI:
    """The localgpt HTTP server as a FastAPI app; models load in the lifespan, in the background.

    Example::

        app = create_app(Settings(api_key="secret"))
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    state = ServerState(settings, pipeline_factory or default_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _log_to_stderr()
        state.recover()  # before any request: every run recorded as running was cut short
        state.gate = Gate(state.settings.concurrency, state.settings.queue_size)
        state.threads = ThreadPoolExecutor(max_workers=state.settings.concurrency, thread_name_prefix="localgpt-run")
        threading.Thread(target=state.load, name="localgpt-load", daemon=True).start()
        keeper = asyncio.create_task(_keep_house(state))
        try:
            yield
        finally:
            keeper.cancel()
            state.closed = True
            state.threads.shutdown(wait=False, cancel_futures=True)
            if state.pipeline is not None:
                state.pipeline.close()

    app = FastAPI(title="localgpt", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.localgpt = state

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
        """Bearer auth on every API route, and the upload size checked before the body is read."""
        path = request.url.path
        key = state.settings.api_key
        if key and path not in OPEN_PATHS and not path.startswith("/static/"):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
                return error_response(401, "unauthorized", "missing or wrong API key",
                                      "send the header 'Authorization: Bearer <key>'",
                                      headers={"WWW-Authenticate": "Bearer"})
        if path == "/v1/files" and request.method == "POST":
            length = request.headers.get("content-length", "")
            if not length.isdigit():  # without a length the form parser would spool any amount to disk
                return error_response(411, "length_required", "an upload needs a Content-Length header",
                                      "send the file as a plain (not chunked) multipart/form-data body")
            if int(length) > (state.settings.max_upload_mb << 20) + (64 << 10):
                return error_response(413, "payload_too_large",
                                      f"the upload is larger than the limit of {state.settings.max_upload_mb} MB",
                                      "send a smaller file or raise LOCALGPT_MAX_UPLOAD_MB")
        try:
            response: Response = await call_next(request)
        except Exception as exc:  # a bug: answered here, so the client gets the error id (not a reset)
            return internal_error(exc)
        return response

    @app.exception_handler(LocalGPTError)
    async def on_localgpt_error(request: Request, exc: LocalGPTError) -> JSONResponse:
        return _localgpt_error(exc, state.files)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(NotReady)
    async def on_not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return error_response(503, "not_ready", f"the server is not ready: {exc}", "retry when GET /health is 200",
                              headers={"Retry-After": "5"})

    @app.exception_handler(QueueFull)
    async def on_queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(429, "queue_full", str(exc), "retry later",
                              headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)

    # --- status and catalog ---

    @app.get("/health", responses=documented(503))
    async def health() -> JSONResponse:
        gate = state.gate
        counts = {"running": gate.running, "waiting": gate.waiting} if gate else {}
        if state.pipeline is None:
            status = "failed" if state.reason.startswith("loading failed") else "loading"
            return JSONResponse({"status": status, "reason": state.reason, "planner": status, **counts},
                                status_code=503, headers={"Retry-After": "5"})
        planner = {"planner": state.planner} | ({"planner_reason": state.planner_reason} if state.planner_reason
                                                else {})
        return JSONResponse({"status": "ok", "version": __version__, **planner, **counts,
                             "concurrency": state.settings.concurrency, "queue_size": state.settings.queue_size})

    @app.get("/v1/models", responses=documented(401, 503))
    async def models() -> dict[str, Any]:
        pipe = state.ready()
        loaded = set(pipe.pool.loaded_ids())
        catalog = pipe.catalog
        cards = await run_in_threadpool(catalog.cards)
        if catalog.controller:
            cards.append(catalog.controller_card())
        data: list[dict[str, Any]] = [{"id": "localgpt", "object": "model", "created": 0, "owned_by": "localgpt",
                                       "localgpt": {"kind": "pipeline", "planner": str(catalog.controller)}}]
        for card in cards:
            info = card.model_dump(mode="json", include={"tasks", "backend", "format", "description", "license",
                                                         "devices", "size_bytes"})
            info |= {"kind": "expert", "loaded": card.id in loaded,
                     "installed": card.backend == "llm" or catalog.is_installed(card)}
            data.append({"id": card.id, "object": "model", "created": 0, "owned_by": "localgpt", "localgpt": info})
        return {"object": "list", "data": data}

    # --- files ---

    @app.post("/v1/files", responses=documented(400, 401, 411, 413, 415, 422))
    async def upload(file: UploadFile = File(...)) -> JSONResponse:  # noqa: B008 - FastAPI's idiom
        limit = state.settings.max_upload_mb << 20
        info = await run_in_threadpool(state.files.save_upload, file.file, file.filename or "upload", limit)
        info["created_at"] = int(time.time())
        info["purpose"] = "localgpt"
        return JSONResponse(info)

    @app.get("/v1/files/{file_id}", response_class=FileResponse, responses=documented(400, 401, 404, ok=FILE_TYPES))
    async def download(file_id: Annotated[str, PathParam(json_schema_extra=FILE_ID_SHAPE)]) -> FileResponse:
        path = state.files.path_of(file_id)
        return FileResponse(path, media_type=media_type(Path(file_id)))  # the id's ending is the content's

    # --- the pipeline ---

    @app.post("/v1/chat/completions", response_model=None,
              responses=documented(*PIPELINE_ERRORS, ok=("application/json", "text/event-stream")))
    async def chat_completions(body: ChatBody) -> dict[str, Any] | StreamingResponse:
        request, history, files = state.prepare(body)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            return await stream(request, history, files, cid, created, body.model)
        result = await state.run_recorded(request, files, history, "chat")
        state.check_served(result)
        answer = state.files.scrub(result.answer)
        return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "localgpt": state.summary(result.model_dump(mode="json"))}

    async def stream(request: str, history: list[Message], files: list[Path], cid: str, created: int,
                     model: str) -> StreamingResponse:
        """Admit the run (429/503/413 come as plain replies), then stream its events as SSE. A client that
        goes away cancels the run at its next event (between tasks) and so frees its slot."""
        pipe = state.ready()
        assert state.gate is not None and state.threads is not None
        gate = state.gate
        token = state.claim(files)
        try:
            started = await gate.enter()
        except BaseException:
            state.release(token)
            raise
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        admitted: asyncio.Future[str] = loop.create_future()
        gone = threading.Event()

        def admit(run_id: str | None, exc: BaseException | None = None) -> None:
            def settle() -> None:
                if not admitted.done():
                    admitted.set_exception(exc) if exc is not None else admitted.set_result(run_id or "")
            with contextlib.suppress(RuntimeError):  # the server shut down meanwhile
                loop.call_soon_threadsafe(settle)

        def send(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the server shut down while the run went on
                loop.call_soon_threadsafe(events.put_nowait, event)

        def put(event: Event) -> None:
            if gone.is_set():
                raise RunCancelled("the client disconnected")
            send(event)

        def work(p: Pipeline) -> None:
            try:
                p.check_request(request, history, files)
                run = state.start_run(token, request, files, "chat (stream)")
            except BaseException as exc:
                admit(None, exc)
                return
            admit(run.id)
            try:
                p.run(request, files, history, on_event=put, run_dir=run)
            except RunCancelled as exc:
                state.end_run(run, exc)
                log.info("run %s cancelled: its client disconnected", run.id)
            except LocalGPTError as exc:
                state.end_run(run, exc)
                send(Event(type="error", data={"type": type(exc).__name__, "message": exc.message,
                                               "hint": exc.hint}))
            except Exception as exc:
                state.end_run(run, exc)
                error_id = error_id_of(exc, "streamed run failed")
                send(Event(type="error", data={"type": "internal_error", "error_id": error_id,
                                               "message": f"internal error (error_id {error_id})", "hint": None}))
            else:
                state.end_run(run)

        def finished(_: Any) -> None:
            gate.leave(started)
            state.release(token)
            events.put_nowait(None)

        future = loop.run_in_executor(state.threads, work, pipe)
        future.add_done_callback(finished)
        try:
            run_id = await admitted  # a refused request (too long, ...) raises here: a plain JSON error
        except asyncio.CancelledError:  # the client left before the stream began: the run stops too
            gone.set()
            raise

        async def lines() -> AsyncIterator[str]:
            ended = False
            try:
                yield _chunk(cid, created, model, {"role": "assistant", "content": ""})
                answer = DeltaScrubber(state.files)
                while (event := await events.get()) is not None:
                    if event.type == "answer_delta":
                        if text := answer.feed(event.data["text"]):
                            yield _chunk(cid, created, model, {"content": text})
                        continue
                    if rest := answer.flush():
                        yield _chunk(cid, created, model, {"content": rest})
                    if event.type == "done":
                        yield _chunk(cid, created, model, {}, "stop",
                                     localgpt={"type": "done", "data": state.summary(event.data)})
                    elif event.type == "error":
                        data = state.files.scrub(event.data)
                        yield _chunk(cid, created, model, {}, "stop", localgpt={"type": "error", "data": data},
                                     error={"type": data["type"], "message": data["message"], "hint": data["hint"]})
                    else:
                        yield _chunk(cid, created, model, {},
                                     localgpt={"type": event.type, "data": state.files.scrub(event.data)})
                ended = True
                yield "data: [DONE]\n\n"
            finally:
                if not ended:  # the client went away (or the server stops): stop the run between tasks
                    gone.set()

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          "X-LocalGPT-Run": run_id})

    @app.post("/hugginggpt", responses=documented(*PIPELINE_ERRORS))
    async def hugginggpt(body: MessagesBody) -> dict[str, Any]:
        request, history, files = state.prepare(body)
        result = await state.run_recorded(request, files, history, "hugginggpt")
        state.check_served(result)
        return {"message": state.files.scrub(result.answer), "localgpt": state.summary(result.model_dump(mode="json"))}

    @app.post("/tasks", responses=documented(*PIPELINE_ERRORS))
    async def tasks(body: MessagesBody) -> list[dict[str, Any]]:
        request, history, files = state.prepare(body)
        plan = await state.run(lambda p, _: p.plan(request, files, history), files)
        scrubbed: list[dict[str, Any]] = state.files.scrub([_hugginggpt_task(t) for t in plan.tasks])
        return scrubbed

    @app.post("/v1/plan", responses=documented(*PIPELINE_ERRORS))
    async def plan(body: PlanBody) -> dict[str, Any]:
        """The validated plan (steps and tasks) as ``localgpt plan --json`` prints it; nothing runs."""
        request, history, files = state.prepare(body)
        names = [str(f) for f in files] + body.file_names
        planned = await state.run(lambda p, _: p.plan(request, names, history), files)
        scrubbed: dict[str, Any] = state.files.scrub(planned.model_dump(mode="json"))
        return scrubbed

    @app.post("/results", responses=documented(*PIPELINE_ERRORS))
    async def results(body: MessagesBody) -> dict[str, Any]:
        request, history, files = state.prepare(body)
        result = await state.run_recorded(request, files, history, "results", respond=False)
        state.check_served(result)
        chosen = {s.task_id: s.model_dump() for s in result.selections}
        out: dict[str, Any] = {}
        for r in result.results:
            task = _hugginggpt_task(result.plan.by_id(r.id))
            inference: dict[str, Any] = dict(r.outputs) if r.status == "done" else {"error": r.error}
            out[str(r.id)] = {"task": task, "inference result": inference, "choose model result": chosen.get(r.id),
                              "status": r.status}
        scrubbed: dict[str, Any] = state.files.scrub(out)
        return scrubbed

    @app.get("/v1/runs/{run_id}", responses=documented(400, 401, 404))
    async def run_info(run_id: Annotated[str, PathParam(json_schema_extra=RUN_ID_SHAPE)]) -> dict[str, Any]:
        return await run_in_threadpool(state.describe_run, run_id)

    # --- the web page ---

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _document_auth(app, bool(state.settings.api_key))
    return app


def _log_to_stderr() -> None:
    """Show localgpt's INFO log (what housekeeping removed, recoveries, error ids) when nothing configured
    logging (``localgpt serve``); a host application's or pytest's own configuration is left alone."""
    ours = logging.getLogger("localgpt")
    if ours.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)


async def _keep_house(state: ServerState) -> None:
    """Apply the retention rules at start and then every ``housekeeping_minutes``."""
    while True:
        try:
            await run_in_threadpool(state.housekeeping)
        except Exception:  # a failed sweep must not stop the server, nor the next sweep
            log.exception("housekeeping failed")
        await asyncio.sleep(state.settings.housekeeping_minutes * 60)


def _document_auth(app: FastAPI, required: bool) -> None:
    """State the bearer key in the OpenAPI schema (every route but the open ones) when the server needs one."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        schema = plain()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        if required and "bearer" not in schemes:
            schemes["bearer"] = {"type": "http", "scheme": "bearer", "description": "the server's API key"}
            for path, operations in schema.get("paths", {}).items():
                if path not in OPEN_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
