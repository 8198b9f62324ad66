"""Fake experts and helpers shared by the executor and pipeline tests (no model library needed)."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from localgpt import tasks as registry
from localgpt.catalog import Catalog
from localgpt.experts import expert_class
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.pool import ExpertFactory
from localgpt.resources import RunDir
from localgpt.schema import ModelCard


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
