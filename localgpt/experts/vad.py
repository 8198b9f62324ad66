"""Voice activity detection with the Silero VAD ONNX model: speech or no speech, and where the speech is.

Also home of :func:`read_audio`, the audio decoder the audio experts share (WAV with the standard
library, anything else with PyAV). numpy, onnxruntime and av are imported only inside functions.
"""

from __future__ import annotations

import wave
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import open_session

if TYPE_CHECKING:
    import numpy as np

    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

RATE = 16_000
WINDOW = 512  # samples the model scores at once at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees before each window


def _pcm_to_float(frames: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM bytes as a mono float32 array in [-1, 1]."""
    import numpy as np

    if width == 1:
        data = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        data = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(frames, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"{8 * width}-bit samples are not supported")
    if channels > 1:
        data = data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1)
    return data.astype(np.float32)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``audio`` at ``rate`` samples per second, resampled to ``target`` (linear interpolation)."""
    import numpy as np

    if rate == target or len(audio) == 0:
        return audio.astype(np.float32)
    count = max(1, round(len(audio) * target / rate))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    out: np.ndarray = np.interp(positions, np.arange(len(audio), dtype=np.float64), audio).astype(np.float32)
    return out


def _decode_with_av(path: str, target: int) -> np.ndarray:
    """Any audio file PyAV (FFmpeg) decodes, as mono float32 at ``target`` Hz."""
    import av
    import numpy as np

    chunks: list[np.ndarray] = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise ValueError("the file holds no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)


def read_audio(path: str, rate: int = RATE) -> np.ndarray:
    """Decode an audio file to a mono float32 array at ``rate`` Hz; InputError when it cannot be decoded.

    Example::

        samples = read_audio("speech.wav", 16000)  # 1-D float32, values in [-1, 1]
    """
    try:
        with wave.open(path, "rb") as wav:
            audio = _pcm_to_float(wav.readframes(wav.getnframes()), wav.getsampwidth(), wav.getnchannels())
            return resample(audio, wav.getframerate(), rate)
    except Exception:  # wave raises Error, EOFError, RuntimeError...: not a plain PCM WAV, let FFmpeg try
        pass
    try:
        return _decode_with_av(path, rate)
    except ImportError as exc:
        raise InputError(f"audio file '{path}' is not a PCM WAV and PyAV is not installed to decode it",
                         "convert it to WAV, or install localgpt's cpu extra") from exc
    except Exception as exc:  # av raises its own error types
        raise InputError(f"audio file '{path}' cannot be decoded: {exc}", "give a WAV, FLAC, MP3 or OGG file") from exc


class SileroVADExpert(Expert):
    """The Silero voice activity detector (ONNX); serves ``audio-classification`` as speech / no-speech.

    Card options: ``model`` (ONNX file, default silero_vad.onnx), ``threshold`` (speech probability
    that starts speech, default 0.5), ``min_speech_ms`` (shorter bursts are ignored, default 250),
    ``min_silence_ms`` (a pause this long ends a span, default 100), ``pad_ms`` (added around each
    span, default 30).

    Example::

        expert = SileroVADExpert(card, ExpertContext(settings))
        result = expert.run("audio-classification", {"audio": "/path/talk.wav"}, run_dir)
        result.data["label"]   # "speech"
        result.data["spans"]   # [{"start": 0.42, "end": 2.9, "score": 0.93}, ...] in seconds
    """

    TASKS = ("audio-classification",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._session: Any = None
        self.runtime = ""

    def load(self) -> None:
        """Open the ONNX session and check it takes Silero's inputs."""
        session = open_session(self.card.file(self.card.options.get("model", "silero_vad.onnx")),
                               self.ctx.settings, self.card.id)
        names = {i.name for i in session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ExpertError(f"model '{self.card.id}' takes inputs {sorted(names)}, not Silero VAD's "
                              "input, state and sr", "use the silero_vad.onnx file of silero-vad 5 or later")
        self._session = session
        self.runtime = "onnxruntime/" + session.get_providers()[0]
        super().load()

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """The speech probability of each 32 ms window of 16 kHz ``audio``."""
        import numpy as np

        if not self.loaded:
            self.load()
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, CONTEXT), dtype=np.float32)
        rate = np.array(RATE, dtype=np.int64)
        count = -(-len(audio) // WINDOW)
        padded = np.zeros(count * WINDOW, dtype=np.float32)
        padded[: len(audio)] = audio
        probs = np.zeros(count, dtype=np.float32)
        for i in range(count):
            window = padded[i * WINDOW : (i + 1) * WINDOW][None, :]
            feed = np.concatenate([context, window], axis=1)
            try:
                out, state = self._session.run(None, {"input": feed, "state": state, "sr": rate})
            except Exception as exc:
                raise ExpertError(f"model '{self.card.id}' failed on the audio: {exc}") from exc
            probs[i] = float(out.reshape(-1)[0])
            context = feed[:, -CONTEXT:]
        return probs

    def spans(self, probs: np.ndarray, samples: int) -> list[dict[str, float]]:
        """Speech spans (seconds) from window probabilities, with hysteresis, a minimum length and padding."""
        opts = self.card.options
        on = float(opts.get("threshold", 0.5))
        off = max(on - 0.15, 0.01)
        min_speech = int(opts.get("min_speech_ms", 250)) * RATE // 1000
        min_silence = int(opts.get("min_silence_ms", 100)) * RATE // 1000
        pad = int(opts.get("pad_ms", 30)) * RATE // 1000
        found: list[tuple[int, int]] = []
        start: int | None = None
        quiet_from: int | None = None
        for i, p in enumerate(probs):
            at = i * WINDOW
            if start is None:
                if p >= on:
                    start, quiet_from = at, None
                continue
            if p >= on:
                quiet_from = None
            elif p < off:
                quiet_from = at if quiet_from is None else quiet_from
                if at + WINDOW - quiet_from >= min_silence:
                    found.append((start, quiet_from))
                    start, quiet_from = None, None
        if start is not None:
            found.append((start, quiet_from if quiet_from is not None else samples))
        result = []
        for begin, end in found:
            if end - begin < min_speech:
                continue
            window_probs = probs[begin // WINDOW : max(begin // WINDOW + 1, end // WINDOW)]
            result.append({"start": round(max(0, begin - pad) / RATE, 3),
                           "end": round(min(samples, end + pad) / RATE, 3),
                           "score": round(float(window_probs.mean()), 4)})
        return result

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Say whether ``audio`` holds speech, and where."""
        self.check_task(task)
        path = inputs.get("audio", "")
        if not path:
            raise InputError(f"audio-classification with model '{self.card.id}' needs an 'audio' file")
        audio = read_audio(path, RATE)
        if len(audio) == 0:
            raise InputError(f"audio file '{path}' holds no samples")
        probs = self.probabilities(audio)
        spans = self.spans(probs, len(audio))
        speech = max((s["score"] for s in spans), default=float(probs.max()) if len(probs) else 0.0)
        speech = round(min(speech, 1.0), 4)
        label = "speech" if spans else "no-speech"
        pairs = sorted([("speech", speech), ("no-speech", round(1 - speech, 4))], key=lambda pair: -pair[1])
        labels = [{"label": name, "score": score} for name, score in pairs]
        if spans:
            where = ", ".join(f"{s['start']:.2f}-{s['end']:.2f} s" for s in spans)
            summary = f"speech ({speech:.2f}) at {where}"
        else:
            summary = f"no speech ({1 - speech:.2f})"
        seconds = round(len(audio) / RATE, 3)
        return ExpertOutput(outputs={"text": summary},
                            data={"label": label, "score": labels[0]["score"], "labels": labels, "spans": spans,
                                  "speech_seconds": round(sum(s["end"] - s["start"] for s in spans), 3),
                                  "seconds": seconds, "runtime": self.runtime})

    def close(self) -> None:
        """Drop the session."""
        self._session = None
        super().close()
