"""Transformers experts: one generic expert class for every transformers pipeline task.

A card with ``backend: "transformers"`` names the transformers pipeline task in
``options.pipeline``; ``format`` is ``"pytorch"`` (weights loaded by transformers) or
``"onnx"`` (an optimum export in the model folder, loaded with the matching
``optimum.onnxruntime.ORTModelFor…`` class; ``options.onnx_file`` picks one ONNX file of
several, ``options.ort_class`` overrides the class). ``TransformersExpert.run`` hands each
localgpt task to a handler found through ``TASK_MODULES`` (task → module with ``HANDLERS``).

torch, transformers and optimum are imported only inside functions.
"""

from __future__ import annotations

import gc
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import CPU, CUDA, REINSTALL, onnx_providers

if TYPE_CHECKING:
    from localgpt.config import Settings
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

VISION = "localgpt.experts.hf_vision"
TEXT_AUDIO = "localgpt.experts.hf_text_audio"

# localgpt task -> the module whose HANDLERS serve it.
TASK_MODULES: dict[str, str] = {
    "image-classification": VISION,
    "object-detection": VISION,
    "image-segmentation": VISION,
    "depth-estimation": VISION,
    "image-to-text": VISION,
    "visual-question-answering": VISION,
    "document-question-answering": VISION,
    "automatic-speech-recognition": TEXT_AUDIO,
    "text-to-speech": TEXT_AUDIO,
    "audio-classification": TEXT_AUDIO,
    "audio-to-audio": TEXT_AUDIO,
    "token-classification": TEXT_AUDIO,
    "text-classification": TEXT_AUDIO,
    "question-answering": TEXT_AUDIO,
    "summarization": TEXT_AUDIO,
    "translation": TEXT_AUDIO,
    "text2text-generation": TEXT_AUDIO,
    "tabular-classification": TEXT_AUDIO,
    "sentence-similarity": TEXT_AUDIO,
}

# transformers pipeline task -> the optimum ORTModel class that runs its ONNX export.
ORT_CLASSES: dict[str, str] = {
    "image-classification": "ORTModelForImageClassification",
    "image-segmentation": "ORTModelForSemanticSegmentation",
    "zero-shot-image-classification": "ORTModelForZeroShotImageClassification",
    "image-to-text": "ORTModelForVision2Seq",
    "image-to-image": "ORTModelForImageToImage",
    "automatic-speech-recognition": "ORTModelForSpeechSeq2Seq",
    "audio-classification": "ORTModelForAudioClassification",
    "text-classification": "ORTModelForSequenceClassification",
    "zero-shot-classification": "ORTModelForSequenceClassification",
    "token-classification": "ORTModelForTokenClassification",
    "ner": "ORTModelForTokenClassification",
    "question-answering": "ORTModelForQuestionAnswering",
    "feature-extraction": "ORTModelForFeatureExtraction",
    "fill-mask": "ORTModelForMaskedLM",
    "text-generation": "ORTModelForCausalLM",
    "summarization": "ORTModelForSeq2SeqLM",
    "translation": "ORTModelForSeq2SeqLM",
    "text2text-generation": "ORTModelForSeq2SeqLM",
}

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def torch_device(settings: Settings, model: str) -> str:
    """``"cuda"`` or ``"cpu"`` for a PyTorch model, from ``settings.device`` and the GPUs torch sees."""
    if settings.device == "cpu":
        return "cpu"
    import torch

    has_gpu = torch.cuda.is_available()
    if settings.device == "cuda" and not has_gpu:
        raise ExpertError(
            f"device 'cuda' was asked for model '{model}', but torch sees no CUDA GPU",
            "install a CUDA build of torch and check the NVIDIA driver, or set LOCALGPT_DEVICE=cpu",
        )
    return "cuda" if has_gpu else "cpu"


def _model_dir(card: ModelCard) -> Path:
    """The card's folder, which must hold a transformers ``config.json``."""
    if card.path is None or not (card.path / "config.json").is_file():
        where = card.path if card.path is not None else "(no folder)"
        raise ExpertError(f"model '{card.id}' has no config.json in {where}", REINSTALL)
    return card.path


def _onnx_file(card: ModelCard, folder: Path) -> str | None:
    """The ONNX file name to load (``options.onnx_file``), checking some ONNX file exists."""
    name = card.options.get("onnx_file")
    if name is not None:
        if not (folder / str(name)).is_file():
            raise ExpertError(f"model '{card.id}' is missing its ONNX file {folder / str(name)}", REINSTALL)
        return str(name)
    if not any(folder.glob("*.onnx")):
        raise ExpertError(f"model '{card.id}' (format onnx) has no .onnx file in {folder}", REINSTALL)
    return None


def _processors(folder: Path) -> dict[str, Any]:
    """Tokenizer, image processor and feature extractor found in ``folder`` (pipeline keyword arguments)."""
    import transformers

    found: dict[str, Any] = {}
    if any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")):
        found["tokenizer"] = transformers.AutoTokenizer.from_pretrained(folder)
    if (folder / "preprocessor_config.json").is_file():
        raw = (folder / "preprocessor_config.json").read_text(encoding="utf-8")
        if "image_processor_type" in raw or '"do_resize"' in raw:
            found["image_processor"] = transformers.AutoImageProcessor.from_pretrained(folder)
        else:
            found["feature_extractor"] = transformers.AutoFeatureExtractor.from_pretrained(folder)
    return found


def _load_onnx(card: ModelCard, settings: Settings, folder: Path, task: str) -> tuple[Any, str]:
    """An ORTModel for ``task`` on the chosen execution provider, with the provider name."""
    import onnxruntime
    import optimum.onnxruntime as ort

    class_name = str(card.options.get("ort_class") or ORT_CLASSES.get(task, ""))
    cls = getattr(ort, class_name, None) if class_name else None
    if cls is None:
        raise ExpertError(
            f"model '{card.id}': no optimum ONNX Runtime class for pipeline '{task}'"
            + (f" (unknown class '{class_name}')" if class_name else ""),
            "set the card option 'ort_class' to an optimum.onnxruntime ORTModelFor… class, or use format pytorch",
        )
    file_name = _onnx_file(card, folder)
    providers = onnx_providers(settings, card.id) if "cuda" in card.devices else [CPU]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: other experts (and torch) share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    kwargs: dict[str, Any] = {"local_files_only": True, "session_options": options, "providers": providers}
    if file_name is not None:
        kwargs["file_name"] = file_name
    try:
        model = cls.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise ExpertError(f"model '{card.id}' could not be loaded with {class_name} from {folder}: {exc}",
                          REINSTALL) from exc
    used = CUDA if CUDA in providers and CUDA in _session_providers(model) else CPU
    return model, used


def _session_providers(model: Any) -> list[str]:
    """The providers the ORTModel's (first) session really runs on."""
    for attr in ("model", "session", "encoder"):
        session = getattr(model, attr, None)
        getter = getattr(session, "get_providers", None)
        if getter is not None:
            return list(getter())
        inner = getattr(session, "session", None)
        if inner is not None and hasattr(inner, "get_providers"):
            return list(inner.get_providers())
    providers = getattr(model, "providers", None)
    return list(providers) if providers else []


def load_hf_pipeline(card: ModelCard, ctx: ExpertContext) -> tuple[Any, str]:
    """The transformers pipeline for ``card`` and a runtime string saying where it runs.

    The runtime string is ``"pytorch/cpu"``, ``"pytorch/cuda"``, ``"onnxruntime/CPUExecutionProvider"``
    or ``"onnxruntime/CUDAExecutionProvider"``. A missing folder, config or weights file, an unknown
    pipeline task or ONNX class is an :class:`ExpertError` naming the model. The card's options ride
    along as ``pipe.localgpt_options`` for the handlers.

    Example::

        pipe, runtime = load_hf_pipeline(card, ExpertContext(Settings(device="cpu")))
        runtime  # "pytorch/cpu"
        pipe(Image.open("cat.png"))
    """
    settings = ctx.settings
    task = card.options.get("pipeline")
    if not task:
        raise ExpertError(f"model '{card.id}' has no 'pipeline' option",
                          "set options.pipeline in its model.json to a transformers pipeline task")
    task = str(task)
    folder = _model_dir(card)
    from transformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES

    if task not in SUPPORTED_TASKS and task not in TASK_ALIASES and not task.startswith("translation"):
        raise ExpertError(f"model '{card.id}' names an unknown transformers pipeline '{task}'",
                          f"use one of: {', '.join(sorted(SUPPORTED_TASKS))}")
    import transformers

    make_pipeline: Any = transformers.pipeline  # typed per literal task; ours is a runtime string
    if card.format == "onnx":
        model, provider = _load_onnx(card, settings, folder, task)
        try:
            pipe = make_pipeline(task, model=model, **_processors(folder),
                                 **dict(card.options.get("pipeline_kwargs", {})))
        except Exception as exc:
            raise ExpertError(f"model '{card.id}': transformers pipeline '{task}' failed on its ONNX model: {exc}",
                              REINSTALL) from exc
        pipe.localgpt_options = dict(card.options)
        return pipe, f"onnxruntime/{provider}"
    if card.format != "pytorch":
        raise ExpertError(f"model '{card.id}' has format '{card.format}'; the transformers backend runs "
                          "'pytorch' or 'onnx'", "fix the format in its model.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ExpertError(f"model '{card.id}' has no weights ({' or '.join(WEIGHT_FILES[::2])}) in {folder}",
                          REINSTALL)
    device = torch_device(settings, card.id) if "cuda" in card.devices else "cpu"
    import torch

    if device == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    model_kwargs: dict[str, Any] = {"local_files_only": True}
    dtype = card.options.get("dtype")
    if dtype:
        model_kwargs["dtype"] = getattr(torch, str(dtype))
    try:
        pipe = make_pipeline(task, model=str(folder), device=device, model_kwargs=model_kwargs,
                             **dict(card.options.get("pipeline_kwargs", {})))
    except Exception as exc:
        raise ExpertError(f"model '{card.id}' could not be loaded as a '{task}' pipeline from {folder}: {exc}",
                          REINSTALL) from exc
    pipe.localgpt_options = dict(card.options)
    return pipe, f"pytorch/{device}"


class TransformersExpert(Expert):
    """Any transformers pipeline (PyTorch or ONNX through optimum); serves the card's ``tasks``.

    The pipeline is loaded lazily; ``run`` passes each task to its handler
    (``TASK_MODULES``) and adds ``data["runtime"]`` (e.g. "pytorch/cpu").

    Example::

        expert = TransformersExpert(card, ExpertContext(settings))
        result = expert.run("image-classification", {"image": "/abs/cat.png"}, run_dir)
        result.outputs["text"]  # "tabby cat (0.91), tiger cat (0.05)"
    """

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self.pipe: Any = None
        self.runtime = ""

    @property
    def device(self) -> str:
        """Where the loaded model runs: "cuda" or "cpu"."""
        return "cuda" if self.runtime.endswith(("/cuda", CUDA)) else "cpu"

    def load(self) -> None:
        """Build the transformers pipeline from the model folder."""
        self.pipe, self.runtime = load_hf_pipeline(self.card, self.ctx)
        super().load()

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Serve ``task`` with its handler; files go into ``out``."""
        module_name = TASK_MODULES.get(task)
        if module_name is None or (self.card.tasks and task not in self.card.tasks):
            raise ExpertError(f"model '{self.card.id}' serves {', '.join(self.card.tasks)}, not '{task}'")
        try:
            handlers = importlib.import_module(module_name).HANDLERS
        except ImportError as exc:
            raise ExpertError(f"the transformers handlers for '{task}' cannot be imported: {exc}") from exc
        handler = handlers.get(task)
        if handler is None:
            raise ExpertError(f"no transformers handler for task '{task}' in {module_name}")
        if not self.loaded:
            self.load()
        try:
            result: ExpertOutput = handler(self.pipe, task, inputs, out)
        except (ExpertError, InputError):
            raise
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}' failed on task '{task}': {exc}") from exc
        if result.data is None:
            result.data = {}
        if isinstance(result.data, dict):
            result.data.setdefault("runtime", self.runtime)
        return result

    def close(self) -> None:
        """Drop the pipeline and give its memory back (the CUDA cache too when on a GPU)."""
        on_gpu = self.device == "cuda"
        self.pipe = None
        gc.collect()
        if on_gpu:
            import torch

            torch.cuda.empty_cache()
        super().close()

