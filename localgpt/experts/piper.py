"""Piper text-to-speech: an ONNX voice (+ its JSON config) turns text into a 16-bit mono WAV.

piper-tts (and with it onnxruntime and numpy) is imported only in ``load``.
"""

from __future__ import annotations

import json
import wave
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import REINSTALL, open_session

if TYPE_CHECKING:
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard


class PiperExpert(Expert):
    """A Piper voice; serves ``text-to-speech``.

    Card options: ``model`` (ONNX voice, default voice.onnx), ``config`` (its JSON,
    default ``<model>.json``), and optionally ``speaker_id``, ``length_scale``
    (> 1 speaks slower), ``noise_scale``, ``noise_w_scale``.

    Example::

        expert = PiperExpert(card, ExpertContext(settings))
        expert.load()
        result = expert.run("text-to-speech", {"text": "Hello there."}, run_dir)
        result.outputs["audio"]  # ".../<sha256 prefix>.wav"
    """

    TASKS = ("text-to-speech",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._voice: Any = None
        self._synthesis: Any = None
        self.providers: list[str] = []

    def load(self) -> None:
        """Open the voice: its config, and an onnxruntime session with explicit providers and threads."""
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        opts = self.card.options
        model_path = self.card.file(opts.get("model", "voice.onnx"))
        config_path = self.card.file(opts.get("config", model_path.name + ".json"))
        try:
            config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise ExpertError(f"voice '{self.card.id}' is missing its config file {config_path}", REINSTALL) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ExpertError(
                f"voice '{self.card.id}': config {config_path} is not a Piper voice config: {exc}", REINSTALL
            ) from exc
        # Built directly rather than with PiperVoice.load so the session gets our threads and providers.
        session = open_session(model_path, self.ctx.settings, self.card.id)
        self._voice = PiperVoice(session=session, config=config, download_dir=model_path.parent)
        self._synthesis = SynthesisConfig(
            speaker_id=opts.get("speaker_id"),
            length_scale=opts.get("length_scale"),
            noise_scale=opts.get("noise_scale"),
            noise_w_scale=opts.get("noise_w_scale"),
        )
        self.providers = list(session.get_providers())
        super().load()

    @property
    def sample_rate(self) -> int:
        """Samples per second of the voice's audio."""
        if not self.loaded:
            self.load()
        return int(self._voice.config.sample_rate)

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Speak ``text`` into a WAV file in the run folder."""
        self.check_task(task, "voice")
        text = inputs.get("text", "").strip()
        if not text:
            raise InputError(f"text-to-speech with voice '{self.card.id}' needs a non-empty 'text'")
        rate = self.sample_rate
        tmp = out.temp_path(".wav")
        frames = 0
        try:
            with wave.open(str(tmp), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(rate)
                for chunk in self._voice.synthesize(text, syn_config=self._synthesis):
                    samples = chunk.audio_int16_array
                    wav.writeframes(samples.tobytes())
                    frames += len(samples)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ExpertError(f"voice '{self.card.id}' failed to speak the text: {exc}") from exc
        if frames == 0:
            tmp.unlink(missing_ok=True)
            raise InputError(
                f"voice '{self.card.id}' found nothing to speak in the text {text[:60]!r}",
                "give words, not only punctuation or symbols",
            )
        path = out.adopt(tmp, ".wav")
        seconds = round(frames / rate, 3)
        return ExpertOutput(outputs={"audio": str(path)}, data={"sample_rate": rate, "seconds": seconds})

    def close(self) -> None:
        """Drop the voice and its session."""
        self._voice = None
        self._synthesis = None
        self.providers = []
        super().close()
