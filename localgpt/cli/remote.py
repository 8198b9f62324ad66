"""The CLI's hand-off to a running ``localgpt serve``: ``run``, ``plan`` and ``chat`` use the server on the
configured address when it answers ``/health``, so the models it keeps loaded (and its warm prompt state)
serve the request; otherwise they run in-process (``--local`` always does).

The address is ``LOCALGPT_SERVER`` (default ``http://127.0.0.1:8000``, where ``localgpt serve`` listens;
``off`` never asks); ``LOCALGPT_API_KEY`` is sent as the bearer token. The user's files are uploaded, the
request's mentions of them become the upload ids, events stream back as the pipeline emits them, and every
file the server produced is downloaded into the local runs folder under the same name a local run would give
it, so the printed output is the same as in-process.

Example::

    pipe = connect(settings, say=print_err)        # None when no server answers
    if pipe is not None:
        result = pipe.run("Say 'hi' aloud", on_event=printer)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, get_args

from localgpt.config import Settings
from localgpt.errors import InputError, LocalGPTError
from localgpt.llm import Message
from localgpt.schema import Event, EventType, Plan, RunResult, Selection, TaskResult

DEFAULT_SERVER = "http://127.0.0.1:8000"
HEALTH_TIMEOUT = 0.5  # seconds: a server on this machine answers /health in milliseconds
LOADING_WAIT = 180.0  # seconds to wait for a server that is still loading its models
EVENT_TYPES = set(get_args(EventType))
Emit = Callable[[Event], None]
Say = Callable[[str], None]


def server_url() -> str | None:
    """The address the CLI asks (``LOCALGPT_SERVER``), or None when it is turned off."""
    url = os.environ.get("LOCALGPT_SERVER", DEFAULT_SERVER).strip().rstrip("/")
    if url.lower() in ("", "off", "none", "0", "no", "false"):
        return None
    return url if "://" in url else f"http://{url}"


def _health(url: str, api_key: str | None) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of ``GET url/health``; (0, {}) when nothing answers in time."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url + "/health", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as reply:  # noqa: S310 - http(s) only
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError):  # refused, timed out, unreachable, a malformed address
        return 0, {}
    try:
        data = json.loads(body)
    except ValueError:
        return status, {}
    return status, data if isinstance(data, dict) else {}


def connect(settings: Settings, say: Say, wait: float = LOADING_WAIT) -> RemotePipeline | None:
    """A client of the localgpt server on :func:`server_url` when one answers ready (waiting up to
    ``wait`` seconds for one still loading its models); None to run in-process. ``say`` tells the user
    what happened whenever a server answered."""
    url = server_url()
    if url is None or not url.startswith(("http://", "https://")):
        return None
    status, body = _health(url, settings.api_key)
    if status == 0:
        return None
    if status == 503 and body.get("status") == "loading":
        say(f"The localgpt server at {url} is loading its models; waiting (--local runs here instead) ...")
        deadline = time.monotonic() + wait
        while status == 503 and body.get("status") == "loading" and time.monotonic() < deadline:
            time.sleep(0.5)
            status, body = _health(url, settings.api_key)
    if status == 200 and body.get("status") == "ok":
        if body.get("planner") == "loading":  # accepted now; the request waits for the warm-up there
            say(f"The localgpt server at {url} is still warming its planner; the request waits for it")
        return RemotePipeline(url, settings)
    if status in (401, 403):
        say(f"The localgpt server at {url} refused the API key; running here (set LOCALGPT_API_KEY to use it)")
    elif status:
        reason = body.get("reason") or body.get("status") or f"HTTP {status}"
        say(f"The localgpt server at {url} is not ready ({reason}); running here")
    return None


def _file_mention(text: str) -> re.Pattern[str]:
    """``text`` as a whole word of a request (a name or path, not part of a longer one)."""
    return re.compile(rf"(?<![\w/.\\-]){re.escape(text)}(?!\.?[\w/\\-])")


class RemotePipeline:
    """The part of :class:`localgpt.pipeline.Pipeline` the CLI uses (``run``, ``plan``, ``input_files``,
    ``close``), served by a localgpt server. Files go up once per session; produced files come down into
    ``settings.runs_dir``."""

    demo_file = None

    def __init__(self, url: str, settings: Settings) -> None:
        import httpx

        self.url = url
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=None))
        self.local: dict[str, Path] = {}  # file id -> the local file (an upload's original, a downloaded result)
        self.ids: dict[Path, str] = {}  # the reverse

    # --- files ---

    def input_files(self, files: Sequence[str | Path]) -> Any:
        """The user's files, checked here as a local run checks them."""
        from localgpt.runtime.runs import InputFiles

        return InputFiles(files, roots=[Path.cwd(), self.settings.runs_dir],
                          max_bytes=self.settings.max_input_mb * 1_000_000)

    def _upload(self, path: Path) -> str:
        if path in self.ids:
            return self.ids[path]
        with open(path, "rb") as fh:
            reply = self.client.post("/v1/files", files={"file": (path.name, fh)})
        file_id = str(self._json(reply)["id"])
        self.local[file_id], self.ids[path] = path, file_id
        return file_id

    def _download(self, file_id: str, run: str, name: str) -> Path:
        target = (self.settings.runs_dir / run / name).resolve()
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{name}.part")
            with self.client.stream("GET", f"/v1/files/{file_id}") as reply:
                if reply.status_code != 200:
                    reply.read()
                    self._json(reply)
                with open(tmp, "wb") as out:
                    for block in reply.iter_bytes():
                        out.write(block)
            os.replace(tmp, target)
        self.local[file_id], self.ids[target] = target, file_id
        return target

    def _to_local(self, value: Any) -> Any:
        """``value`` (nested) with every file id of the server replaced by the local file (produced files
        are downloaded on first sight)."""
        from localgpt.server.files import ANY_ID, RUN_ID

        def swap(match: re.Match[str]) -> str:
            file_id = match.group(0)
            if file_id in self.local:
                return str(self.local[file_id])
            run = RUN_ID.fullmatch(file_id)
            if run is None:
                return file_id
            return str(self._download(file_id, run.group(1), run.group(2)))

        if isinstance(value, str):
            return ANY_ID.sub(swap, value)
        if isinstance(value, dict):
            return {k: self._to_local(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._to_local(v) for v in value]
        return value

    def _to_server(self, text: str, mentions: dict[str, str]) -> str:
        """``text`` with each mention of a local file (as the user wrote it, or its full path) as its id."""
        for written in sorted(mentions, key=len, reverse=True):
            text = _file_mention(written).sub(mentions[written], text)
        return text

    # --- requests ---

    def _json(self, reply: Any) -> Any:
        """The JSON of a reply; an error reply becomes the :class:`LocalGPTError` it describes."""
        try:
            data = reply.json()
        except ValueError:
            data = None
        if reply.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                raise LocalGPTError(str(error.get("message")), error.get("hint"))
            raise LocalGPTError(f"the localgpt server at {self.url} answered HTTP {reply.status_code}",
                                "see its log, or run here with --local")
        return data

    def _body(self, request: str, files: Sequence[str | Path], history: Sequence[Message]) -> dict[str, Any]:
        """The chat body: the user's files uploaded, their mentions (and those of files an earlier turn
        produced) written as ids."""
        inputs = self.input_files(files)
        mentions: dict[str, str] = {}
        ids = []
        for given, path in zip(files, inputs.files, strict=True):
            file_id = self._upload(path)
            ids.append(file_id)
            mentions[str(given)] = mentions[str(path)] = file_id
        for path, file_id in self.ids.items():
            mentions.setdefault(str(path), file_id)
        messages = [{"role": m["role"], "content": self._to_server(m["content"], mentions)} for m in history]
        messages.append({"role": "user", "content": self._to_server(request, mentions)})
        return {"model": "localgpt", "messages": messages, "files": ids}

    def plan(self, request: str, files: Sequence[str | Path] = (), history: Sequence[Message] = ()) -> Plan:
        """The server's plan; files are named only (they need not exist), as a local plan names them."""
        body = {"messages": [*[dict(m) for m in history], {"role": "user", "content": request}],
                "file_names": [str(f) for f in files]}
        return Plan.model_validate(self._to_local(self._json(self.client.post("/v1/plan", json=body))))

    def run(self, request: str, files: Sequence[str | Path] = (), history: Sequence[Message] = (),
            on_event: Emit | None = None, plan: Plan | None = None, respond: bool = True) -> RunResult:
        """Run ``request`` on the server, its events streamed to ``on_event`` as a local run emits them."""
        if plan is not None or not respond:
            raise InputError("a fixed plan or a run without an answer is not sent to a server",
                             "run it here with --local")
        emit = on_event or (lambda e: None)
        body = self._body(request, files, history) | {"stream": True}
        answer: list[str] = []
        held = ""
        steps: list[str] = []
        summary: dict[str, Any] | None = None
        for chunk in self._events(body):
            extra = chunk.get("localgpt")
            delta = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
            if delta:
                # a file id is sent whole; hold back the last word until the next piece shows it complete
                held += delta
                cut = max(held.rfind(c) for c in " \n\t")
                ready, held = held[: cut + 1], held[cut + 1:]
                if ready:
                    text = self._to_local(ready)
                    answer.append(text)
                    emit(Event(type="answer_delta", data={"text": text}))
            if extra is None:
                continue
            if held:
                text, held = self._to_local(held), ""
                answer.append(text)
                emit(Event(type="answer_delta", data={"text": text}))
            kind, data = extra.get("type"), extra.get("data") or {}
            if kind == "error":
                raise LocalGPTError(str(data.get("message")), data.get("hint"))
            if kind == "done":
                summary = data
                continue
            if kind not in EVENT_TYPES:  # a newer server's event this client does not know
                continue
            data = self._to_local(data)
            if kind == "plan":
                steps = list(data.get("steps", []))
            emit(Event(type=kind, data=data))
        if held:
            text = self._to_local(held)
            answer.append(text)
            emit(Event(type="answer_delta", data={"text": text}))
        if summary is None:
            raise LocalGPTError(f"the localgpt server at {self.url} ended the run without a result",
                                "see its log, or run here with --local")
        summary = self._to_local(summary)
        results = [TaskResult.model_validate(r) for r in summary.get("results", [])]
        produced = [str(self.local[f["id"]]) if f.get("id") in self.local else str(f.get("id"))
                    for f in summary.get("files", [])]
        run_dirs = {str(Path(p).parent) for p in produced}
        result = RunResult(
            request=request, plan=Plan(tasks=summary.get("plan", []), steps=steps),
            selections=[Selection.model_validate(s) for s in summary.get("selections", [])], results=results,
            answer="".join(answer).strip(), files=produced,
            run_dir=run_dirs.pop() if len(run_dirs) == 1 else str(self.settings.runs_dir.resolve()),
            timings=summary.get("timings", {}), llm_calls=int(summary.get("llm_calls", 0)))
        emit(Event(type="done", data=result.model_dump(mode="json")))
        return result

    def _events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The JSON chunks of a streamed chat completion."""
        with self.client.stream("POST", "/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                reply.read()
                self._json(reply)
            for line in reply.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if isinstance(chunk, dict):
                    yield chunk

    def close(self) -> None:
        """Close the connection (the server keeps its models)."""
        self.client.close()
