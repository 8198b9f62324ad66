"""Fakes for tests, of this project and of plugins: a scripted LLM that records its calls, fake experts,
fake model cards, and small valid media files."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localgpt import tasks as registry
from localgpt.experts import expert_class
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.llm import LLMStats, Message, TokenCallback
from localgpt.runtime.pool import ExpertFactory
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard
from localgpt.store.catalog import Catalog

Reply = str | Callable[[Sequence[Message], dict[str, Any] | None], str]


@dataclass
class FakeCall:
    """One call recorded by FakeLLM."""

    messages: list[Message]
    schema: dict[str, Any] | None
    temperature: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0


class FakeLLM:
    """An LLM for tests: returns scripted replies in order and records every call.

    A reply may be a string or a function of (messages, schema). When the script runs out,
    ``default`` is returned (or an error raised when it is None). Streaming sends the reply
    word by word to ``on_token``.
    """

    def __init__(self, replies: Iterable[Reply] = (), default: str | None = None, n_ctx: int = 4096) -> None:
        self.replies = list(replies)
        self.default = default
        self.n_ctx = n_ctx
        self.calls: list[FakeCall] = []
        self.stats = LLMStats()
        self._lock = threading.Lock()

    def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_token: TokenCallback | None = None,
        seed: int | None = None,
        repeat_penalty: float = 1.0,
    ) -> str:
        """Return the next scripted reply."""
        with self._lock:
            self.calls.append(FakeCall([dict(m) for m in messages], schema, temperature, seed, repeat_penalty))
            self.stats.calls += 1
            if self.replies:
                reply = self.replies.pop(0)
            elif self.default is not None:
                reply = self.default
            else:
                raise AssertionError("FakeLLM has no scripted reply left")
        text = reply(messages, schema) if callable(reply) else reply
        if on_token is not None:
            words = text.split(" ")
            for i, word in enumerate(words):
                on_token(word if i == len(words) - 1 else word + " ")
        return text

    def count_tokens(self, text: str) -> int:
        """About one token per four characters."""
        return max(1, len(text) // 4) if text else 0


def png_bytes(tag: str = "") -> bytes:
    """A valid 1x1 PNG whose text chunk makes the content (and so the file name) unique to ``tag``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"tag\x00" + tag.encode())
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def wav_bytes(tag: str = "", samples: int = 160) -> bytes:
    """A valid mono 16 kHz 16-bit WAV of silence, padded with ``tag`` so content differs."""
    pcm = b"\x00\x00" * samples + tag.encode().ljust(len(tag) + len(tag) % 2, b"\x00")
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp4_bytes(tag: str = "") -> bytes:
    """The first box of an MP4 file (enough for sniffing)."""
    return struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00isomiso2" + tag.encode()


MEDIA = {"image": (png_bytes, ".png"), "audio": (wav_bytes, ".wav"), "video": (mp4_bytes, ".mp4")}


class Recorder:
    """What fake experts saw: loads, closes and the inputs of each run (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loads: list[str] = []
        self.closes: list[str] = []
        self.runs: list[dict[str, Any]] = []

    def add(self, field: list[Any], item: Any) -> None:
        with self.lock:
            field.append(item)


class FakeExpert(Expert):
    """Serves any task. ``card.options`` steer it: ``sleep`` (seconds), ``fail`` (an error message).

    It produces every kind the task's spec lists: text as ``"<model>(<task>): <inputs>"``, media as a
    real file saved through ``out.save``. Media inputs are read back, so a bad path fails the run.
    """

    def load(self) -> None:
        self.ctx.extra["recorder"].add(self.ctx.extra["recorder"].loads, self.card.id)
        super().load()

    def close(self) -> None:
        self.ctx.extra["recorder"].add(self.ctx.extra["recorder"].closes, self.card.id)
        super().close()

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        rec: Recorder = self.ctx.extra["recorder"]
        spec = registry.get(task)
        read: dict[str, bytes] = {}
        for name, value in inputs.items():
            inp = spec.input(name)
            if inp is not None and inp.kind is not registry.Kind.TEXT:
                read[name] = Path(value).read_bytes()
        rec.add(rec.runs, {"model": self.card.id, "task": task, "inputs": dict(inputs), "read": read})
        time.sleep(float(self.card.options.get("sleep", 0)))
        if "fail" in self.card.options:
            raise RuntimeError(self.card.options["fail"])
        outputs: dict[str, str] = {}
        text = " ".join(f"{k}={v}" for k, v in sorted(inputs.items()))
        for kind in spec.produces:
            if kind is registry.Kind.TEXT:
                outputs["text"] = f"{self.card.id}({task}): {text}"
            else:
                make, suffix = MEDIA[kind.value]
                outputs[kind.value] = str(out.save(make(f"{self.card.id}/{task}/{text}"), suffix))
        return ExpertOutput(outputs=outputs, data={"model": self.card.id})


def fake_card(model_id: str, tasks: list[str], size: int = 0, backend: str = "fake", **options: Any) -> ModelCard:
    """A card for a fake expert."""
    return ModelCard(id=model_id, tasks=tasks, backend=backend, format="fake", description=f"fake {model_id}",
                     size_bytes=size, options=options)


def fake_factory(ctx: ExpertContext, backends: dict[str, type[Expert]] | None = None) -> ExpertFactory:
    """A pool factory: backends named in ``backends`` (default: ``fake``) get fakes, others the real class."""
    table = backends if backends is not None else {"fake": FakeExpert}

    def build(card: ModelCard) -> Expert:
        cls = table.get(card.backend) or expert_class(card.backend)
        return cls(card, ctx)

    return build


def install(store: Path, model_id: str, tasks: list[str], **options: Any) -> ModelCard:
    """Add a fake-backend model to ``store`` the way an installer does."""
    folder = store.parent / f"staging-{model_id}"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(model_id.encode() * 8)
    card = ModelCard(id=model_id, tasks=tasks, backend="fake", format="fake",
                     description=f"{model_id}: a fake model for {', '.join(tasks)}", options=options)
    return Catalog(store).add(card, folder)
