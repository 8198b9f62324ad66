#!/usr/bin/env python
"""Pipeline efficiency with the real shipped models.

    python -m bench.pipeline                       # default planner (Qwen2.5-Coder-1.5B)
    python -m bench.pipeline --planner smollm2-135m-instruct --quick

For a set of typical multi-task requests: LLM calls per request, seconds per stage (plan, select,
execute, respond), and localgpt's own overhead (wall time minus time inside the LLM and the
experts). Then one fixed plan of independent tasks run with 1 worker and with 4, as a ratio.
Prints a table and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from localgpt.config import Settings  # noqa: E402
from localgpt.errors import LocalGPTError  # noqa: E402
from localgpt.pipeline import Pipeline  # noqa: E402
from localgpt.planning.validate import validate_plan  # noqa: E402

REQUESTS = [
    "Say 'the quick brown fox' aloud, then transcribe the audio and tell me if the transcript matches",
    "Transcribe {wav} and summarize what is said.",
    "How similar in meaning are 'a cat sleeps on the sofa' and 'a kitten naps on the couch'? Read the answer aloud.",
    "Read 'good morning' aloud, and separately read 'good night' aloud.",
]

# Independent tasks on three different models: what parallel execution can overlap.
LONG_TEXT = ("Independent tasks in a plan start together as soon as their inputs are ready, so a request "
             "that both reads a paragraph aloud and transcribes a recording should take about as long as "
             "the slower of the two, not the sum of both, when the machine has cores to spare.")
PARALLEL_PLAN = [
    {"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": LONG_TEXT}},
    {"id": 1, "task": "automatic-speech-recognition", "dep": [-1], "args": {"audio": "{wav}"}},
    {"id": 2, "task": "sentence-similarity", "dep": [-1],
     "args": {"text": LONG_TEXT, "other_text": "parallel tasks finish in the time of the slowest"}},
]


def make_wav(pipe: Pipeline, folder: Path) -> Path:
    """A short speech recording made with the Piper voice, as a user file."""
    card = pipe.catalog.get("piper-en-us-joe-medium")
    from localgpt.runtime.runs import RunDir

    expert = pipe.pool.get(card)
    out = expert.run("text-to-speech", {"text": "Local models keep private data on this machine. Nothing is "
                                                "sent to a cloud service, and every file a task produces "
                                                "stays in the run folder."}, RunDir(folder))
    return Path(out.outputs["audio"])


def expert_seconds(result: Any) -> float:
    """Time spent inside dedicated experts (loading included); tasks the controller LLM served are
    already counted in the LLM's time."""
    return sum(r.seconds for r in result.results if r.model != "controller-llm")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--planner", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="first request only (smoke mode)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "pipeline.json"))
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-pipeline"), help="where produced files go")
    args = p.parse_args()

    workdir = Path(args.runs_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(planner=args.planner, threads=args.threads, runs_dir=workdir)
    pipe = Pipeline.from_settings(settings)
    wav = make_wav(pipe, workdir / "inputs")
    rows = []
    requests = REQUESTS[:1] if args.quick else REQUESTS
    for req in requests:
        request = req.format(wav=wav.name)
        llm_before = pipe.llm.stats.decode_seconds  # type: ignore[attr-defined]
        start = time.perf_counter()
        try:
            result = pipe.run(request, [wav] if "{wav}" in req else [])
        except LocalGPTError as exc:  # a small planner may fail to plan: record it, go on
            rows.append({"request": request, "error": str(exc), "wall_s": round(time.perf_counter() - start, 2)})
            print(f"failed: {exc}", file=sys.stderr)
            continue
        wall = time.perf_counter() - start
        llm_s = pipe.llm.stats.decode_seconds - llm_before  # type: ignore[attr-defined]
        exp_s = expert_seconds(result)
        rows.append({
            "request": request, "tasks": [t.task for t in result.plan.tasks],
            "status": [r.status for r in result.results], "llm_calls": result.llm_calls,
            **{f"{k}_s": round(v, 2) for k, v in result.timings.items()},
            "wall_s": round(wall, 2), "llm_s": round(llm_s, 2), "experts_s": round(exp_s, 2),
            "overhead_s": round(wall - llm_s - exp_s, 3),
        })
        print(f"{wall:6.1f}s  calls={result.llm_calls}  {' -> '.join(rows[-1]['tasks'])}", file=sys.stderr)

    # serial vs parallel on a fixed plan (no LLM in the loop but the responder, which is excluded)
    plan_doc = json.loads(json.dumps(PARALLEL_PLAN).replace("{wav}", str(wav)))
    plan = validate_plan(plan_doc, "", [str(wav)])
    from localgpt.runtime.executor import Executor
    from localgpt.runtime.runs import RunDir

    cards = {t.id: pipe.selector.select(t, "")[0] for t in plan.tasks}
    Executor(pipe.pool, max_workers=4).run(plan, cards, pipe.input_files([wav]), RunDir(workdir / "warm"))
    timing = {}
    for workers in (1, 4):
        ex = Executor(pipe.pool, max_workers=workers)
        runs = []
        for _ in range(3):  # the median of three
            start = time.perf_counter()
            res = ex.run(plan, cards, pipe.input_files([wav]), RunDir(workdir / f"w{workers}"))
            runs.append(time.perf_counter() - start)
            assert all(r.status == "done" for r in res), [r.error for r in res]
        timing[workers] = sorted(runs)[1]
    pipe.close()

    doc = {
        "benchmark": "pipeline",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "planner": args.planner,
        "threads": args.threads,
        "requests": rows,
        "parallel": {"tasks": len(PARALLEL_PLAN), "serial_s": round(timing[1], 3),
                     "parallel_s": round(timing[4], 3), "speedup": round(timing[1] / timing[4], 2)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    cols = ["llm_calls", "plan_s", "select_s", "execute_s", "respond_s", "wall_s", "overhead_s"]
    print(f"{'request':60}" + "".join(f"{c:>11}" for c in cols))
    for row in rows:
        print(f"{row['request'][:58]:60}" + "".join(f"{row.get(c, '-')!s:>11}" for c in cols))
    par = doc["parallel"]
    print(f"\nindependent tasks: serial {par['serial_s']} s, parallel {par['parallel_s']} s, "
          f"speedup x{par['speedup']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
