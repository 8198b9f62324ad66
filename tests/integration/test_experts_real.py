"""The ONNX embedding, Piper and faster-whisper experts against the real models of the test store."""

from __future__ import annotations

import hashlib
import json
import string
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import ExpertError, InputError
from localgpt.experts import expert_class
from localgpt.experts.base import ExpertContext
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard

REPO = Path(__file__).resolve().parents[2]
MINILM = "all-minilm-l6-v2-int8"
PIPER = "piper-en-us-joe-medium"
WHISPER = "whisper-tiny-en"

GetCard = Callable[[str], ModelCard]


def make(backend: str, card: ModelCard, settings: Settings) -> Any:
    """A loaded expert of ``backend`` for ``card``."""
    expert = expert_class(backend)(card, ExpertContext(settings=settings))
    expert.load()
    return expert


def normalise(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed."""
    stripped = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(stripped.split())


def test_expert_modules_import_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import localgpt.experts.onnx, localgpt.experts.piper, localgpt.experts.whisper\n"
        "heavy = ['onnxruntime', 'piper', 'faster_whisper', 'ctranslate2', 'tokenizers', 'numpy', 'av',"
        " 'huggingface_hub']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_default_onnx_providers_are_cpu_only_here(settings: Settings) -> None:
    import onnxruntime

    from localgpt.experts.onnx import onnx_providers

    assert onnx_providers(settings.model_copy(update={"device": "cpu"})) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA; the CPU-only default applies to CPU builds")
    assert onnx_providers(settings.model_copy(update={"device": "auto"})) == ["CPUExecutionProvider"]
    with pytest.raises(ExpertError, match="onnxruntime-gpu"):
        onnx_providers(settings.model_copy(update={"device": "cuda"}), "some-model")


@pytest.mark.slow
def test_similarity_ranks_paraphrases_above_unrelated(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    import numpy as np

    from localgpt.experts.onnx import onnx_providers

    expert = make("onnx-embedding", real_card(MINILM), settings)
    assert expert.providers == onnx_providers(settings)
    close = expert.run(
        "sentence-similarity",
        {"text": "A man is playing a guitar.", "other_text": "Someone plays the guitar."},
        run_dir,
    )
    far = expert.run(
        "sentence-similarity",
        {"text": "A man is playing a guitar.", "other_text": "Interest rates rose again this quarter."},
        run_dir,
    )
    assert close.data["score"] > far.data["score"] + 0.3
    assert close.data["score"] > 0.6
    assert close.outputs["text"] == f"similarity {close.data['score']:.2f}"

    vectors = expert.embed(["a cat sleeps on the sofa", "short", "x " * 600])  # the last one is truncated
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Padding to the batch's longest text must not change an embedding.
    alone = expert.embed(["short"])
    assert np.allclose(alone[0], vectors[1], atol=1e-4)

    with pytest.raises(InputError):
        expert.run("sentence-similarity", {"text": "only one", "other_text": "  "}, run_dir)


@pytest.mark.slow
def test_piper_writes_content_addressed_wav(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    expert = make("piper", real_card(PIPER), settings)
    result = expert.run("text-to-speech", {"text": "Hello from the local expert."}, run_dir)
    path = Path(result.outputs["audio"])
    assert path.parent == run_dir.path
    assert path.suffix == ".wav"
    assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == result.data["sample_rate"] == 22050
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds > 0.5
    assert seconds == pytest.approx(result.data["seconds"], abs=0.01)
    assert not list(run_dir.path.glob("*.part"))

    with pytest.raises(InputError, match="non-empty"):
        expert.run("text-to-speech", {"text": "   "}, run_dir)


@pytest.mark.slow
def test_speech_round_trip(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    voice = make("piper", real_card(PIPER), settings)
    speech = voice.run("text-to-speech", {"text": "the quick brown fox jumps over the lazy dog"}, run_dir)
    ears = make("faster-whisper", real_card(WHISPER), settings)
    heard = ears.run("automatic-speech-recognition", {"audio": speech.outputs["audio"]}, run_dir)
    assert "quick brown fox" in normalise(heard.outputs["text"])
    assert heard.data["language"] == "en"
    segments = heard.data["segments"]
    assert segments and all(0.0 <= s["start"] <= s["end"] for s in segments)
    assert normalise(" ".join(s["text"] for s in segments)) == normalise(heard.outputs["text"])


@pytest.mark.slow
def test_whisper_refuses_a_file_that_is_not_audio(
    real_card: GetCard, settings: Settings, run_dir: RunDir, tmp_path: Path
) -> None:
    expert = make("faster-whisper", real_card(WHISPER), settings)
    bogus = tmp_path / "notes.wav"
    bogus.write_text("these are meeting notes, not a recording\n" * 20)
    with pytest.raises(InputError, match=r"notes\.wav"):
        expert.run("automatic-speech-recognition", {"audio": str(bogus)}, run_dir)
    with pytest.raises(InputError, match="does not exist"):
        expert.run("automatic-speech-recognition", {"audio": str(tmp_path / "absent.wav")}, run_dir)


@pytest.mark.slow
def test_whisper_never_reaches_a_hub(
    real_card: GetCard, settings: Settings, run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import faster_whisper.transcribe
    import faster_whisper.utils
    import huggingface_hub
    import tokenizers

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a hub download was attempted")

    monkeypatch.setattr(faster_whisper.transcribe, "download_model", forbidden)
    monkeypatch.setattr(faster_whisper.utils, "download_model", forbidden)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    only_local = types.SimpleNamespace(
        Tokenizer=types.SimpleNamespace(
            from_file=tokenizers.Tokenizer.from_file,
            from_buffer=tokenizers.Tokenizer.from_buffer,
            from_pretrained=forbidden,
        )
    )
    monkeypatch.setattr(faster_whisper.transcribe, "tokenizers", only_local)
    voice = make("piper", real_card(PIPER), settings)
    speech = voice.run("text-to-speech", {"text": "Testing one two three."}, run_dir)
    ears = make("faster-whisper", real_card(WHISPER), settings)
    assert ears.run("automatic-speech-recognition", {"audio": speech.outputs["audio"]}, run_dir).outputs["text"]
