"""Planning quality on localgpt's own evaluation set, ``bench/requests/`` (requests written here, with gold plans).

    python -m bench.requests --stats                       # what the set holds, by language, shape and half
    python -m bench.requests                               # plan the tuning half with the default planner
    python -m bench.requests --lang zh --limit 5 --planner smollm2-135m-instruct
    python -m bench.requests --rescore NAME                # replay a run's stored replies through today's code
    python -m bench.requests --compare BEFORE AFTER        # two stored runs, request by request
    python -m bench.requests --half locked --report        # the locked half: for the final report only

Each request is planned as ``localgpt plan`` plans it (``Pipeline.from_settings``: the built-in demos,
every task type, the planner of the settings or ``--planner``), with its files given as attached
files, and scored against its gold plan: task-type F1 (multisets of types), edge F1 (typed edges,
source type -> target type), exact graph (same types and same typed edges), exact task set (same
types), argument fidelity (files and quoted text kept), validity, per language, per shape and
overall. Writes ``<name>.predictions.jsonl``, ``<name>.meta.jsonl`` (the raw replies, for
``--rescore``) and ``<name>.json`` into ``bench/results/``. Nothing is executed.

The set is split once into a tuning half and a locked half by the SHA-256 of each request's id
(:func:`half_of`). Tune on the tuning half; the locked half is scored only to report (``--report``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import taskbench
from localgpt import tasks as registry
from localgpt.errors import LocalGPTError, PlanError
from localgpt.planning.language import detect
from localgpt.planning.planner import REWRITE_MAX
from localgpt.planning.references import is_pure_reference
from localgpt.tasks import Kind

DATA = Path(__file__).resolve().parent / "requests"
RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ("single", "chain", "dag", "multi-file", "llm-only")
HALVES = ("tuning", "locked")
LLM_ANSWERS = frozenset({"text-generation", "conversational"})  # what an llm-only request may be planned as
ANSWER = "(answer)"  # the one node an llm-only request's gold, and a right plan of it, count as
FIELDS = ("id", "lang", "shape", "request", "files", "tasks")


class SetError(ValueError):
    """A request file that cannot be read as the set: its message names the file, line and field."""


# ---------------------------------------------------------------- the set

def half_of(rid: str) -> str:
    """``tuning`` or ``locked``: the low bit of the last byte of the SHA-256 of the id (0: tuning).
    Fixed by the id alone, so nobody chooses which request falls where."""
    return HALVES[hashlib.sha256(rid.encode("utf-8")).digest()[-1] & 1]


def load_requests(folder: Path = DATA) -> list[dict[str, Any]]:
    """Every request of ``folder/*.jsonl`` (files in name order, lines in order).

    Raises :class:`SetError` naming the line for a line that is not a JSON object, a missing or
    ill-typed field, an unknown shape, a language other than the file's, or an id seen before."""
    items: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SetError(f"no request files (*.jsonl) in {folder}")
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SetError(f"{where}: not JSON ({exc.msg})") from exc
            if not isinstance(item, dict) or any(k not in item for k in FIELDS):
                raise SetError(f"{where}: a request needs the fields {', '.join(FIELDS)}")
            rid = item["id"]
            if not isinstance(rid, str) or not rid:
                raise SetError(f"{where}: the id must be a string")
            if rid in seen:
                raise SetError(f"{where}: id {rid} was already used at {seen[rid]}")
            seen[rid] = where
            if item["lang"] != path.stem:
                raise SetError(f"{where} ({rid}): lang '{item['lang']}' in the file of '{path.stem}'")
            if item["shape"] not in SHAPES:
                raise SetError(f"{where} ({rid}): shape '{item['shape']}' is not one of {', '.join(SHAPES)}")
            if not isinstance(item["request"], str) or not item["request"].strip():
                raise SetError(f"{where} ({rid}): no request text")
            if not isinstance(item["files"], list) or not all(isinstance(f, str) for f in item["files"]):
                raise SetError(f"{where} ({rid}): files must be a list of file names")
            tasks = item["tasks"]
            if not isinstance(tasks, list) or not all(isinstance(t, dict) and "task" in t for t in tasks):
                raise SetError(f"{where} ({rid}): tasks must be a list of tasks ({{\"id\", \"task\", \"dep\", "
                               "\"args\"}})")
            items.append(item)
    return items


def choose(items: Sequence[dict[str, Any]], half: str = "tuning", lang: str | None = None,
           limit: int | None = None) -> list[dict[str, Any]]:
    """The requests of ``half`` (``all``: both) and ``lang`` (one code or several joined by commas);
    with ``limit``, that many taken in turn from each shape (in :data:`SHAPES` order), so a small
    sample still has every shape."""
    langs = None if lang is None else set(lang.split(","))
    chosen = [i for i in items if (half == "all" or half_of(i["id"]) == half) and (langs is None or i["lang"] in langs)]
    if limit is None or limit >= len(chosen):
        return chosen
    queues = [[i for i in chosen if i["shape"] == s] for s in SHAPES]
    picked: list[dict[str, Any]] = []
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    order = {i["id"]: n for n, i in enumerate(chosen)}
    return sorted(picked, key=lambda i: order[i["id"]])


# Quoted passages: a text the user wants kept as written. Straight double quotes, curly quotes, German
# low-high quotes, guillemets, CJK corner brackets, and single quotes that no letter touches from outside
# (so "don't" and "kids' toys" are not quotes).
_QUOTES = re.compile(r"\"([^\"\n]+)\"|“([^”\n]+)”|„([^“”\n]+)[“”]|«([^»\n]+)»|「([^」\n]+)」|『([^』\n]+)』|‘([^’\n]+)’"
                     r"|(?<!\w)'([^'\n]+?)'(?!\w)")


def quotes(request: str, files: Sequence[str] = ()) -> list[str]:
    """The quoted passages of ``request`` (their inner text, stripped), each once, in order; a quoted
    file name of ``files`` is left out (file fidelity counts it)."""
    found = (next(g for g in m.groups() if g is not None).strip() for m in _QUOTES.finditer(request))
    return list(dict.fromkeys(q for q in found if len(q) >= 2 and q not in files))


# ---------------------------------------------------------------- plans as graphs

def node_type(task: dict[str, Any]) -> str:
    """The type a task is scored as: its own, except that the two types the LLM answers with
    (:data:`LLM_ANSWERS`: text-generation and conversational) count as one, text-generation. Both are the
    controller LLM given the text (experts/llm_text.py), so a joke planned as either is told the same way;
    the issue's own words allow either ("plans a text-generation or conversational task")."""
    name = str(task.get("task"))
    return "text-generation" if name in LLM_ANSWERS else name


def types(tasks: Sequence[dict[str, Any]]) -> Counter[str]:
    """The multiset of task types of a plan (as :func:`node_type` counts them)."""
    return Counter(node_type(t) for t in tasks)


def edges(tasks: Sequence[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """The multiset of typed edges of a plan: (type of the dep, type of the task), one per dep."""
    by_id = {t.get("id"): node_type(t) for t in tasks}
    return Counter((by_id[d], node_type(t)) for t in tasks for d in t.get("dep", []) if d != -1 and d in by_id)


def file_args(tasks: Sequence[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(type, file) for each media argument of a plan that is a file name, not a task's output."""
    found: Counter[tuple[str, str]] = Counter()
    for t in tasks:
        spec = registry.get(t["task"]) if registry.is_known(str(t.get("task"))) else None
        for name, value in (t.get("args") or {}).items():
            inp = spec.input(name) if spec else None
            if inp is not None and inp.kind is not Kind.TEXT and not is_pure_reference(str(value)):
                found[(t["task"], str(value).strip())] += 1
    return found


def is_path(tasks: Sequence[dict[str, Any]]) -> bool:
    """Whether the tasks are wired one after another in a single line (each feeds at most one, each
    takes at most one, one start, all connected)."""
    links = [(d, t["id"]) for t in tasks for d in t.get("dep", []) if d != -1]
    into, out = Counter(b for _, b in links), Counter(a for a, _ in links)
    return (len(links) == len(tasks) - 1 and all(c == 1 for c in into.values())
            and all(c == 1 for c in out.values()))


def shape_of(tasks: Sequence[dict[str, Any]]) -> str:
    """The shape a gold plan has: ``llm-only`` (no task), ``multi-file`` (two or more different files
    processed), ``single`` (one task), ``chain`` (tasks in one line) or ``dag`` (anything else:
    branches, joins, independent tasks)."""
    if not tasks:
        return "llm-only"
    if len({f for _, f in file_args(tasks)}) >= 2:
        return "multi-file"
    if len(tasks) == 1:
        return "single"
    return "chain" if is_path(tasks) else "dag"


def answers_alone(tasks: Sequence[dict[str, Any]] | None) -> bool:
    """Whether a plan is a right plan for a request the LLM answers alone: no task, or one
    text-generation or conversational task."""
    return tasks is not None and (not tasks or (len(tasks) == 1 and tasks[0].get("task") in LLM_ANSWERS))


# ---------------------------------------------------------------- metrics

@dataclass
class Judgement:
    """How one predicted plan compares with its gold plan."""

    nodes: tuple[int, int, int]  # true positives, false positives, false negatives of task types
    edges: tuple[int, int, int]  # the same of typed edges
    exact_graph: bool
    exact_set: bool
    files: tuple[int, int]  # (kept, matched): gold tasks matched by type that take the gold's file
    quotes: tuple[int, int]  # (kept, asked): quoted passages found verbatim in some task's args
    valid: bool


def _overlap(gold: Counter[Any], pred: Counter[Any]) -> tuple[int, int, int]:
    tp = sum((gold & pred).values())
    return tp, sum(pred.values()) - tp, sum(gold.values()) - tp


def judge(item: dict[str, Any], pred: Sequence[dict[str, Any]] | None) -> Judgement:
    """Score one request's plan (``None``: planning failed, which counts as an empty plan and is
    never right) against its gold.

    An llm-only request (gold ``[]``) counts as one node, :data:`ANSWER`: a plan that
    :func:`answers_alone` is that node (right in every figure); any other plan counts with its own
    types and edges (all wrong) and misses the answer."""
    gold = item["tasks"]
    tasks = list(pred) if pred is not None else []
    if not gold:
        right = answers_alone(pred)
        gold_n: Counter[str] = Counter({ANSWER: 1})
        pred_n = Counter({ANSWER: 1}) if right else types(tasks)
        pred_e = Counter() if right else edges(tasks)
        return Judgement(_overlap(gold_n, pred_n), _overlap(Counter(), pred_e), right, right, (0, 0), (0, 0),
                         pred is not None)
    gold_n, pred_n = types(gold), types(tasks)
    gold_e, pred_e = edges(gold), edges(tasks)
    gold_f, pred_f = file_args(gold), file_args(tasks)
    kept = matched = 0
    for kind in {t for t, _ in gold_f}:
        wanted = sum(c for (t, _), c in gold_f.items() if t == kind)
        matched += min(wanted, pred_n[kind])
        kept += min(min(wanted, pred_n[kind]),
                    sum(min(c, pred_f[(t, f)]) for (t, f), c in gold_f.items() if t == kind))
    values = [str(v) for t in tasks for v in (t.get("args") or {}).values()]
    asked = quotes(item["request"], item["files"])
    found = sum(any(q in v for v in values) for q in asked)
    return Judgement(_overlap(gold_n, pred_n), _overlap(gold_e, pred_e), gold_n == pred_n and gold_e == pred_e,
                     gold_n == pred_n, (kept, matched), (found, len(asked)), pred is not None)


@dataclass
class Group:
    """Pooled figures of a group of requests."""

    n: int = 0
    nodes: taskbench.Counts = field(default_factory=taskbench.Counts)
    edges: taskbench.Counts = field(default_factory=taskbench.Counts)
    exact_graph: int = 0
    exact_set: int = 0
    valid: int = 0
    mended: int = 0
    files: list[int] = field(default_factory=lambda: [0, 0])
    quotes: list[int] = field(default_factory=lambda: [0, 0])
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def add(self, j: Judgement, info: dict[str, Any]) -> None:
        self.n += 1
        for counts, (tp, fp, fn) in ((self.nodes, j.nodes), (self.edges, j.edges)):
            counts.tp += tp
            counts.fp += fp
            counts.fn += fn
        self.exact_graph += j.exact_graph
        self.exact_set += j.exact_set
        self.valid += j.valid
        self.mended += bool(info.get("mended"))
        for total, part in ((self.files, j.files), (self.quotes, j.quotes)):
            total[0] += part[0]
            total[1] += part[1]
        if "seconds" in info:
            self.seconds.append(float(info["seconds"]))
        if info.get("tokens") is not None:
            self.tokens.append(int(info["tokens"]))

    def summary(self) -> dict[str, Any]:
        """The figures of this group (rates in percent; fidelity None where nothing was asked)."""

        def pct(part: int, whole: int) -> float | None:
            return round(100.0 * part / whole, 2) if whole else None

        secs = sorted(self.seconds)
        return {
            "requests": self.n,
            "node_f1": round(self.nodes.f1(), 2),
            "edge_f1": round(self.edges.f1(), 2) if self.edges.tp + self.edges.fp + self.edges.fn else None,
            "exact_graph": pct(self.exact_graph, self.n),
            "exact_set": pct(self.exact_set, self.n),
            "valid_rate": pct(self.valid, self.n),
            "mended_rate": pct(self.mended, self.n),
            "file_fidelity": pct(*self.files),
            "quote_fidelity": pct(*self.quotes),
            "median_seconds": round(statistics.median(secs), 2) if secs else None,
            "p90_seconds": round(secs[min(len(secs) - 1, int(0.9 * len(secs)))], 2) if secs else None,
            "mean_tokens": round(statistics.fmean(self.tokens), 1) if self.tokens else None,
        }


def score(items: Sequence[dict[str, Any]], preds: dict[str, Any], meta: dict[str, dict[str, Any]] | None = None
          ) -> dict[str, Any]:
    """The figures overall (``all``), by shape and by language. ``preds`` maps an id to its plan's
    tasks (``None`` or absent: no valid plan); ``meta`` may carry per-request ``mended``, ``seconds``
    and ``tokens``."""
    overall, shapes = Group(), {s: Group() for s in SHAPES}
    langs: dict[str, Group] = {}
    for item in items:
        info = (meta or {}).get(item["id"], {})
        j = judge(item, preds.get(item["id"]))
        for g in (overall, shapes[item["shape"]], langs.setdefault(item["lang"], Group())):
            g.add(j, info)
    return {"all": overall.summary(),
            "by_shape": {s: g.summary() for s, g in shapes.items() if g.n},
            "by_lang": {k: langs[k].summary() for k in sorted(langs, key=lambda k: (k != "en", k))}}


# ---------------------------------------------------------------- planning

def make_pipeline(args: argparse.Namespace) -> Any:
    """localgpt's pipeline as ``localgpt plan`` builds it, from the settings (and ``--planner``,
    ``--store``, ``--threads``)."""
    from localgpt.config import Settings
    from localgpt.pipeline import Pipeline

    overrides: dict[str, Any] = {}
    if args.planner:
        overrides["planner"] = args.planner
    if args.store:
        overrides["store"] = Path(args.store)
    if args.threads is not None:
        overrides["threads"] = args.threads
    pipe = Pipeline.from_settings(Settings.load(**overrides))
    if getattr(args, "step_repair", False):  # (set once, before any request is planned)
        pipe.planner.options = dataclasses.replace(pipe.planner.options, step_repair=True)
    if getattr(args, "rewrite", False):  # plan an English rewrite of each non-English request
        pipe.planner.options = dataclasses.replace(pipe.planner.options, rewrite=True)
    if getattr(args, "n_demos", None) is not None:  # an ablation: fewer (or more) demos than the product's
        pipe.planner.n_demos = args.n_demos
    return pipe


LLM_SETTINGS = ("fast_forward", "prompt_lookup")  # settings of the in-process LLM that --against may change
LOAD_SETTINGS = ("n_batch", "n_ubatch", "flash_attn")  # ... and those its model is loaded with (a second copy)
LLM_ARGS = ("n_ctx", "n_threads", "n_gpu_layers", "backend", "seed", "prompt_cache_mb", "prompt_state", "n_batch",
            "n_ubatch", "flash_attn", "fast_forward", "prompt_lookup", "use_mmap")  # LlamaCppLLM's, as it keeps them


def variant(planner: Any, change: str) -> Any:
    """A copy of ``planner`` with one setting changed, from ``KEY=VALUE`` (``--against``): ``n_demos``, a
    field of its :class:`PlannerOptions` (``rewrite=1``, ``step_repair=1``, ``demo_diversity=0.3``), or one of
    :data:`LLM_SETTINGS` of its LLM (``fast_forward=0``: a shallow copy of the LLM, the same loaded model),
    or one of :data:`LOAD_SETTINGS` (``n_batch=1024``: a second LLM, the same GGUF loaded again with that
    setting, its own caches), the value read as that field's type. The demos and the schema are shared (and the
    model, but for those); raises :class:`SetError` for an unknown key or a value of the wrong type."""
    key, sep, value = change.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not value.strip():
        raise SetError(f"--against takes KEY=VALUE (n_demos=2, rewrite=1), not {change!r}")
    other = copy.copy(planner)
    settable = [f.name for f in dataclasses.fields(planner.options)
                if not isinstance(getattr(planner.options, f.name), tuple)]  # (not the passes)
    on_llm = key in LLM_SETTINGS and hasattr(planner.llm, key)
    reload = key in LOAD_SETTINGS and all(hasattr(planner.llm, a) for a in LLM_ARGS)
    current = (planner.n_demos if key == "n_demos" else getattr(planner.llm, key) if on_llm or reload
               else getattr(planner.options, key, None))
    if key != "n_demos" and not on_llm and not reload and key not in settable:
        raise SetError(f"--against: no planner setting {key!r} (n_demos, {', '.join(LLM_SETTINGS + LOAD_SETTINGS)} "
                       f"or one of {', '.join(settable)})")
    try:
        if isinstance(current, bool):
            if value.strip().lower() not in ("1", "0", "true", "false", "on", "off"):
                raise ValueError(value)
            parsed: Any = value.strip().lower() in ("1", "true", "on")
        else:
            parsed = type(current)(value)
    except ValueError as exc:
        raise SetError(f"--against: {key} takes a {type(current).__name__}, not {value!r}") from exc
    if key == "n_demos":
        other.n_demos = parsed
    elif on_llm:  # the same loaded model and lock, decoding another way
        getattr(planner.llm, "_ensure_loaded", lambda: None)()  # (a copy made before would load its own)
        other.llm = copy.copy(planner.llm)
        setattr(other.llm, key, parsed)
    elif reload:  # not loaded until it plans; n_batch then n_ubatch changed make one second LLM, not two
        args = {a: getattr(planner.llm, a) for a in LLM_ARGS} | {key: parsed}
        other.llm = type(planner.llm)(planner.llm.path, **args)
    else:
        other.options = dataclasses.replace(planner.options, **{key: parsed})
        other.schema = other.full_schema()  # (decompose, inline_steps, constrained shape it)
    return other


def plan_one(pipe: Any, item: dict[str, Any], planner: Any = None
             ) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Plan one request (with ``planner``, else the pipeline's); returns its plan's tasks (None when no
    valid plan came back) and what is kept of the attempt (valid, mended, seconds, tokens, raw replies,
    the error)."""
    stats = getattr((planner or pipe.planner).llm, "stats", None)  # (a variant may have an LLM of its own)
    before = getattr(stats, "completion_tokens", 0)
    start = time.perf_counter()
    tasks: list[dict[str, Any]] | None = None
    info: dict[str, Any] = {}
    try:
        attempt = (planner or pipe.planner).attempt(item["request"], item["files"])
        info.update(mended=attempt.salvaged, raw=list(attempt.raws), passes=list(attempt.passes),
                    prompt_tokens=attempt.prompt_tokens, generated_tokens=attempt.generated_tokens,
                    step_repair=attempt.step_repair, step_repair_kept=attempt.step_repair_kept,
                    close_odds=attempt.close_odds, more_steps_kept=attempt.more_steps_kept)
        if attempt.plan is not None:
            tasks = [t.model_dump() for t in attempt.plan.tasks]
        else:
            info["error"] = str(attempt.error)
    except PlanError as exc:
        info.update(mended=False, raw=[exc.raw] if exc.raw else [], error=str(exc))
    except LocalGPTError as exc:  # the LLM itself failed (a prompt past the context, say): no plan, the run goes on
        info.update(mended=False, raw=[], error=str(exc), llm_failed=True)
    info["seconds"] = round(time.perf_counter() - start, 3)
    info["tokens"] = getattr(stats, "completion_tokens", 0) - before if stats is not None else None
    info["valid"] = tasks is not None
    return tasks, info


def planner_label(planner: str) -> str:
    """A short name for the planner setting: the model id, or a GGUF file's name (its folder's for
    ``model.gguf``)."""
    if not planner.endswith(".gguf"):
        return planner
    path = Path(planner)
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def _outline(tasks: Sequence[dict[str, Any]] | None) -> str:
    if tasks is None:
        return "(no plan)"
    return ", ".join(f"{t['task']}<-{','.join(map(str, t['dep']))}" if t.get("dep") and t["dep"] != [-1]
                     else str(t["task"]) for t in tasks) or "(no task)"


class _Output:
    """One run's two files (plans, per-request meta), kept from an interrupted run with ``--resume``."""

    def __init__(self, name: str, out_dir: Path, resume: bool) -> None:
        self.name = name
        self.pred_path, self.meta_path = out_dir / f"{name}.predictions.jsonl", out_dir / f"{name}.meta.jsonl"
        preds, self.meta = taskbench.load_partial(self.pred_path, self.meta_path) if resume else ({}, {})
        if preds:
            print(f"resuming: {len(preds)} request(s) already planned in {self.pred_path}", file=sys.stderr)
        self.plans: dict[str, Any] = {i: p.get("tasks") for i, p in preds.items()}
        # rewrite what is kept (drops a line cut short by a kill), then append
        self.pred_path.write_text("".join(json.dumps({"id": i, "tasks": self.plans[i]}, ensure_ascii=False) + "\n"
                                          for i in self.plans), encoding="utf-8")
        self.meta_path.write_text("".join(json.dumps({"id": i, **self.meta[i]}, ensure_ascii=False) + "\n"
                                          for i in self.plans), encoding="utf-8")

    def add(self, rid: str, tasks: list[dict[str, Any]] | None, info: dict[str, Any]) -> None:
        self.plans[rid], self.meta[rid] = tasks, info
        with open(self.pred_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"id": rid, "tasks": tasks}, ensure_ascii=False) + "\n")
        with open(self.meta_path, "a", encoding="utf-8") as side:
            side.write(json.dumps({"id": rid, **info}, ensure_ascii=False) + "\n")


def run(args: argparse.Namespace, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Plan ``items`` (keeping those a ``--resume``\\ d run already planned), write the outputs and
    return the run's document.

    With ``--against KEY=VALUE`` every request is planned twice in this one process, once as set and
    once with that one setting changed (:func:`variant`), the order alternating from request to request,
    so that both runs meet the same machine and the same warm caches: the second run is written as
    ``<name>-b`` and the paired comparison (:func:`paired`) is printed and kept in the first run's
    document."""
    pipe = make_pipeline(args)
    name = args.name or f"requests-{args.half}-{planner_label(str(pipe.settings.planner))}"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    planners = [pipe.planner]
    with_ = getattr(args, "with_", None)
    for change in with_.split(",") if with_ else ():  # --with: this one run planned with these settings changed
        planners[0] = variant(planners[0], change)
    against = getattr(args, "against", None)
    if against:
        changed = planners[0]
        for change in against.split(","):  # KEY=VALUE[,KEY=VALUE...]: several settings changed together
            changed = variant(changed, change)
        planners.append(changed)
    outputs = [_Output(n, out_dir, args.resume) for n in [name, f"{name}-b"][: len(planners)]]
    try:
        for k, item in enumerate(items, 1):
            rid = item["id"]
            order = list(range(len(planners)))
            if k % 2 == 0:
                order.reverse()
            for v in order:
                if rid in outputs[v].plans:
                    continue
                if len(planners) > 1:
                    for llm in {id(p.llm): p.llm for p in planners}.values():  # each LLM's own RAM cache
                        _forget_replies(llm)  # neither variant starts from the state the other left
                tasks, info = plan_one(pipe, item, planners[v])
                outputs[v].add(rid, tasks, info)
                j = judge(item, tasks)
                mark = ("ERR" if info.get("llm_failed") else "BAD" if tasks is None
                        else "ok " if j.exact_graph else "~  ")
                tag = "" if len(planners) == 1 else "AB"[v] + " "
                print(f"[{k}/{len(items)}] {tag}{info['seconds']:5.1f}s {mark} {rid:7} {_outline(tasks)}  | gold: "
                      f"{_outline(item['tasks'])}", file=sys.stderr, flush=True)
    finally:
        for p in planners:
            if p.llm is not pipe.llm and hasattr(p.llm, "close"):  # a second LLM a variant loaded
                p.llm.close()
        pipe.close()
    docs = [_document(args, pipe, planners[v], outputs[v], items) for v in range(len(planners))]
    if len(docs) == 2:
        docs[1]["against"] = {"run": name, "change": against}
        docs[0]["paired"] = {"run": outputs[1].name, "change": against,
                             **paired(items, outputs[0].plans, outputs[1].plans, outputs[0].meta, outputs[1].meta)}
        print(json.dumps(docs[0]["paired"], indent=2), file=sys.stderr)
    for out, doc in zip(outputs, docs, strict=True):
        (out_dir / f"{out.name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    return docs[0]


def _forget_replies(llm: Any) -> None:
    """Empty an in-process LLM's RAM state cache (llama-cpp-python's, keyed by prompt and reply), so that
    a request planned a second time (``--against``) does not find its whole prompt evaluated by the
    first, nor a variant with an LLM of its own the state of its previous request; the system prompt's
    own state (kept apart, as every request finds it) stays."""
    cache = getattr(getattr(llm, "_llama", None), "cache", None)
    states = getattr(cache, "cache_state", None)
    if states is not None:
        states.clear()


def _document(args: argparse.Namespace, pipe: Any, planner: Any, out: _Output,
              items: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's JSON document: its settings and its figures."""
    chosen = [i for i in items if i["id"] in out.plans]
    return {
        "benchmark": "localgpt-requests",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "half": args.half,
        "report": bool(args.report),
        "planner": str(pipe.settings.planner),
        "settings": {"store": str(pipe.settings.store), "threads": pipe.settings.threads, "n_ctx": pipe.settings.n_ctx,
                     "max_tasks": pipe.settings.max_tasks, "demo_similarity": pipe.settings.demo_similarity,
                     "plan_tasks": pipe.settings.plan_tasks, "lang": args.lang, "limit": args.limit,
                     "step_repair": planner.options.step_repair, "n_demos": planner.n_demos,
                     "rewrite": planner.options.rewrite, "system_demos": planner.options.system_demos,
                     "with": getattr(args, "with_", None),
                     "fast_forward": getattr(planner.llm, "fast_forward", None),
                     "prompt_lookup": getattr(planner.llm, "prompt_lookup", None)},
        "data": str(Path(args.data)),
        "split": "sha256(id), low bit of the last byte: 0 tuning, 1 locked",
        "metrics": score(chosen, out.plans, out.meta),
        "failed": [i for i in out.plans if out.meta.get(i, {}).get("llm_failed")],
        # tokens the constraint forced and fast_forward took without a decoding step, over the whole process
        "llm_forced_tokens": getattr(getattr(planner.llm, "stats", None), "forced_tokens", None),
        # tokens prompt lookup drafted, and those kept, over the whole process
        "llm_drafted_tokens": getattr(getattr(planner.llm, "stats", None), "drafted_tokens", None),
        "llm_accepted_draft_tokens": getattr(getattr(planner.llm, "stats", None), "accepted_draft_tokens", None),
        "predictions": out.pred_path.name,
        "per_request": out.meta_path.name,
    }


def load_run(name: str, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """A stored run: its document (empty when the run never finished), plans and per-request meta."""
    doc_path = out_dir / f"{name}.json"
    doc = json.loads(doc_path.read_text(encoding="utf-8")) if doc_path.exists() else {}
    preds, meta = taskbench.load_partial(out_dir / f"{name}.predictions.jsonl", out_dir / f"{name}.meta.jsonl")
    return doc, {i: p.get("tasks") for i, p in preds.items()}, meta


def _known(name: str, ids: Iterable[str], by_id: dict[str, Any]) -> None:
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise SetError(f"run {name} planned request {unknown[0]}, which the set does not hold "
                       f"({len(unknown)} such; give the run's own folder with --data)")


def _locked_in(doc: dict[str, Any], ids: Iterable[str]) -> bool:
    return doc.get("half") in ("locked", "all") or any(half_of(i) == "locked" for i in ids)


def is_rewrite_reply(raw: str) -> bool:
    """Whether a stored reply is a rewrite of the request (``{"english": ...}``, ``--rewrite``), not a plan."""
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError:
        return False
    return isinstance(decoded, dict) and set(decoded) == {"english"}


def rescore(name: str, items: Sequence[dict[str, Any]], out_dir: Path, report: bool = False) -> dict[str, Any]:
    """Replay run ``name``'s stored replies through today's validation, mending and tidying (the
    planner's :func:`accept_reply`, as ``taskbench --rescore`` does: the first reply, else the repair
    round's), with no model call; writes ``<name>-rescored``. A request whose replies today's code
    cannot make a valid plan of counts as having no plan. Seconds are those measured."""
    doc, plans, meta = load_run(name, out_dir)
    by_id = {i["id"]: i for i in items}
    _known(name, plans, by_id)
    if _locked_in(doc, plans) and not report:
        raise SetError(f"run {name} holds locked-half requests: rescoring it is reporting (add --report)")
    changed = []
    for rid, info in meta.items():
        item = by_id[rid]
        raws = list(info.get("raw", []))
        if raws and doc.get("settings", {}).get("rewrite") and detect(item["request"]) != "en" \
                and len(item["request"]) <= REWRITE_MAX:
            raws = raws[1:]  # the rewrite's reply (even one cut short), not a plan
        raws = [r for r in raws if not is_rewrite_reply(r)]
        accepted = taskbench.accept_stored(raws, item["request"], item["files"], registry.TASKS)
        tasks = [t.model_dump() for t in accepted[0].tasks] if accepted else None
        if tasks != plans[rid]:
            changed.append(rid)
        plans[rid] = tasks
        info.update(valid=tasks is not None, mended=bool(accepted and accepted[1]), rescored=True)
    out = f"{name}-rescored"
    (out_dir / f"{out}.predictions.jsonl").write_text(
        "".join(json.dumps({"id": i, "tasks": plans[i]}, ensure_ascii=False) + "\n" for i in plans), encoding="utf-8")
    (out_dir / f"{out}.meta.jsonl").write_text(
        "".join(json.dumps({"id": i, **meta[i]}, ensure_ascii=False) + "\n" for i in plans), encoding="utf-8")
    result = {**doc, "date": time.strftime("%Y-%m-%d %H:%M"), "rescored_from": name, "changed": changed,
              "report": report or bool(doc.get("report")),
              "metrics": score([by_id[i] for i in plans], plans, meta),
              "predictions": f"{out}.predictions.jsonl", "per_request": f"{out}.meta.jsonl"}
    (out_dir / f"{out}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(changed)} request(s) planned differently today: {', '.join(changed) or 'none'}", file=sys.stderr)
    return result


# ---------------------------------------------------------------- two runs, request by request

def paired(items: Sequence[dict[str, Any]], a: dict[str, Any], b: dict[str, Any], meta_a: dict[str, dict[str, Any]],
           meta_b: dict[str, dict[str, Any]], reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Run B against run A on the requests both planned: each one's figures, B - A, how many requests
    B plans better or worse (an exact task set gained or lost), a paired bootstrap 95 % interval of the
    differences of exact task set (points) and task-type F1, and the paired median plan seconds
    (each run's median over the same requests, and the median of B - A request by request)."""
    both = [i for i in items if i["id"] in a and i["id"] in b]
    ja = [judge(i, a[i["id"]]) for i in both]
    jb = [judge(i, b[i["id"]]) for i in both]

    def f1(js: Sequence[Judgement], idx: Sequence[int]) -> float:
        tp = sum(js[k].nodes[0] for k in idx)
        denom = sum(2 * js[k].nodes[0] + js[k].nodes[1] + js[k].nodes[2] for k in idx)
        return 100.0 * 2 * tp / denom if denom else 0.0

    def exact(js: Sequence[Judgement], idx: Sequence[int]) -> float:
        return 100.0 * sum(js[k].exact_set for k in idx) / len(idx) if idx else 0.0

    rng = random.Random(seed)
    n = len(both)
    every = list(range(n))
    diffs: dict[str, list[float]] = {"exact_set": [], "node_f1": []}
    for _ in range(reps if n else 0):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs["exact_set"].append(exact(jb, idx) - exact(ja, idx))
        diffs["node_f1"].append(f1(jb, idx) - f1(ja, idx))

    def interval(values: list[float]) -> list[float] | None:
        if not values:
            return None
        values = sorted(values)
        top = min(len(values) - 1, int(0.975 * len(values)))
        return [round(values[int(0.025 * len(values))], 2), round(values[top], 2)]

    timed = [(meta_a.get(i["id"], {}).get("seconds"), meta_b.get(i["id"], {}).get("seconds")) for i in both]
    secs = [(float(x), float(y)) for x, y in timed if x is not None and y is not None]
    return {
        "requests": n,
        "a": {"exact_set": round(exact(ja, every), 2), "node_f1": round(f1(ja, every), 2)},
        "b": {"exact_set": round(exact(jb, every), 2), "node_f1": round(f1(jb, every), 2)},
        "better": sum(y.exact_set and not x.exact_set for x, y in zip(ja, jb, strict=True)),
        "worse": sum(x.exact_set and not y.exact_set for x, y in zip(ja, jb, strict=True)),
        "exact_set_diff_ci95": interval(diffs["exact_set"]),
        "node_f1_diff_ci95": interval(diffs["node_f1"]),
        "median_seconds": {"a": round(statistics.median(x for x, _ in secs), 2) if secs else None,
                           "b": round(statistics.median(y for _, y in secs), 2) if secs else None,
                           "paired_diff": round(statistics.median(y - x for x, y in secs), 2) if secs else None},
    }


# ---------------------------------------------------------------- the set's counts

def stats(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the set: by language and shape, by half, requests using each task type, chain
    lengths."""
    langs = sorted({i["lang"] for i in items}, key=lambda k: (k != "en", k))
    table = {lang: {s: sum(i["lang"] == lang and i["shape"] == s for i in items) for s in SHAPES} for lang in langs}
    halves = {h: {"requests": sum(half_of(i["id"]) == h for i in items),
                  "by_lang": {lang: sum(i["lang"] == lang and half_of(i["id"]) == h for i in items) for lang in langs},
                  "by_shape": {s: sum(i["shape"] == s and half_of(i["id"]) == h for i in items) for s in SHAPES}}
              for h in HALVES}
    chains = Counter(len(i["tasks"]) for i in items if i["shape"] == "chain")
    return {"requests": len(items), "non_english": sum(i["lang"] != "en" for i in items),
            "by_lang_shape": table, "halves": halves,
            "type_coverage": {n: sum(any(t["task"] == n for t in i["tasks"]) for i in items) for n in registry.names()},
            "chain_lengths": dict(sorted(chains.items())),
            "with_quotes": sum(bool(quotes(i["request"], i["files"])) for i in items),
            "non_ascii_files": sum(any(not f.isascii() for f in i["files"]) for i in items)}


def print_stats(s: dict[str, Any]) -> None:
    """The counts as Markdown tables (as bench/requests/README.md shows them)."""
    print(f"{s['requests']} requests, {s['non_english']} not in English; {s['with_quotes']} with quoted text; "
          f"{s['non_ascii_files']} with a non-ASCII file name; chains by length: "
          + ", ".join(f"{k} tasks: {v}" for k, v in s["chain_lengths"].items()) + "\n")
    print("| language | " + " | ".join(SHAPES) + " | total | tuning | locked |")
    print("|---" * (len(SHAPES) + 4) + "|")
    for lang, row in s["by_lang_shape"].items():
        print(f"| {lang} | " + " | ".join(str(row[k]) for k in SHAPES) + f" | {sum(row.values())} | "
              f"{s['halves']['tuning']['by_lang'][lang]} | {s['halves']['locked']['by_lang'][lang]} |")
    totals = [sum(r[k] for r in s["by_lang_shape"].values()) for k in SHAPES]
    print("| all | " + " | ".join(map(str, totals)) + f" | {s['requests']} | {s['halves']['tuning']['requests']} | "
          f"{s['halves']['locked']['requests']} |")
    print("\n| half | " + " | ".join(SHAPES) + " |")
    print("|---" * (len(SHAPES) + 1) + "|")
    for h in HALVES:
        print(f"| {h} | " + " | ".join(str(s["halves"][h]["by_shape"][k]) for k in SHAPES) + " |")
    print("\nRequests using each task type: " + ", ".join(f"{n} {c}" for n, c in s["type_coverage"].items()))


COLUMNS = ("requests", "node_f1", "edge_f1", "exact_graph", "exact_set", "valid_rate", "mended_rate",
           "file_fidelity", "quote_fidelity", "median_seconds", "p90_seconds", "mean_tokens")


def print_table(metrics: dict[str, Any]) -> None:
    """The figures as a table on stdout: overall, by shape, then by language."""
    print(f"{'group':11}" + "".join(f"{c:>15}" for c in COLUMNS))
    rows = [("all", metrics["all"]), *metrics["by_shape"].items(), *metrics["by_lang"].items()]
    for key, row in rows:
        print(f"{key:11}" + "".join(f"{'-' if row[c] is None else str(row[c]):>15}" for c in COLUMNS))


# ---------------------------------------------------------------- command line

def main(argv: Iterable[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="the folder of request files (default: bench/requests)")
    p.add_argument("--half", choices=["tuning", "locked", "all"], default="tuning",
                   help="which half to plan (default tuning); locked and all need --report")
    p.add_argument("--report", action="store_true",
                   help="this run is the report of the locked half (recorded in the JSON); never use it to choose")
    p.add_argument("--lang",
                   help="only the requests of this language (en, zh, de, ...; several joined by commas: zh,ja)")
    p.add_argument("--limit", type=int, help="plan only this many requests, taken in turn from each shape")
    p.add_argument("--planner", help="controller LLM: a model id of the store or a GGUF path (default: the settings')")
    p.add_argument("--store", help="the model store (default: the settings', LOCALGPT_STORE)")
    p.add_argument("--threads", type=int, help="LLM threads (default: the settings')")
    p.add_argument("--step-repair", action="store_true",
                   help="the planner's step repair on (PlannerOptions.step_repair; off by default)")
    p.add_argument("--rewrite", action="store_true",
                   help="rewrite each non-English request in English before planning it (PlannerOptions.rewrite)")
    p.add_argument("--n-demos", type=int, help="demos shown to the planner (default: the product's, 3)")
    p.add_argument("--against", metavar="KEY=VALUE",
                   help="plan every request twice in this process, as set and with these planner settings "
                        "changed (n_demos=2, rewrite=1, system_demos=8,n_demos=1), in alternating order; the second "
                        "run is written as NAME-b and the paired comparison printed")
    p.add_argument("--with", dest="with_", metavar="KEY=VALUE",
                   help="plan with these planner settings changed, as --against names them (system_demos=10,n_demos=0)")
    p.add_argument("--name", help="file name stem of the outputs")
    p.add_argument("--resume", action="store_true", help="keep the requests an interrupted run of --name planned")
    p.add_argument("--out-dir", default=str(RESULTS), help="where the outputs go (default: bench/results)")
    p.add_argument("--rescore", metavar="NAME", help="no planning: replay run NAME's stored replies through today's "
                                                     "validation, mending and tidying (writes NAME-rescored)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="no planning: run B against run A, request by request")
    p.add_argument("--stats", action="store_true", help="no planning: the set's counts by language, shape and half")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be 1 or more, not {args.limit}", file=sys.stderr)
        return 1
    try:
        return _main(args)
    except SetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    """The command line once its options make sense; a set or run that cannot be read raises :class:`SetError`."""
    items = load_requests(Path(args.data))
    out_dir = Path(args.out_dir)
    if args.stats:
        print_stats(stats(items))
        return 0
    if args.rescore:
        if not (out_dir / f"{args.rescore}.meta.jsonl").is_file():
            print(f"error: no run named {args.rescore} in {out_dir}", file=sys.stderr)
            return 1
        print_table(rescore(args.rescore, items, out_dir, args.report)["metrics"])
        return 0
    if args.compare:
        runs = []
        for name in args.compare:
            if not (out_dir / f"{name}.meta.jsonl").is_file():
                print(f"error: no run named {name} in {out_dir}", file=sys.stderr)
                return 1
            doc, plans, meta = load_run(name, out_dir)
            _known(name, plans, {i["id"]: i for i in items})
            if _locked_in(doc, plans) and not args.report:
                raise SetError(f"run {name} holds locked-half requests: comparing it is reporting (add --report)")
            runs.append((plans, meta))
        print(json.dumps(paired(items, runs[0][0], runs[1][0], runs[0][1], runs[1][1]), indent=2))
        return 0
    if args.half != "tuning" and not args.report:
        print(f"error: --half {args.half} includes the locked half, which is scored only to report: add --report "
              "(and use the figures for nothing else)", file=sys.stderr)
        return 1
    chosen = choose(items, args.half, args.lang, args.limit)
    if not chosen:
        print(f"error: no request of half {args.half}" + (f" in language {args.lang}" if args.lang else ""),
              file=sys.stderr)
        return 1
    try:
        doc = run(args, chosen)
    except LocalGPTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_table(doc["metrics"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
