#!/usr/bin/env python
"""Planning quality on TaskBench (Hugging Face tools domain): localgpt's real planner, scored.

    python -m bench.taskbench                                  # default planner, whole dev file
    python -m bench.taskbench --data other.jsonl               # records the planner has never seen
    python -m bench.taskbench --model model_store/smollm2-135m-instruct/model.gguf --limit 3
    python -m bench.taskbench --limit 60 --no-decompose --n-demos 4   # ablations on a sample

Writes ``<name>.predictions.jsonl`` (TaskBench's format: ``{"id", "task_nodes": [{"task",
"arguments"}]}`` with ``<node-j>`` references) and ``<name>.json`` (metrics by single / chain /
dag) into ``bench/results/``. Nothing is executed: the requests name files that do not exist.
Demos come from the dev file (``--demo-data``) and never include the record being planned (same
id or same request), so on the dev file itself they are leave-one-out.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from localgpt import tasks as registry  # noqa: E402
from localgpt.config import FAST_FORWARD_DEFAULT, N_BATCH_DEFAULT, N_UBATCH_DEFAULT  # noqa: E402
from localgpt.errors import LocalGPTError, PlanError  # noqa: E402
from localgpt.planning.demo_file import NODE_REF, TB_TO_LOCAL, json_objects, record_to_demo, tool_name  # noqa: E402
from localgpt.planning.demos import DEMOS, Demo, task_types  # noqa: E402
from localgpt.planning.references import references  # noqa: E402
from localgpt.planning.validate import named_files  # noqa: E402
from localgpt.tasks import Kind, kind_by_name  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "taskbench" / "hf_dev.jsonl"
RESULTS = REPO / "bench" / "results"

LOCAL_TO_TB = {v: k for k, v in TB_TO_LOCAL.items()}


# ---------------------------------------------------------------- metrics (as the README defines them)

def node_set(nodes: Sequence[dict[str, Any]] | None) -> set[str]:
    """Distinct known tool names of a list of task nodes."""
    return {n for n in (tool_name(node.get("task")) for node in nodes or []) if n}


def edge_set(nodes: Sequence[dict[str, Any]] | None) -> set[tuple[str, str]]:
    """Distinct (source, target) tool-name pairs from ``<node-j>`` references; self-references ignored."""
    nodes = list(nodes or [])
    edges = set()
    for i, node in enumerate(nodes):
        target = tool_name(node.get("task"))
        for arg in node.get("arguments") or []:
            if not isinstance(arg, str):
                continue
            for j in (int(m) for m in NODE_REF.findall(arg)):
                if j == i or not 0 <= j < len(nodes):
                    continue
                source = tool_name(nodes[j].get("task"))
                if source and target:
                    edges.add((source, target))
    return edges


@dataclass
class Counts:
    """Pooled true positives, false positives and false negatives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, gold: set[Any], pred: set[Any]) -> None:
        self.tp += len(gold & pred)
        self.fp += len(pred - gold)
        self.fn += len(gold - pred)

    def f1(self) -> float:
        """Micro F1 in percent (0 when nothing was predicted or expected)."""
        denom = 2 * self.tp + self.fp + self.fn
        return 100.0 * 2 * self.tp / denom if denom else 0.0


@dataclass
class Score:
    """Scores of one group of records."""

    nodes: Counts = field(default_factory=Counts)
    edges: Counts = field(default_factory=Counts)
    n: int = 0
    exact: int = 0
    parsed: int = 0
    valid: int = 0
    salvaged: int = 0
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The figures of this group."""
        secs = sorted(self.seconds)
        return {
            "records": self.n,
            "node_f1": round(self.nodes.f1(), 2),
            "edge_f1": round(self.edges.f1(), 2),
            "exact_match": round(100.0 * self.exact / self.n, 2) if self.n else 0.0,
            "parse_rate": round(100.0 * self.parsed / self.n, 2) if self.n else 0.0,
            "valid_rate": round(100.0 * self.valid / self.n, 2) if self.n else 0.0,
            "salvaged_rate": round(100.0 * self.salvaged / self.n, 2) if self.n else 0.0,
            "mean_seconds": round(statistics.fmean(secs), 2) if secs else None,
            "median_seconds": round(statistics.median(secs), 2) if secs else None,
            "p90_seconds": round(secs[min(len(secs) - 1, int(0.9 * len(secs)))], 2) if secs else None,
            "mean_tokens": round(statistics.fmean(self.tokens), 1) if self.tokens else None,
        }


def score(records: Sequence[dict[str, Any]], predictions: dict[str, dict[str, Any]],
          meta: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Node F1, edge F1, exact match (same node and edge sets) and rates, overall and by type.

    A record with no prediction counts as an empty plan. ``meta`` may carry per-record
    ``parsed``, ``valid``, ``salvaged`` (mended after repair), ``seconds`` and ``tokens``.
    """
    groups: dict[str, Score] = {}
    for rec in records:
        pred = predictions.get(str(rec["id"]), {})
        info = (meta or {}).get(str(rec["id"]), {})
        gold_n, gold_e = node_set(rec["task_nodes"]), edge_set(rec["task_nodes"])
        pred_n, pred_e = node_set(pred.get("task_nodes")), edge_set(pred.get("task_nodes"))
        for key in ("all", rec.get("type", "single")):
            g = groups.setdefault(key, Score())
            g.n += 1
            g.nodes.add(gold_n, pred_n)
            g.edges.add(gold_e, pred_e)
            g.exact += int(gold_n == pred_n and gold_e == pred_e)
            g.parsed += int(bool(info.get("parsed", bool(pred))))
            g.valid += int(bool(info.get("valid", bool(pred))))
            g.salvaged += int(bool(info.get("salvaged", False)))
            if "seconds" in info:
                g.seconds.append(float(info["seconds"]))
            if "tokens" in info:
                g.tokens.append(int(info["tokens"]))
    order = ["all", "single", "chain", "dag"]
    return {k: groups[k].summary() for k in order if k in groups}


# ---------------------------------------------------------------- conversions

def to_taskbench(record_id: str, plan_tasks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A localgpt plan (list of task dicts) as a TaskBench prediction with ``<node-j>`` references."""
    index = {t["id"]: j for j, t in enumerate(plan_tasks)}
    nodes = []
    for t in plan_tasks:
        name = LOCAL_TO_TB.get(t.get("task", ""), t.get("task", ""))
        args = []
        spec = registry.get(t["task"]) if registry.is_known(t.get("task", "")) else None
        order = [i.name for i in spec.inputs] if spec else list(t.get("args", {}))
        values = t.get("args", {})
        for key in order + [k for k in values if k not in order]:
            if key not in values:
                continue
            value = str(values[key])
            for ref in references(value):
                if ref in index:
                    value = re.sub(rf"<(?:resource|generated)>-{ref}\b", f"<node-{index[ref]}>", value,
                                   flags=re.IGNORECASE)
            args.append(value)
        nodes.append({"task": name, "arguments": args})
    return {"id": record_id, "task_nodes": nodes}


def leave_one_out(bank: Sequence[tuple[str | None, Demo]], rec: dict[str, Any]) -> list[Demo]:
    """The demos of ``bank`` (source id, demo) that may be shown while planning ``rec``: never the
    record's own gold plan (same id), nor any record with the very same request."""
    rid, request = str(rec["id"]), rec["user_request"].strip()
    return [d for src, d in bank if src != rid and d.request.strip() != request]


class DataError(ValueError):
    """A TaskBench file that cannot be read as records: its message names the file, line and field."""


def _is_path(names: Sequence[str], links: set[tuple[str, str]]) -> bool:
    """Whether ``links`` wire all of ``names`` one after another, from a single start to a single end."""
    following = {}
    for source, target in links:
        if source in following:
            return False  # a task feeding two others
        following[source] = target
    starts = set(names) - {t for _, t in links}
    if len(starts) != 1 or len({t for _, t in links}) != len(links):
        return False
    seen, node = [], next(iter(starts))
    while node is not None and node not in seen:
        seen.append(node)
        node = following.get(node)
    return node is None and set(seen) == set(names)


def graph_type(rec: dict[str, Any]) -> str:
    """``single``, ``chain`` or ``dag``, read off a gold record that carries no ``type``: one tool is
    single; tools wired one after another, none left out, are a chain; anything else a dag. The wiring
    is the record's ``task_links`` where it has them (what TaskBench's type is drawn from; the
    ``<node-j>`` references disagree with them in a few records), else its references."""
    nodes = rec["task_nodes"]
    names = [str(n.get("task")) for n in nodes]
    if len(set(names)) <= 1:
        return "single"
    given = rec.get("task_links")
    if isinstance(given, list) and given and all(isinstance(x, dict) and "source" in x and "target" in x
                                                 for x in given):
        return "chain" if _is_path(names, {(str(x["source"]), str(x["target"])) for x in given}) else "dag"
    known = [tool_name(n.get("task")) or str(n.get("task")) for n in nodes]  # the names edge_set gives
    return "chain" if _is_path(known, edge_set(nodes)) else "dag"


def load_records(path: Path) -> list[dict[str, Any]]:
    """Records of a TaskBench-format JSONL file (blank lines skipped).

    Raises :class:`DataError` naming the line for a line that is not JSON, a record without an
    ``id``, a ``user_request`` text or a ``task_nodes`` list of tasks, or an id seen before. A record
    without ``type`` gets the one its gold graph has (:func:`graph_type`)."""
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for n, where, rec in json_objects(fh, str(path), "a record", DataError):
            if not isinstance(rec.get("id"), (str, int)) or isinstance(rec.get("id"), bool):
                raise DataError(f"{where}: the record has no id (a string or a number)")
            rid = str(rec["id"])
            if rid in seen:
                raise DataError(f"{where}: id {rid} was already used on line {seen[rid]}")
            seen[rid] = n
            if not isinstance(rec.get("user_request"), str) or not rec["user_request"].strip():
                raise DataError(f"{where} (id {rid}): no user_request text")
            nodes = rec.get("task_nodes")
            if not isinstance(nodes, list) or not all(isinstance(t, dict) and "task" in t for t in nodes):
                raise DataError(f"{where} (id {rid}): task_nodes is not a list of tasks ({{\"task\", \"arguments\"}})")
            if rec.get("type") not in ("single", "chain", "dag"):
                rec["type"] = graph_type(rec)
            records.append(rec)
    return records


def pick(records: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """``limit`` records drawn with ``seed``, keeping the single / chain / dag proportions."""
    if not limit or limit >= len(records):
        return records
    rng = random.Random(seed)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_type.setdefault(r.get("type", "single"), []).append(r)
    chosen: list[dict[str, Any]] = []
    for group in by_type.values():
        share = max(1, round(limit * len(group) / len(records)))
        chosen.extend(rng.sample(group, min(share, len(group))))
    rng.shuffle(chosen)
    return chosen[:limit]


# ---------------------------------------------------------------- the run

def bench_specs(offered: str = "taskbench", demos: Sequence[Demo] = ()) -> list[registry.TaskSpec]:
    """The task types the planner is offered: those TaskBench knows (localgpt's other types are left out
    of the schema), or with ``offered="all"`` every type of localgpt's registry, as ``localgpt plan``
    offers them, or with ``offered="demos"`` the types ``demos`` use, in the registry's order, as
    ``LOCALGPT_PLAN_TASKS=demos`` offers those of a demo file."""
    if offered == "all":
        return list(registry.TASKS)
    if offered == "demos":
        return registry.in_order(task_types(demos))
    return [registry.get(name) for name in TB_TO_LOCAL.values()]


def offered_and_bank(offered: str, bank: Sequence[tuple[str | None, Demo]]
                     ) -> tuple[list[registry.TaskSpec], list[tuple[str | None, Demo]]]:
    """The task types the planner is offered (``--tasks``) and the demos it may be shown. With
    ``"demos"`` the types are those of the dev records' demos (those with an id) in the whole bank, as
    ``localgpt plan --demos FILE`` takes a whole file (the record being planned is still never shown),
    and, as there, a built-in demo that uses another type is left out."""
    specs = bench_specs(offered, [demo for rid, demo in bank if rid is not None])
    if offered != "demos":
        return specs, list(bank)
    names = {spec.name for spec in specs}
    return specs, [(rid, demo) for rid, demo in bank if demo.uses_only(names)]


def stored_specs(settings: dict[str, Any]) -> list[registry.TaskSpec]:
    """The task types a stored run offered its planner (``settings`` of its ``<name>.json``); raises
    :class:`DataError` for a ``--tasks demos`` run that does not say which."""
    if settings.get("offered"):
        return [registry.get(name) for name in settings["offered"]]
    if settings.get("tasks") == "demos":
        raise DataError("the run offered the types of its demos (--tasks demos) but its settings do not list them "
                        "(\"offered\")")
    return bench_specs(settings.get("tasks", "taskbench"))


# A request that speaks of the user's own image, audio or video ("I have an image of a room", "my
# recording"): the user holds such a file, named or not.
_OWN_MEDIA = re.compile(r"\b(?:i\s+have|i've\s+got|i\s+took|i\s+recorded|my|attached)\s+(?:an?\s+|the\s+)?"
                        r"(?:[\w-]+\s+){0,2}?(image|photo|picture|photograph|audio|recording|video)s?\b",
                        re.IGNORECASE)
_OWN_KIND = {"image": Kind.IMAGE, "photo": Kind.IMAGE, "picture": Kind.IMAGE, "photograph": Kind.IMAGE,
             "audio": Kind.AUDIO, "recording": Kind.AUDIO, "video": Kind.VIDEO}
# TaskBench's name for a user file of each kind (its README: user files are example.jpg, example.wav, ...).
CONVENTIONAL_FILE = {Kind.IMAGE: "example.jpg", Kind.AUDIO: "example.wav", Kind.VIDEO: "example.mp4"}


def request_files(request: str, mode: str) -> list[str]:
    """The files a record's planner is told the user gave (``--files``).

    ``named``: the file names its request names. ``none``: none (the request still names them).
    ``unnamed`` (the default): none, except for a request that speaks of the user's own image, audio
    or video without naming a file of that kind ("I have an image of a room ..."). TaskBench's gold
    plans read that file as ``example.jpg`` (or ``.wav``, ``.mp4``); a real user would have attached
    it (``localgpt run --file``), so the planner is told of it under that name. Without it the
    planner, rightly, refuses a plan that takes a file the user never gave."""
    named = named_files(request)
    if mode == "named":
        return named
    if mode == "none":
        return []
    have = {kind_by_name(f) for f in named}
    spoken = [_OWN_KIND[m.group(1).lower()] for m in _OWN_MEDIA.finditer(request)]
    return [CONVENTIONAL_FILE[k] for k in dict.fromkeys(spoken) if k not in have]


def parse_json_plan(raw: str) -> Any:
    """The plan in an LLM reply: the whole reply as JSON, else its first JSON list."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        start, end = raw.find("["), raw.rfind("]")
        if start != -1 and end > start:
            try:
                return json.loads(raw[start:end + 1])
            except json.JSONDecodeError:
                return None
    return None


def load_partial(pred_path: Path, meta_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Predictions and per-record figures of an earlier, interrupted run (records present in both)."""

    def read(path: Path) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed run
                found[str(item["id"])] = item
        return found

    preds, metas = read(pred_path), read(meta_path)
    keep = [i for i in preds if i in metas]
    return ({i: preds[i] for i in keep},
            {i: {k: v for k, v in metas[i].items() if k != "id"} for i in keep})


def make_similarity(args: argparse.Namespace) -> Any:
    """Word overlap, or cosine similarity of MiniLM embeddings from the model store."""
    from localgpt.planning.retrieval import EmbeddingSimilarity, word_overlap

    if args.similarity == "words":
        return word_overlap
    from localgpt.config import Settings
    from localgpt.experts.base import ExpertContext
    from localgpt.experts.onnx import SentenceSimilarityExpert
    from localgpt.store.catalog import Catalog

    settings = Settings(threads=args.threads)
    expert = SentenceSimilarityExpert(Catalog(settings.store).get(args.embedder), ExpertContext(settings=settings))
    expert.load()
    return EmbeddingSimilarity(expert.embed)


def run(args: argparse.Namespace, records: list[dict[str, Any]],
        demo_records: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Plan the chosen ``records`` (those of ``--data``) with demos from ``demo_records`` (those of
    ``--demo-data``, when ``--demo-source`` takes them), write predictions and metrics; returns the
    metrics document."""
    from localgpt.llm.llamacpp import LlamaCppLLM
    from localgpt.planning.planner import Planner, PlannerOptions
    from localgpt.planning.validate import validate_plan

    chosen = pick(records, args.limit, args.seed)
    bank: list[tuple[str | None, Demo]] = []
    if args.demo_source in ("localgpt", "both"):
        bank += [(None, d) for d in DEMOS]
    if args.demo_source in ("dev", "both"):
        for rec in demo_records:
            demo = record_to_demo(rec)
            if demo is not None:
                bank.append((str(rec["id"]), demo))
    specs, bank = offered_and_bank(args.tasks, bank)
    llm = LlamaCppLLM(args.model, n_ctx=args.n_ctx, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers,
                      seed=args.seed, fast_forward=args.fast_forward,
                      n_batch=args.n_batch, n_ubatch=args.n_ubatch)
    options = PlannerOptions(repair=not args.no_repair, salvage=not args.no_salvage,
                             decompose=not args.no_decompose, constrained=not args.no_constraint,
                             step_floor=not args.no_step_floor, samples=args.samples,
                             sample_temperature=args.sample_temperature, demo_diversity=args.demo_diversity,
                             type_shortlist=args.type_shortlist, fixed_demos=args.demos == "fixed",
                             step_repair=args.step_repair, system_demos=args.system_demos,
                             inline_steps=args.inline_steps, step_close=args.step_close,
                             demo_state=not args.no_demo_state, exact_files=args.exact_files)
    base = Planner(llm, max_tasks=8, n_demos=0 if args.demos == "none" else args.n_demos,
                   specs=specs, similarity=make_similarity(args), options=options)
    name = args.name or f"taskbench-{Path(args.model).parent.name}"
    results = Path(args.out_dir)
    results.mkdir(parents=True, exist_ok=True)
    pred_path = results / f"{name}.predictions.jsonl"
    meta_path = results / f"{name}.meta.jsonl"
    preds, meta = load_partial(pred_path, meta_path) if args.resume else ({}, {})
    if preds:
        print(f"resuming: {len(preds)} record(s) already planned in {pred_path}", file=sys.stderr)
    # rewrite what is kept (drops a line cut short by a kill), then append
    pred_path.write_text("".join(json.dumps(preds[i]) + "\n" for i in preds), encoding="utf-8")
    meta_path.write_text("".join(json.dumps({"id": i, **meta[i]}) + "\n" for i in preds), encoding="utf-8")
    with open(pred_path, "a", encoding="utf-8") as out, open(meta_path, "a", encoding="utf-8") as side:
        for k, rec in enumerate(chosen, 1):
            rid = str(rec["id"])
            if rid in preds:
                continue
            planner = base.with_demos(leave_one_out(bank, rec))
            files = request_files(rec["user_request"], args.files)
            tokens_before = llm.stats.completion_tokens
            start = time.perf_counter()
            plan_tasks: list[dict[str, Any]] = []
            parsed = valid = False
            failure, llm_failed = None, False
            raws: tuple[str, ...] = ()
            salvaged = False
            usage: dict[str, Any] = {}
            try:
                attempt = planner.attempt(rec["user_request"], files)
                raws, salvaged = attempt.raws, attempt.salvaged
                usage = {"prompt_tokens": attempt.prompt_tokens, "generated_tokens": attempt.generated_tokens,
                         "step_repair": attempt.step_repair, "step_repair_kept": attempt.step_repair_kept,
                         "close_odds": attempt.close_odds, "more_steps_kept": attempt.more_steps_kept}
                if attempt.plan is None:
                    assert attempt.error is not None
                    raise attempt.error
                plan_tasks = [t.model_dump() for t in attempt.plan.tasks]
                parsed = valid = True
            except PlanError as exc:
                failure = str(exc)
                decoded = parse_json_plan(raws[-1]) if raws else None
                if isinstance(decoded, dict):
                    decoded = decoded.get("tasks")
                if isinstance(decoded, list):
                    parsed = True
                    plan_tasks = [t for t in decoded if isinstance(t, dict) and "task" in t and "id" in t]
                    try:
                        validate_plan(decoded, rec["user_request"], files, 8)
                        valid = True
                    except PlanError:
                        pass
            except LocalGPTError as exc:
                # the LLM itself failed on this record (a prompt past the context window, say): the
                # record counts as an empty plan, the failure is kept, and the run goes on
                failure, llm_failed = str(exc), True
            seconds = time.perf_counter() - start
            pred = to_taskbench(rid, plan_tasks)
            preds[rid] = pred
            meta[rid] = {"parsed": parsed, "valid": valid, "salvaged": salvaged, "seconds": seconds,
                         "tokens": llm.stats.completion_tokens - tokens_before, **usage, "raw": list(raws)}
            if failure is not None and not valid:
                meta[rid]["error"] = failure
            if llm_failed:
                meta[rid]["llm_failed"] = True
            out.write(json.dumps(pred) + "\n")
            out.flush()
            side.write(json.dumps({"id": rid, **meta[rid]}) + "\n")
            side.flush()
            nodes = " -> ".join(n["task"] for n in pred["task_nodes"]) or "(empty)"
            gold = " -> ".join(n["task"] for n in rec["task_nodes"])
            status = "ERR" if llm_failed else "ok " if valid else "BAD"
            print(f"[{k}/{len(chosen)}] {seconds:5.1f}s {status} {nodes}  | gold: {gold}", file=sys.stderr, flush=True)
            if llm_failed:
                print(f"    {failure}", file=sys.stderr, flush=True)
    metrics = score(chosen, preds, meta)
    doc = {
        "benchmark": "taskbench-hf-dev",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": str(args.model),
        "data": str(args.data),
        "settings": {"limit": args.limit, "seed": args.seed, "constraint": not args.no_constraint,
                     "demos": args.demos, "n_demos": args.n_demos, "demo_source": args.demo_source,
                     "repair": not args.no_repair, "salvage": not args.no_salvage, "threads": args.threads,
                     "n_gpu_layers": args.n_gpu_layers, "n_batch": args.n_batch,
                     "n_ubatch": args.n_ubatch,
                     "similarity": args.similarity, "decompose": not args.no_decompose,
                     "samples": args.samples, "sample_temperature": args.sample_temperature,
                     "step_floor": not args.no_step_floor, "step_repair": args.step_repair, "files": args.files,
                     "demo_diversity": args.demo_diversity, "tasks": args.tasks,
                     "offered": [spec.name for spec in base.specs],
                     "type_shortlist": args.type_shortlist,
                     "fast_forward": args.fast_forward, "system_demos": args.system_demos,
                     "step_close": args.step_close, "demo_state": not args.no_demo_state,
                     "exact_files": args.exact_files,
                     "inline_steps": args.inline_steps,
                     "demo_data": str(args.demo_data) if args.demo_source != "localgpt" else None},
        "metrics": metrics,
        "failed": [i for i in preds if meta.get(i, {}).get("llm_failed")],
        "predictions": pred_path.name,
        "per_record": meta_path.name,
    }
    (results / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    if doc["failed"]:
        print(f"{len(doc['failed'])} record(s) got no reply from the LLM (scored as empty plans; the reason is "
              f"under \"error\" in {meta_path.name}): {', '.join(doc['failed'][:10])}", file=sys.stderr)
    return doc


def check_run_records(name: str, planned: Iterable[str], records: dict[str, Any], data: Path) -> None:
    """Raise :class:`DataError` when stored run ``name`` planned a record that ``data`` does not hold."""
    unknown = [rid for rid in planned if rid not in records]
    if unknown:
        raise DataError(f"run {name} planned record {unknown[0]}, which {data} does not hold "
                        f"({len(unknown)} such record(s); give the run's own file with --data)")


def accept_stored(raws: Sequence[str], request: str, files: Sequence[str],
                  specs: Sequence[registry.TaskSpec], passes: Sequence[Any] | None = None) -> tuple[Any, bool] | None:
    """What today's planner makes of a record's stored replies (the plan and whether it was mended):
    the first reply, else the repair round's; None when neither is kept. ``passes``: the passes to run
    (default: all of :data:`localgpt.planning.passes.PASSES`)."""
    from localgpt.planning.passes import PASSES
    from localgpt.planning.planner import accept

    for raw in raws[:2]:
        try:
            accepted = accept(raw, request, files, 8, specs, passes=PASSES if passes is None else passes)
        except PlanError:
            continue
        return accepted.plan, accepted.mended
    return None


def rescore(name: str, data: Path, out_dir: Path) -> dict[str, Any]:
    """Re-read a finished run's stored replies through today's validation and mending, with no
    model call, and write the result as ``<name>-rescored``.

    Exact for runs without self-consistency: planning is greedy, so the first reply and the repair
    round's reply (kept in ``raw``) are what the planner would decode again; today's planner keeps
    the first reply when it is valid or can be mended, else takes the repair reply. The seconds of a
    record are those measured (a record that needed no repair now would have been quicker)."""
    doc = json.loads((out_dir / f"{name}.json").read_text()) if (out_dir / f"{name}.json").exists() else {}
    if doc.get("settings", {}).get("samples"):
        raise SystemExit(f"error: {name} sampled plans (self-consistency); its replies cannot be replayed")
    records = {str(r["id"]): r for r in load_records(data)}
    mode = doc.get("settings", {}).get("files", "none")
    specs = stored_specs(doc.get("settings", {}))
    preds, meta = load_partial(out_dir / f"{name}.predictions.jsonl", out_dir / f"{name}.meta.jsonl")
    changed = []
    check_run_records(name, meta, records, data)
    for rid, info in meta.items():
        request = records[rid]["user_request"]
        accepted = accept_stored(info.get("raw", []), request, request_files(request, mode), specs)
        if accepted is None:
            continue
        plan, mended = accepted
        pred = to_taskbench(rid, [t.model_dump() for t in plan.tasks])
        if pred["task_nodes"] != preds[rid]["task_nodes"] or not info.get("valid"):
            changed.append(rid)
            preds[rid] = pred
            info.update(parsed=True, valid=True, salvaged=mended, rescored=True)
    out = f"{name}-rescored"
    (out_dir / f"{out}.predictions.jsonl").write_text("".join(json.dumps(preds[i]) + "\n" for i in preds))
    (out_dir / f"{out}.meta.jsonl").write_text("".join(json.dumps({"id": i, **meta[i]}) + "\n" for i in preds))
    metrics = score([records[i] for i in preds], preds, meta)
    result = {**doc, "date": time.strftime("%Y-%m-%d %H:%M"), "rescored_from": name, "changed": changed,
              "metrics": metrics, "predictions": f"{out}.predictions.jsonl", "per_record": f"{out}.meta.jsonl"}
    (out_dir / f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(changed)} record(s) planned differently today: {', '.join(changed) or 'none'}", file=sys.stderr)
    return result


def print_table(metrics: dict[str, dict[str, Any]]) -> None:
    """The metrics as a table on stdout."""
    cols = ["records", "node_f1", "edge_f1", "exact_match", "parse_rate", "valid_rate", "salvaged_rate",
            "median_seconds", "p90_seconds", "mean_tokens"]
    print(f"{'type':8}" + "".join(f"{c:>15}" for c in cols))
    for key, row in metrics.items():
        print(f"{key:8}" + "".join(f"{str(row[c]):>15}" for c in cols))


def main(argv: Iterable[str] | None = None) -> int:
    """Command line."""
    from localgpt.planning.planner import PlannerOptions  # (the product's defaults)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "model_store" / "qwen2.5-coder-1.5b-instruct" / "model.gguf"))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--limit", type=int, help="plan only this many records (stratified by type)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=4096)
    p.add_argument("--n-gpu-layers", type=int, default=0,
                   help="LLM layers on the GPU with a CUDA build of llama-cpp-python (-1: all; default 0, the CPU, "
                        "as every figure in bench/README.md was taken)")
    p.add_argument("--no-constraint", action="store_true", help="ablation: decode without the JSON schema")
    p.add_argument("--no-repair", action="store_true", help="ablation: no repair round")
    p.add_argument("--no-salvage", action="store_true",
                   help="ablation: no mending of a plan still invalid after repair (converters, dropped tasks)")
    p.add_argument("--no-decompose", action="store_true",
                   help="ablation: the planner writes its tasks straight away, without the steps first")
    p.add_argument("--no-step-floor", action="store_true",
                   help="ablation: no floor of two steps for a request that reads as several actions")
    p.add_argument("--step-repair", action="store_true",
                   help="one focused repair when the plan has fewer tasks than the steps the LLM wrote")
    p.add_argument("--step-close", type=float, default=0.0, metavar="P",
                   help="a step list the LLM closed with odds below P gets one more try with one step more "
                        "(PlannerOptions.step_close; 0: off)")
    p.add_argument("--n-batch", type=int, default=N_BATCH_DEFAULT, help="llama.cpp's n_batch (default: the product's)")
    p.add_argument("--n-ubatch", type=int, default=N_UBATCH_DEFAULT,
                   help="llama.cpp's n_ubatch (default: the product's)")
    p.add_argument("--exact-files", action=argparse.BooleanOptionalAction, default=PlannerOptions().exact_files,
                   help="the constraint admits only the files the request gives or names, written exactly "
                        "(PlannerOptions.exact_files, on by default; --no-exact-files: any name of the right ending)")
    p.add_argument("--no-demo-state", action="store_true",
                   help="do not keep the prompt's state up to its first demo (PlannerOptions.demo_state)")
    p.add_argument("--fast-forward", action=argparse.BooleanOptionalAction, default=FAST_FORWARD_DEFAULT,
                   help="the tokens the constraint forces are evaluated in one batch, not decoded one by one "
                        "(LOCALGPT_FAST_FORWARD, on by default; --no-fast-forward: token by token; docs/latency.md)")
    p.add_argument("--system-demos", type=int, default=0, metavar="K",
                   help="K built-in demos written into the system prompt (PlannerOptions.system_demos; 0: off)")
    p.add_argument("--inline-steps", action="store_true",
                   help="each task writes its own step just before its type (PlannerOptions.inline_steps)")
    p.add_argument("--samples", type=int, default=0,
                   help="self-consistency: sample K more plans and keep the one they agree on most (default 0)")
    p.add_argument("--sample-temperature", type=float, default=0.7, help="temperature of those samples")
    p.add_argument("--demos", choices=["similar", "fixed", "none"], default="similar",
                   help="how demos are chosen: by word overlap, the first N, or none")
    p.add_argument("--n-demos", type=int, default=3)
    p.add_argument("--type-shortlist", type=int, default=0, metavar="K",
                   help="constrain task types to those of the K most similar demos (and those no demo uses); 0: off")
    p.add_argument("--demo-diversity", type=float, default=0.0,
                   help="for a request that reads as several actions, the weight of a demo's likeness to those "
                        "already chosen against its similarity to the request (maximal marginal relevance; "
                        "0: the most similar demos)")
    p.add_argument("--files", choices=["unnamed", "named", "none"], default="unnamed",
                   help="the files the planner is told the user gave (as files attached with `localgpt run "
                        "--file`): those the request names; none; or (default) only a file the request speaks "
                        "of as the user's own without naming it, under TaskBench's name for it (example.jpg)")
    p.add_argument("--demo-source", choices=["localgpt", "dev", "both"], default="dev",
                   help="localgpt's own demos, the records of --demo-data (never the one being planned), or both")
    p.add_argument("--demo-data", default=str(DEFAULT_DATA),
                   help="TaskBench records the demos come from (default: the dev file; leave-one-out when it is "
                        "also --data)")
    p.add_argument("--tasks", choices=["taskbench", "all", "demos"], default="taskbench",
                   help="task types offered to the planner: TaskBench's 23, all of localgpt's, as `localgpt plan` "
                        "offers them (types TaskBench does not know score as unknown names), or those the records "
                        "of --demo-data use, in localgpt's order, as `LOCALGPT_PLAN_TASKS=demos localgpt plan "
                        "--demos FILE` offers them (built-in demos that use another type are left out)")
    p.add_argument("--similarity", choices=["embedding", "words"], default="embedding",
                   help="how similar demos are found: MiniLM sentence embeddings or word overlap")
    p.add_argument("--embedder", default="all-minilm-l6-v2-int8", help="embedding model id in the store")
    p.add_argument("--name", help="file name stem of the outputs")
    p.add_argument("--resume", action="store_true",
                   help="keep the records an interrupted run of the same --name already planned")
    p.add_argument("--out-dir", default=str(RESULTS), help="where the outputs go (default: bench/results)")
    p.add_argument("--rescore", metavar="NAME",
                   help="no planning: re-read run NAME's stored replies through today's validation and mending "
                        "(writes NAME-rescored)")
    args = p.parse_args(list(argv) if argv is not None else None)
    if not 0.0 <= args.demo_diversity <= 1.0:
        print(f"error: --demo-diversity must lie between 0 and 1, not {args.demo_diversity}", file=sys.stderr)
        return 1
    if args.type_shortlist < 0:
        print(f"error: --type-shortlist must be 0 (off) or a number of demos, not {args.type_shortlist}",
              file=sys.stderr)
        return 1
    if args.tasks == "demos" and args.demo_source == "localgpt":
        print("error: --tasks demos offers the types of the --demo-data records, which --demo-source localgpt "
              "does not use (give --demo-source dev or both)", file=sys.stderr)
        return 1
    try:
        return _main(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    """The command line, once its options are known to make sense; a file that cannot be read raises
    :class:`DataError`."""
    data = Path(args.data)
    if not data.is_file():
        raise DataError(f"TaskBench data {data} not found (give one with --data)")
    if args.rescore:
        if not (Path(args.out_dir) / f"{args.rescore}.meta.jsonl").is_file():
            print(f"error: no run named {args.rescore} in {args.out_dir}", file=sys.stderr)
            return 1
        print_table(rescore(args.rescore, Path(args.data), Path(args.out_dir))["metrics"])
        return 0
    # both files are read, and a fault in them reported, before any model loads
    records = load_records(data)
    demo_records: list[dict[str, Any]] = []
    if args.demo_source != "localgpt":
        demo_data = Path(args.demo_data)
        if not demo_data.is_file():
            raise DataError(f"demo data {demo_data} not found (give one with --demo-data)")
        demo_records = records if demo_data.resolve() == data.resolve() else load_records(demo_data)
    if not Path(args.model).is_file():
        print(f"error: model file {args.model} not found (python download_models.py --profile starter)",
              file=sys.stderr)
        return 1
    doc = run(args, records, demo_records)
    print_table(doc["metrics"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
