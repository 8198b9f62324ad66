"""Whole runs with real experts (Piper TTS -> faster-whisper ASR), and the proof that a run is offline.

The first runs are planned by a scripted FakeLLM, so they are deterministic; the last one lets the
real SmolLM2 plan. The offline proof runs them behind a guard that refuses every connection that
does not stay on this machine, with the Hugging Face offline switches removed from the environment,
so nothing but localgpt's own care keeps the run off the network.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import PlanError
from localgpt.pipeline import Pipeline
from localgpt.schema import RunResult
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeLLM
from tests import helpers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:llama_token_get_attr is deprecated:DeprecationWarning"),
]

PIPER = "piper-en-us-joe-medium"
WHISPER = "whisper-tiny-en"
SMOLLM = "smollm2-135m-instruct"
SENTENCE = "the quick brown fox jumps over the lazy dog"
REQUEST = f"Say '{SENTENCE}' aloud, then transcribe the audio"
PLAN = [
    {"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": SENTENCE}},
    {"id": 1, "task": "automatic-speech-recognition", "dep": [0], "args": {"audio": "<resource>-0"}},
]
ANSWER = "I read the sentence aloud and transcribed the recording; the transcript matches."
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


class NetworkGuard:
    """Refuses (and records) every socket connection or name lookup that leaves the machine.

    Loopback addresses (127.0.0.0/8, ::1), ``localhost`` and Unix sockets pass. This sees Python's
    socket module only: a C library with its own networking would not be caught here.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_create = socket.create_connection
        real_getaddrinfo = socket.getaddrinfo

        def connect(sock: socket.socket, address: Any) -> None:
            self._check(sock.family, address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            self._check(sock.family, address)
            return real_connect_ex(sock, address)

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            self._check(socket.AF_INET, address)
            return real_create(address, *args, **kwargs)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if not _local_host(host):
                self._refuse(f"lookup {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def _check(self, family: int, address: Any) -> None:
        if family == getattr(socket, "AF_UNIX", None):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if not _local_host(host):
            self._refuse(f"connect {address!r}")

    def _refuse(self, what: str) -> None:
        self.attempts.append(what)
        raise ConnectionRefusedError(f"network access refused by the test guard: {what}")


def _local_host(host: Any) -> bool:
    """Whether ``host`` names this machine (loopback, localhost, or no host at all)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host.lower() in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    """The network guard, with the Hugging Face offline switches taken away."""
    for name in OFFLINE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    try:  # huggingface_hub reads the switch at import: make it believe it is online
        from huggingface_hub import constants
    except ImportError:
        pass
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return NetworkGuard(monkeypatch)


@pytest.fixture
def experts(settings: Settings) -> None:
    """Skip (fail under CI) unless Piper and whisper are installed in the test store."""
    catalog = Catalog(settings.store)
    for model_id in (PIPER, WHISPER):
        if model_id not in catalog.ids() or not catalog.is_installed(catalog.get(model_id)):
            helpers.missing(f"model '{model_id}' is not installed in {settings.store}; "
                             "run: python download_models.py --profile test")


def normalise(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed."""
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def scripted_pipeline(settings: Settings) -> Pipeline:
    """A pipeline on the real experts whose LLM replies with the fixed plan, then the answer."""
    llm = FakeLLM([json.dumps(PLAN), ANSWER])
    return Pipeline(settings, llm, Catalog(settings.store, controller=SMOLLM))


def check_speech_run(result: RunResult, settings: Settings) -> None:
    """The TTS -> ASR run produced a WAV, transcribed it, and the answer names the file."""
    assert [r.status for r in result.results] == ["done", "done"], [r.error for r in result.results]
    tts, asr = result.results
    assert (tts.model, asr.model) == (PIPER, WHISPER)
    assert "quick brown fox" in normalise(asr.outputs["text"]), asr.outputs["text"]
    wav = Path(tts.outputs["audio"])
    assert wav.suffix == ".wav" and wav.is_file() and wav.stat().st_size > 1000
    assert result.run_dir is not None
    assert Path(result.run_dir).resolve() in wav.resolve().parents
    assert Path(result.run_dir).resolve().is_relative_to(settings.runs_dir.resolve())
    assert str(wav) in result.files
    assert str(wav) in result.answer
    assert result.answer.startswith(ANSWER)


@pytest.fixture
def pipeline(settings: Settings, experts: None) -> Iterator[Pipeline]:
    pipe = scripted_pipeline(settings)
    yield pipe
    pipe.close()


def test_guard_refuses_the_network_and_passes_loopback(offline: NetworkGuard) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert offline.attempts == []
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed, and refused before any packet
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(ConnectionRefusedError):
        socket.getaddrinfo("pypi.org", 443)
    assert len(offline.attempts) == 3


def test_say_then_transcribe(pipeline: Pipeline, settings: Settings) -> None:
    events: list[str] = []
    result = pipeline.run(REQUEST, on_event=lambda e: events.append(e.type))
    check_speech_run(result, settings)
    assert events[0] == "plan" and events[-1] == "done"
    assert events.count("task_done") == 2


def test_say_then_transcribe_offline(pipeline: Pipeline, settings: Settings, offline: NetworkGuard) -> None:
    result = pipeline.run(REQUEST)
    check_speech_run(result, settings)
    print(f"\noffline guard (scripted plan, real experts): {len(offline.attempts)} attempt(s) {offline.attempts}")
    assert offline.attempts == []


def test_real_planner_pipeline_offline(settings: Settings, experts: None, offline: NetworkGuard) -> None:
    if not (settings.store / SMOLLM / "model.gguf").is_file():
        helpers.missing(f"'{SMOLLM}' is not installed in {settings.store}; "
                         "run: python download_models.py --profile test")
    pipe = Pipeline.from_settings(settings)
    try:
        result = pipe.run("Read this sentence aloud: good morning, everyone.")
    except PlanError as exc:  # a 135M model may plan nonsense; that is not what this test is about
        outcome = f"PlanError: {exc.message}"
    else:
        assert isinstance(result, RunResult)
        outcome = f"RunResult: {[(r.task, r.status) for r in result.results]}"
    finally:
        pipe.close()
    print(f"\noffline guard (SmolLM2 planner): {outcome}; {len(offline.attempts)} attempt(s) {offline.attempts}")
    assert offline.attempts == []
