#!/usr/bin/env python
"""Ablations of the plan passes and of mending's "make what the request asks for", on a stored TaskBench run.

    python -m bench.tidy_ablation                        # full-dev-fresh (today's default run)
    python -m bench.tidy_ablation --runs full-dev-positional full-dev-mend

Each row replays a run's stored replies (``raw`` in ``<name>.meta.jsonl``) through today's
``accept``, as ``taskbench.py --rescore`` does, with one piece switched off; no model is called.
Each piece is also weighed record by record against the planner with all of it: how many records it
changes, how many it makes better or worse (fewer or more wrong and missed tools and edges), a sign
test of those counts, and its gain of node and edge F1 on each of two fixed halves of the records. A
rule found by reading a few records' errors that helps on both halves and in many more records than
it hurts is more likely to help on records outside the file too.
Prints a table and writes it as JSON (``--out``, default ``bench/results/tidy-ablation.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import localgpt.planning.mend as mend
from bench import taskbench as tb
from localgpt.planning.passes import PASSES

Patches = list[tuple[Any, str, Callable[..., Any]]]


def _without(*names: str) -> tuple[Any, ...]:
    return tuple(p for p in PASSES if p[0] not in names)


# label -> (the passes run, (object, attribute, replacement) patches that switch a piece of mending off)
PIECES: dict[str, tuple[tuple[Any, ...], Patches]] = {
    "all of it": (PASSES, []),
    "no passes at all": ((), []),
    **{f"without {name}": (_without(name), []) for name, _ in PASSES if name != "merge_duplicates_again"},
    "without making what the request asks for": (PASSES, [(mend._Mender, "make", lambda self, kind: None)]),
}


def replay(name: str, piece: tuple[tuple[Any, ...], Patches], records: dict[str, dict[str, Any]],
           data: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Records, predictions and per-record figures of run ``name``'s stored replies through today's
    planner with one piece's passes and ``patches`` applied (the files and task types the planner is
    offered as the run offered them); ``records`` are those of the file ``data``."""
    preds, meta = tb.load_partial(tb.RESULTS / f"{name}.predictions.jsonl", tb.RESULTS / f"{name}.meta.jsonl")
    tb.check_run_records(name, meta, records, data)
    doc_path = tb.RESULTS / f"{name}.json"
    settings = json.loads(doc_path.read_text()).get("settings", {}) if doc_path.exists() else {}
    mode, specs = settings.get("files", "none"), tb.stored_specs(settings)
    passes, patches = piece
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    for obj, attr, value in patches:
        setattr(obj, attr, value)
    try:
        out: dict[str, Any] = {}
        for rid, info in meta.items():
            request = records[rid]["user_request"]
            accepted = tb.accept_stored(info.get("raw", []), request, tb.request_files(request, mode), specs,
                                        passes)
            out[rid] = tb.to_taskbench(rid, [t.model_dump() for t in accepted[0].tasks]) if accepted else preds[rid]
            meta[rid] = {**info, "valid": accepted is not None}
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)
    return {i: records[i] for i in out}, out, meta


def errors(rec: dict[str, Any], pred: dict[str, Any]) -> int:
    """Wrong and missed tools plus wrong and missed edges of one record's prediction."""
    gold_n, gold_e = tb.node_set(rec["task_nodes"]), tb.edge_set(rec["task_nodes"])
    pred_n, pred_e = tb.node_set(pred.get("task_nodes")), tb.edge_set(pred.get("task_nodes"))
    return len(gold_n ^ pred_n) + len(gold_e ^ pred_e)


def sign_test(better: int, worse: int) -> float:
    """Two-sided p-value of ``better`` against ``worse`` records under a fair coin (ties left out)."""
    n, k = better + worse, min(better, worse)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def half(rid: str) -> int:
    """A fixed split of the records in two halves (by a hash of the id, not by the file's order)."""
    return int(hashlib.sha256(rid.encode()).hexdigest(), 16) % 2


def compare(records: dict[str, dict[str, Any]], full: dict[str, Any], without: dict[str, Any],
            meta: dict[str, Any], without_meta: dict[str, Any]) -> dict[str, Any]:
    """What one piece does record by record: how many records it changes, makes better or worse
    (fewer or more wrong and missed tools and edges), the sign test of those, and the change of
    node and edge F1 it brings on each half of the records."""
    better = worse = changed = 0
    for rid, rec in records.items():
        if full[rid]["task_nodes"] != without[rid]["task_nodes"]:
            changed += 1
            a, b = errors(rec, full[rid]), errors(rec, without[rid])
            better += int(a < b)
            worse += int(a > b)
    halves = []
    for h in (0, 1):
        part = [r for i, r in records.items() if half(i) == h]
        a, b = tb.score(part, full, meta)["all"], tb.score(part, without, without_meta)["all"]
        halves.append({"records": len(part), "node_f1_gain": round(a["node_f1"] - b["node_f1"], 2),
                       "edge_f1_gain": round(a["edge_f1"] - b["edge_f1"], 2)})
    return {"changed": changed, "better": better, "worse": worse, "sign_test_p": round(sign_test(better, worse), 4),
            "halves": halves}


def ablate(runs: list[str], data: Path) -> list[dict[str, Any]]:
    """The table's rows for stored ``runs`` (printed as they come); raises :class:`tb.DataError` when
    ``data`` cannot be read or does not hold a run's records."""
    rows = []
    print(f"{'run':22} {'configuration':42} {'node F1':>8} {'edge F1':>8} {'exact':>7} {'valid':>7}"
          f" {'changed':>8} {'better':>7} {'worse':>6} {'p':>7}  gain on each half (node / edge)")
    records = {str(r["id"]): r for r in tb.load_records(data)}
    for run in runs:
        recs, full, full_meta = replay(run, PIECES["all of it"], records, data)
        for label, piece in PIECES.items():
            patches = piece != PIECES["all of it"]
            _, preds, meta = (recs, full, full_meta) if not patches else replay(run, piece, records, data)
            m = tb.score(list(recs.values()), preds, meta)["all"]
            row = {"run": run, "configuration": label, **m}
            line = (f"{run:22} {label:42} {m['node_f1']:8.2f} {m['edge_f1']:8.2f} {m['exact_match']:7.2f} "
                    f"{m['valid_rate']:7.2f}")
            if patches:
                # the piece's worth: today's planner (all of it) against the planner without it
                row["against_all"] = c = compare(recs, full, preds, full_meta, meta)
                gains = "  ".join(f"{x['node_f1_gain']:+.1f} / {x['edge_f1_gain']:+.1f}" for x in c["halves"])
                line += f" {c['changed']:8d} {c['better']:7d} {c['worse']:6d} {c['sign_test_p']:7.3f}  {gains}"
            rows.append(row)
            print(line)
    return rows


def main(argv: Iterable[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["full-dev-fresh"])
    p.add_argument("--data", default=str(tb.DEFAULT_DATA))
    p.add_argument("--out", default=str(tb.RESULTS / "tidy-ablation.json"), help="where the JSON goes")
    args = p.parse_args(list(argv) if argv is not None else None)
    if not Path(args.data).is_file():
        print(f"error: TaskBench data {args.data} not found (give one with --data)", file=sys.stderr)
        return 1
    missing = [r for r in args.runs if not (tb.RESULTS / f"{r}.meta.jsonl").is_file()]
    if missing:
        print(f"error: no stored run named {', '.join(missing)} in {tb.RESULTS}", file=sys.stderr)
        return 1
    try:
        rows = ablate(args.runs, Path(args.data))
    except tb.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
