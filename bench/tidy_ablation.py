#!/usr/bin/env python
"""Ablations of plan tidying and of mending's "make what the request asks for", on a stored TaskBench run.

    python bench/tidy_ablation.py                        # full-dev-positional and full-dev-mend
    python bench/tidy_ablation.py --runs full-dev-mend   # one run

Each row replays a run's stored replies (``raw`` in ``<name>.meta.jsonl``) through today's
``accept_reply``, as ``taskbench.py --rescore`` does, with one piece switched off; no model is called.
Prints a table and writes it as JSON (``--out``, default ``bench/results/tidy-ablation.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import taskbench as tb  # noqa: E402

import localgpt.planner as planner  # noqa: E402


def _renumber(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks renumbered in order, none merged (a repeated task kept)."""
    new = {t["id"]: i for i, t in enumerate(tasks)}

    def ref(m: Any) -> str:
        return f"<resource>-{new.get(int(m.group(1)), int(m.group(1)))}"

    return [{"id": new[t["id"]], "task": t["task"], "dep": [-1],
             "args": {k: planner.REFERENCE.sub(ref, v) for k, v in t["args"].items()}} for t in tasks]


# label -> (object, attribute, replacement) patches that switch one piece off
PIECES: dict[str, list[tuple[Any, str, Callable[..., Any]]]] = {
    "all of it": [],
    "no tidying at all": [(planner, "tidy_plan", lambda plan, *a, **k: plan)],
    "without asking the image": [(planner, "_ask_the_image", lambda tasks, request, specs: tasks)],
    "without running a repeated task once": [(planner, "_merge_duplicates", _renumber)],
    "without following transforms": [(planner, "_follow_transforms", lambda *a, **k: None)],
    "without following steps": [(planner, "_follow_steps", lambda *a, **k: None)],
    "without making what the request asks for": [(planner._Mender, "make", lambda self, kind: None)],
}


def replay(name: str, patches: list[tuple[Any, str, Callable[..., Any]]], data: Path) -> dict[str, Any]:
    """Scores of run ``name``'s stored replies through today's planner with ``patches`` applied."""
    records = {str(r["id"]): r for r in tb.load_records(data)}
    preds, meta = tb.load_partial(tb.RESULTS / f"{name}.predictions.jsonl", tb.RESULTS / f"{name}.meta.jsonl")
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    for obj, attr, value in patches:
        setattr(obj, attr, value)
    try:
        out: dict[str, Any] = {}
        for rid, info in meta.items():
            request, plan = records[rid]["user_request"], None
            for raw in info.get("raw", [])[:2]:
                try:
                    plan, _ = planner.accept_reply(raw, request, [], 8, tb.bench_specs())
                    break
                except planner.PlanError:
                    continue
            out[rid] = tb.to_taskbench(rid, [t.model_dump() for t in plan.tasks]) if plan else preds[rid]
            meta[rid] = {**info, "valid": plan is not None}
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)
    return tb.score([records[i] for i in out], out, meta)


def main(argv: Iterable[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["full-dev-positional", "full-dev-mend"])
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
    rows = []
    print(f"{'run':22} {'configuration':44} {'node F1':>8} {'edge F1':>8} {'exact':>7} {'valid':>7}")
    for run in args.runs:
        for label, patches in PIECES.items():
            m = replay(run, patches, Path(args.data))["all"]
            rows.append({"run": run, "configuration": label, **m})
            print(f"{run:22} {label:44} {m['node_f1']:8.2f} {m['edge_f1']:8.2f} {m['exact_match']:7.2f} "
                  f"{m['valid_rate']:7.2f}")
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
