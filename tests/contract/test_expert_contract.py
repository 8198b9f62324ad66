"""The contract every expert backend passes: load, run on generated inputs, outputs of the right kinds
and formats, refusal of tasks it does not serve and of undecodable media, and close frees the model.

Cases come from the ``contract_cases()`` function of every test module under ``tests/`` that defines
one (found by reading the files, then imported). To add yours:

1. in your own test module write ``def contract_cases() -> list[Case]`` that imports ``Case`` (and
   ``CaseEnv`` if you type it) from ``tests.contract.test_expert_contract`` *inside* the function and returns
   ``Case(id, card, task, inputs, held=...)`` objects, where

   - ``card(env: CaseEnv) -> ModelCard`` builds or fetches the model: ``env.real_card("model-id")`` for an
     installed model (skips locally, fails under CI when absent) or a tiny model built under ``env.base``
     (the session's temp folder — build once, reuse when the folder exists);
   - ``inputs(env: CaseEnv, folder: Path) -> dict[str, str]`` writes generated inputs into ``folder`` and
     returns them by the names ``localgpt.tasks`` declares (media as file paths); ``image_file``,
     ``wav_file`` and ``speech_file`` below help;
   - ``held(expert) -> object`` returns the loaded model object that ``close()`` must release (checked
     with a weakref after ``gc.collect()``); ``None`` skips that check;
   - ``kinds`` overrides the output kinds expected (default: every kind the task's spec produces);
   - ``marks`` adds pytest marks to the case (e.g. ``[pytest.mark.slow]``);


Keep the imports at the top of your module light: the functions run at collection time.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import wave
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localgpt import tasks as registry
from localgpt.config import Settings
from localgpt.errors import ExpertError, InputError
from localgpt.experts import expert_class
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.runtime.media import sniff_kind
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard

TESTS = Path(__file__).resolve().parents[1]


def case_modules() -> list[str]:
    """The test modules under ``tests/`` that define ``contract_cases()``, as dotted names, sorted."""
    found = [p for p in TESTS.rglob("test_*.py") if "\ndef contract_cases(" in p.read_text(encoding="utf-8")]
    return sorted(".".join(("tests", *p.relative_to(TESTS).with_suffix("").parts)) for p in found)


@dataclass
class CaseEnv:
    """What a case's builders may use: a session temp folder, installed models, settings."""

    base: Path
    real_card: Callable[[str], ModelCard]
    settings: Settings


@dataclass
class Case:
    """One backend (or model) under the contract."""

    id: str
    card: Callable[[CaseEnv], ModelCard]
    task: str
    inputs: Callable[[CaseEnv, Path], dict[str, str]]
    held: Callable[[Expert], Any] | None = None
    kinds: tuple[str, ...] | None = None
    marks: list[Any] = field(default_factory=list)

    def expected_kinds(self) -> tuple[str, ...]:
        """The output kinds the run must produce."""
        return self.kinds or tuple(k.value for k in registry.get(self.task).produces)


# --- generated inputs ----------------------------------------------------------------------------------------

def image_file(folder: Path, name: str = "scene.png", size: tuple[int, int] = (64, 48)) -> Path:
    """A PNG of a scikit-image sample picture (the astronaut), resized to ``size``."""
    from PIL import Image
    from skimage import data

    path = folder / name
    Image.fromarray(data.astronaut()).resize(size).save(path)
    return path


def wav_file(folder: Path, name: str = "tone.wav", seconds: float = 1.0, rate: int = 16000) -> Path:
    """A mono 16-bit WAV of a 440 Hz tone with a little noise, made with numpy."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    signal = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)
    path = folder / name
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def speech_file(env: CaseEnv, folder: Path, text: str = "the quick brown fox jumps over the lazy dog") -> Path:
    """A WAV of ``text`` spoken by the installed Piper voice (for experts that need real speech)."""
    voice = expert_class("piper")(env.real_card("piper-en-us-joe-medium"), ExpertContext(settings=env.settings))
    try:
        spoken = voice.run("text-to-speech", {"text": text}, RunDir(folder / "speech"))
    finally:
        voice.close()
    return Path(spoken.outputs["audio"])


def garbage_like(path: Path) -> Path:
    """A file with ``path``'s name ending whose content is not media."""
    bogus = path.with_name("broken" + path.suffix)
    bogus.write_bytes(b"this is plain text, not a media file\n" * 8)
    return bogus


# --- output checks -------------------------------------------------------------------------------------------

def check_image(path: Path) -> None:
    """A PNG that decodes."""
    from PIL import Image

    raw = path.read_bytes()
    assert raw.startswith(b"\x89PNG\r\n\x1a\n"), f"{path.name} is not a PNG"
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        assert img.size[0] > 0 and img.size[1] > 0


def check_audio(path: Path) -> None:
    """A WAV that decodes and holds samples."""
    assert path.suffix == ".wav"
    with wave.open(str(path), "rb") as wav:
        assert wav.getnframes() > 0 and wav.getframerate() > 0
        assert len(wav.readframes(wav.getnframes())) > 0


def check_video(path: Path) -> None:
    """An MP4 whose first frame decodes."""
    assert path.suffix == ".mp4" and sniff_kind(path) is registry.Kind.VIDEO
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.width > 0 and frame.height > 0


CHECKS: dict[str, Callable[[Path], None]] = {"image": check_image, "audio": check_audio, "video": check_video}


def check_output(result: ExpertOutput, case: Case, card: ModelCard, out: RunDir) -> None:
    """Every expected kind present, in its format; files in the run folder; data JSON-serialisable."""
    assert isinstance(result, ExpertOutput)
    assert set(result.outputs) <= {k.value for k in registry.Kind}, result.outputs
    for kind in case.expected_kinds():
        assert kind in result.outputs, f"{case.id}: no {kind} output in {sorted(result.outputs)}"
    for kind, value in result.outputs.items():
        assert isinstance(value, str) and value.strip(), f"{case.id}: empty {kind} output"
        if kind != "text":
            path = Path(value)
            assert path.is_file() and path.parent == out.path, f"{case.id}: {kind} {value} not in the run folder"
            CHECKS[kind](path)
    json.dumps(result.data)
    if card.backend.startswith("transformers"):
        assert isinstance(result.data, dict) and result.data.get("runtime"), f"{case.id}: no data['runtime']"


# --- the built-in backends' cases ----------------------------------------------------------------------------

def contract_cases() -> list[Case]:
    """The backends shipped before the transformers backend, on the installed test models."""
    return [
        Case("onnx-embedding", lambda env: env.real_card("all-minilm-l6-v2-int8"), "sentence-similarity",
             lambda env, d: {"text": "a cat sleeps on the sofa", "other_text": "a kitten naps on the couch"},
             held=lambda e: e._session),
        Case("piper", lambda env: env.real_card("piper-en-us-joe-medium"), "text-to-speech",
             lambda env, d: {"text": "Testing the expert contract."}, held=lambda e: e._voice),
        Case("faster-whisper", lambda env: env.real_card("whisper-tiny-en"), "automatic-speech-recognition",
             lambda env, d: {"audio": str(speech_file(env, d))}, held=lambda e: e._model),
    ]


def all_cases(media_only: bool = False) -> list[Any]:
    """Every case of every module that defines contract_cases(), as pytest params (a module that fails to import is a
    failing case, not a silent gap); ``media_only``: the cases whose task takes an image, audio or video."""
    params = []
    for name in case_modules():
        try:
            found: list[Case] = importlib.import_module(name).contract_cases()
        except Exception as exc:  # reported as a failing test below
            message = f"contract cases of {name} could not be built: {type(exc).__name__}: {exc}"

            def broken(env: CaseEnv, message: str = message) -> ModelCard:
                pytest.fail(message)

            found = [Case(f"{name}-unavailable", broken, "text-generation", lambda env, d: {})]
        if media_only:
            found = [c for c in found if not registry.is_known(c.task) or any(
                i.kind is not registry.Kind.TEXT for i in registry.get(c.task).inputs)]
        params.extend(pytest.param(case, id=case.id, marks=case.marks) for case in found)
    return params


# --- the suite -----------------------------------------------------------------------------------------------

@pytest.fixture
def case_env(real_card: Callable[[str], ModelCard], settings: Settings,
             tmp_path_factory: pytest.TempPathFactory) -> CaseEnv:
    return CaseEnv(base=tmp_path_factory.getbasetemp(), real_card=real_card, settings=settings)


def make_expert(card: ModelCard, settings: Settings) -> Expert:
    """An unloaded expert of the card's backend."""
    return expert_class(card.backend)(card, ExpertContext(settings=settings))


@pytest.mark.parametrize("case", all_cases())
class TestExpertContract:
    """Each case: one backend (one model) held to the contract."""

    def test_load_run_check_outputs_and_close(self, case: Case, case_env: CaseEnv, tmp_path: Path,
                                              run_dir: RunDir) -> None:
        card = case.card(case_env)
        assert case.task in card.tasks, f"{case.id}: card {card.id} does not list {case.task}"
        expert = make_expert(card, case_env.settings)
        assert not expert.loaded  # loading is lazy
        expert.load()
        assert expert.loaded
        held = weakref.ref(case.held(expert)) if case.held is not None else None
        inputs = case.inputs(case_env, tmp_path)
        first = expert.run(case.task, inputs, run_dir)
        check_output(first, case, card, run_dir)
        second = expert.run(case.task, inputs, run_dir)  # the loaded model is reused
        assert set(second.outputs) == set(first.outputs)
        expert.close()
        assert not expert.loaded
        if held is not None:
            gc.collect()
            assert held() is None, f"{case.id}: the model is still referenced after close()"

    def test_refuses_a_task_it_does_not_serve(self, case: Case, case_env: CaseEnv, run_dir: RunDir) -> None:
        card = case.card(case_env)
        other = next(name for name in registry.names() if name not in card.tasks)
        spec = registry.get(other)
        with pytest.raises(ExpertError, match=card.id):
            make_expert(card, case_env.settings).run(other, {i.name: "x" for i in spec.inputs}, run_dir)


@pytest.mark.parametrize("case", all_cases(media_only=True))
def test_undecodable_media_is_an_input_error(case: Case, case_env: CaseEnv, tmp_path: Path, run_dir: RunDir) -> None:
    """Each case whose task takes media: a file of the right name but not decodable is an InputError naming it."""
    card = case.card(case_env)
    inputs = case.inputs(case_env, tmp_path)
    spec = registry.get(case.task)
    media = [i.name for i in spec.inputs if i.kind is not registry.Kind.TEXT and i.name in inputs]
    assert media, f"{case.id}: the generated inputs hold none of {case.task}'s media inputs"
    expert = make_expert(card, case_env.settings)
    try:
        for name in media:
            bad = garbage_like(Path(inputs[name]))
            with pytest.raises(InputError, match=bad.name.replace(".", r"\.")):
                expert.run(case.task, {**inputs, name: str(bad)}, run_dir)
    finally:
        expert.close()


def test_case_modules_are_discovered() -> None:
    """Every module that writes contract cases is found without being listed anywhere."""
    found = case_modules()
    assert "tests.contract.test_expert_contract" in found
    assert {"tests.integration.test_hf_vision", "tests.integration.test_diffusers",
            "tests.integration.test_control"} <= set(found)
