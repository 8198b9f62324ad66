"""The Planner: prompt, constrained decoding, acceptance of the reply, one repair round (see docs/planning.md)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

from localgpt import tasks as registry
from localgpt.config import DEFAULT_MAX_TASKS
from localgpt.errors import PlanError
from localgpt.llm import LLM, Message, context_budget, trim_history
from localgpt.planning.demos import DEMOS, Demo
from localgpt.planning.mend import salvage_plan
from localgpt.planning.quotes import outside_quotes
from localgpt.planning.retrieval import Similarity, word_overlap
from localgpt.planning.schema import STEP_MAX, plan_schema
from localgpt.planning.tidy import tidy_plan
from localgpt.planning.validate import validate_plan
from localgpt.schema import Plan
from localgpt.tasks import TaskSpec

DEMO_POOL = 30  # demos most similar to a request among which the diverse ones are chosen
SAMPLE_SEED = 1000  # seed of the first self-consistency sample (the next ones count up)
# What makes a request read as several actions (see :func:`min_steps`): words that chain actions, and
# words naming an action or what it makes. Quoted passages are left out first: they are data, not asks.
_CHAIN_WORDS = re.compile(r"\b(then|after|afterwards|finally|next|also|once|followed|and|lastly|later|subsequently|"
                          r"as well)\b")
_ACTION_WORDS = re.compile(r"\b(classify|detect|segment|generate|create|convert|translate|summari[sz]e|transcribe|"
                           r"answer|describe|edit|modify|change|identify|extract|estimate|read|speak|produce|make|"
                           r"turn|enhance|analy[sz]e|recogni[sz]e|tell|find|determine|compare|caption|write|"
                           r"paraphrase|video|image|speech|audio|label)\w*")

def min_steps(request: str) -> int:
    """The fewest steps a request plainly asks for: 2 when, outside its quoted passages, it has two
    or more words that chain actions ("then", "and", "finally", ...) or four or more different
    words naming an action ("translate", "describe", "video", ...), else 1.

    A small planner often closes its step list after the first step of such a request (on the
    TaskBench dev file, 44 of its 162 multi-tool requests got one step); this floor, given to the
    schema, makes it go on. On that file it falls on 127 of the 162 multi-tool requests and 15 of
    the 128 single-tool ones. (A floor of 3 for requests with three chaining words or five action
    words, 89 of whose 91 need three tools or more, was measured too: it changed 4 plans and
    nothing in the scores.)
    """
    text = outside_quotes(request).lower()
    chained = len(_CHAIN_WORDS.findall(text)) >= 2
    actions = len({m.group(1) for m in _ACTION_WORDS.finditer(text)}) >= 4
    return 2 if chained or actions else 1


class Planner:
    """Plans a request with an LLM under the plan-schema constraint.

    Example::

        planner = Planner(llm)
        plan = planner.plan("Read 'hello' aloud", files=[])
    """

    def __init__(self, llm: LLM, *, max_tasks: int = DEFAULT_MAX_TASKS, n_demos: int = 3,
                 demos: Sequence[Demo] = DEMOS, specs: Sequence[TaskSpec] = registry.TASKS,
                 repair: bool = True, salvage: bool = True, similarity: Similarity = word_overlap,
                 decompose: bool = True, samples: int = 0, sample_temperature: float = 0.7,
                 step_floor: bool = True, demo_diversity: float = 0.0, type_shortlist: int = 0) -> None:
        self.llm = llm
        self.max_tasks = max_tasks
        self.n_demos = n_demos
        self.demos = list(demos)
        self.specs = list(specs)
        self.repair = repair
        self.salvage = salvage
        self.last_salvaged = False
        self.similarity = similarity
        self.decompose = decompose
        self.samples = samples
        self.sample_temperature = sample_temperature
        self.step_floor = step_floor
        self.demo_diversity = demo_diversity
        self.type_shortlist = type_shortlist
        self.schema = plan_schema(self.specs, max_tasks, steps=decompose)
        self.last_raw: list[str] = []
        self.last_seconds = 0.0

    def system_prompt(self) -> str:
        """The fixed instructions: the task types and the rules of a plan."""
        lines = []
        for spec in self.specs:
            args = ", ".join(f"{i.name}: {i.kind.value}{'' if i.required else ' (optional)'}" for i in spec.inputs)
            lines.append(f"- {spec.name}({args}) -> {spec.output.value}: {spec.description}")
        return (
            "You are the planner of localgpt, an assistant that answers by running AI models on this machine.\n"
            "Split the user's request into tasks, " + self._reply_shape()
            + " Each task has an \"id\" (0, 1, 2, ...), a \"task\" type from the list below, \"dep\" "
            "(ids of the tasks whose output it uses, or [-1] when none) and \"args\".\n"
            "To use the output of task N as an argument, write \"<resource>-N\". File arguments are file names "
            "the user gave or \"<resource>-N\". Copy texts from the request into args; do not invent files, and "
            "add no task the request does not ask for.\n"
            "Task types:\n" + "\n".join(lines)
        )

    def _reply_shape(self) -> str:
        if self.decompose:
            return ("as JSON: first \"steps\": every action the request asks for, one step each, in order, in plain "
                    "words (\"Step 1: ...\"); then \"tasks\", one task per step.")
        return "as a JSON list."

    def demo_reply(self, demo: Demo) -> str:
        """A demo's plan as the LLM is asked to write it (compact JSON, with its steps when decomposing)."""
        tasks = list(demo.plan)
        if not self.decompose:
            return json.dumps(tasks, separators=(",", ":"), ensure_ascii=False)
        steps = list(demo.steps) or [f"Step {i}: {t['task']}" for i, t in enumerate(tasks, 1)]
        return json.dumps({"steps": steps, "tasks": tasks}, separators=(",", ":"), ensure_ascii=False)

    def user_prompt(self, request: str, files: Sequence[str]) -> str:
        """The request as the planner sees it, with the user's files."""
        listed = ", ".join(files) if files else "none"
        return f"Request: {request}\nFiles: {listed}"

    def choose_demos(self, request: str) -> list[Demo]:
        """``n_demos`` demos for ``request``, least similar first (the closest sits nearest): the most
        similar ones.

        With ``demo_diversity`` > 0 (off by default), a request that reads as several actions
        (:func:`min_steps`) gets varied demos instead: the most similar first, then each time the
        demo of the :data:`DEMO_POOL` most similar that best balances its similarity to the request
        against its likeness to a demo already chosen (maximal marginal relevance). It shows more of
        the tasks a request may need, but on TaskBench it planned no better (bench/README.md).
        """
        if self.n_demos <= 0 or not self.demos:
            return []
        scores, ranked = self._ranked(request)
        if self.demo_diversity <= 0 or min_steps(request) < 2:
            chosen = ranked[: self.n_demos]
        else:
            chosen, pool = ranked[:1], ranked[1:DEMO_POOL]
            likeness = dict.fromkeys(pool, float("-inf"))
            w = self.demo_diversity
            while pool and len(chosen) < self.n_demos:
                near = self.similarity(self.demos[chosen[-1]].request, [self.demos[i].request for i in pool])
                for i, sim in zip(pool, near, strict=True):
                    likeness[i] = max(likeness[i], sim)
                best = max(pool, key=lambda i: (1 - w) * scores[i] - w * likeness[i])
                chosen.append(best)
                pool.remove(best)
        return [self.demos[i] for i in sorted(chosen, key=ranked.index, reverse=True)]

    def _ranked(self, request: str) -> tuple[list[float], list[int]]:
        """The similarity of ``request`` to each demo, and the demos' indices most similar first."""
        scores = self.similarity(request, [d.request for d in self.demos])
        return scores, sorted(range(len(self.demos)), key=lambda i: scores[i], reverse=True)

    def shortlist(self, request: str) -> list[TaskSpec]:
        """The task types the constraint admits for ``request``: with ``type_shortlist`` = K > 0 (off
        by default), those used by the K demos most similar to it, and those no demo uses at all (the
        demos say nothing against them); all of :attr:`specs` otherwise, when there are no more than
        K demos, or when none of those types is offered. The system prompt still lists every type, so
        its cached state is reused.
        """
        k = self.type_shortlist
        if k <= 0 or len(self.demos) <= k:
            return self.specs
        _, ranked = self._ranked(request)
        near = {t.get("task") for i in ranked[:k] for t in self.demos[i].plan}
        used = {t.get("task") for d in self.demos for t in d.plan}
        return [s for s in self.specs if s.name in near or s.name not in used] or self.specs

    def messages(self, request: str, files: Sequence[str], history: Sequence[Message] = ()) -> list[Message]:
        """The full chat sent to the LLM: instructions, demos, trimmed history, the request."""
        msgs: list[Message] = [{"role": "system", "content": self.system_prompt()}]
        for demo in self.choose_demos(request):
            msgs.append({"role": "user", "content": self.user_prompt(demo.request, demo.files)})
            msgs.append({"role": "assistant", "content": self.demo_reply(demo)})
        current = {"role": "user", "content": self.user_prompt(request, files)}
        msgs.extend(trim_history(self.llm, history, context_budget(self.llm, self.max_tokens(), [*msgs, current])))
        msgs.append(current)
        return msgs

    def schema_for(self, request: str) -> dict[str, Any] | None:
        """The constraint for ``request``: :attr:`schema` (its task types narrowed to
        :meth:`shortlist` when that leaves some out), with as many steps at least as a request that
        reads as several actions plainly asks for when decomposing (:func:`min_steps`, unless
        ``step_floor`` is off)."""
        schema = self.schema
        if schema is None:
            return schema
        allowed = self.shortlist(request)
        if len(allowed) < len(self.specs):
            schema = plan_schema(allowed, self.max_tasks, steps=self.decompose)
        if not self.decompose or not self.step_floor:
            return schema
        steps = schema["properties"]["steps"]
        floor = min(min_steps(request), steps.get("maxItems", 1))
        if floor <= steps.get("minItems", 1):
            return schema
        return {**schema, "properties": {**schema["properties"], "steps": {**steps, "minItems": floor}}}

    def max_tokens(self) -> int:
        """Enough tokens for the longest plan the schema admits, within reason (and its steps)."""
        return min(1536, 120 * self.max_tasks) + (STEP_MAX // 3 * self.max_tasks if self.decompose else 0)

    def plan(self, request: str, files: Sequence[str] = (), history: Sequence[Message] = ()) -> Plan:
        """Plan ``request``; raises :class:`PlanError` when no valid plan can be made.

        A reply that is not a valid plan is mended first (:func:`salvage_plan`); only when mending
        cannot keep a single task (or the reply is not JSON) is the error fed back to the LLM for one
        repair round, whose reply may be mended in turn.
        """
        self.last_raw = []  # reset first: a call that fails early leaves none of the last call's replies
        self.last_salvaged = False
        if not request.strip():
            raise PlanError("the request is empty", "say what you want done")
        start = time.perf_counter()
        msgs = first = self.messages(request, files, history)
        error: PlanError | None = None
        schema = self.schema_for(request)
        for _ in range(2 if self.repair else 1):
            raw = self.llm.generate(msgs, schema=schema, max_tokens=self.max_tokens())
            self.last_raw.append(raw)
            try:
                plan = self._accept(raw, request, files)
            except PlanError as exc:
                error = exc
                msgs = msgs + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"That plan is invalid: {exc.message}. Reply with a corrected plan."},
                ]
                continue
            plan = self._consensus(plan, first, schema, request, files)
            self.last_seconds = time.perf_counter() - start
            return plan
        assert error is not None
        self.last_seconds = time.perf_counter() - start
        raise PlanError(f"could not make a valid plan: {error.message}",
                        "rephrase the request, or name the files it uses", raw=error.raw)

    def _accept(self, raw: str, request: str, files: Sequence[str]) -> Plan:
        """The plan in ``raw`` (see :func:`accept_reply`), noting whether it was mended."""
        plan, self.last_salvaged = accept_reply(raw, request, files, self.max_tasks, self.specs, salvage=self.salvage)
        return plan

    def _consensus(self, plan: Plan, msgs: list[Message], schema: dict[str, Any] | None, request: str,
                   files: Sequence[str]) -> Plan:
        """Self-consistency (``samples`` > 0): ``plan`` or one of ``samples`` replies sampled at
        ``sample_temperature`` (each validated, or mended), whichever agrees most with all the others
        (:func:`plan_agreement`); ``plan`` wins a tie. Samples that cannot be made valid do not vote."""
        if self.samples <= 0:
            return plan
        candidates = [plan]
        for k in range(self.samples):
            raw = self.llm.generate(msgs, schema=schema, max_tokens=self.max_tokens(),
                                    temperature=self.sample_temperature, seed=SAMPLE_SEED + k)
            self.last_raw.append(raw)
            try:
                found, _ = accept_reply(raw, request, files, self.max_tasks, self.specs, salvage=self.salvage)
            except PlanError:
                continue
            candidates.append(found)
        votes = [sum(plan_agreement(c, other) for other in candidates) for c in candidates]
        return candidates[votes.index(max(votes))]


def accept_reply(raw: str, request: str = "", files: Sequence[str] = (), max_tasks: int = DEFAULT_MAX_TASKS,
                 specs: Sequence[TaskSpec] = registry.TASKS, *, salvage: bool = True) -> tuple[Plan, bool]:
    """The plan in a planner reply, valid as it is or mended (:func:`salvage_plan`), then tidied
    (:func:`tidy_plan`), with its steps, and whether it was mended. Raises the first error found when
    the reply is not JSON, or when mending (if ``salvage``) cannot keep a single task."""
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PlanError(f"the planner's reply is not complete JSON ({exc.msg})", raw=raw) from exc
    mended = False
    try:
        plan = validate_plan(decoded, request, files, max_tasks)
    except PlanError as exc:
        error = PlanError(exc.message, exc.hint, raw=raw)
        if not salvage:
            raise error from exc
        try:
            plan = salvage_plan(decoded, request, files, max_tasks, specs)
        except PlanError:
            raise error from exc
        mended = True
    return tidy_plan(plan, request, files, max_tasks, specs), mended


def plan_agreement(a: Plan, b: Plan) -> float:
    """How alike two plans are, 0 to 2: the Jaccard overlap of their task types plus that of their
    edges (source type, target type)."""

    def jaccard(x: set[Any], y: set[Any]) -> float:
        return len(x & y) / len(x | y) if x | y else 1.0

    def edges(p: Plan) -> set[tuple[str, str]]:
        return {(p.by_id(d).task, t.task) for t in p.tasks for d in t.dep}

    return jaccard({t.task for t in a.tasks}, {t.task for t in b.tasks}) + jaccard(edges(a), edges(b))
