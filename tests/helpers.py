"""Helpers shared by the tests: where the real test models live (and skipping or failing when one is
absent), tiny transformers models and a fake hub server built locally, and a fake world for the HTTP
server (FakeLLM and fake experts behind a real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from localgpt.config import Settings
from localgpt.experts.base import ExpertContext
from localgpt.llm import Message
from localgpt.pipeline import Pipeline
from localgpt.runtime.pool import ModelPool
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeExpert, FakeLLM, Recorder, fake_factory, install

REPO = Path(__file__).resolve().parent.parent


def store_dir() -> Path:
    """The folder holding the real models the tests use."""
    return Path(os.environ.get("LOCALGPT_TEST_STORE", REPO / "model_store"))


def missing(reason: str) -> None:
    """Skip with ``reason`` locally; fail under CI, where everything must be installed."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required for CI but absent: {reason}")
    pytest.skip(reason)


SENTENCE_WORDS = ("the quick brown fox jumps over lazy dog a man is playing guitar on stage i really enjoyed this "
                  "film acting was wonderful worst service have ever had where nearest train station two kittens "
                  "are sleeping warm blanket please translate sentence into french ok")
WORDS = tuple(SENTENCE_WORDS.split(" "))


def build_tokenizer(folder: Path) -> Any:
    """A word-level BERT-style fast tokenizer ([CLS] ... [SEP]) saved into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(str(folder))
    return fast


def build_tiny_bert(folder: Path, kind: str = "classifier", seed: int = 0, vocab_size: int | None = None) -> Path:
    """A tiny random BERT (``classifier`` with two labels, or the bare ``encoder``) with its tokenizer.

    ``vocab_size`` above the tokenizer's pads the embedding table (unused rows), to make a bigger file.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    config = BertConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if kind == "classifier" else BertModel(config)
    model.eval().save_pretrained(str(folder))
    return folder


@dataclass
class FakeHub:
    """A hub that serves one folder as repo ``repo`` at commit ``commit`` (and as branch ``main``).

    ``drop_once``: files whose first full GET stops after half the bytes (the connection is closed).
    ``fail_always``: files whose GET always answers 403 (refused). ``corrupt``: files served with one byte flipped.
    ``fake_sizes``: sizes the API reports in place of the real ones. ``log``: (method, path, Range) per request.
    """

    folder: Path
    repo: str = "tests/tiny-bert"
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    drop_once: set[str] = field(default_factory=set)
    fail_always: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    fake_sizes: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def files(self) -> dict[str, bytes]:
        """Every file of the repo, by path."""
        return {p.relative_to(self.folder).as_posix(): p.read_bytes()
                for p in sorted(self.folder.rglob("*")) if p.is_file()}

    def api(self) -> dict[str, Any]:
        """The model-info JSON the hub answers with ``?blobs=true``."""
        siblings = []
        for path, data in self.files().items():
            size = self.fake_sizes.get(path, len(data))
            entry: dict[str, Any] = {"rfilename": path, "size": size,
                                     "blobId": hashlib.sha1(data).hexdigest()}
            if path.endswith(".safetensors"):
                entry["lfs"] = {"size": size, "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        return {"id": self.repo, "sha": self.commit, "siblings": siblings, "cardData": {"license": "mit"},
                "pipeline_tag": "text-classification"}

    def etag(self, path: str, data: bytes) -> str:
        """The ETag the hub gives a file: the sha256 of LFS files, a git blob id otherwise."""
        return hashlib.sha256(data).hexdigest() if path.endswith(".safetensors") else hashlib.sha1(data).hexdigest()

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of ``path`` (None when there was none)."""
        return [rng for method, p, rng in self.log if method == "GET" and p.endswith("/" + path)]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _serve(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.log.append(("HEAD" if head else "GET", path, self.headers.get("Range")))
            api = f"/api/models/{hub.repo}/revision/"
            if path.startswith(api):
                rev = path[len(api):]
                if rev not in ("main", hub.commit):
                    self._send(404, b'{"error":"Revision Not Found"}', {"X-Error-Code": "RevisionNotFound"}, head)
                    return
                self._send(200, json.dumps(hub.api()).encode(), {"Content-Type": "application/json"}, head)
                return
            prefix = f"/{hub.repo}/resolve/"
            if not path.startswith(prefix):
                self._send(404, b"not found", {"X-Error-Code": "RepoNotFound"}, head)
                return
            rev, _, name = path[len(prefix):].partition("/")
            files = hub.files()
            if rev not in ("main", hub.commit) or name not in files:
                self._send(404, b"not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": hub.commit}, head)
                return
            data = files[name]
            headers = {"X-Repo-Commit": hub.commit, "ETag": f'"{hub.etag(name, data)}"',
                       "Accept-Ranges": "bytes"}
            if name in hub.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if head:
                self._send(200, data, headers, head=True)
                return
            if name in hub.fail_always:
                self._send(403, b"forbidden", {"X-Error-Message": "access denied"}, head)
                return
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self._send(206, data[start:], headers, head)
                return
            if name in hub.drop_once:
                hub.drop_once.discard(name)
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(200, data, headers, head)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(head=False)

    return Handler


class HubServer:
    """A threaded HTTP server on 127.0.0.1 serving a :class:`FakeHub`; use as a context manager."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
        self.server.daemon_threads = True
        hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self.hub

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ANSWER = "The models finished the work."
FAKE_MODELS = {"draw-fake": ["text-to-image"], "caption-fake": ["image-to-text"],
               "tts-fake": ["text-to-speech"], "asr-fake": ["automatic-speech-recognition"]}
IMAGE_FILE = re.compile(r"\S+\.(?:png|jpg)")




def plan_for(request: str, files: list[str]) -> list[dict[str, Any]]:
    """The plan the fake planner writes: keywords of the request pick the tasks."""
    image = next((f for f in files if IMAGE_FILE.fullmatch(f)), None)
    tasks: list[dict[str, Any]] = []
    if "caption" in request and "draw" in request and image:
        tasks.append({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": image}})
        tasks.append({"id": 1, "task": "text-to-image", "dep": [0], "args": {"text": "<resource>-0"}})
    elif "draw" in request:
        tasks.append({"id": 0, "task": "text-to-image", "dep": [-1], "args": {"text": "a red square"}})
        if "caption it" in request:
            tasks.append({"id": 1, "task": "image-to-text", "dep": [0], "args": {"image": "<resource>-0"}})
    elif "caption" in request and image:
        tasks.append({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": image}})
    elif "depth" in request and image:
        tasks.append({"id": 0, "task": "depth-estimation", "dep": [-1], "args": {"image": image}})
    elif "outside" in request:
        path = request.split("outside ")[1].split()[0]
        tasks.append({"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": path}})
    else:
        tasks.append({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello"}})
    return tasks


class FakeWorld:
    """A store of fake models and a pipeline factory whose FakeLLM plans by keywords.

    ``release`` gates requests that contain the word "wait"; ``load_gate`` (when set) blocks the
    factory itself, as slow model loading does.
    """

    def __init__(self, tmp: Path, expert: type[FakeExpert] = FakeExpert,
                 options: dict[str, dict[str, Any]] | None = None) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        self.store.mkdir(parents=True)
        for model_id, tasks in FAKE_MODELS.items():
            install(self.store, model_id, tasks, **(options or {}).get(model_id, {}))
        self.recorder = Recorder()
        self.expert = expert
        self.release = threading.Event()
        self.load_gate: threading.Event | None = None
        self.llms: list[FakeLLM] = []
        self.planner_prompts: list[list[Message]] = []

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"store": self.store, "data_dir": self.tmp / "data", "task_timeout": 20,
                                  "runs_dir": self.tmp / "elsewhere", "concurrency": 2, "queue_size": 4}
        return Settings(**(values | overrides))

    def brain(self, messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
        system = messages[0]["content"]
        if system.startswith("You are localgpt, an assistant that answered"):
            if "where" in messages[-1]["content"]:  # quote a produced file's path, as a real LLM may
                path = re.search(r'"(/[^"]+\.png)"', messages[-1]["content"])
                return f"{ANSWER} It is at {path.group(1) if path else '?'}, enjoy."
            return ANSWER
        if schema is not None and "reason" in schema.get("properties", {}):
            return json.dumps({"id": schema["properties"]["id"]["enum"][0], "reason": "it fits"})
        if system.startswith("You are the planner"):
            self.planner_prompts.append([dict(m) for m in messages])  # type: ignore[misc]
            prompt = messages[-1]["content"]
            request = prompt.split("\n")[0].removeprefix("Request: ")
            listed = prompt.split("\nFiles: ", 1)[1]
            files = [] if listed == "none" else listed.split(", ")
            if "wait" in request:
                self.release.wait(30)
            plan = plan_for(request, files)
            if schema is not None and "steps" in schema.get("properties", {}):  # the decomposing planner
                steps = [f"Step {i}: run {t['task']}" for i, t in enumerate(plan, 1)]
                return json.dumps({"steps": steps, "tasks": plan})
            return json.dumps(plan)
        raise AssertionError(f"unexpected LLM call: {messages[-1]['content'][:80]}")

    def factory(self, settings: Settings) -> Pipeline:
        if self.load_gate is not None:
            self.load_gate.wait(30)
        llm = ChoppyLLM([self.brain] * 5000)
        self.llms.append(llm)
        ctx = ExpertContext(settings=settings, llm=llm, extra={"recorder": self.recorder})
        pool = ModelPool(ctx, 1 << 30, factory=fake_factory(ctx, {"fake": self.expert}))
        return Pipeline(settings, llm, Catalog(settings.store), pool)


class ChoppyLLM(FakeLLM):
    """FakeLLM streaming in 5-character pieces (so words, and paths, are split across tokens)."""

    def generate(self, messages: Sequence[Message], **kwargs: Any) -> str:
        on_token = kwargs.pop("on_token", None)
        text = super().generate(messages, **kwargs)
        if on_token is not None:
            for i in range(0, len(text), 5):
                on_token(text[i:i + 5])
        return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A real uvicorn server for an app, in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(self.url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(world: FakeWorld, **overrides: Any) -> Served:
    """A started, ready server for ``world``."""
    from localgpt.server import create_app

    served = Served(create_app(world.settings(**overrides), world.factory))
    if world.load_gate is None:
        served.wait_ready()
    return served


def sse_chunks(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of an SSE reply, JSON-decoded ("[DONE]" kept as a string)."""
    out: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "localgpt", "messages": [{"role": "user", "content": text}], **extra}


# --- one shared server for the routes that need no special settings ---
