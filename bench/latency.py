"""Latency of a request, end to end: a cold process (prompt state on disk off, then on) and a warm server
reached through the CLI; plus the prompt's tokens by part and prompt evaluation under llama.cpp settings.

    python -m bench.latency                                   # every request, every mode
    python -m bench.latency --requests quick --modes cold-off,cold-on,server
    python -m bench.latency --modes eval                      # n_batch / n_ubatch / flash attention only
    python -m bench.latency --modes eval --eval-settings 512:512:0,512:512:1  # n_batch:n_ubatch:flash

Modes (all in one run, so the ratios compare like with like):

- ``cold-off``: a fresh ``python`` process per request runs the whole pipeline in-process
  (``localgpt run --local`` does the same), the prompt state on disk turned off;
- ``cold-on``: the same with the prompt state on disk (the folder primed once before, untimed), as every
  start after the first is;
- ``server``: ``localgpt serve`` started once (the seconds until ``/health`` is ok and until its planner is
  warm are reported), then, once it is warm, ``localgpt run`` in a fresh process per request, handed to the
  server, ``--server-rounds`` times over the list (round 1 is each request's first through the server, right
  after the warm-up); the time is the client's wall time;
- ``eval``: the planner's prompt for the Quick start request evaluated under several ``n_batch`` /
  ``n_ubatch`` / flash-attention settings (``--eval-settings``; a fresh process each), then a few tokens
  generated: prompt and decoding speed from llama.cpp's own counters.

The cold and server modes run under the settings' llama.cpp options (``LOCALGPT_FLASH_ATTN``,
``LOCALGPT_N_BATCH``, ``LOCALGPT_N_UBATCH``, or ``--flash-attn`` / ``--n-batch`` / ``--n-ubatch`` here).

Per request: plan, select, execute, respond and total seconds, time to the first answer token, the prompt's
tokens by part (system, demos, request) and the tokens evaluated and generated (cold modes). Writes
``bench/results/latency-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from localgpt.llm.prompt_state import DEFAULT_LIMIT_MB
from localgpt.testing import free_port

REPO = Path(__file__).resolve().parent.parent
QUICK = "Say 'the quick brown fox' aloud, then transcribe the audio and tell me if the transcript matches"
REQUESTS: dict[str, tuple[str, list[str]]] = {
    "quick": (QUICK, []),
    "one": ("Read this aloud: the meeting moved to Thursday.", []),
    "chain": ("Say 'good morning everyone, the train leaves at nine' aloud, transcribe the audio, then "
              "summarize the transcript in one sentence.", []),
    "multi": ("Transcribe first.wav and second.wav and tell me which one is longer.", ["first.wav", "second.wav"]),
}
EVAL_DECODE_TOKENS = 32  # tokens the eval mode generates after the prompt, for the decoding speed
EVAL_SETTINGS = "512:512:0,512:512:1,1024:512:1,1024:1024:1"  # n_batch:n_ubatch:flash attention (0/1)


def tone(path: Path, seconds: float, hz: float) -> None:
    """A mono 16 kHz sine-tone WAV (an input file of known length for the multi-file request)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 16000)))
                          for i in range(int(16000 * seconds)))
        out.writeframes(frames)


# --- the child: one cold process ---

def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one request in this (fresh) process and report what it cost."""
    start = time.perf_counter()
    from localgpt.config import Settings
    from localgpt.pipeline import Pipeline

    settings = Settings.load(**spec["settings"])
    pipe = Pipeline.from_settings(settings)
    llm: Any = pipe.llm
    try:
        loaded = time.perf_counter() - start
        msgs = pipe.planner.messages(spec["request"], [str(Path(f).resolve()) for f in spec["files"]])
        parts = {"system": llm.count_tokens(msgs[0]["content"]),
                 "demos": sum(llm.count_tokens(m["content"]) for m in msgs[1:-1]),
                 "request": llm.count_tokens(msgs[-1]["content"])}
        if spec.get("plan_only"):
            t = time.perf_counter()
            pipe.plan(spec["request"], spec["files"])
            return {"plan": time.perf_counter() - t, "prefix": llm.prefix_events}
        result = pipe.run(spec["request"], spec["files"])
        return {"load": loaded, "timings": result.timings, "tokens_by_part": parts,
                "prompt_tokens": llm.stats.prompt_tokens, "prompt_tokens_evaluated": llm.stats.prompt_tokens_evaluated,
                "generated_tokens": llm.stats.completion_tokens, "llm_calls": llm.stats.calls,
                "prefix": llm.prefix_events, "plan": [t.task for t in result.plan.tasks],
                "answer_chars": len(result.answer), "answer_budget": pipe.responder.answer_budget}
    finally:
        pipe.close()


def eval_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the planner's prompt once under the given llama.cpp settings (no state reused)."""
    from localgpt.llm.llamacpp import LlamaCppLLM
    from localgpt.planning.planner import Planner

    llm = LlamaCppLLM(spec["gguf"], n_threads=spec["threads"], prompt_cache_mb=0, prompt_state=None,
                      n_batch=spec["n_batch"], n_ubatch=spec["n_ubatch"], flash_attn=spec["flash_attn"])
    try:
        msgs = Planner(llm).messages(QUICK, [])
        llm.generate(msgs[:1] + [{"role": "user", "content": "Say OK."}], max_tokens=1)  # load, warm up
        start = time.perf_counter()
        llm.generate(msgs, max_tokens=EVAL_DECODE_TOKENS)  # unconstrained: the decoding speed alone
        seconds = time.perf_counter() - start
        import llama_cpp

        perf = llama_cpp.llama_perf_context(llm._llama._ctx.ctx)
        return {"seconds": seconds, "tokens": int(perf.n_p_eval), "prompt_seconds": perf.t_p_eval_ms / 1000,
                "generated": int(perf.n_eval), "decode_seconds": perf.t_eval_ms / 1000}
    finally:
        llm.close()


def spawn(mode: str, spec: dict[str, Any], env: dict[str, str], timeout: float) -> tuple[dict[str, Any], float]:
    """Run a child in a fresh process; its JSON and its wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, f"--{mode}", json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=spec.get("cwd"), timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


# --- the server mode ---



TIMINGS = re.compile(r"timings: (.*)\)")


def through_server(url: str, request: str, files: list[str], env: dict[str, str], cwd: Path,
                   timeout: float) -> dict[str, Any]:
    """``localgpt run`` handed to the server at ``url``: wall time, first answer text, the server's timings."""
    args = [sys.executable, "-m", "localgpt.cli", "run", request]
    for f in files:
        args += ["--file", f]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=env | {"LOCALGPT_SERVER": url})
    first: float | None = None
    assert proc.stdout is not None and proc.stderr is not None
    out = []
    while chunk := proc.stdout.read(1):
        out.append(chunk)
        if first is None and "Answer:\n" in "".join(out[-10:]):
            first = time.perf_counter() - start
    err = proc.stderr.read()
    proc.wait(timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or "Using the localgpt server" not in err:
        raise RuntimeError(f"run through the server failed: {err[-2000:]}")
    timings = {}
    if m := TIMINGS.search(err):
        for part in m.group(1).split(", "):
            name, value, _ = part.rsplit(" ", 2)
            timings[name] = float(value)
    return {"wall": wall, "client_first_answer": first, "timings": timings}


def start_server(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], str, float, float]:
    """``localgpt serve`` in a fresh process: the process, its address, and the seconds until ``/health`` is
    ok (requests accepted) and until its planner is warm."""
    import urllib.request

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "localgpt.cli", "serve", "--port", str(port),
                             "--data-dir", str(cwd / "data")], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(cwd / "server.log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 600
    accepting: float | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as reply:  # noqa: S310
                health = json.loads(reply.read())
            if health.get("status") == "ok" and accepting is None:
                accepting = time.perf_counter() - start
            if health.get("planner") == "failed":
                raise RuntimeError(f"the server's planner failed to warm: {health.get('planner_reason')}")
            if accepting is not None and health.get("planner", "ready") == "ready":
                return proc, url, accepting, time.perf_counter() - start
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {(cwd / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not become ready")


# --- the parent ---

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", default=",".join(REQUESTS), help="comma-separated: " + ", ".join(REQUESTS))
    parser.add_argument("--modes", default="cold-off,cold-on,server,eval")
    parser.add_argument("--store", default=os.environ.get("LOCALGPT_STORE", str(REPO / "model_store")))
    parser.add_argument("--planner", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--server-rounds", type=int, default=2, help="times the server mode runs the list")
    parser.add_argument("--eval-settings", default=EVAL_SETTINGS,
                        help=f"the eval mode's n_batch:n_ubatch:flash (0/1), comma-separated (default {EVAL_SETTINGS})")
    parser.add_argument("--flash-attn", choices=("0", "1"), help="cold and server modes: LOCALGPT_FLASH_ATTN")
    parser.add_argument("--n-batch", type=int, help="cold and server modes: LOCALGPT_N_BATCH")
    parser.add_argument("--n-ubatch", type=int, help="cold and server modes: LOCALGPT_N_UBATCH")
    parser.add_argument("--server-variants", default="",
                        help="server mode: ';'-separated variants, each comma-separated NAME=VALUE LOCALGPT_ settings "
                             "(e.g. 'LLM_MMAP=1,PROMPT_CACHE_MB=512;' is the old defaults, then today's), "
                             "each run as a server of its own; its memory after every request is recorded")
    parser.add_argument("--cold-variants", default="",
                        help="cold modes: ';'-separated variants as --server-variants takes them (each primes a "
                             "prompt-state folder of its own)")
    parser.add_argument("--cold-rounds", type=int, default=1,
                        help="times the cold-on mode runs the list (round 2 finds the states round 1 saved)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--eval-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.eval_child:
        print(json.dumps(eval_child(json.loads(args.eval_child))))
        return

    modes = args.modes.split(",")
    try:
        variants = server_variants(args.server_variants)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        cold_variants = server_variants(args.cold_variants)
    except ValueError as exc:
        parser.error(str(exc))
    if args.server_variants and "server" not in modes:
        parser.error("--server-variants needs the server mode (--modes ...,server)")
    names = args.requests.split(",")
    work = Path(tempfile.mkdtemp(prefix="latency-"))
    tone(work / "first.wav", 2.0, 440)
    tone(work / "second.wav", 3.5, 660)
    state_dir = work / "prompt-state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALGPT_")}
    env |= {"PYTHONPATH": str(REPO), "LOCALGPT_STORE": args.store, "LOCALGPT_PLANNER": args.planner,
            "LOCALGPT_THREADS": str(args.threads), "LOCALGPT_RUNS_DIR": str(work / "runs"),
            "LOCALGPT_PROMPT_CACHE_DIR": str(state_dir), "LOCALGPT_SERVER": "off"}
    settings = {"store": args.store, "planner": args.planner, "threads": args.threads, "runs_dir": str(work / "runs")}
    for option, name in (("flash_attn", "FLASH_ATTN"), ("n_batch", "N_BATCH"), ("n_ubatch", "N_UBATCH")):
        value = getattr(args, option)
        if value is not None:
            env[f"LOCALGPT_{name}"] = str(value)
            settings[option] = value
    from localgpt.config import Settings
    from localgpt.llm.prompt_state import llama_build

    llama = Settings.load(**settings)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "planner": args.planner,
                              "threads": args.threads, "flash_attn": llama.flash_attn, "n_batch": llama.n_batch,
                              "n_ubatch": llama.n_ubatch, "llama_build": llama_build()[1],
                              "requests": {n: REQUESTS[n][0] for n in names},
                              "runs": []}

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = Path(args.out) if args.out else REPO / "bench" / "results" / f"latency-{stamp}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every run, so a run stopped by a time limit keeps what it measured
        out_path.write_text(json.dumps(report, indent=1))

    def record(entry: dict[str, Any]) -> None:
        report["runs"].append(entry)
        save()
        t = entry.get("timings", {})
        label = entry["mode"] + (f"[{entry['variant']}]" if "variant" in entry else "") \
            + (f"#{entry['round']}" if "round" in entry else "")
        print(f"{label:9} {entry['request']:6} total {entry['wall']:6.1f} s  "
              + "  ".join(f"{k} {v:.1f}" for k, v in t.items()) + (f"  prefix {entry.get('prefix')}"
                                                                    if entry.get("prefix") else ""), flush=True)

    for mode in ("cold-off", "cold-on"):
        if mode not in modes:
            continue
        for label, extra in cold_variants:  # each variant with a prompt-state folder of its own
            folder = state_dir if label == cold_variants[0][0] else work / f"prompt-state-{mode}-{label}"
            mode_env = env | {"LOCALGPT_PROMPT_CACHE_DISK_MB": "0" if mode == "cold-off" else str(DEFAULT_LIMIT_MB),
                              "LOCALGPT_PROMPT_CACHE_DIR": str(folder)} | {f"LOCALGPT_{k}": v for k, v in extra.items()}
            if mode == "cold-on":  # prime the folder once, as the first start after an install does
                primed, wall = spawn("child", {"request": QUICK, "files": [], "settings": settings,
                                               "plan_only": True, "cwd": str(work)}, mode_env, args.timeout)
                report.setdefault("primed_variants", {})[label] = {"wall": wall, **primed}
                if label == cold_variants[0][0]:
                    report["primed"] = {"wall": wall, **primed}
            for turn in range(1, (args.cold_rounds if mode == "cold-on" else 1) + 1):
                for name in names:
                    request, files = REQUESTS[name]
                    out, wall = spawn("child", {"request": request, "files": files, "settings": settings,
                                                "cwd": str(work)}, mode_env, args.timeout)
                    row: dict[str, Any] = {"mode": mode, "request": name, "wall": wall, **out}
                    if len(cold_variants) > 1:
                        row["variant"] = label
                    if args.cold_rounds > 1 and mode == "cold-on":
                        row["round"] = turn
                    record(row)

    if "server" in modes:
        report["server"] = {}
        for i, (label, extra) in enumerate(variants):  # a server of its own each, one after the other
            folder = work / f"prompt-state-server-{i}"  # each starts from what the cold modes left, no more
            if state_dir.is_dir():
                shutil.copytree(state_dir, folder)
            server_env = env | {"LOCALGPT_PROMPT_CACHE_DISK_MB": str(DEFAULT_LIMIT_MB),
                                "LOCALGPT_PROMPT_CACHE_DIR": str(folder)} \
                | {f"LOCALGPT_{k}": v for k, v in extra.items()}
            server, url, load, warm = start_server(server_env, work)
            print(f"server [{label}] accepting after {load:.1f} s, planner warm after {warm:.1f} s", flush=True)
            after: list[dict[str, float]] = []  # the server's memory after each request
            entry: dict[str, Any] = {"load_seconds": load, "warm_seconds": warm,
                                     "memory_warm_mb": memory_mb(server.pid), "memory_mb": after}
            report["server"][label] = entry
            try:
                for turn in range(1, args.server_rounds + 1):
                    for name in names:
                        request, files = REQUESTS[name]
                        record({"mode": "server", "variant": label, "round": turn, "request": name,
                                **through_server(url, request, files, env, work, args.timeout)})
                        after.append(memory_mb(server.pid))
                print(f"server [{label}] memory, MB: warm " + json.dumps(entry["memory_warm_mb"])
                      + ", after each request: rss " + ", ".join(str(m.get("rss")) for m in after)
                      + ("; last " + json.dumps(after[-1]) if after else ""), flush=True)
            finally:
                server.terminate()
                server.wait(30)
            save()

    if "eval" in modes:
        gguf = str(Path(args.store) / args.planner / "model.gguf")
        report["eval"] = []
        for item in args.eval_settings.split(","):
            n_batch, n_ubatch, flash = (int(x) for x in item.split(":"))
            out, _ = spawn("eval-child", {"gguf": gguf, "threads": args.threads, "n_batch": n_batch,
                                          "n_ubatch": n_ubatch, "flash_attn": bool(flash)}, env, args.timeout)
            row = {"n_batch": n_batch, "n_ubatch": n_ubatch, "flash_attn": bool(flash), **out,
                   "tokens_per_s": out["tokens"] / out["prompt_seconds"],
                   "decode_tokens_per_s": out["generated"] / max(out["decode_seconds"], 1e-9)}
            report["eval"].append(row)
            save()
            print(f"eval n_batch {n_batch:5} n_ubatch {n_ubatch:5} flash {bool(flash)!s:5}: {row['tokens']} tokens "
                  f"in {row['prompt_seconds']:.2f} s ({row['tokens_per_s']:.0f} tok/s), {row['generated']} "
                  f"generated at {row['decode_tokens_per_s']:.1f} tok/s", flush=True)

    save()
    print(f"wrote {out_path}")


def server_variants(text: str) -> list[tuple[str, dict[str, str]]]:
    """``--server-variants``: ``;``-separated variants, each comma-separated ``NAME=VALUE`` settings named as
    their ``LOCALGPT_`` variable without the prefix (an empty variant: the defaults), as (label, settings).
    A name that is no setting, an item without ``=`` or a variant given twice is an error."""
    from localgpt.config import Settings

    out: list[tuple[str, dict[str, str]]] = []
    for variant in (text.split(";") if text else [""]):
        extra: dict[str, str] = {}
        for item in (part.strip() for part in variant.split(",")):
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip().upper()
            if not sep or not name:
                raise ValueError(f"server variant item {item!r}: write NAME=VALUE")
            if name.lower() not in Settings.model_fields:
                raise ValueError(f"server variant item {item!r}: LOCALGPT_{name} is no setting")
            extra[name] = value.strip()
        label = ",".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
        if label in (seen for seen, _ in out):
            raise ValueError(f"server variant {label!r} given twice")
        out.append((label, extra))
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process by kind, MB (Linux): ``rss`` in all, ``anon`` (the process's own heap:
    llama.cpp's context and prompt states, the experts' tensors), ``file`` (pages of mapped files, the GGUF
    among them: shared with the page cache, dropped under pressure and read back) and ``shmem``."""
    keys = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            head = line.split(maxsplit=1)[0] if line else ""
            if head in keys:
                out[keys[head]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


if __name__ == "__main__":
    main()
