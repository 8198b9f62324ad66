"""Stage 2: choose an installed model for each task.

With one candidate no LLM call is made; with several the LLM picks an id (constrained to the
candidates' ids) from their descriptions, and its reason is kept.
"""

from __future__ import annotations

import json
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


class Selector:
    """Picks a model card per task.

    Example::

        selector = Selector(catalog, llm)
        card, selection = selector.select(task, request="caption photo.jpg")
    """

    def __init__(self, catalog: CandidateSource, llm: LLM | None) -> None:
        self.catalog = catalog
        self.llm = llm

    def select(self, task: Task, request: str) -> tuple[ModelCard, Selection]:
        """The card that will run ``task`` and the record of why."""
        cands = self.catalog.candidates(task.task)
        if not cands:
            spec = registry.get(task.task)
            raise NoModelError(
                f"no installed model can run task {task.id} ({task.task}: {spec.description})",
                "install one with: python download_models.py --list, then --profile or localgpt models pull",
            )
        ids = [c.id for c in cands]
        if len(cands) == 1 or self.llm is None:
            why = "the only installed model for this task" if len(cands) == 1 else "first of the installed models"
            return cands[0], Selection(task_id=task.id, task=task.task, model=cands[0].id,
                                       backend=cands[0].backend, reason=why, candidates=ids)
        reply = self.llm.generate(self._messages(task, request, cands), schema=self.schema(ids), max_tokens=120)
        chosen, reason = self._parse(reply, ids)
        card = cands[ids.index(chosen)]
        return card, Selection(task_id=task.id, task=task.task, model=card.id, backend=card.backend,
                               reason=reason, candidates=ids)

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
