"""Load on the HTTP server's API layer: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients,
and the process's memory after 10 and after 100 sequential requests.

The pipeline behind the server is the tests' fake one (FakeLLM planning a text-to-speech task, a fake
expert writing a WAV), so what is measured is HTTP, admission, the thread hand-off, file ids and JSON,
plus the pipeline's own bookkeeping; not model time.

    python -m bench.server_load [--requests 200] [--slots 4] [--out bench/results/server-load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def burst(url: str, clients: int, total: int, stream: bool) -> dict[str, float]:
    """``total`` chat requests from ``clients`` concurrent clients; rates, latencies and status counts."""
    import httpx

    latencies: list[float] = []
    codes: dict[int, int] = {}
    body = {"messages": [{"role": "user", "content": "say hello"}], "stream": stream}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            begin = time.perf_counter()
            reply = await http.post(url + "/v1/chat/completions", json=body)
            await reply.aread()
            latencies.append(time.perf_counter() - begin)
            codes[reply.status_code] = codes.get(reply.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"clients": clients, "requests": total, "stream": stream, "seconds": round(wall, 3),
            "requests_per_s": round(total / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
            "status": {str(k): v for k, v in sorted(codes.items())}}


def real_memory(total: int) -> dict[str, float]:
    """RSS after 10 and after ``total`` sequential requests whose plan runs Piper (the real expert)."""
    import httpx

    from localgpt.config import Settings
    from localgpt.pipeline import Pipeline
    from localgpt.server import create_app
    from localgpt.store.catalog import Catalog
    from localgpt.testing import FakeLLM, Served

    store = Path(os.environ.get("LOCALGPT_TEST_STORE", REPO / "model_store"))

    plan = json.dumps([{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "good morning"}}])

    def reply(messages: object, schema: object) -> str:
        return plan if schema is not None else "Done."

    def factory(settings: Settings) -> Pipeline:
        return Pipeline(settings, FakeLLM([reply] * (4 * total + 10)), Catalog(store))

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        served = Served(create_app(Settings(store=store, data_dir=Path(tmp), demo_similarity="words"), factory))
        try:
            served.wait_ready()
            with httpx.Client(base_url=served.url, timeout=120) as http:
                body = {"messages": [{"role": "user", "content": "Say 'good morning' aloud"}]}
                for n in range(1, total + 1):
                    reply_ = http.post("/v1/chat/completions", json=body)
                    assert reply_.status_code == 200 and reply_.json()["localgpt"]["files"], reply_.text
                    if n in (10, total):
                        out[f"rss_mb_after_{n}"] = round(rss_mb(), 1)
        finally:
            served.stop()
    print(f"real Piper memory: {out}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--slots", type=int, default=4, help="LOCALGPT_CONCURRENCY of the server")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "server-load.json"))
    parser.add_argument("--real-memory", type=int, default=0, metavar="N",
                        help="also: RSS after 10 and N sequential requests through the real Piper TTS expert "
                             "(a scripted plan; needs the test models)")
    args = parser.parse_args()

    import httpx

    from localgpt.testing import FakeWorld, serve

    with tempfile.TemporaryDirectory() as tmp:
        world = FakeWorld(Path(tmp))
        served = serve(world, concurrency=args.slots, queue_size=64)
        try:
            rows = []
            for clients in (1, 8, 32):
                for stream in (False, True):
                    row = asyncio.run(burst(served.url, clients, args.requests, stream))
                    rows.append(row)
                    print(f"{clients:3d} clients  stream={stream!s:5}  {row['requests_per_s']:7.1f} req/s  "
                          f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  {row['status']}")
            memory = {}
            with httpx.Client(base_url=served.url, timeout=60) as http:
                body = {"messages": [{"role": "user", "content": "say hello"}]}
                for n in range(1, 101):
                    assert http.post("/v1/chat/completions", json=body).status_code == 200
                    if n in (10, 100):
                        memory[f"rss_mb_after_{n}"] = round(rss_mb(), 1)
            print(f"memory: {memory}")
        finally:
            served.stop()
    if args.real_memory:
        memory["real_piper"] = real_memory(args.real_memory)
    result = {"what": "localgpt serve with the fake pipeline (FakeLLM + fake TTS expert), loopback, httpx clients",
              "server_concurrency": args.slots, "queue_size": 64, "rows": rows,
              "memory_sequential": memory | {"note": "one process: server, pipeline and client together"}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
