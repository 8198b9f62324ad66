"""The FastAPI application: OpenAI-compatible chat, HuggingGPT's routes, files, health, models, the web page.

The pipeline (LLM, catalog, model pool) is built in a background thread started by the lifespan, so
``/health`` answers 503 while models load. Pipeline runs are blocking and go to a thread pool of
``settings.concurrency`` threads; up to ``settings.queue_size`` more requests wait, and beyond that a
request gets 429 with ``Retry-After``. Expert loads are serialised by :class:`localgpt.runtime.pool.ModelPool`
(it holds its lock through ``Expert.load``), so two experts never load onto the GPU at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from localgpt import __version__
from localgpt.config import Settings
from localgpt.errors import ConfigError, ExpertError, InputError, LocalGPTError, NoModelError, PlanError
from localgpt.llm import Message
from localgpt.pipeline import Pipeline
from localgpt.schema import Event, RunResult, Task
from localgpt.server.files import FileStore, UnknownFile, UnsupportedMedia, UploadTooLarge, media_type
from localgpt.server.gate import Gate, QueueFull

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = ("/", "/health", "/favicon.ico")  # answered without the API key (the page asks for it)
PipelineFactory = Callable[[Settings], Pipeline]
T = TypeVar("T")


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
    files: list[str] = Field(default_factory=list)


class PlanBody(MessagesBody):
    """A plan-only request; ``file_names`` are names the plan may use (not read, need not exist)."""

    file_names: list[str] = Field(default_factory=list)


class ChatBody(MessagesBody):
    """An OpenAI chat-completions request; sampling options are accepted and ignored."""

    model: str = "localgpt"
    stream: bool = False


class NotReady(Exception):
    """The pipeline is still loading (or failed to load)."""


class NoModelForAnyTask(LocalGPTError):
    """No task of the plan could run because no installed model serves it."""

    def __init__(self, message: str, hint: str, details: dict[str, Any]) -> None:
        super().__init__(message, hint)
        self.details = details


# --- errors ---

def error_response(status: int, kind: str, message: str, hint: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The JSON error every route answers with: ``{"error": {"type", "message", "hint"?}}``."""
    body: dict[str, Any] = {"type": kind, "message": message}
    if hint:
        body["hint"] = hint
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)


ERROR_STATUS: list[tuple[type[LocalGPTError], int, str]] = [
    (UploadTooLarge, 413, "payload_too_large"),
    (UnknownFile, 404, "file_not_found"),
    (UnsupportedMedia, 415, "unsupported_media_type"),
    (NoModelForAnyTask, 422, "no_model"),
    (NoModelError, 422, "no_model"),
    (PlanError, 422, "plan_error"),
    (InputError, 400, "invalid_request"),
    (ConfigError, 500, "config_error"),
    (ExpertError, 500, "expert_error"),
]


def _localgpt_error(exc: LocalGPTError) -> JSONResponse:
    status, kind = next(((s, k) for cls, s, k in ERROR_STATUS if isinstance(exc, cls)), (500, "localgpt_error"))
    extra = {"localgpt": exc.details} if isinstance(exc, NoModelForAnyTask) else {}
    return error_response(status, kind, exc.message, exc.hint, **extra)


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
        self.gate: Gate | None = None
        self.threads: ThreadPoolExecutor | None = None
        self.closed = False

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

    def ready(self) -> Pipeline:
        """The pipeline, or :class:`NotReady`."""
        if self.pipeline is None:
            raise NotReady(self.reason)
        return self.pipeline

    async def run(self, work: Callable[[Pipeline], T]) -> T:
        """Run blocking ``work`` on the pipeline in the thread pool, after waiting for a slot."""
        pipe = self.ready()
        assert self.gate is not None and self.threads is not None
        started = await self.gate.enter()
        gate = self.gate
        future = asyncio.get_running_loop().run_in_executor(self.threads, work, pipe)
        future.add_done_callback(lambda _: gate.leave(started))  # the slot is held until the thread ends
        return await asyncio.shield(future)

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
        request = self.files.unscrub(texts[last][1])
        if not request.strip():
            raise InputError("the last user message is empty", "say what you want done")
        history: list[Message] = [{"role": role, "content": self.files.unscrub(text)}
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
               "llm_calls": result.get("llm_calls", 0)}
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
        state.gate = Gate(state.settings.concurrency, state.settings.queue_size)
        state.threads = ThreadPoolExecutor(max_workers=state.settings.concurrency, thread_name_prefix="localgpt-run")
        threading.Thread(target=state.load, name="localgpt-load", daemon=True).start()
        try:
            yield
        finally:
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
        response: Response = await call_next(request)
        return response

    @app.exception_handler(LocalGPTError)
    async def on_localgpt_error(request: Request, exc: LocalGPTError) -> JSONResponse:
        return _localgpt_error(exc)

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
        log.exception("request failed")
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}")

    # --- status and catalog ---

    @app.get("/health")
    async def health() -> JSONResponse:
        gate = state.gate
        counts = {"running": gate.running, "waiting": gate.waiting} if gate else {}
        if state.pipeline is None:
            status = "failed" if state.reason.startswith("loading failed") else "loading"
            return JSONResponse({"status": status, "reason": state.reason, **counts}, status_code=503,
                                headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok", "version": __version__, **counts,
                             "concurrency": state.settings.concurrency, "queue_size": state.settings.queue_size})

    @app.get("/v1/models")
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

    @app.post("/v1/files")
    async def upload(file: UploadFile = File(...)) -> JSONResponse:  # noqa: B008 - FastAPI's idiom
        limit = state.settings.max_upload_mb << 20
        info = await run_in_threadpool(state.files.save_upload, file.file, file.filename or "upload", limit)
        info["created_at"] = int(time.time())
        info["purpose"] = "localgpt"
        return JSONResponse(info)

    @app.get("/v1/files/{file_id}")
    async def download(file_id: str) -> FileResponse:
        path = state.files.path_of(file_id)
        return FileResponse(path, media_type=media_type(path))

    # --- the pipeline ---

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatBody) -> dict[str, Any] | StreamingResponse:
        request, history, files = state.prepare(body)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            return await stream(request, history, files, cid, created, body.model)
        result = await state.run(lambda p: p.run(request, files, history))
        state.check_served(result)
        answer = state.files.scrub(result.answer)
        return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "localgpt": state.summary(result.model_dump(mode="json"))}

    async def stream(request: str, history: list[Message], files: list[Path], cid: str, created: int,
                     model: str) -> StreamingResponse:
        """Admit the run (429/503 come as plain replies), then stream its events as SSE."""
        pipe = state.ready()
        assert state.gate is not None and state.threads is not None
        gate = state.gate
        started = await gate.enter()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | None] = asyncio.Queue()

        def put(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the server shut down while the run went on
                loop.call_soon_threadsafe(events.put_nowait, event)

        def work(p: Pipeline) -> None:
            try:
                p.run(request, files, history, on_event=put)
            except LocalGPTError as exc:
                put(Event(type="error", data={"type": type(exc).__name__, "message": exc.message,
                                              "hint": exc.hint}))
            except Exception as exc:
                log.exception("streamed run failed")
                put(Event(type="error", data={"type": type(exc).__name__, "message": f"internal error: {exc}",
                                              "hint": None}))

        def finished(_: Any) -> None:
            gate.leave(started)
            events.put_nowait(None)

        future = loop.run_in_executor(state.threads, work, pipe)
        future.add_done_callback(finished)

        async def lines() -> AsyncIterator[str]:
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
            yield "data: [DONE]\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/hugginggpt")
    async def hugginggpt(body: MessagesBody) -> dict[str, Any]:
        request, history, files = state.prepare(body)
        result = await state.run(lambda p: p.run(request, files, history))
        state.check_served(result)
        return {"message": state.files.scrub(result.answer), "localgpt": state.summary(result.model_dump(mode="json"))}

    @app.post("/tasks")
    async def tasks(body: MessagesBody) -> list[dict[str, Any]]:
        request, history, files = state.prepare(body)
        plan = await state.run(lambda p: p.plan(request, files, history))
        scrubbed: list[dict[str, Any]] = state.files.scrub([_hugginggpt_task(t) for t in plan.tasks])
        return scrubbed

    @app.post("/v1/plan")
    async def plan(body: PlanBody) -> dict[str, Any]:
        """The validated plan (steps and tasks) as ``localgpt plan --json`` prints it; nothing runs."""
        request, history, files = state.prepare(body)
        names = [str(f) for f in files] + body.file_names
        planned = await state.run(lambda p: p.plan(request, names, history))
        scrubbed: dict[str, Any] = state.files.scrub(planned.model_dump(mode="json"))
        return scrubbed

    @app.post("/results")
    async def results(body: MessagesBody) -> dict[str, Any]:
        request, history, files = state.prepare(body)
        result = await state.run(lambda p: p.run(request, files, history, respond=False))
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

    # --- the web page ---

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
