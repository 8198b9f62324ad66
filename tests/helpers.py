"""Helpers shared by the tests: where the real test models live (and skipping or failing when one is
absent), tiny transformers models and a fake hub server built locally, and a fake world for the HTTP
server (FakeLLM and fake experts behind a real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from localgpt.testing import (
    ANSWER,
    FAKE_MODELS,
    WORDS,
    ChoppyLLM,
    FakeWorld,
    Served,
    build_tokenizer,
    free_port,
    plan_for,
    serve,
)

# the fakes behind a server moved to localgpt.testing (the benchmarks use them too); the tests take them from here
__all__ = ["ANSWER", "FAKE_MODELS", "WORDS", "ChoppyLLM", "FakeWorld", "Served", "build_tokenizer", "free_port",
           "plan_for", "serve"]

REPO = Path(__file__).resolve().parent.parent


def store_dir() -> Path:
    """The folder holding the real models the tests use."""
    return Path(os.environ.get("LOCALGPT_TEST_STORE", REPO / "model_store"))


def missing(reason: str) -> None:
    """Skip with ``reason`` locally; fail under CI, where everything must be installed."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"required for CI but absent: {reason}")
    pytest.skip(reason)


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
