"""Stage 4: the LLM writes the answer from the request and the structured results.

The answer streams token by token; the list of produced files is appended by code, so every
file is always named whatever the LLM writes.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Sequence
from typing import Any

from localgpt.llm import FREE_TEXT_REPEAT_PENALTY, LLM, Message, TokenCallback, context_budget, trim_history
from localgpt.schema import TaskResult

RESULT_TEXT_MAX = 1500  # characters of one task's text shown to the responder
ANSWER_BASE_TOKENS = 160  # an answer's room beyond quoting the results (what was done, what failed)
DETAIL_DIGITS = 4  # significant digits of a number in a result's details


def produced_files(results: Sequence[TaskResult]) -> list[str]:
    """Every file the tasks produced, in task order."""
    files = []
    for r in results:
        for kind, value in r.outputs.items():
            if kind != "text" and value not in files:
                files.append(value)
    return files


def files_section(results: Sequence[TaskResult]) -> str:
    """The closing list of produced files ("" when there are none), as every answer ends."""
    files = produced_files(results)
    return "\n\nFiles produced:\n" + "\n".join(f"- {f}" for f in files) if files else ""


def notes_section(results: Sequence[TaskResult]) -> str:
    """The closing notes of tasks run through a stand-in ("" when there are none), as every such answer ends."""
    notes = [f"- task {r.id} ({r.task}): {r.note}" for r in results if r.note and r.status == "done"]
    return "\n\nStand-ins:\n" + "\n".join(notes) if notes else ""


def rounded(value: Any) -> Any:
    """``value`` with every real number that is not an integer cut to :data:`DETAIL_DIGITS` significant digits,
    inside lists and dicts too, its integer digits always kept: a score of 0.9891608357429504 reads 0.9892,
    123456.7 reads 123457.0 (five detections, a score and a box of four numbers each: 552 -> 242 Qwen
    tokens)."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        x = float(value)
        if not math.isfinite(x) or x == 0:
            return x
        return round(x, max(0, DETAIL_DIGITS - 1 - math.floor(math.log10(abs(x)))))
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def results_for_prompt(results: Sequence[TaskResult], limit: int = RESULT_TEXT_MAX) -> list[dict[str, object]]:
    """A compact, JSON-ready view of the results for the responder, each text cut to ``limit``; a result's
    details leave out what its outputs already say (a transcript, a caption) and empty values, and give
    numbers to :data:`DETAIL_DIGITS` significant digits (:func:`rounded`)."""
    view = []
    for r in results:
        item: dict[str, object] = {"id": r.id, "task": r.task, "status": r.status}
        if r.model:
            item["model"] = r.model
        if r.stand_in:
            item["stood_in"] = f"{r.stand_in} ran in place of {r.task}; say so"
        if r.status == "done":
            item["outputs"] = {k: v[:limit] for k, v in r.outputs.items()}
            data = r.data
            if isinstance(data, dict):
                shown = set(r.outputs.values())
                data = {k: v for k, v in data.items()
                        if v is not None and not (isinstance(v, str) and v in shown)} or None
            if data is not None:
                text = json.dumps(rounded(data), default=str, ensure_ascii=False)
                # short: the value itself (no escaped quotes to read); long: its JSON text, cut
                item["details"] = json.loads(text) if len(text) <= limit // 2 else text[: limit // 2] + "..."
        else:
            item["error"] = r.error
        view.append(item)
    return view


def results_text(view: Sequence[dict[str, object]]) -> str:
    """The results as the responder reads them: a JSON list, one result a line."""
    return "[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in view) + "\n]"


class Responder:
    """Answers the user from the results of a run.

    The answer streams; its length is capped by what the results can need (quoting every result in full
    plus :data:`ANSWER_BASE_TOKENS`, never more than ``max_tokens``), and after each answer
    :attr:`first_token_seconds` holds the time from the call to its first streamed token (None when no
    token came) and :attr:`answer_budget` the cap used. The prompt is the request and the results only:
    never the plan's prompt.

    Example::

        answer = Responder(llm).respond("read 'hi' aloud", results, on_token=print)
    """

    def __init__(self, llm: LLM, max_tokens: int = 400) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        self.first_token_seconds: float | None = None
        self.answer_budget = max_tokens

    def messages(self, request: str, results: Sequence[TaskResult], history: Sequence[Message] = ()) -> list[Message]:
        """The chat sent to the LLM for the answer."""
        system = (
            "You are localgpt, an assistant that answered the user's request by running AI models on this "
            "machine. Below are the request and what each model produced (or why it failed). Answer the "
            "request directly and truthfully from these results: quote the important outputs, say which model "
            "did what when it helps, and say plainly what failed and why. Do not invent results."
        )
        room = context_budget(self.llm, self.max_tokens, text=system + request, margin=64)
        limit = RESULT_TEXT_MAX
        while True:  # shrink each result's text until the results fit the context window
            body = results_text(results_for_prompt(results, limit))
            if self.llm.count_tokens(body) <= room or limit <= 100:
                break
            limit //= 2
        user = f"Request: {request}\nResults:\n{body}"
        msgs: list[Message] = [{"role": "system", "content": system}]
        msgs.extend(trim_history(self.llm, history,
                                 context_budget(self.llm, self.max_tokens, text=system + user, margin=32)))
        msgs.append({"role": "user", "content": user})
        return msgs

    def budget(self, user: str) -> int:
        """Tokens the answer may take: enough to quote the whole of ``user`` (the request and the
        results) plus :data:`ANSWER_BASE_TOKENS`, at most ``max_tokens``."""
        return min(self.max_tokens, ANSWER_BASE_TOKENS + self.llm.count_tokens(user))

    @staticmethod
    def fallback(results: Sequence[TaskResult], reason: str) -> str:
        """An answer written by code from the results, for when the LLM cannot write one."""
        lines = [f"(The answer could not be written by the LLM: {reason}. Here are the results.)"]
        for r in results:
            if r.status == "done":
                text = r.outputs.get("text") or ", ".join(f"{k}: {v}" for k, v in r.outputs.items())
                lines.append(f"- task {r.id} ({r.task}, {r.model}): {text[:RESULT_TEXT_MAX]}")
            else:
                lines.append(f"- task {r.id} ({r.task}) {r.status}: {r.error}")
        return "\n".join(lines) + notes_section(results) + files_section(results)

    def respond(self, request: str, results: Sequence[TaskResult], history: Sequence[Message] = (),
                on_token: TokenCallback | None = None) -> str:
        """The answer text, streamed to ``on_token``, ending with the list of produced files."""
        start = time.perf_counter()
        self.first_token_seconds = None

        def first(token: str) -> None:
            if token and self.first_token_seconds is None:
                self.first_token_seconds = time.perf_counter() - start
            if on_token is not None:
                on_token(token)

        messages = self.messages(request, results, history)
        self.answer_budget = self.budget(messages[-1]["content"])
        answer = self.llm.generate(messages, max_tokens=self.answer_budget, on_token=first,
                                   repeat_penalty=FREE_TEXT_REPEAT_PENALTY).strip()
        tail = notes_section(results) + files_section(results)
        if tail:
            if on_token is not None:
                on_token(tail)
            answer += tail
        return answer
