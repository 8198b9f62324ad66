"""ONNX Runtime image classifiers (EfficientNet-Lite and other [N, 3, H, W] -> logits models).

The session is opened with explicit providers through :func:`localgpt.experts.onnx.open_session`;
onnxruntime, numpy and Pillow are imported only inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import REINSTALL, open_session

if TYPE_CHECKING:
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard


class ImageClassificationExpert(Expert):
    """Serves ``image-classification``: the top labels of an image with their probabilities.

    Card options: ``model`` (ONNX file, default model.onnx), ``labels`` (a ``{"0": "tench, Tinca tinca"}``
    JSON file), ``size`` (crop, default 224), ``resize`` (short side before the crop, default 256),
    ``mean`` and ``std`` (pixel normalisation, default 127 and 128), ``top_k`` (default 5).

    Example::

        expert = ImageClassificationExpert(card, ExpertContext(settings))
        result = expert.run("image-classification", {"image": "/path/cat.png"}, run_dir)
        result.outputs["text"]           # "tiger cat (0.39), Egyptian cat (0.36), tabby (0.17), ..."
        result.data["labels"][0]         # {"label": "tiger cat", "score": 0.39, "names": "tiger cat", "index": 282}
    """

    TASKS = ("image-classification",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._session: Any = None
        self._labels: list[str] = []
        self.providers: list[str] = []

    def load(self) -> None:
        """Open the ONNX session and read the class names."""
        from localgpt.errors import StoreError
        from localgpt.store.image_onnx import read_labels

        opts = self.card.options
        session = open_session(self.card.file(opts.get("model", "model.onnx")), self.ctx.settings, self.card.id)
        labels_path = self.card.file(opts.get("labels", "labels.json"))
        if not labels_path.is_file():
            raise ExpertError(f"model '{self.card.id}' is missing its class names file {labels_path}", REINSTALL)
        try:
            labels = read_labels(labels_path)
        except StoreError as exc:
            raise ExpertError(f"model '{self.card.id}': {exc.message}", REINSTALL) from exc
        shape = session.get_outputs()[0].shape
        if isinstance(shape[-1], int) and shape[-1] != len(labels):
            raise ExpertError(f"model '{self.card.id}' has {shape[-1]} outputs but {len(labels)} class names",
                              REINSTALL)
        self._session, self._labels = session, labels
        self.providers = list(session.get_providers())
        super().load()

    def classify(self, images: list[str], top_k: int | None = None) -> list[list[dict[str, Any]]]:
        """The ``top_k`` labels of each image file, best first: ``{"label", "score", "names", "index"}``."""
        import numpy as np
        from PIL import UnidentifiedImageError

        from localgpt.store.image_onnx import preprocess

        if not self.loaded:
            self.load()
        opts = self.card.options
        k = int(top_k or opts.get("top_k", 5))
        try:
            batch = preprocess(images, size=int(opts.get("size", 224)), resize=int(opts.get("resize", 256)))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InputError(f"image cannot be decoded: {exc}", "give a PNG, JPEG or WebP image") from exc
        # preprocess normalises with the TF-Lite constants; a card with other ones is renormalised here
        mean, std = float(opts.get("mean", 127.0)), float(opts.get("std", 128.0))
        if (mean, std) != (127.0, 128.0):
            batch = ((batch * 128.0 + 127.0 - mean) / std).astype(np.float32)
        name = self._session.get_inputs()[0].name
        try:
            logits = self._session.run(None, {name: batch})[0]
        except Exception as exc:  # onnxruntime raises its own types
            raise ExpertError(f"model '{self.card.id}' failed to classify the image: {exc}") from exc
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        out = []
        for row in probs:
            best = np.argsort(row)[::-1][:k]
            out.append([{"label": self._labels[i].split(",")[0].strip(), "score": round(float(row[i]), 4),
                         "names": self._labels[i], "index": int(i)} for i in best])
        return out

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Label ``image``."""
        self.check_task(task)
        image = inputs.get("image", "")
        if not image:
            raise InputError(f"image-classification with model '{self.card.id}' needs an 'image'")
        labels = self.classify([image])[0]
        text = ", ".join(f"{item['label']} ({item['score']:.2f})" for item in labels)
        return ExpertOutput(outputs={"text": text},
                            data={"labels": labels, "score": labels[0]["score"] if labels else 0.0,
                                  "runtime": "onnxruntime/" + ",".join(self.providers)})

    def close(self) -> None:
        """Drop the session."""
        self._session = None
        self._labels = []
        self.providers = []
        super().close()
