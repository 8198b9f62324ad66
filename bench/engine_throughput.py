"""Plans per minute through ``localgpt serve`` at 1, 2 and 4 concurrent clients: the controller LLM in-process
(LlamaCppLLM) against the same GGUF behind an engine (by default llama-cpp-python's server, started here;
``--engine-url`` points at one already running, such as llama.cpp's ``llama-server --parallel 4``).

Each row runs a fresh ``localgpt serve`` app (uvicorn on 127.0.0.1, ``concurrency`` = the clients) and sends
``--per-row`` requests of test_llm_real's 50 varied requests to its plan-only route (``POST /tasks``) from N
clients at once, after one warm-up request. Demos are picked by word overlap (no embedding model in the loop).

    flock /tmp/llm.lock python -m bench.engine_throughput [--clients 1 2 4] [--per-row 8] \
        [--out bench/results/engine-throughput.json] [--engine-url http://127.0.0.1:8080/v1#MODEL]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def serve(settings: Any) -> tuple[Any, str]:
    """``localgpt serve``'s app for ``settings`` in a uvicorn thread on a free loopback port, once ready."""
    import httpx
    import uvicorn

    from localgpt.server import create_app
    from localgpt.testing import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=5, trust_env=False).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("localgpt serve did not become ready")
        time.sleep(0.2)


def row(settings: Any, clients: int, requests: list[tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
    """Plans per minute of ``requests`` sent by ``clients`` clients at once to a fresh server."""
    import httpx

    server, url = serve(settings.model_copy(update={"concurrency": clients, "queue_size": clients * 2}))
    try:
        def plan(item: tuple[str, tuple[str, ...]]) -> tuple[int, float]:
            request, files = item
            text = request + (" (files: " + ", ".join(files) + ")" if files else "")
            begin = time.perf_counter()
            reply = httpx.post(url + "/tasks", json={"messages": [{"role": "user", "content": text}]},
                               timeout=600, trust_env=False)
            return reply.status_code, time.perf_counter() - begin

        plan(("Read this aloud: warm up.", ()))  # the model loads and the system prompt is evaluated once
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            outcomes = list(pool.map(plan, requests))
        wall = time.perf_counter() - start
    finally:
        server.should_exit = True
        time.sleep(0.5)
    ok = sum(1 for code, _ in outcomes if code == 200)
    latencies = sorted(s for _, s in outcomes)
    return {"clients": clients, "requests": len(requests), "ok": ok, "seconds": round(wall, 1),
            "plans_per_min": round(ok / wall * 60, 2), "latency_p50_s": round(latencies[len(latencies) // 2], 1),
            "latency_max_s": round(latencies[-1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=str(REPO / "model_store"))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--per-row", type=int, default=8, help="requests timed in each row")
    parser.add_argument("--engine-url", help="an engine already running (else llama_cpp.server is started)")
    parser.add_argument("--only", choices=["in-process", "engine"], help="measure one side only")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "engine-throughput.json"))
    args = parser.parse_args()

    from bench.varied_requests import REQUESTS
    from localgpt.config import Settings

    store = Path(args.store)
    gguf = store / args.model / "model.gguf"
    tmp = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    base = Settings(store=store, runs_dir=tmp / "runs", data_dir=tmp / "data", threads=args.threads,
                    demo_similarity="words", planner=args.model)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with ExitStack() as stack:
        sides = [args.only] if args.only else ["in-process", "engine"]
        for side in sides:
            settings = base
            engine = "in-process LlamaCppLLM"
            if side == "engine":
                if args.engine_url:
                    url = args.engine_url
                    engine = f"engine at {url}"
                else:
                    from bench.engine_server import LlamaServer

                    server = stack.enter_context(LlamaServer(gguf, threads=args.threads, alias=args.model,
                                                             log=tmp / "engine.log"))
                    url = f"{server.url}#{args.model}"
                    engine = "llama-cpp-python server (one model, requests served one at a time)"
                settings = base.model_copy(update={"planner": url})
            for j, clients in enumerate(args.clients):  # the same requests for the same row on both sides
                picked = [REQUESTS[(j * args.per_row + i) % len(REQUESTS)] for i in range(args.per_row)]
                result = {"planner": side, "engine": engine, **row(settings, clients, picked)}
                print(json.dumps(result), flush=True)
                rows.append(result)
    summary = {"bench": "engine_throughput", "model": args.model, "threads": args.threads,
               "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
               "route": "POST /tasks (plan only) on localgpt serve, concurrency = clients",
               "total_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
