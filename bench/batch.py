#!/usr/bin/env python
"""Batch throughput with the real shipped models: a fixed TTS → ASR plan per item, no planning, no answer.

    python -m bench.batch                      # 100 items; local threads (1, 2 workers) and Ray (1, 2 workers)
    python -m bench.batch --items 20           # shorter, for a busy machine
    python -m bench.batch --configs local-1,local-2

Each item reads a sentence aloud with Piper and transcribes it with Whisper tiny.en. For every
configuration: items per minute over the whole run (start-up included: building the pipeline,
loading the experts, starting Ray) and after the first result (steady state), and how many
transcripts match their sentence. Prints a table and writes bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from localgpt.batch.inputs import Item, read_items  # noqa: E402
from localgpt.batch.runner import run_batch  # noqa: E402
from localgpt.config import Settings  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Private recordings never leave this machine.",
    "Every result is written once and only once.",
    "A batch can be stopped and resumed at any time.",
    "Local models read the text aloud and write it down again.",
]
STORE_MODELS = ("piper-en-us-joe-medium", "whisper-tiny-en", "smollm2-135m-instruct")


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing a transcript with its sentence."""
    return re.findall(r"[a-z0-9']+", text.lower())


def make_input(path: Path, n: int) -> dict[str, str]:
    """``n`` items with a fixed TTS → ASR plan; returns id → the sentence spoken."""
    spoken: dict[str, str] = {}
    with path.open("w") as fh:
        for i in range(n):
            text = f"Item {i}. {SENTENCES[i % len(SENTENCES)]}"
            plan = [{"id": 0, "task": "text-to-speech", "args": {"text": text}},
                    {"id": 1, "task": "automatic-speech-recognition", "dep": [0], "args": {"audio": "<resource>-0"}}]
            fh.write(json.dumps({"id": f"item-{i:04d}", "request": f"Read '{text}' aloud and transcribe it",
                                 "plan": plan}) + "\n")
            spoken[f"item-{i:04d}"] = text
    return spoken


def first_line_time(path: Path, stop: threading.Event, found: list[float]) -> None:
    """Note when the first result line appears in ``path``."""
    while not stop.is_set():
        if path.exists() and b"\n" in path.read_bytes()[:1 << 16]:
            found.append(time.monotonic())
            return
        time.sleep(0.01)


def run_config(name: str, inp: Path, spoken: dict[str, str], settings: Settings, folder: Path) -> dict[str, Any]:
    """One configuration (``local-N`` or ``ray-N``) on a fresh output file."""
    kind, workers = name.split("-")
    out = folder / f"{name}.jsonl"
    stop, found = threading.Event(), []  # type: ignore[var-annotated]
    watcher = threading.Thread(target=first_line_time, args=(out, stop, found), daemon=True)
    watcher.start()
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    summary = run_batch(read_items(inp), out, settings, workers=int(workers), respond=False,
                        ray="local" if kind == "ray" else None)
    wall = time.monotonic() - start
    stop.set()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ok = sum(words(r["outputs"].get("1", {}).get("text", "")) == words(spoken[r["id"]])
             for r in records if r["status"] == "done")
    first = (found[0] - start) if found else wall
    steady = (len(records) - 1) / (wall - first) * 60 if len(records) > 1 and wall > first else 0.0
    task_seconds = [t["seconds"] for r in records for t in r["tasks"]]
    return {"config": name, "runner": kind, "workers": int(workers), "items": len(records),
            "done": summary.done, "failed": summary.failed + summary.partial, "wall_s": round(wall, 2),
            "first_result_s": round(first, 2), "items_per_min": round(len(records) / wall * 60, 1),
            "items_per_min_after_first": round(steady, 1), "transcripts_exact": ok,
            "mean_task_s": round(sum(task_seconds) / max(len(task_seconds), 1), 3),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100, help="items per configuration (default 100)")
    parser.add_argument("--configs", default="local-1,local-2,ray-1,ray-2",
                        help="comma-separated: local-N (threads) and ray-N (Ray actors)")
    parser.add_argument("--store", default=os.environ.get("LOCALGPT_STORE", str(REPO / "model_store")))
    parser.add_argument("--threads", type=int, default=None, help="threads per expert (default: free cores)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "batch.json"))
    args = parser.parse_args()

    store = Path(args.store)
    absent = [m for m in STORE_MODELS if not (store / m / "model.json").exists()]
    if absent:
        print(f"models not installed in {store}: {', '.join(absent)}; run: python download_models.py --profile test",
              file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="localgpt-batch-bench-") as tmp:
        folder = Path(tmp)
        overrides: dict[str, Any] = {"store": store.resolve(), "runs_dir": folder / "runs",
                                     "planner": "smollm2-135m-instruct"}  # named, never loaded: no planning
        if args.threads:
            overrides["threads"] = args.threads
        settings = Settings(**overrides)
        inp = folder / "in.jsonl"
        spoken = make_input(inp, args.items)
        assert all(isinstance(e, Item) and e.plan for e in read_items(inp))
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            print(f"running {name} on {args.items} items ...", file=sys.stderr, flush=True)
            rows.append(run_config(name, inp, spoken, settings, folder))
            print("  " + json.dumps(rows[-1]), file=sys.stderr, flush=True)

    print(f"\nFixed-plan batch (TTS → ASR, no planning, no answer), {args.items} items, "
          f"{os.cpu_count()} CPUs, threads per expert {settings.threads}")
    print("| config | workers | items/min (all) | items/min (after 1st) | first result s | wall s | "
          "mean task s | exact transcripts |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runner']} | {r['workers']} | {r['items_per_min']} | {r['items_per_min_after_first']} | "
              f"{r['first_result_s']} | {r['wall_s']} | {r['mean_task_s']} | {r['transcripts_exact']}/{r['items']} |")
    result = {"bench": "batch", "items": args.items, "plan": "text-to-speech -> automatic-speech-recognition",
              "models": ["piper-en-us-joe-medium", "whisper-tiny-en"], "threads": settings.threads,
              "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
