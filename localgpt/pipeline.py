"""The four stages joined: plan, select, execute, respond — one pipeline for every front end.

``Pipeline.run`` returns a :class:`RunResult` and reports progress as :class:`Event` objects to a
callback; ``Pipeline.stream`` yields the same events from a generator.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localgpt import tasks as registry
from localgpt.config import Settings
from localgpt.errors import ConfigError, LocalGPTError, RequestTooLong
from localgpt.experts.base import ExpertContext
from localgpt.llm import LLM, Message
from localgpt.llm.base import MESSAGE_OVERHEAD
from localgpt.llm.http import HTTPLLM, is_engine_url, parse_engine_url
from localgpt.llm.llamacpp import LlamaCppLLM
from localgpt.planning.demo_file import DemoFile, load_demo_file
from localgpt.planning.demos import DEMOS, task_types
from localgpt.planning.planner import Planner, PlannerOptions
from localgpt.planning.retrieval import EmbeddingSimilarity, Similarity, word_overlap
from localgpt.planning.validate import validate_plan
from localgpt.runtime.executor import Executor
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.responder import Responder, produced_files
from localgpt.runtime.runs import InputFiles, RunDir, planner_names, with_paths
from localgpt.runtime.selector import Selector, StandIn
from localgpt.schema import Event, ModelCard, Plan, RunResult, Selection
from localgpt.store.catalog import Catalog, valid_id
from localgpt.tasks import TaskSpec

Emit = Callable[[Event], None]

REQUEST_MARGIN = 64  # tokens kept free beside the planner's prompt and reply (chat-template extras)
MAX_CHARS_PER_TOKEN = 64  # a text longer than the limit times this (and than MIN_CHARS_TOKENIZED) is refused
MIN_CHARS_TOKENIZED = 1_000_000  # without being tokenized: no tokenizer packs that much into one token
WARM_REQUEST = "?"  # the request :meth:`Pipeline.warm` builds prompts for (only their fixed parts are kept)


def resolve_planner(settings: Settings, override: str | None = None) -> tuple[str | None, Path]:
    """The controller model's store id (None for a bare path) and its GGUF file."""
    choice = override or settings.planner
    as_path = Path(choice).expanduser()
    if choice.endswith(".gguf") or as_path.is_file():
        if not as_path.is_file():
            raise ConfigError(f"planner model file '{choice}' does not exist", "give the path of a .gguf file")
        return None, as_path
    folder = settings.store / choice
    gguf = folder / "model.gguf"
    if not gguf.is_file():
        raise ConfigError(
            f"planner model '{choice}' is not installed in {settings.store}",
            "run: python download_models.py --profile starter, or pass --planner PATH.gguf",
        )
    return choice, gguf


def controller_llm(settings: Settings, override: str | None = None) -> tuple[LLM, str]:
    """The controller LLM the settings name and the id it serves text tasks under: a GGUF loaded in-process,
    or an engine at ``http://HOST:PORT/v1[#MODEL]`` (:class:`HTTPLLM`; nothing is contacted until first use)."""
    choice = override or settings.planner
    if is_engine_url(choice):
        url, model = parse_engine_url(choice)
        tokenizer = settings.store / model / "tokenizer.json" if model and valid_id(model) else None
        llm = HTTPLLM(url, model=model, api_key=settings.llm_api_key, engine=settings.engine,
                      n_ctx=settings.n_ctx if "n_ctx" in settings.model_fields_set else None,
                      timeout=settings.llm_timeout, tokenizer_file=tokenizer, seed=settings.seed)
        return llm, model or (urlsplit(url).hostname or "engine")
    model_id, gguf = resolve_planner(settings, override)
    return LlamaCppLLM(gguf, n_ctx=settings.n_ctx, n_threads=settings.threads, n_gpu_layers=settings.gpu_layers(),
                       prompt_cache_mb=settings.prompt_cache_mb, seed=settings.seed, flash_attn=settings.flash_attn,
                       fast_forward=settings.fast_forward, prompt_lookup=settings.prompt_lookup,
                       use_mmap=settings.llm_mmap,
                       n_batch=settings.n_batch, n_ubatch=min(settings.n_ubatch, settings.n_batch)), \
        model_id or gguf.stem


def controller_name(settings: Settings) -> str:
    """The id the controller LLM serves text tasks under (a store id, a GGUF's stem, an engine's model)."""
    if is_engine_url(settings.planner):
        url, model = parse_engine_url(settings.planner)
        return model or (urlsplit(url).hostname or "engine")
    model_id, gguf = resolve_planner(settings)
    return model_id or gguf.stem


def demo_task_types(demo_file: DemoFile | None) -> set[str]:
    """The task types of the user's demo file, for ``plan_tasks="demos"``; a :class:`ConfigError` when
    there is no such file (:func:`load_demo_file` refuses one without a usable demo)."""
    if demo_file is None:
        raise ConfigError("plan_tasks is 'demos' but no demo file is given",
                          "give one with --demos FILE (or LOCALGPT_DEMOS_FILE), or set LOCALGPT_PLAN_TASKS=all")
    return task_types(demo_file.demos)


class Pipeline:
    """Plan → select → execute → respond.

    Example::

        pipe = Pipeline.from_settings(Settings())
        result = pipe.run("Say 'hello' aloud, then transcribe it", on_event=print)
        print(result.answer, result.files)
    """

    def __init__(self, settings: Settings, llm: LLM, catalog: Catalog, pool: ModelPool | None = None,
                 demo_file: DemoFile | None = None) -> None:
        self.settings = settings
        self.llm = llm
        self.catalog = catalog
        self.pool = pool or ModelPool(ExpertContext(settings=settings, llm=llm), settings.memory_budget_mb << 20)
        if demo_file is None and settings.demos_file:
            demo_file = load_demo_file(settings.demos_file, settings.max_tasks)
        self.demo_file = demo_file  # the user's own demos (settings.demos_file), shown beside the built-in ones
        specs = self._planner_tasks()
        names = {spec.name for spec in specs}
        extra = self.demo_file.demos if self.demo_file else []
        demos = [d for d in (*DEMOS, *extra) if d.uses_only(names)]
        self.planner = Planner(llm, max_tasks=settings.max_tasks, specs=specs, demos=demos,
                               similarity=self._demo_similarity(),
                               options=PlannerOptions(demo_state=settings.demo_state))
        self.selector = Selector(catalog, llm, substitutes=settings.substitutes)
        self.executor = Executor(self.pool, max_workers=settings.max_workers, timeout=settings.task_timeout)
        self.responder = Responder(llm)
        self.file_roots: list[Path] | None = None  # folders requests may read; None: the cwd and runs_dir
        self._request_limit: int | None = None

    def _planner_tasks(self) -> list[TaskSpec]:
        """The task types the planner may use: the whole registry by default, so a request for a task
        nothing installed serves ends in a clear "no model" error rather than a plan around it; with
        ``plan_tasks="installed"``, only those an installed model or the controller LLM serves (a shorter
        prompt, plans that always run), falling back to all when nothing serves any task; with
        ``plan_tasks="demos"``, only those the user's demo file uses (the file says what the requests
        need), in the registry's order. Built-in demos that use another type are then not shown."""
        if self.settings.plan_tasks == "all":
            return list(registry.TASKS)
        if self.settings.plan_tasks == "demos":
            return registry.in_order(demo_task_types(self.demo_file))
        served = [spec for spec in registry.TASKS if self.catalog.candidates(spec.name)]
        return served or list(registry.TASKS)

    def _demo_similarity(self) -> Similarity:
        """Sentence embeddings from an installed embedding model when there is one, else word overlap."""
        if self.settings.demo_similarity == "words":
            return word_overlap
        card = next((c for c in self.catalog.candidates("sentence-similarity")
                     if c.backend == "onnx-embedding"), None)
        if card is None:
            if self.settings.demo_similarity == "embedding":
                raise ConfigError("demo_similarity is 'embedding' but no embedding model is installed",
                                  "install one: python download_models.py --profile starter")
            return word_overlap

        def embed(texts: list[str]) -> Any:
            with self.pool.use(card) as expert:
                return expert.embed(texts)  # type: ignore[attr-defined]

        similarity = EmbeddingSimilarity(embed)
        if self.settings.demo_similarity == "embedding":
            return similarity

        def with_fallback(request: str, candidates: Sequence[str]) -> list[float]:
            try:
                return similarity(request, candidates)
            except LocalGPTError as exc:  # a broken embedding model must not stop planning
                logging.getLogger(__name__).warning("demo retrieval by embeddings failed (%s); using words", exc)
                return word_overlap(request, candidates)

        return with_fallback

    @classmethod
    def from_settings(cls, settings: Settings, planner: str | None = None) -> Pipeline:
        """A pipeline on the installed models, with the controller LLM ``planner`` (id or path)."""
        # a bad demo file is reported before the LLM takes its seconds to load
        demo_file = load_demo_file(settings.demos_file, settings.max_tasks) if settings.demos_file else None
        if settings.plan_tasks == "demos":
            demo_task_types(demo_file)  # so is a setting that needs a demo file and has none
        llm, controller = controller_llm(settings, planner)
        catalog = Catalog(settings.store, controller=controller)
        return cls(settings, llm, catalog, demo_file=demo_file)

    def input_files(self, files: Sequence[str | Path]) -> InputFiles:
        """The user's files, checked, with the folders requests may refer to."""
        roots = self.file_roots if self.file_roots is not None else [Path.cwd(), self.settings.runs_dir]
        return InputFiles(files, roots=roots, max_bytes=self.settings.max_input_mb * 1_000_000)

    def request_limit(self) -> int:
        """The most tokens a request (with its file list) may take: the LLM's window less the planner's
        reply, its instructions and its longest demos (the largest prompt a request goes into)."""
        if self._request_limit is None:
            p, count = self.planner, self.llm.count_tokens
            fixed = count(p.system_prompt()) + 2 * MESSAGE_OVERHEAD
            demos = sorted((count(p.user_prompt(d.request, d.files)) + count(p.demo_reply(d)) + 2 * MESSAGE_OVERHEAD
                            for d in p.demos), reverse=True)[: p.n_demos]
            # a request not in English may go into another system prompt, with its demos and none chosen
            largest = max([fixed + sum(demos)]
                          + [count(other) + 2 * MESSAGE_OVERHEAD for other in p.system_prompts()[1:]])
            self._request_limit = self.llm.n_ctx - p.max_tokens() - largest - REQUEST_MARGIN
        return self._request_limit

    def check_request(self, request: str, history: Sequence[Message] = (), files: Sequence[str | Path] = ()) -> int:
        """Refuse a request the LLM's context window cannot hold, before any LLM call: a
        :class:`RequestTooLong` saying how many tokens it takes and how many fit. Returns its token count.
        (``history`` is not refused: the planner and responder keep as much of it as fits.)"""
        limit = self.request_limit()
        text = self.planner.user_prompt(request, [str(f) for f in files])
        window = f"the planner model's context window ({self.llm.n_ctx} tokens, LOCALGPT_N_CTX)"
        hint = ("shorten the request or split it into several; long text to work on can go in a file"
                if limit > 0 else "raise LOCALGPT_N_CTX (the model must support it) or use a model with a longer "
                                  "window")
        if len(text) > max(limit * MAX_CHARS_PER_TOKEN, MIN_CHARS_TOKENIZED):
            raise RequestTooLong(f"the request is too long: {len(request):,} characters, far more than the "
                                 f"{max(limit, 0):,} tokens {window} leaves for it", hint, None, limit,
                                 len(request))
        tokens = self.llm.count_tokens(text)
        if tokens > limit:
            raise RequestTooLong(f"the request is too long: {tokens:,} tokens, and {window} leaves room for "
                                 f"{max(limit, 0):,}", hint, tokens, limit, len(request))
        return tokens

    def plan(self, request: str, files: Sequence[str | Path] = (), history: Sequence[Message] = ()) -> Plan:
        """Plan only; files named need not exist."""
        names = planner_names(files)
        if request.strip():
            self.check_request(request, history, names)
        return with_paths(self.planner.plan(request, names, history), files)

    def run(self, request: str, files: Sequence[str | Path] = (), history: Sequence[Message] = (),
            on_event: Emit | None = None, plan: Plan | None = None, respond: bool = True,
            run_dir: RunDir | None = None) -> RunResult:
        """Run the whole request; ``plan`` skips planning (a fixed plan is still validated by the caller);
        ``respond=False`` skips the LLM's answer (the answer is empty; batch throughput runs); ``run_dir``:
        the folder for produced files (default: a new one under ``runs_dir``). A request too long for the
        LLM's window is refused first (:meth:`check_request`)."""
        emit = on_event or (lambda e: None)
        timings: dict[str, float] = {}
        calls_before = _calls(self.llm)
        inputs = self.input_files(files)
        self.check_request(request, history, inputs.names())

        start = time.perf_counter()
        if plan is None:
            plan = with_paths(self.planner.plan(request, inputs.names(), history), inputs.files)
        else:  # a plan given by the caller (batch, API) gets the same checks as a decoded one
            plan = validate_plan({"steps": list(plan.steps), "tasks": [t.model_dump() for t in plan.tasks]}, request,
                                 [str(f) for f in inputs.files], self.settings.max_tasks)
        timings["plan"] = time.perf_counter() - start
        emit(Event(type="plan", data={"tasks": [t.model_dump() for t in plan.tasks], "steps": list(plan.steps)}))

        start = time.perf_counter()
        cards: dict[int, ModelCard] = {}
        selections: list[Selection] = []
        failed: dict[int, str] = {}
        stand_ins: dict[int, StandIn] = {}
        fallbacks: dict[int, StandIn] = {}
        for task in plan.tasks:
            try:
                card, selection, chosen = self.selector.choose(task, request)
            except LocalGPTError as exc:
                failed[task.id] = str(exc)
                continue
            if chosen is not None:  # a stand-in runs in place of a model
                stand_ins[task.id] = chosen
            elif (stand := self.selector.stand_in(task.task)) is not None:  # ... or after one that finds nothing
                fallbacks[task.id] = stand
            cards[task.id] = card
            selections.append(selection)
            emit(Event(type="select", data=selection.model_dump()))
        timings["select"] = time.perf_counter() - start

        start = time.perf_counter()
        out = run_dir or RunDir.create(self.settings.runs_dir)
        results = self.executor.run(plan, cards, inputs, out, emit, failed=failed, stand_ins=stand_ins,
                                    fallbacks=fallbacks)
        timings["execute"] = time.perf_counter() - start

        answer = ""
        if respond:
            start = time.perf_counter()
            on_token = lambda tok: emit(Event(type="answer_delta", data={"text": tok}))  # noqa: E731
            try:
                answer = self.responder.respond(request, results, history, on_token=on_token)
            except LocalGPTError as exc:  # the results and files must not be lost with the answer
                answer = self.responder.fallback(results, reason=str(exc))
                on_token(answer)
            timings["respond"] = time.perf_counter() - start
            if self.responder.first_token_seconds is not None:  # time to the answer's first token
                timings["first_token"] = self.responder.first_token_seconds

        result = RunResult(request=request, plan=plan, selections=selections, results=results, answer=answer,
                           files=produced_files(results), run_dir=str(out.path), timings=timings,
                           llm_calls=_calls(self.llm) - calls_before)
        emit(Event(type="done", data=result.model_dump(mode="json")))
        return result

    def stream(self, request: str, files: Sequence[str | Path] = (), history: Sequence[Message] = (),
               plan: Plan | None = None) -> Iterator[Event]:
        """The events of a run as a generator; a failure arrives as an ``error`` event."""
        events: queue.Queue[Event | None] = queue.Queue()

        def work() -> None:
            try:
                self.run(request, files, history, on_event=events.put, plan=plan)
            except LocalGPTError as exc:
                events.put(Event(type="error", data={"type": type(exc).__name__, "message": exc.message,
                                                     "hint": exc.hint}))
            except Exception as exc:  # a bug must still end the stream with an error, not silently
                logging.getLogger(__name__).exception("run failed")
                events.put(Event(type="error", data={"type": type(exc).__name__,
                                                     "message": f"internal error: {exc}", "hint": None}))
            finally:
                events.put(None)

        thread = threading.Thread(target=work, name="localgpt-run", daemon=True)
        thread.start()
        while (event := events.get()) is not None:
            yield event
        thread.join()

    def warm(self) -> dict[str, str]:
        """Do ahead of the first request what it would otherwise wait for: load the controller LLM, compile
        the planner's constraints (one per step floor), put the evaluated state of the planner's and the
        responder's fixed instructions into memory (from the disk prompt state, else evaluated once and
        saved), and embed the demos when an embedding model picks them. Nothing is generated and no reply
        changes. Returns, per part, what happened to its prompt state (:meth:`LlamaCppLLM.warm`); empty for
        an LLM with nothing to warm in this process (an engine reached over HTTP)."""
        warm = getattr(self.llm, "warm", None)
        planned = self.planner.messages(WARM_REQUEST, [])  # chooses demos: the embedding model loads
        if warm is None:
            return {}
        done = {"planner": str(warm(planned[:1], self.planner.schema))}
        for n, other in enumerate(self.planner.system_prompts()[1:], 2):  # a request not in English has its own
            done[f"planner-{n}"] = str(warm([{"role": "system", "content": other}], self.planner.schema))
        compile_: Any = getattr(self.llm, "constraint", None)
        for schema in self.planner.schemas() if compile_ is not None else ():  # a step floor has its own
            compile_(schema)
        done["responder"] = str(warm(self.responder.messages(WARM_REQUEST, [])[:1]))
        return done

    def close(self) -> None:
        """Unload the experts and the LLM."""
        self.pool.close()
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()


def _calls(llm: Any) -> int:
    """LLM calls so far, when the LLM counts them."""
    stats = getattr(llm, "stats", None)
    return int(getattr(stats, "calls", 0))
