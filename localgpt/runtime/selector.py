"""Stage 2: choose an installed model for each task.

With one candidate no LLM call is made; with several the LLM picks an id (constrained to the
candidates' ids) from their descriptions, and its reason is kept.

When no installed model serves a task, a registered substitute task (``TaskSpec.substitutes``) whose
models are installed may stand in for it (:meth:`Selector.stand_in`): the run says so and names what to
install for the real task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from localgpt import tasks as registry
from localgpt.errors import NoModelError
from localgpt.llm import LLM
from localgpt.schema import ModelCard, Selection, Task


class CandidateSource(Protocol):
    """Anything that lists installed models for a task (the Catalog)."""

    def candidates(self, task: str) -> list[ModelCard]:
        """Installed cards able to serve ``task``, preferred first."""
        ...


def scope(card: ModelCard, task: str) -> str:
    """What ``card`` does of ``task`` when it serves only part of it ("" when it serves all of it): the card's
    ``options.scope[task]``, else its backend's :attr:`~localgpt.experts.base.Expert.SCOPE`."""
    declared = card.options.get("scope")
    if isinstance(declared, dict) and task in declared:
        return str(declared[task])
    from localgpt.errors import ExpertError
    from localgpt.experts import BUILTIN_BACKENDS, expert_class

    if card.backend not in BUILTIN_BACKENDS:  # a third-party backend is not imported just to ask
        return ""
    try:
        return expert_class(card.backend).SCOPE.get(task, "")
    except ExpertError:
        return ""


def install_hint(task: str) -> str:
    """The command that installs a model for ``task``: the smallest curated hub model serving it."""
    from localgpt.store.profiles import HUB_MODELS

    entries = sorted((m for m in HUB_MODELS if task in m.tasks), key=lambda m: m.size)
    if not entries:
        return "python download_models.py --list"
    return f"localgpt models pull --hub {entries[0].repo} --task {task} --id {entries[0].id}"


@dataclass(frozen=True)
class StandIn:
    """A substitute ready to run in place of task ``planned``: ``card`` serves ``task``; ``then_card`` (the
    controller LLM or a model of the substitute's ``then`` task) turns its output into the answer."""

    planned: str
    task: str
    card: ModelCard
    gives: str
    then: str | None = None
    then_card: ModelCard | None = None
    why: str = ""  # why it stands in, when not because nothing serves the task

    def note(self, why: str = "") -> str:
        """What stood in for what, and what to install for the real task."""
        first = why or self.why or f"no installed model serves {self.planned}"
        via = f" then {self.then} by {self.then_card.id}" if self.then and self.then_card else ""
        return (f"{first}, so {self.task} ({self.card.id}{via}) stood in for it: {self.gives}. "
                f"For real {self.planned}, install a model: {install_hint(self.planned)}")


class Selector:
    """Picks a model card per task.

    Example::

        selector = Selector(catalog, llm)
        card, selection = selector.select(task, request="caption photo.jpg")
    """

    def __init__(self, catalog: CandidateSource, llm: LLM | None, substitutes: bool = True) -> None:
        self.catalog = catalog
        self.llm = llm
        self.substitutes = substitutes

    def stand_in(self, task: str) -> StandIn | None:
        """The first registered substitute for ``task`` whose models are installed (and, for one with a
        ``then`` step, a model of that step too); None when substitutes are off or none is installed."""
        if not self.substitutes or not registry.is_known(task):
            return None
        for sub in registry.get(task).substitutes:
            cands = self.catalog.candidates(sub.task)
            if not cands:
                continue
            then_card = None
            if sub.then is not None:
                then_cands = self.catalog.candidates(sub.then)
                if not then_cands:
                    continue
                then_card = then_cands[0]
            return StandIn(task, sub.task, cands[0], sub.gives, sub.then, then_card)
        return None

    def no_model(self, task: Task) -> NoModelError:
        """The error for a task nothing installed serves, nor stands in for (saying why there is no substitute)."""
        spec = registry.get(task.task)
        why = ""
        if spec.no_substitute:
            why = f"; no other task can stand in: {spec.no_substitute}"
        elif spec.substitutes and not self.substitutes:
            why = f"; substitutes are off ({', '.join(s.task for s in spec.substitutes)} could stand in)"
        elif spec.substitutes:
            why = f"; nor is a model of a stand-in task ({', '.join(s.task for s in spec.substitutes)})"
        return NoModelError(f"no installed model can run task {task.id} ({task.task}: {spec.description}){why}",
                            f"install one: {install_hint(task.task)}")

    def select(self, task: Task, request: str) -> tuple[ModelCard, Selection]:
        """The card that will run ``task`` and the record of why (a stand-in's card when nothing serves it
        and a substitute is installed: ``Selection.stand_in`` names the task it runs)."""
        card, selection, _ = self.choose(task, request)
        return card, selection

    def choose(self, task: Task, request: str) -> tuple[ModelCard, Selection, StandIn | None]:
        """:meth:`select`, with the :class:`StandIn` to run when one was chosen."""
        cands = self.catalog.candidates(task.task)
        if not cands:
            stand = self.stand_in(task.task)
            if stand is None:
                raise self.no_model(task)
            return stand.card, Selection(task_id=task.id, task=task.task, model=stand.card.id,
                                         backend=stand.card.backend, reason=stand.note(),
                                         candidates=[stand.card.id], stand_in=stand.task), stand
        # Models that serve only one sense of the task (an OCR model "reads" images but does not describe
        # them) compete with the stand-in: the LLM picks, from the request, which sense is meant.
        stand = None
        if self.llm is not None and all(scope(c, task.task) for c in cands):
            stand = self.stand_in(task.task)
            if stand is not None and stand.card.id not in {c.id for c in cands}:
                cands = [*cands, stand.card.model_copy(update={
                    "description": f"stands in for {task.task}: {stand.gives}. {stand.card.description}"})]
        ids = [c.id for c in cands]
        if len(cands) == 1 or self.llm is None:
            why = "the only installed model for this task" if len(cands) == 1 else "first of the installed models"
            return cands[0], Selection(task_id=task.id, task=task.task, model=cands[0].id,
                                       backend=cands[0].backend, reason=why, candidates=ids), None
        reply = self.llm.generate(self._messages(task, request, cands), schema=self.schema(ids), max_tokens=120)
        chosen, reason = self._parse(reply, ids)
        if stand is not None and chosen == stand.card.id:
            stand = replace(stand, why=f"the installed model for {task.task} ({cands[0].id}) only "
                                       f"{scope(cands[0], task.task)}, and the request asks otherwise ({reason})")
            return stand.card, Selection(task_id=task.id, task=task.task, model=stand.card.id,
                                         backend=stand.card.backend, candidates=ids, stand_in=stand.task,
                                         reason=stand.note()), stand
        card = cands[ids.index(chosen)]
        return card, Selection(task_id=task.id, task=task.task, model=card.id, backend=card.backend,
                               reason=reason, candidates=ids), None

    @staticmethod
    def schema(ids: list[str]) -> dict[str, Any]:
        """The constraint for a choice: one of ``ids`` and a short reason."""
        return {
            "type": "object",
            "properties": {"id": {"enum": ids}, "reason": {"type": "string", "maxLength": 160}},
            "required": ["id", "reason"],
            "additionalProperties": False,
        }

    @staticmethod
    def _messages(task: Task, request: str, cands: list[ModelCard]) -> list[dict[str, str]]:
        listing = "\n".join(f"- {c.id}: {c.description}" for c in cands)
        return [
            {"role": "system", "content": "Choose the model best suited to the task. Reply with its id and a "
                                          "short reason, as JSON."},
            {"role": "user", "content": f"User request: {request}\nTask: {task.task} with args "
                                        f"{json.dumps(task.args)}\nModels:\n{listing}"},
        ]

    @staticmethod
    def _parse(reply: str, ids: list[str]) -> tuple[str, str]:
        """The chosen id and reason; the first candidate when the reply names none."""
        try:
            data = json.loads(reply)
            if data.get("id") in ids:
                return str(data["id"]), str(data.get("reason", "")) or "chosen by the LLM"
        except (json.JSONDecodeError, AttributeError):
            pass
        return ids[0], "the LLM's choice was unreadable; took the first installed model"
