#!/usr/bin/env python
"""What the JSON-schema constraint costs, and what it buys, for the planner LLMs.

    python -m bench.constrained                                  # both shipped planners
    python -m bench.constrained --model model_store/smollm2-135m-instruct/model.gguf --n 3

For each model:
  * constraint build time for the production plan schema, per backend (llguidance, outlines_core):
    cold (first ``llm.constraint(schema)`` in a fresh process), warm (the cached second call), a second
    schema in the same process, and for llguidance the matcher each generation builds at its first token.
    Each backend runs in its own subprocess under ``--compile-timeout`` seconds ("> N s" when it runs out).
  * decoding the same planner prompts with the constraint (llguidance, as localgpt runs) and without it
    (``schema=None``, same ``max_tokens``): prompt tokens and prompt-eval time, completion tokens and
    generation time (wall time minus prompt eval, so sampling and the constraint's own work count),
    tokens/s and the constrained/unconstrained ratio, from one run.
  * plan validity with and without the constraint: ``json.loads`` then ``jsonschema`` against the schema
    (and, without the constraint, also after stripping Markdown code fences).
Prints tables and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from localgpt.llm.llamacpp import LlamaCppLLM  # noqa: E402
from localgpt.planning.planner import Planner  # noqa: E402

DEFAULT_MODELS = [
    REPO / "model_store" / "qwen2.5-coder-1.5b-instruct" / "model.gguf",
    REPO / "model_store" / "smollm2-135m-instruct" / "model.gguf",
]
BACKENDS = ("llguidance", "outlines_core")
PROMPTS: list[tuple[str, list[str]]] = [
    ("Describe photo.jpg and then read the description out loud.", ["photo.jpg"]),
    ("Transcribe talk.wav and give me a two-sentence summary.", ["talk.wav"]),
    ("Translate 'the library opens at nine' into Italian and say it aloud.", []),
    ("Find the objects in street.png and tell me how many cars there are.", ["street.png"]),
    ("Draw a fox in the snow, then describe the picture you made.", []),
    ("What is said in clip.mp4? Answer in French.", ["clip.mp4"]),
    ("How similar are 'I love rainy days' and 'rain makes me happy'?", []),
    ("Write a limerick about a cat and read it to me.", []),
]
# A second, unrelated schema (the selector's kind): what a new schema costs once the process is warm.
SECOND_SCHEMA = {
    "type": "object",
    "properties": {"id": {"enum": ["whisper-tiny-en", "whisper-base-en"]}, "reason": {"type": "string",
                                                                                     "maxLength": 160}},
    "required": ["id", "reason"],
    "additionalProperties": False,
}

warnings.filterwarnings("ignore", message="llama_token_get_attr is deprecated")


# --- constraint build, one backend in a fresh process ---


def compile_child(model: str, backend: str, threads: int) -> dict[str, Any]:
    """Runs in the subprocess: load the model, then time the constraint builds."""
    import importlib

    for name in ("outlines", "outlines.backends", "llguidance", "llguidance.llamacpp", "outlines_core"):
        importlib.import_module(name)  # imports are not the constraint's cost
    llm = LlamaCppLLM(model, n_threads=threads, backend=backend)
    start = time.perf_counter()
    llm.count_tokens("load")
    load_s = time.perf_counter() - start
    schema = Planner(llm).schema
    start = time.perf_counter()
    gen = llm.constraint(schema)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    again = llm.constraint(schema)
    warm_s = time.perf_counter() - start
    assert again is gen
    start = time.perf_counter()
    llm.constraint(SECOND_SCHEMA)
    second_s = time.perf_counter() - start
    out: dict[str, Any] = {"load_s": load_s, "cold_s": cold_s, "warm_s": warm_s, "second_schema_s": second_s}
    proc = getattr(gen.logits_processor, "inner", gen.logits_processor)  # unwrap localgpt's CheckedProcessor
    if backend == "llguidance":  # llguidance compiles lazily: each generation builds a matcher first
        from llguidance import LLMatcher

        times = []
        for _ in range(3):
            start = time.perf_counter()
            matcher = LLMatcher(proc.llg_tokenizer, proc.grammar)
            times.append(time.perf_counter() - start)
            assert not matcher.get_error(), matcher.get_error()
        out["per_generation_matcher_s"] = statistics.median(times)
    return out


def measure_compile(model: Path, backend: str, threads: int, timeout: float, memory_gb: float) -> dict[str, Any]:
    """Constraint build times for one backend, in a subprocess limited in time and address space.

    The memory cap keeps a runaway build (outlines_core on a large vocabulary) from exhausting the
    machine: it then fails inside the child instead of calling in the kernel's OOM killer.
    """
    import resource

    limit = int(memory_gb * (1 << 30))

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "bench.constrained", "--compile-child", str(model), backend, "--threads", str(threads)]
    result: dict[str, Any] = {"backend": backend, "timeout_s": timeout, "memory_cap_gb": memory_gb}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO, preexec_fn=cap)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.1)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        result.update(process_wall_s=time.perf_counter() - start, peak_rss_mb=usage.ru_maxrss / 1024)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        result["cold"] = f"> {timeout:.0f} s"
        return result
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if code != 0 or not lines:
        tail = " | ".join(ln for ln in stderr.strip().splitlines()[-3:] if "Deprecat" not in ln)
        result["error"] = f"exit status {code}" + (f": {tail}" if tail else "")
        result["cold"] = f"failed after {result['process_wall_s']:.0f} s ({result['error'][:80]})"
        return result
    result.update(json.loads(lines[-1]))
    return result


# --- decoding with and without the constraint ---


def strip_fences(text: str) -> str:
    """The text inside the first Markdown code fence, or the text itself."""
    found = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    return found.group(1) if found else text


def validity(text: str, schema: dict[str, Any]) -> tuple[bool, bool]:
    """Whether ``text`` is a schema-valid plan as is, and after stripping code fences."""
    import jsonschema

    def ok(candidate: str) -> bool:
        try:
            jsonschema.validate(json.loads(candidate), schema)
        except (json.JSONDecodeError, jsonschema.ValidationError):
            return False
        return True

    strict = ok(text)
    return strict, strict or ok(strip_fences(text).strip())


def timed_generate(llm: LlamaCppLLM, messages: list[dict[str, str]], schema: dict[str, Any] | None,
                   max_tokens: int) -> dict[str, Any]:
    """One generation with llama.cpp's own prompt-eval and decode timers."""
    import llama_cpp

    llm.constraint(schema)  # built beforehand: the build is measured separately
    ctx = llm._llama._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    start = time.perf_counter()
    text = llm.generate(messages, schema=schema, max_tokens=max_tokens)
    wall = time.perf_counter() - start
    perf = llama_cpp.llama_perf_context(ctx)
    prompt_s = perf.t_p_eval_ms / 1000
    return {
        "text": text,
        "wall_s": wall,
        "prompt_tokens": perf.n_p_eval,
        "prompt_eval_s": prompt_s,
        "completion_tokens": llm.count_tokens(text),
        "decoded_tokens": perf.n_eval,
        "model_decode_s": perf.t_eval_ms / 1000,  # llama_decode only
        "generation_s": wall - prompt_s,  # decode + sampling + constraint + Python
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and rates over the prompts of one mode."""
    prompt_tokens = sum(r["prompt_tokens"] for r in runs)
    prompt_s = sum(r["prompt_eval_s"] for r in runs)
    completion = sum(r["completion_tokens"] for r in runs)
    gen_s = sum(r["generation_s"] for r in runs)
    model_s = sum(r["model_decode_s"] for r in runs)
    decoded = sum(r["decoded_tokens"] for r in runs)
    return {
        "prompts": len(runs),
        "prompt_tokens_mean": prompt_tokens / len(runs),
        "prompt_eval_s_mean": prompt_s / len(runs),
        "prompt_tok_s": prompt_tokens / prompt_s if prompt_s else None,
        "completion_tokens_mean": completion / len(runs),
        "generation_s_mean": gen_s / len(runs),
        "generation_tok_s": completion / gen_s if gen_s else None,
        "model_decode_tok_s": decoded / model_s if model_s else None,
        "overhead_ms_per_token": 1000 * (gen_s - model_s) / decoded if decoded else None,
        "wall_s_total": sum(r["wall_s"] for r in runs),
        "valid": sum(r["valid"] for r in runs),
        "valid_after_fence_strip": sum(r["valid_lenient"] for r in runs),
    }


def measure_decode(model: Path, n: int, threads: int) -> dict[str, Any]:
    """Constrained and unconstrained generation of the same planner prompts."""
    llm = LlamaCppLLM(model, n_threads=threads, prompt_cache_mb=0)  # each prompt evaluated in full
    planner = Planner(llm)
    schema, max_tokens = planner.schema, planner.max_tokens()
    llm.generate([{"role": "user", "content": "hi"}], schema=schema, max_tokens=2)  # warm up both paths
    llm.generate([{"role": "user", "content": "hi"}], max_tokens=2)
    runs: dict[str, list[dict[str, Any]]] = {"constrained": [], "unconstrained": []}
    for i, (request, files) in enumerate(PROMPTS[:n]):
        messages = planner.messages(request, files)
        order = ("constrained", "unconstrained") if i % 2 == 0 else ("unconstrained", "constrained")
        for mode in order:
            run = timed_generate(llm, messages, schema if mode == "constrained" else None, max_tokens)
            run["valid"], run["valid_lenient"] = validity(run["text"], schema)
            run["request"] = request
            runs[mode].append(run)
            print(f"    {mode:13} {run['prompt_tokens']:5d} prompt tok {run['prompt_eval_s']:6.1f} s | "
                  f"{run['completion_tokens']:4d} tok {run['generation_s']:6.1f} s | valid {run['valid']}",
                  flush=True)
    llm.close()
    c, u = summarise(runs["constrained"]), summarise(runs["unconstrained"])
    ratio = (c["generation_tok_s"] / u["generation_tok_s"]
             if c["generation_tok_s"] and u["generation_tok_s"] else None)
    return {"max_tokens": max_tokens, "constrained": c, "unconstrained": u, "tok_s_ratio": ratio,
            "runs": runs}


# --- report ---


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_tables(models: dict[str, Any]) -> None:
    print("\nConstraint build for the plan schema (fresh process per backend)")
    print(f"{'model':30} {'backend':14} {'load s':>7} {'cold s':>9} {'warm ms':>8} {'2nd schema s':>12} "
          f"{'matcher/gen ms':>14} {'peak RSS MB':>11}")
    for name, m in models.items():
        for c in m.get("compile", []):
            if "cold_s" in c:
                matcher = c.get("per_generation_matcher_s")
                print(f"{name:30} {c['backend']:14} {c['load_s']:7.2f} {c['cold_s']:9.3f} "
                      f"{1000 * c['warm_s']:8.3f} {c['second_schema_s']:12.3f} "
                      f"{fmt(None if matcher is None else 1000 * matcher, '.1f'):>14} {c['peak_rss_mb']:11.0f}")
            else:
                print(f"{name:30} {c['backend']:14} {'':7} {c.get('cold', '?')}  (peak RSS {c['peak_rss_mb']:.0f} MB)")
    print("\nDecoding the planner prompts (means per prompt; llguidance constraint vs none)")
    print(f"{'model':30} {'mode':13} {'prompt tok':>10} {'p-eval s':>8} {'p tok/s':>8} {'out tok':>7} "
          f"{'gen s':>7} {'gen tok/s':>9} {'ms/tok extra':>12} {'valid':>6} {'fenced':>6}")
    for name, m in models.items():
        d = m.get("decode")
        if not d:
            continue
        for mode in ("constrained", "unconstrained"):
            s = d[mode]
            print(f"{name:30} {mode:13} {s['prompt_tokens_mean']:10.0f} {s['prompt_eval_s_mean']:8.2f} "
                  f"{fmt(s['prompt_tok_s'], '.0f'):>8} {s['completion_tokens_mean']:7.0f} "
                  f"{s['generation_s_mean']:7.2f} {fmt(s['generation_tok_s'], '.1f'):>9} "
                  f"{fmt(s['overhead_ms_per_token'], '.1f'):>12} {s['valid']:>3}/{s['prompts']:<2} "
                  f"{s['valid_after_fence_strip']:>3}/{s['prompts']:<2}")
        print(f"{name:30} constrained/unconstrained generation tok/s = {fmt(d['tok_s_ratio'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=Path, help="GGUF file (repeatable; default both planners)")
    parser.add_argument("--n", type=int, default=5, help=f"planner prompts to decode (at most {len(PROMPTS)})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="constraint backends to time")
    parser.add_argument("--compile-timeout", type=float, default=300, help="seconds per backend build")
    parser.add_argument("--compile-memory-gb", type=float, default=8, help="address-space cap per backend build")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "constrained.json")
    parser.add_argument("--compile-child", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.compile_child:
        print(json.dumps(compile_child(args.compile_child[0], args.compile_child[1], args.threads)), flush=True)
        return 0

    models = args.model or [m for m in DEFAULT_MODELS if m.is_file()]
    if not models:
        parser.error("no model: pass --model PATH.gguf or install the planners (download_models.py)")
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
        "threads": args.threads,
        "n": args.n,
        "models": {},
    }
    for model in models:
        name = model.parent.name if model.name == "model.gguf" else model.stem
        entry: dict[str, Any] = {"path": str(model)}
        report["models"][name] = entry
        if not args.skip_compile:
            entry["compile"] = []
            for backend in args.backend or BACKENDS:
                print(f"{name}: building the constraint with {backend} ...", flush=True)
                entry["compile"].append(measure_compile(model, backend, args.threads, args.compile_timeout,
                                                      args.compile_memory_gb))
                print(f"    {json.dumps(entry['compile'][-1])}", flush=True)
        if not args.skip_decode:
            print(f"{name}: decoding {args.n} planner prompts with and without the constraint ...", flush=True)
            entry["decode"] = measure_decode(model, args.n, args.threads)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_tables(report["models"])
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
