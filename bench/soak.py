"""Soak: many requests through a real ``localgpt serve`` (real planner LLM and experts), 4 steady clients
plus bursts of 32, to see that it holds: no invalid plan, no 5xx, 429s only in bursts, latency, and that
memory and the data folder level off.

    flock /tmp/llm.lock python -m bench.soak --requests 1000 [--planner smollm2-135m-instruct]
        [--store model_store] [--burst-every 100] [--out bench/results/soak-1000.json]

The server runs as a subprocess (``python -m localgpt.cli serve``) on a free loopback port with its own
data folder; an image and a recording are uploaded first and the requests (a mix of task types, in the
``REQUESTS`` table) use them. Every reply's plan is validated again client-side (``validate_plan``): a
plan that fails is an *invalid plan*; a 422 ``plan_error`` is counted apart (the planner said it could not
plan). Every ``--sample-every`` requests the server's resident memory and the data folder's file count and
size are sampled. Not run in CI (minutes of model time).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from localgpt.testing import free_port

REPO = Path(__file__).resolve().parent.parent
KEY = "soak-key"

# (route, request text, files to attach: "image" / "audio"); {image} and {audio} are replaced by upload ids
REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("/v1/chat/completions", "Say 'the quick brown fox' aloud", ()),
    ("/v1/chat/completions", "Transcribe the recording {audio}", ("audio",)),
    ("/v1/chat/completions", "Describe the picture {image}", ("image",)),
    ("/tasks", "Translate 'good morning, how are you' into French", ()),
    ("/tasks", "Summarize this: the meeting moved to Tuesday because the room was booked twice.", ()),
    ("/v1/chat/completions", "Read 'hello world' aloud, then transcribe the audio", ()),
    ("/tasks", "Detect the objects in {image} and read any text in it", ("image",)),
    ("/tasks", "Is this review positive? 'The film was wonderful and the acting superb.'", ()),
    ("/v1/chat/completions", "Sag 'Guten Morgen' laut", ()),
    ("/tasks", "把这句话翻译成英语：今天天气很好", ()),
]




def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def folder_usage(folder: Path) -> tuple[int, int]:
    """Files and bytes under ``folder``."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A short 440 Hz tone as a 16-bit mono WAV."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        value = int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        frames += value.to_bytes(2, "little", signed=True)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Soak:
    """The counters of one soak run."""

    def __init__(self, pid: int, data: Path, total: int, sample_every: int) -> None:
        self.pid = pid
        self.data = data
        self.total = total
        self.sample_every = sample_every
        self.sent = 0
        self.done = 0
        self.codes: dict[int, int] = {}
        self.latencies: list[float] = []
        self.invalid_plans: list[dict[str, Any]] = []
        self.plan_errors = 0
        self.errors: list[str] = []
        self.samples: list[dict[str, Any]] = []
        self.burst_429 = 0
        self.steady_429 = 0

    def take(self) -> int | None:
        """The next request's number, or None when all are sent."""
        if self.sent >= self.total:
            return None
        self.sent += 1
        return self.sent - 1

    def sample(self) -> None:
        files, size = folder_usage(self.data)
        self.samples.append({"requests": self.done, "rss_mb": round(rss_mb(self.pid), 1), "data_files": files,
                             "data_mb": round(size / 1e6, 2), "time": round(time.time(), 1)})
        print(f"  {self.done:5d} requests: rss {self.samples[-1]['rss_mb']} MB, data {files} files "
              f"{size / 1e6:.1f} MB, codes {dict(sorted(self.codes.items()))}", file=sys.stderr, flush=True)


async def one(http: Any, url: str, soak: Soak, n: int, uploads: dict[str, str], burst: bool) -> None:
    from localgpt.errors import PlanError
    from localgpt.planning.validate import validate_plan

    route, text, kinds = REQUESTS[n % len(REQUESTS)]
    text = text.format(**uploads)
    body = {"model": "localgpt", "messages": [{"role": "user", "content": text}],
            "files": [uploads[k] for k in kinds]}
    begin = time.perf_counter()
    try:
        reply = await http.post(url + route, json=body)
    except Exception as exc:  # a dropped connection counts as a failure of the server
        soak.errors.append(f"{route}: {type(exc).__name__}: {exc}")
        soak.codes[0] = soak.codes.get(0, 0) + 1
        return
    elapsed = time.perf_counter() - begin
    soak.codes[reply.status_code] = soak.codes.get(reply.status_code, 0) + 1
    soak.done += 1
    if reply.status_code == 429:
        if burst:
            soak.burst_429 += 1
        else:
            soak.steady_429 += 1
    elif reply.status_code == 200:
        soak.latencies.append(elapsed)
        data = reply.json()
        tasks = data if route == "/tasks" else data["localgpt"]["plan"]
        try:
            validate_plan([{k: v for k, v in t.items() if k in ("id", "task", "dep", "args")} for t in tasks],
                          text, [])
        except PlanError as exc:
            soak.invalid_plans.append({"request": text, "plan": tasks, "error": exc.message})
    elif reply.status_code == 422 and reply.json().get("error", {}).get("type") == "plan_error":
        soak.plan_errors += 1
    elif reply.status_code >= 500:
        soak.errors.append(f"{route} {reply.status_code}: {reply.text[:300]}")
    if soak.done % soak.sample_every == 0:
        soak.sample()


async def drive(url: str, soak: Soak, uploads: dict[str, str], clients: int, burst_size: int,
                burst_every: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=clients + burst_size)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as http:
        next_burst = burst_every

        async def steady() -> None:
            nonlocal next_burst
            while (n := soak.take()) is not None:
                if burst_every and n >= next_burst:
                    next_burst += burst_every
                    numbers = [n] + [m for m in (soak.take() for _ in range(burst_size - 1)) if m is not None]
                    await asyncio.gather(*(one(http, url, soak, m, uploads, True) for m in numbers))
                    continue
                await one(http, url, soak, n, uploads, False)

        await asyncio.gather(*(steady() for _ in range(clients)))


def start_server(args: argparse.Namespace, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"LOCALGPT_PLANNER": args.planner, "LOCALGPT_STORE": str(Path(args.store).resolve()),
                        "LOCALGPT_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "localgpt.cli", "serve", "--port", str(port), "--data-dir",
                             str(data)], cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--burst-every", type=int, default=100, help="a burst after this many requests (0: none)")
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--planner", default="smollm2-135m-instruct")
    parser.add_argument("--store", default=str(REPO / "model_store"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import httpx

    from localgpt.testing import png_bytes

    work = Path(tempfile.mkdtemp(prefix="localgpt-soak-"))
    data, log = work / "data", work / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, data, port, log)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                print(log.read_text(), file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready in 300 s")
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {KEY}"}
        uploads = {}
        for kind, (name, content) in {"image": ("photo.png", png_bytes("soak")),
                                      "audio": ("tone.wav", tone_wav())}.items():
            reply = httpx.post(url + "/v1/files", files={"file": (name, content)}, headers=headers)
            reply.raise_for_status()
            uploads[kind] = reply.json()["id"]
        # the outsider's finding (issue 28): a 200,000-character message must be a 413, the server unharmed
        long_reply = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=300,
                                json={"messages": [{"role": "user", "content": "paint " * 33_334}]})
        long_request = {"status": long_reply.status_code, "error": long_reply.json().get("error")}
        print(f"200,000-character message: {long_request}", file=sys.stderr, flush=True)
        soak = Soak(proc.pid, data, args.requests, args.sample_every)
        soak.sample()
        start = time.perf_counter()
        asyncio.run(drive(url, soak, uploads, args.clients, args.burst, args.burst_every))
        wall = time.perf_counter() - start
        if soak.samples[-1]["requests"] != soak.done:
            soak.sample()
        healthy = httpx.get(url + "/health").json()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    fives = sum(c for code, c in soak.codes.items() if code >= 500 or code == 0)
    result = {
        "requests": args.requests, "clients": args.clients, "burst": args.burst, "burst_every": args.burst_every,
        "planner": args.planner, "wall_s": round(wall, 1), "codes": dict(sorted(soak.codes.items())),
        "invalid_plans": len(soak.invalid_plans), "plan_errors_422": soak.plan_errors, "server_errors": fives,
        "429_in_bursts": soak.burst_429, "429_steady": soak.steady_429,
        "p50_s": round(statistics.median(soak.latencies), 3) if soak.latencies else None,
        "p99_s": round(percentile(soak.latencies, 0.99), 3), "samples": soak.samples,
        "health_after": healthy, "long_request": long_request, "invalid_plan_examples": soak.invalid_plans[:5],
        "errors": soak.errors[:10],
        "server_log_tail": log.read_text()[-3000:],
    }
    out = Path(args.out or REPO / "bench" / "results" / f"soak-{args.requests}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    table = {k: result[k] for k in ("requests", "wall_s", "codes", "invalid_plans", "plan_errors_422",
                                    "server_errors", "429_in_bursts", "429_steady", "p50_s", "p99_s")}
    print(json.dumps(table, indent=1))
    print(f"memory / data folder every {args.sample_every} requests:")
    for s in soak.samples:
        print(f"  {s['requests']:5d}  rss {s['rss_mb']:7.1f} MB  data {s['data_files']:5d} files "
              f"{s['data_mb']:8.2f} MB")
    print(f"written: {out}")
    return 0 if fives == 0 and not soak.invalid_plans else 2


if __name__ == "__main__":
    sys.exit(main())
