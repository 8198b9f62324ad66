"""The system prompt's evaluated state on disk, with the real SmolLM2-135M GGUF of the test store: a state
loaded from disk gives the same greedy reply as evaluating the prompt, evaluates fewer tokens, and a
damaged file is rebuilt with one log line; the folder stays within its limit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from localgpt.llm import Message
from localgpt.llm.llamacpp import LlamaCppLLM
from localgpt.llm.prompt_state import PromptStateCache
from localgpt.planning.planner import Planner, PlannerOptions
from localgpt.testing import FakeLLM
from tests import helpers

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:llama_token_get_attr is deprecated:DeprecationWarning")]


@pytest.fixture(scope="module")
def gguf() -> Path:
    path = helpers.store_dir() / "smollm2-135m-instruct" / "model.gguf"
    if not path.is_file():
        helpers.missing(f"{path} is not installed; run: python download_models.py --profile test")
    return path


REQUEST = "Transcribe talk.wav, then read the transcript aloud."


def chat(decompose: bool = True, request: str = REQUEST) -> list[Message]:
    planner = Planner(FakeLLM([]), options=PlannerOptions(decompose=decompose))
    return [{"role": "system", "content": planner.system_prompt()},
            {"role": "user", "content": planner.user_prompt(request, ["talk.wav"])}]


def reply(gguf: Path, cache: PromptStateCache | None, messages: list[Message],
          ram_mb: int = 0) -> tuple[str, LlamaCppLLM]:
    llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=ram_mb)
    try:
        return llm.generate(messages, max_tokens=24), llm
    finally:
        llm.close()


@pytest.fixture(scope="module")
def fresh(gguf: Path) -> Iterator[str]:
    """The reply with no state at all: the whole prompt evaluated."""
    text, llm = reply(gguf, None, chat())
    assert llm.prefix_events == [""]
    yield text


def test_a_state_from_disk_gives_the_same_reply_with_fewer_tokens(gguf: Path, fresh: str, tmp_path: Path) -> None:
    cache = PromptStateCache(tmp_path, 1 << 30)
    first, llm1 = reply(gguf, cache, chat())
    assert llm1.prefix_events == ["evaluated"] and len(list(tmp_path.glob("*.state"))) == 1
    second, llm2 = reply(gguf, cache, chat())  # a new model instance: as a new process would
    assert llm2.prefix_events == ["disk"]
    assert first == second == fresh
    assert llm2.stats.prompt_tokens_evaluated < llm1.stats.prompt_tokens_evaluated / 3
    # another request with the same system prompt reuses the same file
    _, llm3 = reply(gguf, cache, chat(request="Read this aloud: hello"))
    assert llm3.prefix_events == ["disk"] and len(list(tmp_path.glob("*.state"))) == 1


def test_a_damaged_state_is_rebuilt_with_one_log_line(gguf: Path, fresh: str, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    cache = PromptStateCache(tmp_path, 1 << 30)
    reply(gguf, cache, chat())
    (path,) = tmp_path.glob("*.state")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55  # one flipped byte inside the KV cache
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        text, llm = reply(gguf, cache, chat())
    assert text == fresh and llm.prefix_events == ["evaluated"]
    assert len([r for r in caplog.records if "prompt state" in r.getMessage()]) == 1
    _, again = reply(gguf, cache, chat())
    assert again.prefix_events == ["disk"]  # rebuilt, and good


def test_the_folder_stays_within_its_limit(gguf: Path, tmp_path: Path) -> None:
    cache = PromptStateCache(tmp_path, 1 << 30)
    reply(gguf, cache, chat(decompose=True))
    (first,) = tmp_path.glob("*.state")
    cache.limit_bytes = first.stat().st_size * 3 // 2  # room for one state only
    reply(gguf, cache, chat(decompose=False))  # another system prompt: another state
    (kept,) = tmp_path.glob("*.state")
    assert kept != first and cache.size() <= cache.limit_bytes


def test_in_one_process_the_state_is_kept_in_memory(gguf: Path, fresh: str) -> None:
    llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=None, prompt_cache_mb=64)
    try:
        texts = [llm.generate(chat(), max_tokens=24), llm.generate(chat(), max_tokens=24)]
    finally:
        llm.close()
    assert texts == [fresh, fresh] and llm.prefix_events == ["evaluated", "memory"]


def test_warm_puts_the_state_in_memory_and_changes_no_reply(gguf: Path, fresh: str, tmp_path: Path) -> None:
    """``warm`` does the first call's one-time work: the call after it finds the state in memory (evaluated
    by the first process, read from disk by the next) and replies as without any state."""
    cache = PromptStateCache(tmp_path, 1 << 30)
    for expected in ("evaluated", "disk"):  # a first start, then a start after it (a new process)
        llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=0)
        try:
            assert llm.warm(chat()[:1]) == expected and llm.stats.calls == 0
            assert llm.generate(chat(), max_tokens=24) == fresh
        finally:
            llm.close()
        assert llm.prefix_events == ["memory"]


def test_flash_attention_has_its_own_state(gguf: Path, tmp_path: Path) -> None:
    """A state evaluated without flash attention is never loaded into a context with it (the V cache's
    layout differs): each setting has its own file."""
    cache = PromptStateCache(tmp_path, 1 << 30)
    for flash in (False, True, False):
        llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=0, flash_attn=flash)
        try:
            llm.warm(chat()[:1])
        finally:
            llm.close()
    assert len(list(tmp_path.glob("*.state"))) == 2
