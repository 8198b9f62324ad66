"""ONNX Runtime experts: sentence embeddings and similarity.

Also home of the execution-provider choice and session set-up that every ONNX-based
expert shares (``onnx_providers``, ``open_session``). onnxruntime, tokenizers and numpy
are imported only inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

    from localgpt.config import Settings
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
REINSTALL = "reinstall it with: python download_models.py"


def cuda_gpu_present() -> bool:
    """Whether the NVIDIA driver loads, initialises and reports at least one GPU."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    try:
        if driver.cuInit(0) != 0:
            return False
        return bool(driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0)
    except AttributeError:
        return False


def onnx_providers(settings: Settings, model: str | None = None) -> list[str]:
    """The onnxruntime execution providers to use, in order, for ``settings.device``.

    ``cuda`` demands the CUDA provider (an ExpertError naming ``model`` when onnxruntime
    lacks it); ``auto`` uses it only when onnxruntime offers it and a GPU answers;
    otherwise the CPU alone.

    Example::

        onnx_providers(Settings(device="cpu"))  # ["CPUExecutionProvider"]
    """
    import onnxruntime

    has_cuda = CUDA in onnxruntime.get_available_providers()
    if settings.device == "cuda":
        if not has_cuda:
            who = f"model '{model}'" if model else "an ONNX model"
            raise ExpertError(
                f"device 'cuda' was asked for {who}, but this onnxruntime has no CUDAExecutionProvider",
                "install onnxruntime-gpu in place of onnxruntime, or set LOCALGPT_DEVICE=cpu",
            )
        return [CUDA, CPU]
    if settings.device == "auto" and has_cuda and cuda_gpu_present():
        return [CUDA, CPU]
    return [CPU]


def open_session(path: Path, settings: Settings, model: str) -> onnxruntime.InferenceSession:
    """An onnxruntime session on ``path`` with explicit providers and ``settings.threads`` threads."""
    import onnxruntime

    if not path.is_file():
        raise ExpertError(f"model '{model}' is missing its ONNX file {path}", REINSTALL)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Heuristic cuDNN algorithm search: the exhaustive default re-benchmarks every new input shape.
    providers: list[Any] = [
        (name, {"cudnn_conv_algo_search": "HEURISTIC"}) if name == CUDA else name
        for name in onnx_providers(settings, model)
    ]
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own, unrelated exception types
        raise ExpertError(f"model '{model}' could not be loaded from {path}: {exc}", REINSTALL) from exc


class SentenceSimilarityExpert(Expert):
    """Sentence embeddings from a BERT-style ONNX encoder; serves ``sentence-similarity``.

    Card options: ``model`` (ONNX file), ``tokenizer`` (tokenizer.json), ``pooling``
    ("mean" or "cls", default mean), ``normalize`` (default true), ``max_tokens`` (default 256).

    Example::

        expert = SentenceSimilarityExpert(card, ExpertContext(settings))
        expert.load()
        vectors = expert.embed(["a cat sleeps", "a kitten naps"])  # shape (2, 384), unit rows
    """

    TASKS = ("sentence-similarity",)
    BATCH = 32

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: list[str] = []
        self.providers: list[str] = []

    def load(self) -> None:
        """Open the ONNX session and the tokenizer (truncating, padding to the longest text)."""
        from tokenizers import Tokenizer

        opts = self.card.options
        pooling = opts.get("pooling", "mean")
        if pooling not in ("mean", "cls"):
            raise ExpertError(
                f"model '{self.card.id}' asks for pooling '{pooling}', which is not supported",
                "set the card option 'pooling' to 'mean' or 'cls'",
            )
        session = open_session(self.card.file(opts.get("model", "model.onnx")), self.ctx.settings, self.card.id)
        tok_path = self.card.file(opts.get("tokenizer", "tokenizer.json"))
        if not tok_path.is_file():
            raise ExpertError(f"model '{self.card.id}' is missing its tokenizer file {tok_path}", REINSTALL)
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}': tokenizer {tok_path} is unreadable: {exc}", REINSTALL) from exc
        tokenizer.enable_truncation(max_length=int(opts.get("max_tokens", 256)))
        pad = tokenizer.padding or {}
        tokenizer.enable_padding(
            pad_id=pad.get("pad_id", 0), pad_type_id=pad.get("pad_type_id", 0), pad_token=pad.get("pad_token", "[PAD]")
        )
        self._inputs = [i.name for i in session.get_inputs()]
        known = {"input_ids", "attention_mask", "token_type_ids"}
        if "input_ids" not in self._inputs or not set(self._inputs) <= known:
            raise ExpertError(
                f"model '{self.card.id}' takes inputs {self._inputs}; a text encoder needs input_ids"
                " and optionally attention_mask, token_type_ids",
                "use an ONNX export of a BERT-style sentence encoder",
            )
        self._session, self._tokenizer = session, tokenizer
        self.providers = list(session.get_providers())
        super().load()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: one row per text (float32); rows have unit length unless the card says otherwise.

        Example::

            expert.embed(["hello world"]).shape  # (1, 384)
        """
        import numpy as np

        if not self.loaded:
            self.load()
        rows = [self._embed_batch(texts[i : i + self.BATCH]) for i in range(0, len(texts), self.BATCH)]
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        matrix: np.ndarray = np.concatenate(rows, axis=0)
        return matrix

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Embed one batch of texts."""
        import numpy as np

        encodings = self._tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feed = {name: arrays[name] for name in self._inputs}
        try:
            hidden = self._session.run(None, feed)[0]
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}' failed to embed text: {exc}") from exc
        pooled: np.ndarray
        if hidden.ndim == 2:  # the export already pools
            pooled = hidden
        elif self.card.options.get("pooling", "mean") == "cls":
            pooled = hidden[:, 0, :]
        else:
            mask = arrays["attention_mask"][:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        pooled = pooled.astype(np.float32)
        if self.card.options.get("normalize", True):
            pooled = _unit_rows(pooled)
        return pooled

    def similarity(self, text: str, other: str) -> float:
        """Cosine similarity of two texts, in [-1, 1]."""
        vectors = _unit_rows(self.embed([text, other]))
        return float(vectors[0] @ vectors[1])

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Score how close in meaning ``text`` and ``other_text`` are."""
        self.check_task(task)
        text = inputs.get("text", "").strip()
        other = inputs.get("other_text", "").strip()
        if not text or not other:
            raise InputError(
                f"sentence-similarity with model '{self.card.id}' needs two non-empty texts",
                "give both 'text' and 'other_text'",
            )
        score = self.similarity(text, other)
        return ExpertOutput(outputs={"text": f"similarity {score:.2f}"}, data={"score": score})

    def close(self) -> None:
        """Drop the session and the tokenizer."""
        self._session = None
        self._tokenizer = None
        self.providers = []
        super().close()


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row to length 1 (zero rows stay zero)."""
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    scaled: np.ndarray = matrix / np.clip(norms, 1e-12, None)
    return scaled
