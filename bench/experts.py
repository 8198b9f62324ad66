#!/usr/bin/env python
"""Per-task latency of the shipped real expert models on this machine: cold load and warm run.

    python -m bench.experts                     # every shipped expert installed in the store
    python -m bench.experts --repeat 10 --threads 1
    python -m bench.experts --only spacy-en-core-web-sm fasttext-lid-176

Each model runs in a fresh Python process, so *cold load* is what a first request pays: importing
its runtime library (onnxruntime, spaCy, ctranslate2...) plus loading the weights. *first run* is
the first call after that, *warm run* the median of ``--repeat`` further calls on the same input.
Audio inputs are the WAV the Piper voice speaks first. Prints a table and writes
bench/results/experts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

SENTENCE = "The quick brown fox jumps over the lazy dog"
SPOKEN = "Local models answer requests without sending anything over the network."

# model id -> (task, inputs); "{wav}" and "{png}" are filled in with the prepared files.
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "piper-en-us-joe-medium": ("text-to-speech", {"text": SPOKEN}),
    "whisper-tiny-en": ("automatic-speech-recognition", {"audio": "{wav}"}),
    "all-minilm-l6-v2-int8": ("sentence-similarity", {"text": "a cat sleeps on the sofa",
                                                      "other_text": "a kitten naps on the couch"}),
    "spacy-en-core-web-sm": ("token-classification",
                             {"text": "Barack Obama met the engineers of Google in Paris last Tuesday."}),
    "fasttext-lid-176": ("text-classification",
                         {"text": "Le chat dort sur le canapé pendant que nous préparons le dîner."}),
    "rapidocr-pp-ocrv4": ("image-to-text", {"image": "{png}"}),
    "silero-vad": ("audio-classification", {"audio": "{wav}"}),
}


def measure(model_id: str, task: str, inputs: dict[str, str], store: Path, threads: int, repeat: int,
            keep: Path | None) -> dict[str, Any]:
    """Load one model and time it (runs inside the worker process)."""
    begin = time.perf_counter()
    from localgpt.config import Settings
    from localgpt.experts import expert_class
    from localgpt.experts.base import ExpertContext
    from localgpt.runtime.runs import RunDir
    from localgpt.store.catalog import Catalog

    settings = Settings(store=store, threads=threads, device="cpu")
    card = Catalog(store).get(model_id)
    expert = expert_class(card.backend)(card, ExpertContext(settings=settings))
    expert.load()
    cold = time.perf_counter() - begin
    with tempfile.TemporaryDirectory() as tmp:
        out = RunDir(Path(tmp))
        start = time.perf_counter()
        result = expert.run(task, inputs, out)
        first = time.perf_counter() - start
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            expert.run(task, inputs, out)
            times.append(time.perf_counter() - start)
        if keep is not None and "audio" in result.outputs:
            keep.write_bytes(Path(result.outputs["audio"]).read_bytes())
    shown = result.outputs.get("text") or Path(result.outputs.get("audio", "")).name
    return {"model": model_id, "task": task, "backend": card.backend, "size_bytes": card.size_bytes,
            "cold_load_s": round(cold, 4), "first_run_s": round(first, 6),
            "warm_run_s": round(statistics.median(times), 6) if times else None,
            "warm_min_s": round(min(times), 6) if times else None, "repeat": repeat,
            "output": shown[:80], "data": {k: v for k, v in (result.data or {}).items()
                                           if k in ("label", "score", "seconds", "runtime")}}


def run_worker(model_id: str, args: argparse.Namespace, files: dict[str, str], keep: Path | None) -> dict[str, Any]:
    """Measure ``model_id`` in a fresh Python process."""
    task, raw = CASES[model_id]
    inputs = {k: v.format(**files) for k, v in raw.items()}
    cmd = [sys.executable, "-m", "bench.experts", "--worker", model_id, "--store", str(args.store), "--threads",
           str(args.threads), "--repeat", str(args.repeat), "--inputs", json.dumps(inputs)]
    if keep is not None:
        cmd += ["--keep", str(keep)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"model": model_id, "task": task, "error": " | ".join(tail)}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def render_png(path: Path) -> Path:
    """The benchmark sentence drawn black on white."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=36)
    image = Image.new("RGB", (40 + 22 * len(SENTENCE), 100), "white")
    ImageDraw.Draw(image).text((20, 30), SENTENCE, fill="black", font=font)
    image.save(path)
    return path


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with more digits below one millisecond."""
    return f"{1000 * seconds:.3f} ms" if seconds < 0.001 else f"{1000 * seconds:.1f} ms"


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = ["| task | model | backend | cold load | first run | warm run (median) | output |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['model']} | | failed: {r['error'][:60]} | | | |")
            continue
        out = r["output"].replace("\n", " / ").replace("|", "/")
        lines.append(f"| {r['task']} | {r['model']} | {r['backend']} | {r['cold_load_s']:.2f} s | "
                     f"{ms(r['first_run_s'])} | {ms(r['warm_run_s'])} | {out[:50]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(os.environ.get("LOCALGPT_STORE", REPO / "model_store")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="warm runs per model (median reported)")
    parser.add_argument("--only", nargs="*", help="model ids to measure (default: all installed)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "experts.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        task, _ = CASES[args.worker]
        print(json.dumps(measure(args.worker, task, json.loads(args.inputs), args.store, args.threads, args.repeat,
                                 args.keep)))
        return 0

    wanted = args.only or list(CASES)
    unknown = [m for m in wanted if m not in CASES]
    if unknown:
        parser.error(f"no benchmark case for {unknown}; known: {', '.join(CASES)}")
    installed = [m for m in wanted if (args.store / m / "model.json").is_file()]
    skipped = [m for m in wanted if m not in installed]
    rows: list[dict[str, Any]] = []
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine slows every figure
    with tempfile.TemporaryDirectory() as tmp:
        files = {"wav": str(Path(tmp) / "speech.wav"), "png": str(render_png(Path(tmp) / "sentence.png"))}
        piper = "piper-en-us-joe-medium"
        if not (args.store / piper / "model.json").is_file():  # no voice, no speech to feed the audio models
            no_audio = [m for m in installed if "{wav}" in json.dumps(CASES[m][1])]
            skipped += no_audio
            installed = [m for m in installed if m not in no_audio]
        if piper not in installed and any("{wav}" in json.dumps(CASES[m][1]) for m in installed):
            run_worker(piper, args, files, Path(files["wav"]))  # only to make the WAV
        order = sorted(installed, key=lambda m: m != piper)  # Piper first: it makes the WAV
        for model_id in order:
            keep = Path(files["wav"]) if model_id == piper else None
            row = run_worker(model_id, args, files, keep)
            rows.append(row)
            print(f"{model_id}: " + (f"cold {row['cold_load_s']:.2f} s, warm {ms(row['warm_run_s'])}"
                                     if "error" not in row else f"failed: {row['error']}"), file=sys.stderr)
    print(table(rows))
    if skipped:
        print(f"\nnot installed (skipped): {', '.join(skipped)}")
    report = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_1m_before": load_before, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "threads": args.threads, "repeat": args.repeat, "device": "cpu", "results": rows, "skipped": skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
