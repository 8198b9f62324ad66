"""Expert backends. A backend name (a model card's ``backend``) maps to an Expert class.

Built-in backends are listed here as import paths so nothing heavy is imported until a
model of that backend is used. Third parties add backends through the entry point group
``localgpt.experts`` (name = backend, value = ``module:Class``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from localgpt.errors import ExpertError

if TYPE_CHECKING:
    from localgpt.experts.base import Expert

BUILTIN_BACKENDS: dict[str, str] = {
    "llm": "localgpt.experts.llm_text:LLMTextExpert",
    "onnx-embedding": "localgpt.experts.onnx:SentenceSimilarityExpert",
    "piper": "localgpt.experts.piper:PiperExpert",
    "faster-whisper": "localgpt.experts.whisper:FasterWhisperExpert",
    "transformers": "localgpt.experts.hf:TransformersExpert",
    "diffusers": "localgpt.experts.diffusers:DiffusersExpert",
    "canny": "localgpt.experts.control:CannyExpert",
    "opencv-lines": "localgpt.experts.control:LineExpert",
    "mediapipe-pose": "localgpt.experts.control:PoseExpert",
    "spacy": "localgpt.experts.spacy_ner:SpacyNERExpert",
    "fasttext": "localgpt.experts.fasttext_lid:FastTextLanguageExpert",
    "rapidocr": "localgpt.experts.ocr:RapidOCRExpert",
    "onnx-image-classification": "localgpt.experts.onnx_vision:ImageClassificationExpert",
    "silero-vad": "localgpt.experts.vad:SileroVADExpert",
    "transformers-s2s": "localgpt.experts.hf_text_audio:SpeechToSpeechExpert",
}

# Backends whose packages come with the ``torch`` extra (PyTorch, transformers, diffusers, optimum).
TORCH_BACKENDS = frozenset({"transformers", "transformers-s2s", "diffusers"})


def backend_names() -> list[str]:
    """Every backend name available: built in and from installed entry points."""
    found = set(BUILTIN_BACKENDS)
    found.update(ep.name for ep in entry_points(group="localgpt.experts"))
    return sorted(found)


def expert_class(backend: str) -> type[Expert]:
    """The Expert class for ``backend``, importing its module now."""
    target = BUILTIN_BACKENDS.get(backend)
    if target is None:
        eps = [ep for ep in entry_points(group="localgpt.experts") if ep.name == backend]
        if not eps:
            raise ExpertError(
                f"no expert backend named '{backend}'",
                f"known backends: {', '.join(backend_names())}",
            )
        target = eps[0].value
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = "torch" if backend in TORCH_BACKENDS else "cpu"
        raise ExpertError(
            f"backend '{backend}' needs a package that is not installed: {exc.name or exc}",
            f"install localgpt with its model extras: pip install -e '.[{extra}]'",
        ) from exc
    cls: type[Expert] = getattr(module, class_name)
    return cls
