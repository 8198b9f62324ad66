"""Text and audio handlers for :class:`localgpt.experts.hf.TransformersExpert`.

Each handler takes ``(pipe, task, inputs, out)`` — the transformers pipeline the card names, the
localgpt task, the task's inputs by the names ``localgpt.tasks`` declares (media as absolute paths)
and the run folder — and returns an :class:`ExpertOutput` whose ``data`` is JSON-serialisable and
carries scores. Audio produced is a 16-bit mono WAV in the run folder.

What each task expects of the card's ``options.pipeline``:

- automatic-speech-recognition: "automatic-speech-recognition" (Whisper, wav2vec2 CTC...);
- text-to-speech: "text-to-speech" with a model that needs nothing beyond its folder (VITS/MMS,
  Bark...); SpeechT5 needs a separate vocoder and speaker embeddings, which the pipeline would
  fetch from a hub, so it is not supported here;
- audio-classification: "audio-classification" (wav2vec2, HuBERT, AST...);
- token-classification: "token-classification" (entities grouped into words with spans);
- text-classification: "text-classification", or "zero-shot-classification" (an NLI model scoring
  the task's candidate ``labels``);
- question-answering, summarization, translation, text2text-generation: the pipelines of those names;
- sentence-similarity: "feature-extraction" (mean-pooled, cosine of the two texts);
- tabular-classification: "text-classification". The registry's input is an *image* of a table:
  its text is read with rapidocr (the models bundled in rapidocr-onnxruntime), grouped into rows,
  the first row taken as the header, and each further row classified as "column: value, ..." text.

audio-to-audio has no transformers pipeline, so it is served by :class:`SpeechToSpeechExpert`
(backend "transformers-s2s"): SpeechT5 speech-to-speech with its HiFi-GAN vocoder, both loaded from
the model folder (voice conversion).

numpy, torch, transformers and rapidocr are imported only inside functions.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.ocr import bundled_engine, check_image
from localgpt.experts.onnx import REINSTALL
from localgpt.experts.vad import read_audio

if TYPE_CHECKING:
    import numpy as np

    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

Handler = Callable[[Any, str, dict[str, str], "RunDir"], ExpertOutput]

TOP_K = 5
MAX_NEW_TOKENS = 256


# --- helpers ---


def _text(inputs: dict[str, str], task: str, name: str = "text") -> str:
    """The non-empty text input ``name``; an InputError otherwise."""
    value = inputs.get(name, "").strip()
    if not value:
        raise InputError(f"{task} needs a non-empty '{name}'")
    return value


def _audio(pipe: Any, inputs: dict[str, str], task: str) -> tuple[np.ndarray, int]:
    """The ``audio`` input decoded to mono float32 at the pipeline's sampling rate."""
    path = inputs.get("audio", "").strip()
    if not path:
        raise InputError(f"{task} needs an 'audio' file")
    rate = int(getattr(pipe.feature_extractor, "sampling_rate", 16_000))
    audio = read_audio(path, rate)
    if len(audio) == 0:
        raise InputError(f"{task}: audio file '{path}' holds no samples")
    return audio, rate


def wav_bytes(audio: Any, rate: int) -> bytes:
    """Float samples (any shape holding one channel) as a 16-bit mono WAV file."""
    import numpy as np

    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:  # some models return unnormalised audio
        samples = samples / peak
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def ranked(pairs: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    """``(label, score)`` pairs as ``{"label", "score"}`` dicts, best first."""
    best = sorted(((str(label), round(float(score), 6)) for label, score in pairs), key=lambda pair: -pair[1])
    return [{"label": label, "score": score} for label, score in best]


def _labels(found: Any) -> list[dict[str, Any]]:
    """Pipeline label/score results as plain dicts, best first."""
    rows = found[0] if found and isinstance(found[0], list) else found
    return ranked((r["label"], r["score"]) for r in rows)


def _summary(labels: list[dict[str, Any]]) -> str:
    """``"a (0.93), b (0.04)"``."""
    return ", ".join(f"{x['label']} ({x['score']:.2f})" for x in labels)


def _generated(found: Any, key: str) -> str:
    """The generated text of a text2text-style pipeline result."""
    first = found[0] if isinstance(found, list) else found
    if isinstance(first, list):
        first = first[0]
    return str(first.get(key, "")).strip()


# --- audio ---


def speech_recognition(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Transcribe ``audio``; audio longer than 30 s is read in overlapping chunks."""
    audio, rate = _audio(pipe, inputs, task)
    seconds = len(audio) / rate
    kwargs: dict[str, Any] = {}
    if seconds > 30:
        kwargs["chunk_length_s"] = 30
    found = pipe({"raw": audio, "sampling_rate": rate}, **kwargs)
    text = str(found.get("text", "")).strip()
    return ExpertOutput(outputs={"text": text or "(no speech recognised)"},
                        data={"text": text, "seconds": round(seconds, 3), "score": None})


def text_to_speech(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Speak ``text`` into a WAV file."""
    text = _text(inputs, task)
    found = pipe(text)
    audio, rate = found["audio"], int(found["sampling_rate"])
    data = wav_bytes(audio, rate)
    frames = (len(data) - 44) // 2
    if frames <= 0:
        raise ExpertError(f"{task}: the model produced no audio for {text[:60]!r}")
    path = out.save(data, ".wav")
    return ExpertOutput(outputs={"audio": str(path)},
                        data={"sample_rate": rate, "seconds": round(frames / rate, 3), "score": None})


def audio_classification(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Label ``audio`` (top labels with scores)."""
    audio, rate = _audio(pipe, inputs, task)
    labels = _labels(pipe({"raw": audio, "sampling_rate": rate}, top_k=TOP_K))
    return ExpertOutput(outputs={"text": _summary(labels)},
                        data={"label": labels[0]["label"], "score": labels[0]["score"], "labels": labels})


# --- text ---


def token_classification(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Entities (or tags) of ``text``, grouped into words, with character spans and scores."""
    text = _text(inputs, task)
    try:
        found = pipe(text, aggregation_strategy="simple")
    except ValueError:  # a slow tokenizer gives no offsets: one result per token
        found = pipe(text)
    entities = [{"text": str(e.get("word", "")), "label": str(e.get("entity_group", e.get("entity", ""))),
                 "start": int(e["start"]) if e.get("start") is not None else None,
                 "end": int(e["end"]) if e.get("end") is not None else None,
                 "score": round(float(e["score"]), 6)} for e in found]
    summary = ", ".join(f"{e['text']} ({e['label']}, {e['score']:.2f})" for e in entities) or "no entities found"
    return ExpertOutput(outputs={"text": summary}, data={"entities": entities})


def text_classification(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Label ``text``; candidate ``labels`` are scored by a zero-shot model or picked from the model's labels."""
    text = _text(inputs, task)
    wanted = [w.strip() for w in inputs.get("labels", "").split(",") if w.strip()]
    if getattr(pipe, "task", "") == "zero-shot-classification":
        if not wanted:
            raise InputError(f"{task} with a zero-shot model needs candidate 'labels'",
                             "give comma-separated labels, e.g. 'sports, politics, science'")
        found = pipe(text, candidate_labels=wanted)
        labels = ranked(zip(found["labels"], found["scores"], strict=True))
    else:
        labels = _labels(pipe(text, top_k=None))
        if wanted:
            known: dict[str, tuple[str, float]] = {str(x["label"]).lower(): (x["label"], x["score"]) for x in labels}
            missing = [w for w in wanted if w.lower() not in known]
            if missing:
                raise InputError(f"{task}: the model knows no label {missing}",
                                 f"its labels are: {', '.join(label for label, _ in known.values())}")
            kept = [known[w.lower()] for w in wanted]
            total = sum(score for _, score in kept) or 1.0
            labels = ranked((label, score / total) for label, score in kept)
        labels = labels[:TOP_K]
    return ExpertOutput(outputs={"text": _summary(labels)},
                        data={"label": labels[0]["label"], "score": labels[0]["score"], "labels": labels})


def question_answering(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Answer ``question`` with a span of ``context``."""
    question, context = _text(inputs, task, "question"), _text(inputs, task, "context")
    found = pipe(question=question, context=context)
    best = found[0] if isinstance(found, list) else found
    answer = str(best["answer"]).strip()
    return ExpertOutput(outputs={"text": answer or "(no answer found)"},
                        data={"answer": answer, "score": round(float(best["score"]), 6),
                              "start": int(best["start"]), "end": int(best["end"])})


def _text2text(key: str) -> Handler:
    """A handler for a pipeline answering ``[{key: text}]`` (summary, translation, generated text)."""

    def handle(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        text = _text(inputs, task)
        own = getattr(getattr(pipe.model, "generation_config", None), "max_new_tokens", None)
        kwargs: dict[str, Any] = {"max_new_tokens": int(own or MAX_NEW_TOKENS)}  # the model's own cap first
        target = inputs.get("target_language", "").strip()
        data: dict[str, Any] = {"score": None}
        if task == "translation" and target:
            codes = getattr(pipe.tokenizer, "lang_code_to_id", None) or {}
            if target in codes or any(str(c).startswith(target) for c in codes):
                kwargs["tgt_lang"] = target if target in codes else next(c for c in codes if c.startswith(target))
            else:
                data["note"] = f"this model translates into a fixed language; target_language '{target}' was ignored"
        result = _generated(pipe(text, **kwargs), key)
        data["text"] = result
        return ExpertOutput(outputs={"text": result or "(empty)"}, data=data)

    return handle


def sentence_similarity(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Cosine similarity of the mean-pooled embeddings of ``text`` and ``other_text``."""
    import numpy as np

    first, second = _text(inputs, task), _text(inputs, task, "other_text")
    vectors = []
    for value in (first, second):
        hidden = np.asarray(pipe(value), dtype=np.float32)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        vectors.append(hidden.mean(axis=0))
    a, b = vectors
    score = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return ExpertOutput(outputs={"text": f"similarity {score:.2f}"}, data={"score": score})


def table_rows(lines: list[dict[str, Any]]) -> list[list[str]]:
    """OCR lines (``text`` and four-corner ``box``) grouped into table rows, cells left to right."""
    placed = []
    for line in lines:
        ys = [p[1] for p in line["box"]]
        xs = [p[0] for p in line["box"]]
        placed.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), str(line["text"])))
    placed.sort()
    rows: list[list[tuple[float, float, float, str]]] = []
    for cell in placed:
        if rows and abs(cell[0] - rows[-1][0][0]) <= max(cell[1], rows[-1][0][1]) / 2:
            rows[-1].append(cell)
        else:
            rows.append([cell])
    return [[c[3] for c in sorted(row, key=lambda c: c[2])] for row in rows]


def _read_table(pipe: Any, path: str) -> list[list[str]]:
    """The rows of the table in an image, read with rapidocr's bundled models.

    The OCR engine is kept on the pipeline object, so it lives (and is freed) with the expert's model.
    """
    check_image(path)
    engine = bundled_engine(pipe, "tabular-classification", intra_op_num_threads=1, inter_op_num_threads=1,
                            det_limit_type="max", det_limit_side_len=960)
    found, _ = engine(path)
    lines = [{"text": text, "box": box} for box, text, _score in (found or [])]
    return table_rows(lines)


def tabular_classification(pipe: Any, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
    """Classify each row of the table shown in ``image`` (header row first) with a text classifier."""
    path = inputs.get("image", "").strip()
    if not path:
        raise InputError(f"{task} needs an 'image' of a table")
    rows = _read_table(pipe, path)
    if len(rows) < 2:
        raise InputError(f"{task}: found {len(rows)} row(s) of text in '{path}'; a table needs a header row and "
                         "at least one data row", "give a clear image of a table with a header")
    header, body = rows[0], rows[1:]
    results = []
    for cells in body:
        names = header if len(header) == len(cells) else [f"column {i + 1}" for i in range(len(cells))]
        serial = ", ".join(f"{n}: {v}" for n, v in zip(names, cells, strict=True))
        labels = _labels(pipe(serial, top_k=None))[:TOP_K]
        results.append({"cells": cells, "text": serial, "label": labels[0]["label"], "score": labels[0]["score"],
                        "labels": labels})
    summary = "; ".join(f"row {i}: {r['label']} ({r['score']:.2f})" for i, r in enumerate(results, start=1))
    return ExpertOutput(outputs={"text": summary},
                        data={"header": header, "rows": results, "score": min(r["score"] for r in results)})


HANDLERS: dict[str, Handler] = {
    "automatic-speech-recognition": speech_recognition,
    "text-to-speech": text_to_speech,
    "audio-classification": audio_classification,
    "token-classification": token_classification,
    "text-classification": text_classification,
    "question-answering": question_answering,
    "summarization": _text2text("summary_text"),
    "translation": _text2text("translation_text"),
    "text2text-generation": _text2text("generated_text"),
    "sentence-similarity": sentence_similarity,
    "tabular-classification": tabular_classification,
}


# --- audio-to-audio: SpeechT5 speech-to-speech ---


class SpeechToSpeechExpert(Expert):
    """SpeechT5 speech-to-speech (voice conversion) with its HiFi-GAN vocoder; serves ``audio-to-audio``.

    The model folder holds the SpeechT5ForSpeechToSpeech model and its feature extractor; the vocoder is
    in the sub-folder ``options.vocoder`` (default "vocoder"); the target voice is a 512-float
    x-vector in ``options.speaker`` (a .npy file, default "speaker.npy"; zeros when absent).

    Example::

        expert = SpeechToSpeechExpert(card, ExpertContext(settings))
        result = expert.run("audio-to-audio", {"audio": "/abs/talk.wav"}, run_dir)
        result.outputs["audio"]  # ".../<sha256 prefix>.wav" at 16 kHz
    """

    TASKS = ("audio-to-audio",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._parts: dict[str, Any] = {}
        self.runtime = ""

    def load(self) -> None:
        """Load the feature extractor, the model, the vocoder and the speaker vector from the model folder."""
        import numpy as np
        import torch
        from transformers import SpeechT5FeatureExtractor, SpeechT5ForSpeechToSpeech, SpeechT5HifiGan

        from localgpt.experts.hf import torch_device

        folder = self.card.path
        if folder is None or not (folder / "config.json").is_file():
            raise ExpertError(f"model '{self.card.id}' has no config.json in {folder}", REINSTALL)
        vocoder_dir = folder / str(self.card.options.get("vocoder", "vocoder"))
        device = torch_device(self.ctx.settings, self.card.id) if "cuda" in self.card.devices else "cpu"
        try:
            extractor = SpeechT5FeatureExtractor.from_pretrained(folder, local_files_only=True)
            model = SpeechT5ForSpeechToSpeech.from_pretrained(folder, local_files_only=True).to(device).eval()
            vocoder = SpeechT5HifiGan.from_pretrained(vocoder_dir, local_files_only=True).to(device).eval()
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}' could not be loaded as SpeechT5 speech-to-speech with a "
                              f"vocoder in {vocoder_dir}: {exc}", REINSTALL) from exc
        speaker_file = folder / str(self.card.options.get("speaker", "speaker.npy"))
        size = int(model.config.speaker_embedding_dim)
        vector = np.load(speaker_file).astype(np.float32).reshape(1, -1) if speaker_file.is_file() else \
            np.zeros((1, size), dtype=np.float32)
        if vector.shape[1] != size:
            raise ExpertError(f"model '{self.card.id}': speaker vector {speaker_file} has {vector.shape[1]} values, "
                              f"the model wants {size}", REINSTALL)
        self._parts = {"extractor": extractor, "model": model, "vocoder": vocoder,
                       "speaker": torch.from_numpy(vector).to(device), "device": device}
        self.runtime = f"pytorch/{device}"
        super().load()

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Convert the speech in ``audio`` to the model's target voice, as a WAV file."""
        import torch

        self.check_task(task)
        if not self.loaded:
            self.load()
        parts = self._parts
        extractor = parts["extractor"]
        rate = int(extractor.sampling_rate)
        path = inputs.get("audio", "").strip()
        if not path:
            raise InputError(f"{task} needs an 'audio' file")
        audio = read_audio(path, rate)
        if len(audio) == 0:
            raise InputError(f"{task}: audio file '{path}' holds no samples")
        features = extractor(audio, sampling_rate=rate, return_tensors="pt")
        try:
            with torch.inference_mode():
                speech = parts["model"].generate_speech(features["input_values"].to(parts["device"]),
                                                        parts["speaker"], vocoder=parts["vocoder"])
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}' failed to convert the speech: {exc}") from exc
        samples = speech.float().cpu().numpy().reshape(-1)
        if samples.size == 0:
            raise ExpertError(f"model '{self.card.id}' produced no audio for '{path}'")
        saved = out.save(wav_bytes(samples, rate), ".wav")
        return ExpertOutput(outputs={"audio": str(saved)},
                            data={"sample_rate": rate, "seconds": round(samples.size / rate, 3), "score": None,
                                  "runtime": self.runtime})

    def close(self) -> None:
        """Drop the model, vocoder and feature extractor."""
        self._parts = {}
        super().close()
