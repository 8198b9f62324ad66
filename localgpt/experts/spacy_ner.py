"""spaCy named-entity recognition: a spaCy pipeline folder finds entities (with labels and character spans).

spaCy is imported only in ``load``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertContext, ExpertOutput
from localgpt.experts.onnx import REINSTALL

if TYPE_CHECKING:
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard


class SpacyNERExpert(Expert):
    """A spaCy pipeline; serves ``token-classification`` (named entities, plus part-of-speech tags).

    Card options: ``pipeline`` (the pipeline folder inside the model folder, holding config.cfg
    and meta.json; default the model folder itself), ``max_chars`` (longest text accepted,
    default 100000).

    Each entity's ``score`` is its probability under a beam search of the same recogniser (width
    ``beam_width``, default 16; 0 turns scoring off and scores are null): the share of the beam's
    parses that hold exactly that span and label.

    Example::

        expert = SpacyNERExpert(card, ExpertContext(settings))
        result = expert.run("token-classification", {"text": "Ada Lovelace lived in London."}, run_dir)
        result.outputs["text"]  # "Ada Lovelace (PERSON), London (GPE)"
    """

    TASKS = ("token-classification",)

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        super().__init__(card, ctx)
        self._nlp: Any = None

    def load(self) -> None:
        """Load the pipeline folder with spaCy."""
        import spacy

        folder = self.card.file(self.card.options.get("pipeline", "."))
        if not (folder / "config.cfg").is_file():
            raise ExpertError(f"model '{self.card.id}' has no spaCy pipeline (config.cfg) in {folder}", REINSTALL)
        try:
            self._nlp = spacy.load(folder)
        except Exception as exc:  # spaCy raises many unrelated types for a damaged folder
            raise ExpertError(f"model '{self.card.id}': spaCy could not load {folder}: {exc}", REINSTALL) from exc
        if "ner" not in self._nlp.pipe_names:
            raise ExpertError(f"model '{self.card.id}': the spaCy pipeline has no 'ner' component",
                              "use a spaCy pipeline trained for named entities")
        super().load()

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Find the entities of ``text``."""
        self.check_task(task)
        text = inputs.get("text", "")
        if not text.strip():
            raise InputError(f"token-classification with model '{self.card.id}' needs a non-empty 'text'")
        limit = int(self.card.options.get("max_chars", 100_000))
        if len(text) > limit:
            raise InputError(f"token-classification with model '{self.card.id}': the text has {len(text)} "
                             f"characters, more than the {limit} allowed", "split the text into parts")
        if not self.loaded:
            self.load()
        doc = self._nlp.make_doc(text)
        for name, component in self._nlp.pipeline:
            if name != "ner":
                doc = component(doc)
        scores = self._beam_scores(doc)  # before the greedy pass: the beam must not see its entities
        doc = self._nlp.get_pipe("ner")(doc)
        entities = [{"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char,
                     "score": round(min(1.0, scores[(e.start, e.end, e.label_)]), 4)
                     if (e.start, e.end, e.label_) in scores else None}
                    for e in doc.ents]
        tokens = [{"text": t.text, "pos": t.pos_, "tag": t.tag_, "start": t.idx, "end": t.idx + len(t.text)}
                  for t in doc if not t.is_space]
        summary = ", ".join(f"{e['text']} ({e['label']})" for e in entities) or "no named entities found"
        return ExpertOutput(outputs={"text": summary},
                            data={"entities": entities, "tokens": tokens, "runtime": "spacy/cpu"})

    def _beam_scores(self, doc: Any) -> dict[tuple[int, int, str], float]:
        """Probability of each (start token, end token, label) entity under the recogniser's beam search."""
        width = int(self.card.options.get("beam_width", 16))
        if width <= 0:
            return {}
        ner = self._nlp.get_pipe("ner")
        try:
            found: dict[tuple[int, int, str], float] = ner.scored_ents(
                ner.beam_parse([doc], beam_width=width, beam_density=0.0001))[0]
        except Exception:  # a recogniser without beam support still gives entities, unscored
            return {}
        return {key: float(value) for key, value in found.items()}

    def close(self) -> None:
        """Drop the pipeline."""
        self._nlp = None
        super().close()
