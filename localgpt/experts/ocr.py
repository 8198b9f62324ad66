"""Text reading (OCR) with rapidocr: PP-OCR detection, direction and recognition ONNX models.

rapidocr (and with it onnxruntime, numpy and OpenCV) is imported only in ``load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import CUDA, REINSTALL, onnx_providers

if TYPE_CHECKING:
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard


def check_image(path: str) -> None:
    """InputError naming ``path`` unless it is an image Pillow decodes (rapidocr's own errors say less)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise InputError(f"image file '{path}' cannot be decoded: {exc}", "give a PNG, JPEG or WebP image") from exc


def bundled_engine(holder: Any, purpose: str, **options: Any) -> Any:
    """A RapidOCR engine on the models bundled with rapidocr, made on first use and kept on ``holder``
    (an expert's pipeline), so it is freed with it; ``purpose`` names the task in the error."""
    engine = getattr(holder, "_localgpt_ocr", None)
    if engine is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ExpertError(f"{purpose} reads text with rapidocr-onnxruntime, which is not installed",
                              "install localgpt's cpu extra: pip install -e '.[cpu]'") from exc
        engine = RapidOCR(**options)
        holder._localgpt_ocr = engine
    return engine


class RapidOCRExpert(Expert):
    """PP-OCR models run by rapidocr; serves ``image-to-text`` by reading the text in the image.

    Card options: ``det``, ``rec``, ``cls`` (the three ONNX files, defaults det.onnx, rec.onnx,
    cls.onnx), ``min_score`` (lines recognised with a lower score are dropped, default 0.5) and the
    detector's resizing: ``limit_type`` "max" (default: only images longer than ``limit_side``, default
    960 px, are shrunk) or "min" (rapidocr's own default: the short side is brought up to ``limit_side``).

    Example::

        expert = RapidOCRExpert(card, ExpertContext(settings))
        result = expert.run("image-to-text", {"image": "/path/receipt.png"}, run_dir)
        result.outputs["text"]            # the lines read, top to bottom
        result.data["lines"][0]["box"]    # four [x, y] corners of the first line
    """

    TASKS = ("image-to-text",)
    SCOPE = {"image-to-text": "reads the printed text in an image; does not describe what the picture shows"}

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._engine: Any = None
        self.runtime = ""

    def load(self) -> None:
        """Build the rapidocr engine on the card's three model files."""
        from rapidocr_onnxruntime import RapidOCR

        opts = self.card.options
        paths: dict[str, Path] = {}
        for part, default in (("det", "det.onnx"), ("rec", "rec.onnx"), ("cls", "cls.onnx")):
            paths[part] = self.card.file(opts.get(part, default))
            if not paths[part].is_file():
                raise ExpertError(f"model '{self.card.id}' is missing its {part} model {paths[part]}", REINSTALL)
        cuda = CUDA in onnx_providers(self.ctx.settings, self.card.id)
        threads = self.ctx.settings.threads
        try:
            self._engine = RapidOCR(
                det_model_path=str(paths["det"]), rec_model_path=str(paths["rec"]), cls_model_path=str(paths["cls"]),
                intra_op_num_threads=threads, inter_op_num_threads=1,
                det_use_cuda=cuda, cls_use_cuda=cuda, rec_use_cuda=cuda,
                text_score=float(opts.get("min_score", 0.5)),
                det_limit_type=str(opts.get("limit_type", "max")), det_limit_side_len=int(opts.get("limit_side", 960)),
            )
        except Exception as exc:  # rapidocr and onnxruntime raise their own types
            raise ExpertError(f"model '{self.card.id}' could not be loaded: {exc}", REINSTALL) from exc
        self.runtime = "onnxruntime/" + (CUDA if cuda else "CPUExecutionProvider")
        super().load()

    def read(self, image: str) -> list[dict[str, Any]]:
        """The text lines of an image file: ``{"text", "score", "box"}`` each, in rapidocr's reading order."""
        check_image(image)
        if not self.loaded:
            self.load()
        try:
            found, _ = self._engine(image)
        except Exception as exc:
            raise ExpertError(f"model '{self.card.id}' failed to read the text in {image}: {exc}") from exc
        lines = [{"text": str(text), "score": round(float(score), 4),
                  "box": [[round(float(x), 1), round(float(y), 1)] for x, y in box]}
                 for box, text, score in (found or [])]
        return lines

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Read the text in ``image``."""
        self.check_task(task)
        image = inputs.get("image", "")
        if not image:
            raise InputError(f"image-to-text with model '{self.card.id}' needs an 'image'")
        lines = self.read(image)
        text = "\n".join(line["text"] for line in lines) if lines else "(no text found)"
        score = min((line["score"] for line in lines), default=0.0)
        # "empty": nothing was read, so a stand-in may serve the task (see localgpt.runtime.executor)
        return ExpertOutput(outputs={"text": text},
                            data={"lines": lines, "score": score, "runtime": self.runtime, "empty": not lines})

    def close(self) -> None:
        """Drop the engine and its sessions."""
        self._engine = None
        super().close()
