"""faster-whisper speech recognition on a CTranslate2 Whisper model in a local folder.

faster_whisper and ctranslate2 are imported only inside methods. The model is always opened
from its folder in the store, never by name, so faster-whisper has no reason to reach a hub.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import REINSTALL

if TYPE_CHECKING:
    from localgpt.config import Settings
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

log = logging.getLogger(__name__)

# Without tokenizer.json faster-whisper would fetch one from the hub: require it.
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def whisper_device(settings: Settings, model: str) -> str:
    """The CTranslate2 device ("cuda" or "cpu") from ``settings.device`` and the GPUs it can see."""
    import ctranslate2

    if settings.device == "cpu":
        return "cpu"
    gpus = ctranslate2.get_cuda_device_count()
    if settings.device == "cuda" and gpus == 0:
        raise ExpertError(
            f"device 'cuda' was asked for model '{model}', but CTranslate2 sees no CUDA GPU",
            "check the NVIDIA driver and CUDA libraries, or set LOCALGPT_DEVICE=cpu",
        )
    return "cuda" if gpus > 0 else "cpu"


class FasterWhisperExpert(Expert):
    """A Whisper model in CTranslate2 format; serves ``automatic-speech-recognition``.

    Card options: ``language`` (e.g. "en"; detected when absent), ``beam_size`` (default 5; 1 is
    greedy and a little faster), ``compute_type`` (default int8 on CPU, float16 on CUDA).

    Example::

        expert = FasterWhisperExpert(card, ExpertContext(settings))
        expert.load()
        expert.run("automatic-speech-recognition", {"audio": "/abs/speech.wav"}, run_dir).outputs["text"]
    """

    TASKS = ("automatic-speech-recognition",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._model: Any = None
        self.device = "cpu"

    def load(self) -> None:
        """Open the model from its local folder on the chosen device."""
        from faster_whisper import WhisperModel

        folder = self.card.path
        if folder is None or not folder.is_dir():
            raise ExpertError(f"model '{self.card.id}' has no folder in the store ({folder})", REINSTALL)
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise ExpertError(f"model '{self.card.id}' in {folder} lacks {', '.join(missing)}", REINSTALL)
        settings = self.ctx.settings
        device = whisper_device(settings, self.card.id)
        failed = f"model '{self.card.id}' could not be loaded from {folder}"
        try:
            model = self._open(WhisperModel, folder, device)
        except RuntimeError as exc:
            if device != "cuda" or settings.device == "cuda":
                raise ExpertError(f"{failed}: {exc}", REINSTALL) from exc
            log.warning("model %s failed on the GPU (%s); using the CPU", self.card.id, exc)
            device = "cpu"
            try:
                model = self._open(WhisperModel, folder, device)
            except RuntimeError as exc2:
                raise ExpertError(f"{failed}: {exc2}", REINSTALL) from exc2
        self._model, self.device = model, device
        super().load()

    def _open(self, factory: Any, folder: Path, device: str) -> Any:
        """Construct the WhisperModel on ``device`` (never downloads: a folder path is given)."""
        default = "float16" if device == "cuda" else "int8"
        return factory(
            str(folder),
            device=device,
            compute_type=self.card.options.get("compute_type", default),
            cpu_threads=self.ctx.settings.threads,
            local_files_only=True,
        )

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Transcribe the ``audio`` file."""
        from faster_whisper import decode_audio

        self.check_task(task)
        if not self.loaded:
            self.load()
        value = inputs.get("audio", "").strip()
        if not value:
            raise InputError(f"speech recognition with model '{self.card.id}' needs an 'audio' file")
        path = Path(value)
        if not path.is_file():
            raise InputError(f"audio file '{value}' does not exist", "check the path")
        try:
            samples = decode_audio(str(path), sampling_rate=self._model.feature_extractor.sampling_rate)
        except Exception as exc:  # PyAV raises many error types for unreadable media
            raise InputError(
                f"audio file '{path.name}' could not be decoded as audio ({type(exc).__name__}: {exc})",
                "give a WAV, FLAC, MP3 or OGG file",
            ) from exc
        if samples.size == 0:
            raise InputError(f"audio file '{path.name}' holds no audio samples", "give a recording that is not empty")
        try:
            segments, info = self._model.transcribe(
                samples,
                language=self.card.options.get("language"),
                beam_size=int(self.card.options.get("beam_size", 5)),
                vad_filter=False,
            )
            parts = [{"start": round(s.start, 2), "end": round(s.end, 2), "text": s.text.strip()} for s in segments]
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}' failed to transcribe '{path.name}': {exc}") from exc
        transcript = " ".join(p["text"] for p in parts if p["text"]).strip()
        data = {"language": info.language, "seconds": round(float(info.duration), 3), "segments": parts}
        return ExpertOutput(outputs={"text": transcript}, data=data)

    def close(self) -> None:
        """Drop the model."""
        self._model = None
        super().close()
