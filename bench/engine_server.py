"""Start llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) on a free port of
127.0.0.1, for the engine tests and bench/engine_throughput.py.

    with LlamaServer(Path("model_store/smollm2-135m-instruct/model.gguf"), threads=2) as server:
        print(server.url)  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from localgpt.testing import free_port


class LlamaServer:
    """``python -m llama_cpp.server`` serving one GGUF on 127.0.0.1 (a context manager; the process is ended
    on exit). ``alias`` is the model name clients send; the server's log goes to ``log`` (a file)."""

    def __init__(self, model: Path, *, threads: int = 2, n_ctx: int = 4096, alias: str = "smollm2",
                 log: Path | None = None, startup_s: float = 120.0, extra: tuple[str, ...] = ()) -> None:
        self.model = model
        self.threads = threads
        self.n_ctx = n_ctx
        self.alias = alias
        self.log_path = log
        self.startup_s = startup_s
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        import httpx

        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--n_ctx", str(self.n_ctx), "--seed", "0",
               "--verbose", "False", *self.extra]
        self._log = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 - closed in __exit__
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(cmd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        env=env)
        deadline = time.monotonic() + self.startup_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: {' '.join(cmd)}"
                                   + (f" (log: {self.log_path})" if self.log_path else ""))
            try:
                if httpx.get(self.url + "/models", timeout=2, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"llama_cpp.server did not answer within {self.startup_s:.0f} s")
            time.sleep(0.25)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
