"""The Planner: prompt, constrained decoding, acceptance of the reply, one repair round (see docs/planning.md)."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from localgpt import tasks as registry
from localgpt.config import DEFAULT_MAX_TASKS
from localgpt.errors import LocalGPTError, PlanError
from localgpt.llm import KEEP, LLM, Completion, Message, complete, context_budget, ending_logprobs, trim_history
from localgpt.planning.demos import DEMOS, PROMPT_DEMOS, Demo
from localgpt.planning.language import detect, lexicon
from localgpt.planning.mend import salvage_plan
from localgpt.planning.passes import PASSES, Pass, apply_passes
from localgpt.planning.quotes import outside_quotes, quoted_passages
from localgpt.planning.retrieval import Similarity, word_overlap
from localgpt.planning.schema import STEP_MAX, plan_schema, steps_kept_schema
from localgpt.planning.validate import named_files, user_files, validate_plan
from localgpt.schema import Plan
from localgpt.tasks import TaskSpec

DEMO_POOL = 30  # demos most similar to a request among which the diverse ones are chosen
REWRITE_MAX = 600  # longest English rewrite of a request (PlannerOptions.rewrite), in characters
REWRITE_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"english": {"type": "string", "minLength": 1, "maxLength": REWRITE_MAX}},
    "required": ["english"], "additionalProperties": False}
REWRITE_PROMPT = (
    "Rewrite the user's request in English, as plain sentences that say every action it asks for, in order. "
    "Copy every file name and every quoted passage exactly as written, in its own language and inside its "
    "quotation marks. Add nothing the request does not say. Reply as JSON: {\"english\": \"...\"}.")
SAMPLE_SEED = 1000  # seed of the first self-consistency sample (the next ones count up)


def min_steps(request: str) -> int:
    """The fewest steps a request plainly asks for: 2 when, outside its quoted passages, it holds two
    or more words that chain actions, or four or more different words naming an action, of the lexicon
    of its language ("then", "dann", "然后"; "translate", "übersetze", "翻译"); else 1. A language
    without a lexicon always gets 1: an absent word never raises the floor.

    A small planner often closes its step list after the first step of such a request (on the
    TaskBench dev file, 44 of its 162 multi-tool requests got one step); this floor, given to the
    schema, makes it go on. With the English lexicon it falls on 127 of that file's 162 multi-tool
    requests and 15 of the 128 single-tool ones.
    """
    words = lexicon(detect(request))
    text = outside_quotes(request)
    chained = words.chain_words(text) >= 2
    actions = len(words.found(text, words.actions, prefix=True)) >= 4
    return 2 if chained or actions else 1


@dataclass(frozen=True)
class PlannerOptions:
    """How the planner decodes, for ablations (the defaults are the product's planner; see
    docs/planning.md and bench/README.md for what each one measured).

    - ``repair``: one repair round when a reply cannot be made a valid plan;
    - ``salvage``: mend an invalid reply task by task before asking for a repair;
    - ``decompose``: the LLM writes the request's steps before its tasks;
    - ``constrained``: decode under the plan schema;
    - ``step_floor``: raise the schema's fewest steps for a request that reads as several actions
      (:func:`min_steps`);
    - ``samples``, ``sample_temperature``: self-consistency over that many sampled replies;
    - ``demo_diversity``: maximal marginal relevance among the demos (0: the most similar ones);
    - ``type_shortlist``: admit only the task types of the K most similar demos (0: all);
    - ``fixed_demos``: show the first ``n_demos`` demos whatever the request;
    - ``system_demos``: write that many of the planner's prompt demos (:data:`PROMPT_DEMOS`, those whose
      task types are offered) into the system prompt, whose evaluated state is cached, so they cost a
      request no prompt tokens; the ``n_demos`` chosen per request come from the other demos;
    - ``other_language_demos``: for a request not in English (:func:`language.detect`), write that many
      prompt demos into the system prompt, as ``system_demos`` does, and choose none per request (0: such a
      request is planned as an English one; so it is too when the planner shows demos of the user's own).
      On the tuning half's 76 requests not in English it planned better and about twice as fast; on the
      English ones it planned worse (docs/planning.md);
    - ``passes``: the passes run over every accepted plan (:data:`PASSES`);
    - ``inline_steps``: when decomposing, each task writes its own step (``"step"``) just before its type,
      instead of all the steps first and then the tasks; the step floor is then a floor of tasks. Off
      until measured (docs/planning.md);
    - ``step_repair``: when decomposing under the constraint, a plan with fewer tasks than the steps the
      LLM wrote gets one focused repair (:meth:`Planner.repair_steps`). Off until measured to help
      (docs/planning.md).
    - ``step_close``: when decomposing under the constraint, a step list the LLM closed without being sure
      (the odds it gave closing there against writing one more step, unconstrained, below ``step_close``:
      :meth:`Planner.close_odds`) gets one more try with one step more at least (:meth:`Planner.more_steps`).
      0: off. Off until measured (docs/planning.md);
    - ``demo_state``: the chat up to the first demo chosen for a request (the system prompt and that demo,
      one of as many as there are demos) is marked for the engine to keep its evaluated state
      (:data:`~localgpt.llm.base.KEEP`), so the next request shown that demo first reads it from there;
      the prompt is unchanged, and so is the reply where the prompt past the system prompt is one batch
      (longer, it may differ from the reply with this off, never between calls: docs/latency.md);
    - ``exact_files``: the constraint admits as a media argument only a reference or one of the files the plan may
      take (those given and those the request names, :func:`~localgpt.planning.validate.user_files`), written
      exactly, so a task that needs a file no one gave cannot come first; off, any file name of the right ending
      (validation and mending then deal with one nobody gave);
    - ``rewrite``: a request not in English is first rewritten in English by the LLM (one constrained
      call, file names and quoted passages kept as written: :meth:`Planner.rewrite`) and planned from
      that; validation, mending and the passes still read the user's own request. Off: on the tuning
      half's requests not in English it gained no sure plans, lost edges and cost 2.5 s a plan
      (docs/planning.md).
    """

    repair: bool = True
    salvage: bool = True
    decompose: bool = True
    constrained: bool = True
    step_floor: bool = True
    samples: int = 0
    sample_temperature: float = 0.7
    demo_diversity: float = 0.0
    type_shortlist: int = 0
    fixed_demos: bool = False
    system_demos: int = 0
    other_language_demos: int = 10
    passes: tuple[tuple[str, Pass], ...] = PASSES
    step_repair: bool = False
    rewrite: bool = False
    inline_steps: bool = False
    step_close: float = 0.0
    demo_state: bool = True
    exact_files: bool = True


@dataclass(frozen=True)
class PlanAttempt:
    """One planning of a request: the plan (None when no valid plan could be made, with ``error``
    saying why), every reply of the LLM in order (first, repair, samples), whether the plan kept was
    mended, the seconds it took, the passes that changed it, and the tokens of the LLM calls that made
    it, summed over every reply in ``raws``: their prompts' (``prompt_tokens``) and the tokens they
    generated (``generated_tokens``). ``step_repair``: a step repair was asked for (its reply is the last
    of ``raws``); ``step_repair_kept``: its plan replaced the one before (:meth:`Planner.repair_steps`).
    ``close_odds``: how sure the LLM was to close its first reply's step list (:meth:`Planner.close_odds`;
    None when not asked); ``more_steps_kept``: the plan asked with one step more replaced it
    (:meth:`Planner.more_steps`)."""

    plan: Plan | None
    raws: tuple[str, ...] = ()
    salvaged: bool = False
    seconds: float = 0.0
    passes: tuple[str, ...] = ()
    error: PlanError | None = field(default=None, compare=False)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    step_repair: bool = False
    step_repair_kept: bool = False
    close_odds: float | None = None
    more_steps_kept: bool = False


class Planner:
    """Plans a request with an LLM under the plan-schema constraint.

    Example::

        planner = Planner(llm)
        plan = planner.plan("Read 'hello' aloud", files=[])
    """

    def __init__(self, llm: LLM, *, max_tasks: int = DEFAULT_MAX_TASKS, n_demos: int = 3,
                 demos: Sequence[Demo] = DEMOS, specs: Sequence[TaskSpec] = registry.TASKS,
                 similarity: Similarity = word_overlap, options: PlannerOptions = PlannerOptions(),
                 prompt_demos: Sequence[Demo] = PROMPT_DEMOS) -> None:
        self.llm = llm
        self.max_tasks = max_tasks
        self.n_demos = n_demos
        self.demos = tuple(demos)
        self.specs = tuple(specs)
        self.similarity = similarity
        self.options = options
        self.prompt_demos = tuple(prompt_demos)
        self.schema = self.full_schema()

    def full_schema(self, files: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The plan schema over every offered task type, as :attr:`options` shape it (None unconstrained), its
        media arguments narrowed to ``files`` when given (:func:`plan_schema`)."""
        if not self.options.constrained:
            return None
        return plan_schema(self.specs, self.max_tasks, steps=self.options.decompose, inline=self.options.inline_steps,
                           files=files)

    def with_demos(self, demos: Sequence[Demo]) -> Planner:
        """A planner like this one that shows ``demos`` (the schema is shared, not built again)."""
        other = copy.copy(self)
        other.demos = tuple(demos)
        return other

    def _other_language_demos(self) -> int:
        """``other_language_demos`` where it applies: no ``system_demos``, and the built-in demos (a user's
        own are chosen from in every language); else 0."""
        o = self.options
        return o.other_language_demos if o.system_demos <= 0 and self.demos == DEMOS else 0

    def _prompt_demos_only(self, request: str) -> bool:
        """Whether ``request`` is planned from the system prompt's demos alone: one not in English, while
        :meth:`_other_language_demos` applies."""
        return self._other_language_demos() > 0 and bool(request) and detect(request) != "en"

    def prompt_demo_count(self, request: str = "") -> int:
        """How many prompt demos the system prompt for ``request`` shows: ``system_demos``, else
        ``other_language_demos`` for a request not in English."""
        if self.options.system_demos > 0:
            return self.options.system_demos
        return self._other_language_demos() if self._prompt_demos_only(request) else 0

    def system_prompt(self, request: str = "") -> str:
        """The fixed instructions: the task types and the rules of a plan (and, for some requests, demos:
        :meth:`prompt_demo_count`). There are two such prompts at most (:meth:`system_prompts`), each with
        its own cached state."""
        return self._instructions(self.prompt_demo_count(request))

    def system_prompts(self) -> list[str]:
        """Every system prompt this planner writes: an English request's, and another language's when it
        differs (``other_language_demos``)."""
        counts = dict.fromkeys([self.prompt_demo_count(), self.options.system_demos or self._other_language_demos()])
        return [self._instructions(k) for k in counts]

    def _instructions(self, k: int) -> str:
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
            "the user gave or \"<resource>-N\". Copy texts from the request into args, in the request's own "
            "language; do not invent files, and add no task the request does not ask for. A request you can "
            "answer yourself (a joke, a question from knowledge, small talk) is one text-generation or "
            "conversational task.\n"
            "Task types:\n" + "\n".join(lines) + self._examples(k)
        )

    def system_demos(self, k: int | None = None) -> list[Demo]:
        """The demos written into the system prompt: the first ``k`` (default ``system_demos``) of
        :attr:`prompt_demos` that use only the task types offered."""
        k = self.options.system_demos if k is None else k
        if k <= 0:
            return []
        names = {s.name for s in self.specs}
        return [d for d in self.prompt_demos if d.uses_only(names)][:k]

    def _examples(self, k: int) -> str:
        shown = self.system_demos(k)
        if not shown:
            return ""
        return "\nExamples, each a request and its reply:\n" + "\n".join(
            f"{self.user_prompt(d.request, d.files)}\nReply: {self.demo_reply(d)}" for d in shown)

    def _reply_shape(self) -> str:
        if self.options.decompose and self.options.inline_steps:
            return ("as JSON: \"tasks\", one task for every action the request asks for, in order; each task "
                    "first says its \"step\", the action in plain words (\"Step 1: ...\").")
        if self.options.decompose:
            return ("as JSON: first \"steps\": every action the request asks for, one step each, in order, in plain "
                    "words (\"Step 1: ...\"); then \"tasks\", one task per step.")
        return "as a JSON list."

    def demo_reply(self, demo: Demo) -> str:
        """A demo's plan as the LLM is asked to write it (compact JSON, with its steps when decomposing)."""
        tasks = list(demo.plan)
        if not self.options.decompose:
            return json.dumps(tasks, separators=(",", ":"), ensure_ascii=False)
        steps = list(demo.steps)
        if not steps or (self.options.inline_steps and len(steps) != len(tasks)):  # each task's type as its step
            steps = [f"Step {i}: {t['task']}" for i, t in enumerate(tasks, 1)]
        if self.options.inline_steps:
            tasks = [{"step": step, **task} for step, task in zip(steps, tasks, strict=True)]
            return json.dumps({"tasks": tasks}, separators=(",", ":"), ensure_ascii=False)
        return json.dumps({"steps": steps, "tasks": tasks}, separators=(",", ":"), ensure_ascii=False)

    def user_prompt(self, request: str, files: Sequence[str]) -> str:
        """The request as the planner sees it, with the user's files."""
        listed = ", ".join(files) if files else "none"
        return f"Request: {request}\nFiles: {listed}"

    def choose_demos(self, request: str) -> list[Demo]:
        """``n_demos`` demos for ``request``, least similar first (the closest sits nearest): the most
        similar ones.

        With ``fixed_demos``, the first ``n_demos`` demos, whatever the request. With ``demo_diversity``
        > 0 (off by default), a request that reads as several actions
        (:func:`min_steps`) gets varied demos instead: the most similar first, then each time the
        demo of the :data:`DEMO_POOL` most similar that best balances its similarity to the request
        against its likeness to a demo already chosen (maximal marginal relevance). It shows more of
        the tasks a request may need, but on TaskBench it planned no better (bench/README.md).
        """
        if self.n_demos <= 0 or not self.demos:
            return []
        if self._prompt_demos_only(request):
            return []  # a request not in English: the system prompt's demos only (other_language_demos)
        if self.options.fixed_demos:
            return list(self.demos[: self.n_demos])
        scores, ranked = self._ranked(request)
        if self.options.system_demos > 0:  # a demo the system prompt shows already is not shown twice
            shown = self.system_demos()
            ranked = [i for i in ranked if self.demos[i] not in shown]
        if self.options.demo_diversity <= 0 or min_steps(request) < 2:
            chosen = ranked[: self.n_demos]
        else:
            chosen, pool = ranked[:1], ranked[1:DEMO_POOL]
            likeness = dict.fromkeys(pool, float("-inf"))
            w = self.options.demo_diversity
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
        k = self.options.type_shortlist
        if k <= 0 or len(self.demos) <= k:
            return list(self.specs)
        _, ranked = self._ranked(request)
        near = {t.get("task") for i in ranked[:k] for t in self.demos[i].plan}
        used = {t.get("task") for d in self.demos for t in d.plan}
        return [s for s in self.specs if s.name in near or s.name not in used] or list(self.specs)

    def messages(self, request: str, files: Sequence[str], history: Sequence[Message] = ()) -> list[Message]:
        """The full chat sent to the LLM: instructions, demos, trimmed history, the request."""
        msgs: list[Message] = [{"role": "system", "content": self.system_prompt(request)}]
        for demo in self.choose_demos(request):
            msgs.append({"role": "user", "content": self.user_prompt(demo.request, demo.files)})
            msgs.append({"role": "assistant", "content": self.demo_reply(demo)})
        if self.options.demo_state and len(msgs) > 2:  # the first demo comes back first for other requests
            msgs[2][KEEP] = "1"
        current = {"role": "user", "content": self.user_prompt(request, files)}
        msgs.extend(trim_history(self.llm, history, context_budget(self.llm, self.max_tokens(), [*msgs, current])))
        msgs.append(current)
        return msgs

    def schema_for(self, request: str, files: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The constraint for ``request`` with ``files``: :attr:`schema` (its task types narrowed to
        :meth:`shortlist` when that leaves some out; its media arguments narrowed to the files the plan may
        take, with ``exact_files``, when ``files`` are given, even none), with as many steps at least as a
        request that reads as several actions plainly asks for when decomposing (:func:`min_steps`, unless
        ``step_floor`` is off)."""
        schema = self.schema
        if schema is None:
            return schema
        allowed = self.shortlist(request)
        exact = user_files(request, files) if files is not None and self.options.exact_files else None
        if len(allowed) < len(self.specs) or exact is not None:
            schema = plan_schema(allowed, self.max_tasks, steps=self.options.decompose,
                                 inline=self.options.inline_steps, files=exact)
        return self._floored(schema, min_steps(request))

    def schemas(self) -> list[dict[str, Any]]:
        """Every constraint :meth:`schema_for` gives a request that names no file, without a type shortlist (one
        per step floor :func:`min_steps` can set), for compiling ahead of the first request (``Pipeline.warm``;
        a request with files has a constraint of its own, compiled when it comes)."""
        if self.schema is None:
            return []
        plain = self.full_schema(()) if self.options.exact_files else self.schema
        assert plain is not None
        kinds = [self._floored(plain, floor) for floor in (1, 2)]
        return [k for i, k in enumerate(kinds) if k is not None and k not in kinds[:i]]

    def _floored(self, schema: dict[str, Any], floor: int) -> dict[str, Any]:
        """``schema`` asking for ``floor`` steps at least (when decomposing with ``step_floor``)."""
        if not self.options.decompose or not self.options.step_floor:
            return schema
        return self._with_min_steps(schema, floor)

    def _with_min_steps(self, schema: dict[str, Any], floor: int) -> dict[str, Any]:
        """``schema`` asking for ``floor`` steps at least (tasks, with ``inline_steps``), within its most;
        ``schema`` itself when it asks for as many already or cannot ask for more."""
        key = "tasks" if self.options.inline_steps else "steps"  # inline: a task per step
        steps = schema["properties"][key]
        floor = min(floor, steps.get("maxItems", 1))
        if floor <= steps.get("minItems", 1):
            return schema
        return {**schema, "properties": {**schema["properties"], key: {**steps, "minItems": floor}}}

    def max_tokens(self) -> int:
        """Enough tokens for the longest plan the schema admits, within reason (and its steps)."""
        return min(1536, 120 * self.max_tasks) + (STEP_MAX // 3 * self.max_tasks if self.options.decompose else 0)

    def plan(self, request: str, files: Sequence[str] = (), history: Sequence[Message] = ()) -> Plan:
        """Plan ``request`` (see :meth:`attempt`); raises :class:`PlanError` when no valid plan can be made."""
        attempt = self.attempt(request, files, history)
        if attempt.plan is None:
            assert attempt.error is not None
            raise attempt.error
        return attempt.plan

    def attempt(self, request: str, files: Sequence[str] = (), history: Sequence[Message] = ()) -> PlanAttempt:
        """Plan ``request`` and say how it went (:class:`PlanAttempt`). Nothing is kept on the planner,
        so one planner serves any number of threads.

        A reply that is not a valid plan is mended first (:func:`salvage_plan`); only when mending
        cannot keep a single task (or the reply is not JSON) is the error fed back to the LLM for one
        repair round, whose reply may be mended in turn. Raises :class:`PlanError` at once for an empty
        request; a request that cannot be planned comes back with ``plan`` None and the ``error``.
        """
        if not request.strip():
            raise PlanError("the request is empty", "say what you want done")
        start = time.perf_counter()
        replies: list[Completion] = []  # this call's own, never kept on the planner

        def done(plan: Plan | None, salvaged: bool = False, passes: tuple[str, ...] = (),
                 failure: PlanError | None = None, repaired: tuple[bool, bool] = (False, False),
                 closing: tuple[float | None, bool] = (None, False)) -> PlanAttempt:
            return PlanAttempt(plan, tuple(r.text for r in replies), salvaged, time.perf_counter() - start, passes,
                               failure, sum(r.prompt_tokens for r in replies),
                               sum(r.completion_tokens for r in replies), *repaired, *closing)

        text = self.rewrite(request, replies) if self.options.rewrite else request  # what the LLM plans
        schema = self.schema_for(text, files)
        msgs = first = self.messages(text, files, history)
        error: PlanError | None = None
        for _ in range(2 if self.options.repair else 1):
            raw = self._ask(replies, msgs, schema)
            try:
                accepted = self._accept(raw, request, files)
            except PlanError as exc:
                error = exc
                msgs = msgs + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"That plan is invalid: {exc.message}. Reply with a corrected plan."},
                ]
                continue
            odds, kept = None, False  # (only the first reply's steps are weighed)
            if msgs is first:
                accepted, odds, kept = self.more_steps(accepted, raw, first, schema, request, files, replies)
            accepted = self._consensus(accepted, first, schema, request, files, replies)
            asked = len(replies)
            better = self.repair_steps(accepted, first, schema, request, files, replies)
            return done(better.plan, better.mended, better.passes,
                        repaired=(len(replies) > asked, better is not accepted), closing=(odds, kept))
        assert error is not None
        return done(None, failure=PlanError(f"could not make a valid plan: {error.message}",
                                            "rephrase the request, or name the files it uses", raw=error.raw))

    def rewrite(self, request: str, replies: list[Completion]) -> str:
        """``request`` rewritten in English by the LLM for planning (``rewrite``), or ``request`` itself: when
        it is in English already or longer than :data:`REWRITE_MAX` (no call then), when the reply is not the
        JSON asked for, or when the rewrite lost a file name or a quoted passage of the request (they must
        come through verbatim). The reply is appended to ``replies``."""
        if detect(request) == "en" or len(request) > REWRITE_MAX:  # a longer one could only come back cut
            return request
        msgs: list[Message] = [{"role": "system", "content": REWRITE_PROMPT},
                               {"role": "user", "content": request}]
        reply = complete(self.llm, msgs, schema=REWRITE_SCHEMA, max_tokens=REWRITE_MAX // 2)
        replies.append(reply)
        try:
            english = json.loads(reply.text)["english"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return request
        if not isinstance(english, str) or not english.strip():
            return request
        kept = [*named_files(request), *(q.text.strip() for q in quoted_passages(request, bounded=True))]
        return english.strip() if all(k in english for k in kept) else request

    def repair_steps(self, accepted: Accepted, msgs: list[Message], schema: dict[str, Any] | None, request: str,
                     files: Sequence[str], replies: list[Completion]) -> Accepted:
        """A step left without a task gets one focused repair (``step_repair``, when decomposing under the
        constraint): when ``accepted`` has fewer tasks than the steps the LLM wrote (counted, so in any
        language), the LLM is asked once more with the same messages, its reply conditioned on those
        steps (the schema fixes them, :func:`steps_kept_schema`) and holding at least as many tasks as
        steps. Its plan is kept only when the reply is a valid plan as it is (not mended) and has more
        tasks, up to the number of steps, than ``accepted``; otherwise ``accepted`` stays. The reply is
        appended to ``replies``."""
        steps = accepted.plan.steps
        wanted = min(len(steps), self.max_tasks)
        if (not self.options.step_repair or not self.options.decompose or schema is None
                or self.options.inline_steps or len(accepted.plan.tasks) >= wanted):
            return accepted
        raw = self._ask(replies, msgs, steps_kept_schema(schema, steps, wanted))
        try:
            repaired = accept(raw, request, files, self.max_tasks, self.specs, salvage=False,
                              passes=self.options.passes)
        except PlanError:
            return accepted
        covered = min(len(repaired.plan.tasks), wanted)
        return repaired if covered > len(accepted.plan.tasks) else accepted

    def close_odds(self, raw: str, msgs: list[Message]) -> tuple[int, float] | None:
        """Where the reply ``raw`` to ``msgs`` (compact JSON, as decoded under the constraint) closed its step
        list: the number of steps, and how sure the LLM was to close it there, P(close) / (P(close) + P(one
        more step)), each the probability of the few tokens that write it, unconstrained
        (:func:`~localgpt.llm.ending_logprobs`; each ending stops where a token of such a reply ends, since a
        token cut short would be scored as unlikely). It reads the reply's shape, the "Step N:" label the
        prompt and its demos write in every language, and the model's own probabilities; no word of the
        request. None when ``raw`` has no step list written that way or the engine cannot say (or fails)."""
        try:
            steps = json.loads(raw).get("steps")
        except (json.JSONDecodeError, AttributeError):
            return None
        if not isinstance(steps, list) or not steps or not all(isinstance(x, str) for x in steps):
            return None
        head = '{"steps":' + json.dumps(steps, ensure_ascii=False, separators=(",", ":"))
        if not raw.startswith(head + ',"tasks":'):
            return None
        endings = ['"],"tasks":[{"id":0', f'","Step {len(steps) + 1}:']  # close the list; write one more step
        try:
            scores = ending_logprobs(self.llm, msgs, head[:-2], endings)  # (head ends with the last step's '"]')
        except (LocalGPTError, ValueError, RuntimeError):  # the plan in hand stands
            return None
        if scores is None:
            return None
        top = max(scores)
        close, more = (math.exp(x - top) for x in scores)
        return len(steps), close / (close + more)

    def more_steps(self, accepted: Accepted, raw: str, msgs: list[Message], schema: dict[str, Any] | None,
                   request: str, files: Sequence[str], replies: list[Completion]
                   ) -> tuple[Accepted, float | None, bool]:
        """A step list closed without being sure gets one more try (``step_close`` > 0, when decomposing under
        the constraint): when the odds the LLM gave closing its steps where ``raw`` closed them
        (:meth:`close_odds`) are below ``step_close``, it is asked again with the same messages and one step
        more at least (the schema's floor). That plan is kept when its reply can be made a valid plan and it
        has more tasks than ``accepted``. Returns the plan kept, the odds (None when not asked) and whether the
        new plan was kept; the reply goes to ``replies``."""
        o = self.options
        if o.step_close <= 0 or not o.decompose or o.inline_steps or schema is None:
            return accepted, None, False
        odds = self.close_odds(raw, msgs)
        if odds is None:
            return accepted, None, False
        count, sure = odds
        floored = self._with_min_steps(schema, count + 1)
        if sure >= o.step_close or floored is schema:
            return accepted, sure, False
        again = self._ask(replies, msgs, floored)
        try:
            other = self._accept(again, request, files)
        except PlanError:
            return accepted, sure, False
        kept = len(other.plan.tasks) > len(accepted.plan.tasks)
        return (other if kept else accepted), sure, kept

    def _ask(self, replies: list[Completion], msgs: list[Message], schema: dict[str, Any] | None,
             **kwargs: Any) -> str:
        """The LLM's reply to ``msgs`` under ``schema``, appended with its tokens to ``replies``."""
        reply = complete(self.llm, msgs, schema=schema, max_tokens=self.max_tokens(), **kwargs)
        replies.append(reply)
        return reply.text

    def _accept(self, raw: str, request: str, files: Sequence[str]) -> Accepted:
        return accept(raw, request, files, self.max_tasks, self.specs, salvage=self.options.salvage,
                      passes=self.options.passes)

    def _consensus(self, accepted: Accepted, msgs: list[Message], schema: dict[str, Any] | None, request: str,
                   files: Sequence[str], replies: list[Completion]) -> Accepted:
        """Self-consistency (``samples`` > 0): ``accepted`` or one of ``samples`` replies sampled at
        ``sample_temperature`` (each validated, or mended), whichever agrees most with all the others
        (:func:`plan_agreement`); ``accepted`` wins a tie. Samples that cannot be made valid do not vote.
        Each sampled reply is appended to ``replies``."""
        if self.options.samples <= 0:
            return accepted
        candidates = [accepted]
        for k in range(self.options.samples):
            raw = self._ask(replies, msgs, schema, temperature=self.options.sample_temperature,
                            seed=SAMPLE_SEED + k)
            try:
                candidates.append(self._accept(raw, request, files))
            except PlanError:
                continue
        votes = [sum(plan_agreement(c.plan, other.plan) for other in candidates) for c in candidates]
        return candidates[votes.index(max(votes))]


@dataclass(frozen=True)
class Accepted:
    """A reply made a plan: the plan, whether it was mended, the passes that changed it."""

    plan: Plan
    mended: bool
    passes: tuple[str, ...]


def accept(raw: str, request: str = "", files: Sequence[str] = (), max_tasks: int = DEFAULT_MAX_TASKS,
           specs: Sequence[TaskSpec] = registry.TASKS, *, salvage: bool = True,
           passes: Sequence[tuple[str, Pass]] = PASSES) -> Accepted:
    """The plan in a planner reply, valid as it is or mended (:func:`salvage_plan`), then put through
    ``passes`` (:func:`apply_passes`). Raises the first error found when the reply is not JSON, or when
    mending (if ``salvage``) cannot keep a single task."""
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
    plan, changed = apply_passes(plan, request, files, max_tasks, specs, passes)
    return Accepted(plan, mended, changed)


def accept_reply(raw: str, request: str = "", files: Sequence[str] = (), max_tasks: int = DEFAULT_MAX_TASKS,
                 specs: Sequence[TaskSpec] = registry.TASKS, *, salvage: bool = True) -> tuple[Plan, bool]:
    """The plan in a planner reply and whether it was mended (:func:`accept` with every pass)."""
    accepted = accept(raw, request, files, max_tasks, specs, salvage=salvage)
    return accepted.plan, accepted.mended


def plan_agreement(a: Plan, b: Plan) -> float:
    """How alike two plans are, 0 to 2: the Jaccard overlap of their task types plus that of their
    edges (source type, target type)."""

    def jaccard(x: set[Any], y: set[Any]) -> float:
        return len(x & y) / len(x | y) if x | y else 1.0

    def edges(p: Plan) -> set[tuple[str, str]]:
        return {(p.by_id(d).task, t.task) for t in p.tasks for d in t.dep}

    return jaccard({t.task for t in a.tasks}, {t.task for t in b.tasks}) + jaccard(edges(a), edges(b))
