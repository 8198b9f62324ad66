"""The shipped real models (spaCy NER, fastText language id, rapidocr OCR, Silero VAD) through their backends."""

from __future__ import annotations

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
from localgpt.store.packs import PROFILES, pack

REPO = Path(__file__).resolve().parents[2]
SPACY = "spacy-en-core-web-sm"
LID = "fasttext-lid-176"
OCR = "rapidocr-pp-ocrv4"
VAD = "silero-vad"
PIPER = "piper-en-us-joe-medium"

GetCard = Callable[[str], ModelCard]


def make(card: ModelCard, settings: Settings) -> Any:
    """A loaded expert for ``card`` through the backend its card names."""
    expert = expert_class(card.backend)(card, ExpertContext(settings=settings))
    expert.load()
    return expert


def normalise(text: str) -> str:
    """Lower-case, punctuation and all whitespace removed."""
    return "".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def write_wav(path: Path, samples: Any, rate: int = 16_000) -> Path:
    """Write float samples in [-1, 1] as a 16-bit mono WAV."""
    import numpy as np

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def test_packs_are_in_the_test_and_starter_profiles() -> None:
    for model_id, backend, task in ((SPACY, "spacy", "token-classification"), (LID, "fasttext", "text-classification"),
                                    (OCR, "rapidocr", "image-to-text"), (VAD, "silero-vad", "audio-classification")):
        spec = pack(model_id)
        assert spec.backend == backend and spec.tasks == (task,)
        assert spec.size < 20_000_000  # small enough for the starter download
        assert model_id in PROFILES["test"] and model_id in PROFILES["starter"]
        expert_class(backend)  # the backend is registered and importable


def test_backend_modules_import_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "import localgpt.experts.spacy_ner, localgpt.experts.fasttext_lid, localgpt.experts.ocr, localgpt.experts.vad\n"
        "heavy = ['spacy', 'fasttext', 'rapidocr_onnxruntime', 'onnxruntime', 'numpy', 'cv2', 'av']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


# --- spaCy named entities ---


def test_spacy_finds_person_org_and_place_with_spans(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    expert = make(real_card(SPACY), settings)
    text = "Barack Obama met the engineers of Google in Paris last Tuesday."
    result = expert.run("token-classification", {"text": text}, run_dir)
    found = {(e["text"], e["label"]) for e in result.data["entities"]}
    assert {("Barack Obama", "PERSON"), ("Google", "ORG"), ("Paris", "GPE")} <= found
    for entity in result.data["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]
        assert 0.5 < entity["score"] <= 1.0  # the beam agrees with the greedy entities of a clear sentence
    assert "Barack Obama (PERSON)" in result.outputs["text"]
    assert any(t["text"] == "met" and t["pos"] == "VERB" for t in result.data["tokens"])
    json.dumps(result.data)
    expert.close()
    assert not expert.loaded


def test_spacy_refuses_empty_text(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    expert = make(real_card(SPACY), settings)
    with pytest.raises(InputError, match="non-empty"):
        expert.run("token-classification", {"text": "   "}, run_dir)
    with pytest.raises(ExpertError, match="serves token-classification"):
        expert.run("summarization", {"text": "x"}, run_dir)


# --- fastText language id ---


def test_fasttext_names_french_with_high_score(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    expert = make(real_card(LID), settings)
    text = "Le chat dort sur le canapé pendant que nous préparons le dîner.\nIl fait beau aujourd'hui."
    result = expert.run("text-classification", {"text": text}, run_dir)
    assert result.data["label"] == "fr" and result.data["score"] > 0.9
    assert result.outputs["text"].startswith("fr (")
    assert len(result.data["labels"]) == 3
    german = expert.run("text-classification", {"text": "Ich habe heute keine Zeit für das Treffen."}, run_dir)
    assert german.data["label"] == "de"


def test_fasttext_scores_only_the_candidate_labels(real_card: GetCard, settings: Settings, run_dir: RunDir) -> None:
    expert = make(real_card(LID), settings)
    result = expert.run("text-classification", {"text": "The weather is lovely today.", "labels": "fr, EN"}, run_dir)
    assert [x["label"] for x in result.data["labels"]] == ["en", "fr"]
    assert abs(sum(x["score"] for x in result.data["labels"]) - 1.0) < 1e-3
    with pytest.raises(InputError, match="ISO 639"):
        expert.run("text-classification", {"text": "hello", "labels": "French"}, run_dir)


# --- rapidocr ---


def render(text: str, path: Path) -> Path:
    """``text`` drawn black on white, large enough to read."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=36)
    image = Image.new("RGB", (40 + 22 * len(text), 100), "white")
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=font)
    image.save(path)
    return path


def test_rapidocr_reads_a_rendered_sentence(real_card: GetCard, settings: Settings, run_dir: RunDir,
                                            tmp_path: Path) -> None:
    expert = make(real_card(OCR), settings)
    sentence = "The quick brown fox jumps over the lazy dog"
    result = expert.run("image-to-text", {"image": str(render(sentence, tmp_path / "line.png"))}, run_dir)
    assert normalise(result.outputs["text"]) == normalise(sentence)
    line = result.data["lines"][0]
    assert len(line["box"]) == 4 and 0.5 < line["score"] <= 1.0
    assert result.data["runtime"] == "onnxruntime/CPUExecutionProvider"
    json.dumps(result.data)


def test_rapidocr_says_when_there_is_no_text(real_card: GetCard, settings: Settings, run_dir: RunDir,
                                            tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (120, 80), "white").save(tmp_path / "blank.png")
    result = make(real_card(OCR), settings).run("image-to-text", {"image": str(tmp_path / "blank.png")}, run_dir)
    assert result.outputs["text"] == "(no text found)" and result.data["lines"] == []


# --- Silero VAD ---


@pytest.fixture
def speech_wav(real_card: GetCard, settings: Settings, run_dir: RunDir) -> Path:
    """A WAV of Piper speaking a sentence (22 kHz), with a second of silence in front."""
    import numpy as np

    from localgpt.experts.vad import read_audio

    voice = make(real_card(PIPER), settings)
    spoken = Path(voice.run("text-to-speech", {"text": "Voice activity detection finds the speech."},
                            run_dir).outputs["audio"])
    audio = read_audio(str(spoken), 22_050)
    return write_wav(run_dir.path / "padded.wav", np.concatenate([np.zeros(22_050, np.float32), audio]), 22_050)


def test_vad_finds_speech_after_the_silence(real_card: GetCard, settings: Settings, run_dir: RunDir,
                                            speech_wav: Path) -> None:
    expert = make(real_card(VAD), settings)
    result = expert.run("audio-classification", {"audio": str(speech_wav)}, run_dir)
    assert result.data["label"] == "speech" and result.data["score"] > 0.5
    spans = result.data["spans"]
    assert spans and 0.8 <= spans[0]["start"] <= 1.4  # the speech starts after the second of silence
    assert spans[-1]["end"] <= result.data["seconds"] + 1e-6
    assert result.data["speech_seconds"] > 1.0
    assert result.outputs["text"].startswith("speech (")


def test_vad_finds_no_speech_in_silence_or_a_tone(real_card: GetCard, settings: Settings, run_dir: RunDir,
                                                  tmp_path: Path) -> None:
    import numpy as np

    expert = make(real_card(VAD), settings)
    silent = write_wav(tmp_path / "silence.wav", np.zeros(32_000, np.float32))
    result = expert.run("audio-classification", {"audio": str(silent)}, run_dir)
    assert result.data["label"] == "no-speech" and result.data["spans"] == []
    assert result.data["labels"][0]["label"] == "no-speech"
    tone = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(np.arange(32_000) * 2 * np.pi * 440 / 16_000))
    assert expert.run("audio-classification", {"audio": str(tone)}, run_dir).data["label"] == "no-speech"


def test_vad_refuses_a_file_that_is_not_audio(real_card: GetCard, settings: Settings, run_dir: RunDir,
                                             tmp_path: Path) -> None:
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(InputError, match="cannot be decoded"):
        make(real_card(VAD), settings).run("audio-classification", {"audio": str(bad)}, run_dir)


def contract_cases() -> list[Any]:
    """The four shipped-model backends under the expert contract (tests/test_expert_contract.py)."""
    from tests.contract.test_expert_contract import Case, CaseEnv, speech_file

    def page(env: CaseEnv, folder: Path) -> dict[str, str]:
        return {"image": str(render("Contract check", folder / "page.png"))}

    def speech(env: CaseEnv, folder: Path) -> dict[str, str]:
        return {"audio": str(speech_file(env, folder, "checking the voice activity detector"))}

    def card(model_id: str) -> Callable[[CaseEnv], ModelCard]:
        return lambda env: env.real_card(model_id)

    return [
        Case("spacy", card(SPACY), "token-classification",
             lambda env, d: {"text": "Grace Hopper worked for the US Navy in Washington."}, held=lambda e: e._nlp),
        Case("fasttext", card(LID), "text-classification",
             lambda env, d: {"text": "Dies ist ein kurzer deutscher Satz."}, held=lambda e: e._model),
        Case("rapidocr", card(OCR), "image-to-text", page, held=lambda e: e._engine),
        Case("silero-vad", card(VAD), "audio-classification", speech, held=lambda e: e._session),
    ]


def test_read_audio_mixes_resamples_and_decodes_compressed_audio(tmp_path: Path) -> None:
    import numpy as np

    from localgpt.experts.vad import read_audio

    rate = 44_100
    t = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((np.stack([left, right], axis=1) * 32767).astype("<i2").tobytes())
    audio = read_audio(str(stereo), 16_000)
    assert audio.dtype == np.float32 and len(audio) == 16_000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s of audio: bin n is n Hz
    assert 0.45 < float(np.abs(audio).max()) < 0.55
    try:
        import av
    except ImportError:
        return
    flac = tmp_path / "tone.flac"
    with av.open(str(flac), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((left * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    decoded = read_audio(str(flac), 16_000)
    assert abs(len(decoded) - 16_000) <= 160
    assert abs(int(np.abs(np.fft.rfft(decoded[:16_000], n=16_000)).argmax()) - 440) <= 1
