"""Settings, read from arguments and ``LOCALGPT_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from localgpt.errors import ConfigError

MAX_TASKS_LIMIT = 32  # the most tasks any plan may have (the ceiling of the max_tasks setting)
DEFAULT_MAX_TASKS = 8  # the max_tasks setting's default: the most tasks the planner's schema admits
# llama.cpp's prompt evaluation settings, chosen by bench/latency.py's eval mode (bench/README.md)
FLASH_ATTN_DEFAULT = False  # on: Qwen prompt 0.84x, but SmolLM2 replies changed (docs/latency.md)
N_BATCH_DEFAULT = 512
N_UBATCH_DEFAULT = 512
FAST_FORWARD_DEFAULT = True  # forced tokens of a constrained reply in one batch (docs/latency.md)
PROMPT_LOOKUP_DEFAULT = 0  # tokens drafted by prompt lookup per step of a constrained reply; 0: off (docs/latency.md)


def _default_store() -> Path:
    """The repo's ``model_store/`` in a checkout, else a per-user data folder."""
    repo_store = Path(__file__).resolve().parent.parent / "model_store"
    if repo_store.is_dir() and os.access(repo_store, os.W_OK):
        return repo_store
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "localgpt" / "model_store"


def _default_threads() -> int:
    """Threads for the LLM: the free cores, never more (oversubscription is very slow)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class Settings(BaseSettings):
    """Every setting localgpt reads. Environment variables use the prefix ``LOCALGPT_``.

    Example::

        settings = Settings(planner="model_store/smollm2-135m-instruct/model.gguf", threads=2)
    """

    model_config = SettingsConfigDict(env_prefix="LOCALGPT_", extra="ignore")

    store: Path = Field(default_factory=_default_store, description="folder of installed models")
    runs_dir: Path = Field(default=Path("runs"), description="where each run's produced files go")
    planner: str = Field(
        default="qwen2.5-coder-1.5b-instruct",
        description="controller LLM: a model id from the store, the path of a GGUF file, or an engine's "
                    "OpenAI-compatible URL http://HOST:PORT/v1[#MODEL] (llama.cpp server, vLLM, Ollama)",
    )
    engine: str = Field(default="auto", pattern="^(auto|llama.cpp|llama-cpp-python|vllm|ollama|openai)$",
                        description="the kind of engine at the planner URL; auto: probed")
    llm_api_key: str | None = Field(default=None, description="key sent to the planner engine (Bearer)")
    llm_timeout: float = Field(default=300.0, gt=0, description="seconds to wait for the planner engine's reply")
    threads: int = Field(default_factory=_default_threads, ge=1)
    n_ctx: int = Field(default=4096, ge=512)
    n_gpu_layers: int | None = Field(
        default=None, description="LLM layers on the GPU; unset: all of them unless device is cpu (-1 = all)")
    device: str = Field(default="auto", pattern="^(auto|cpu|cuda)$")
    prompt_cache_mb: int = Field(
        default=128, ge=0,
        description="RAM for the LLM's state after its latest replies, reused by a call that continues one "
                    "(a repair, a chat turn); 0: off")
    llm_mmap: bool = Field(
        default=False,
        description="map the planner GGUF file instead of reading it into memory: llama.cpp repacks most CPU "
                    "weights into memory of its own, so a mapped file keeps their pages resident twice")
    # llama.cpp's prompt evaluation (defaults measured on 2 CPU cores with the starter planner: bench/README.md)
    flash_attn: bool = Field(default=FLASH_ATTN_DEFAULT,
                             description="llama.cpp's flash attention for the in-process planner LLM")
    fast_forward: bool = Field(default=FAST_FORWARD_DEFAULT,
                               description="a greedy constrained reply takes the tokens the constraint forces "
                                           "without a decoding step each (in-process LLM)")
    prompt_lookup: int = Field(default=PROMPT_LOOKUP_DEFAULT, ge=0, le=32,
                               description="tokens a greedy constrained reply drafts by prompt lookup and checks in "
                                           "one batch (in-process LLM); 0: off")
    n_batch: int = Field(default=N_BATCH_DEFAULT, ge=1,
                         description="prompt tokens llama.cpp submits per decode call (logical batch)")
    n_ubatch: int = Field(default=N_UBATCH_DEFAULT, ge=1,
                          description="prompt tokens llama.cpp computes at once (physical batch; at most n_batch)")
    max_workers: int = Field(default=4, ge=1, description="tasks run at once")
    task_timeout: float = Field(default=600.0, gt=0, description="seconds before a task is failed")
    max_tasks: int = Field(default=DEFAULT_MAX_TASKS, ge=1, le=MAX_TASKS_LIMIT,
                           description="most tasks a plan may have")
    memory_budget_mb: int = Field(default=8192, ge=64, description="RAM the model pool may hold")
    max_input_mb: int = Field(default=512, ge=1, description="largest input file a task accepts")
    vram_budget_mb: int = Field(
        default=0, ge=0, description="GPU memory the model pool may hold; 0: 90% of the first GPU's memory")
    demo_state: bool = Field(
        default=True,
        description="keep the evaluated state of the planner's prompt up to its first demo in the prompt-state disk "
                    "cache, for the requests shown that demo first (docs/latency.md)")
    demo_similarity: str = Field(
        default="auto", pattern="^(auto|embedding|words)$",
        description="how the planner picks its demos: sentence embeddings (auto: when a model is installed) or words")
    demos_file: Path | None = Field(
        default=None, description="a JSONL file of your own planning demos (localgpt's form, as `plan --json` "
                                  "prints a plan, or TaskBench records), shown to the planner beside the built-in ones")
    plan_tasks: str = Field(
        default="all", pattern="^(installed|all|demos)$",
        description="task types the planner is offered: all of the registry (a request for a task no installed "
                    "model serves is told which model is missing), only those installed models serve, or only "
                    "those your demo file (demos_file) uses")
    substitutes: bool = Field(
        default=True, description="let a registered substitute task stand in for one no installed model serves "
                                  "(image-to-text <- image-classification labels...); the answer says so")
    batch_workers: int = Field(default=2, ge=1, description="items `localgpt batch` runs at once")
    seed: int = 0
    # the HTTP server (localgpt serve)
    api_key: str | None = Field(default=None, description="bearer token the server requires; unset: no auth")
    data_dir: Path = Field(default=Path("data"), description="the server's uploads and produced files")
    max_upload_mb: int = Field(default=200, ge=1, description="largest file the server accepts")
    concurrency: int = Field(default=1, ge=1, description="requests the server runs at once")
    queue_size: int = Field(default=16, ge=0, description="requests that may wait; beyond them: 429")
    retention_hours: float = Field(default=168, ge=0, description="uploads and run folders older than this are "
                                   "removed (oldest first); 0 keeps them however old")
    data_max_mb: int = Field(default=10240, ge=0, description="the data folder is kept under this size by removing "
                             "the oldest uploads and run folders; 0: no limit")
    housekeeping_minutes: float = Field(default=10, gt=0, description="how often the server applies the retention "
                                        "rules (also once at start)")

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment and ``overrides``; a bad value is a :class:`ConfigError`
        naming the setting (and its ``LOCALGPT_`` variable)."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"setting '{name}' (LOCALGPT_{name.upper()}) is invalid: {first['msg']}",
                              f"got {first.get('input')!r}") from exc

    def gpu_layers(self) -> int:
        """LLM layers to offload: the explicit setting, else all unless the device is the CPU.

        A CPU-only build of llama.cpp ignores the value, so offloading by default is harmless.
        """
        if self.n_gpu_layers is not None:
            return self.n_gpu_layers
        return 0 if self.device == "cpu" else -1
