"""Inputs checked at the door: bad media fail their own task (naming task, argument and file), nothing else."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest

from localgpt.config import Settings
from localgpt.errors import InputError
from localgpt.experts.base import ExpertContext
from localgpt.runtime.executor import Executor
from localgpt.runtime.media import MAX_INPUT_BYTES, check_media
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.runs import InputFiles, RunDir
from localgpt.schema import Plan, Task, TaskResult
from localgpt.tasks import Kind
from localgpt.testing import Recorder, fake_card, fake_factory, mp4_bytes
from tests.helpers import missing


def png(size: int = 48) -> bytes:
    """A real RGB PNG with some content."""
    from PIL import Image

    image = Image.new("RGB", (size, size), "white")
    for i in range(size):
        image.putpixel((i, i), (200, 30, 30))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def jpeg(size: int = 64) -> bytes:
    """A real JPEG photo-like image (noise compresses badly, so the file is long enough to cut)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wav(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    """A real 16-bit mono WAV of a quiet tone."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.2 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


class Door:
    """Fake experts behind a real executor, with files in a temp folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.rec = Recorder()
        ctx = ExpertContext(settings=Settings(store=tmp / "store", runs_dir=tmp / "runs"), extra={"recorder": self.rec})
        self.pool = ModelPool(ctx, 1 << 30, factory=fake_factory(ctx))
        self.out = RunDir(tmp / "run")

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def run(self, tasks: list[Task], max_bytes: int | None = MAX_INPUT_BYTES) -> dict[int, TaskResult]:
        """Run ``tasks``; bare file names in their arguments are taken from the temp folder."""
        for t in tasks:
            for name, value in t.args.items():
                if (self.tmp / value).is_file():
                    t.args[name] = str(self.tmp / value)
        return self._run(tasks, max_bytes)

    def _run(self, tasks: list[Task], max_bytes: int | None) -> dict[int, TaskResult]:
        cards = {t.id: fake_card(f"m{t.id}", [t.task]) for t in tasks}
        files = InputFiles(roots=[self.tmp], max_bytes=max_bytes)
        results = Executor(self.pool, max_workers=2, timeout=30).run(Plan(tasks=tasks), cards, files, self.out)
        return {r.id: r for r in results}


@pytest.fixture
def door(tmp_path: Path) -> Door:
    return Door(tmp_path)


def graph(first: Task) -> list[Task]:
    """``first``, a task that depends on it, and an unrelated task."""
    return [first,
            Task(id=1, task="summarization", dep=[first.id], args={"text": "<resource>-0"}),
            Task(id=2, task="translation", args={"text": "bonjour"})]


def assert_only_task_0_failed(results: dict[int, TaskResult], *words: str) -> str:
    """Task 0 failed with an error holding ``words``; its dependant skipped; the other task done."""
    error = results[0].error or ""
    assert results[0].status == "failed", results[0]
    for word in words:
        assert word in error, error
    assert results[1].status == "skipped" and "0" in (results[1].error or "")
    assert results[2].status == "done"
    return error


def test_good_image_and_audio_pass_the_door(door: Door) -> None:
    door.file("cat.png", png())
    door.file("photo.jpg", jpeg())
    door.file("talk.wav", wav())
    tasks = [Task(id=0, task="image-classification", args={"image": "cat.png"}),
             Task(id=1, task="object-detection", args={"image": "photo.jpg"}),
             Task(id=2, task="automatic-speech-recognition", args={"audio": "talk.wav"})]
    results = door.run(tasks)
    assert [results[i].status for i in range(3)] == ["done", "done", "done"]
    assert {run["task"] for run in door.rec.runs} == {"image-classification", "object-detection",
                                                       "automatic-speech-recognition"}


def test_undecodable_image_fails_only_its_task(door: Door) -> None:
    door.file("broken.png", png()[:40])  # a PNG signature and header, then nothing
    error = assert_only_task_0_failed(
        door.run(graph(Task(id=0, task="image-classification", args={"image": "broken.png"}))),
        "task 0 (image-classification)", "argument 'image'", "broken.png", "cannot be decoded")
    assert "should be" not in error
    assert [run["task"] for run in door.rec.runs] == ["translation"]


def test_truncated_jpeg_is_refused(door: Door) -> None:
    data = jpeg()
    door.file("cut.jpg", data[: len(data) // 2])
    assert_only_task_0_failed(door.run(graph(Task(id=0, task="image-to-text", args={"image": "cut.jpg"}))),
                              "argument 'image'", "cut.jpg", "cannot be decoded")


def test_undecodable_audio_fails_only_its_task(door: Door) -> None:
    good = wav()
    door.file("broken.wav", good[:12] + b"\x00garbage that is no chunk" * 8)  # RIFF/WAVE, then junk
    door.file("fake.mp3", b"ID3" + b"\x00\x00\x00\x00\x00\x00\x00" + b"not an mpeg frame " * 40)
    assert_only_task_0_failed(
        door.run(graph(Task(id=0, task="automatic-speech-recognition", args={"audio": "broken.wav"}))),
        "task 0 (automatic-speech-recognition)", "argument 'audio'", "broken.wav", "cannot be decoded")
    assert_only_task_0_failed(door.run(graph(Task(id=0, task="audio-classification", args={"audio": "fake.mp3"}))),
                              "task 0 (audio-classification)", "fake.mp3", "cannot be decoded")


def test_empty_wav_is_refused(door: Door) -> None:
    door.file("empty.wav", wav(seconds=0))
    assert_only_task_0_failed(door.run(graph(Task(id=0, task="audio-to-audio", args={"audio": "empty.wav"}))),
                              "empty.wav", "no samples")


def test_oversized_input_fails_only_its_task(door: Door) -> None:
    data = png(64)
    door.file("big.png", data)
    error = assert_only_task_0_failed(
        door.run(graph(Task(id=0, task="depth-estimation", args={"image": "big.png"})), max_bytes=len(data) - 1),
        "task 0 (depth-estimation)", "argument 'image'", "big.png", "more than")
    assert "bytes" in error
    assert door.run([Task(id=0, task="depth-estimation", args={"image": "big.png"})], max_bytes=None)[0].status == \
        "done"


def test_video_where_an_image_is_needed(door: Door) -> None:
    door.file("clip.mp4", mp4_bytes("clip"))
    door.file("clip.png", mp4_bytes("named like an image"))
    assert_only_task_0_failed(door.run(graph(Task(id=0, task="image-classification", args={"image": "clip.mp4"}))),
                              "argument 'image'", "clip.mp4", "should be image", "video")
    assert_only_task_0_failed(door.run(graph(Task(id=0, task="image-classification", args={"image": "clip.png"}))),
                              "clip.png", "its content is video")


def test_check_media_hints_and_compressed_audio(tmp_path: Path) -> None:
    try:
        import av
    except ImportError:
        missing("PyAV is not installed (the cpu extra); it decodes compressed audio")
    import numpy as np

    flac = tmp_path / "tone.flac"
    with av.open(str(flac), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray((np.ones((1, 4000)) * 1000).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    check_media(flac, Kind.AUDIO)  # a real compressed file passes
    (tmp_path / "clip.mp4").write_bytes(mp4_bytes())
    with pytest.raises(InputError) as err:
        check_media(tmp_path / "clip.mp4", Kind.IMAGE)
    assert err.value.hint == "a video was given where image is needed"
