"""The system prompt's evaluated state on disk, with the real SmolLM2-135M GGUF of the test store: a state
loaded from disk gives the same greedy reply as evaluating the prompt, evaluates fewer tokens, and a
damaged file is rebuilt with one log line; the folder stays within its limit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from localgpt.llm import Message, plain
from localgpt.llm.llamacpp import KEEP_ALIGN, LlamaCppLLM
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
          ram_mb: int = 0, batch: int = 512) -> tuple[str, LlamaCppLLM]:
    llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=ram_mb, n_batch=batch, n_ubatch=batch)
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


# SmolLM2 writes the planner's demos and request in ~700 tokens: one batch of 1024 holds them, as one of 512
# holds most of Qwen's (only then is a kept prefix's reply that of a call with no state)
BATCH = 1024


def logprobs(gguf: Path, cache: PromptStateCache, messages: list[Message],
             batch: int = 512) -> tuple[list[float], list[str]]:
    """A fresh process's log-probabilities of three first steps after ``messages``, and how its prefixes came."""
    llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=0, n_batch=batch, n_ubatch=batch)
    try:
        return llm.ending_logprobs(messages, '{"steps":["Step 1:', [" Transcribe", " Read", " Say"]), \
            llm.prefix_events
    finally:
        llm.close()


def demo_chat(request: str) -> list[Message]:
    """A planner's chat with demos chosen for ``request``; the chat up to the first one is marked to keep."""
    return Planner(FakeLLM([])).messages(request, ["talk.wav"])


def test_a_marked_prefix_is_kept_on_disk_and_gives_the_same_reply(gguf: Path, tmp_path: Path) -> None:
    """The system prompt and the first demo, which the planner marks: the first process evaluates them and
    saves their state beside the system prompt's; the next one loads it ("kept") and reads only the rest,
    replying as a full evaluation does; another request shown the same first demo reuses it."""
    msgs = demo_chat(REQUEST)
    assert [i for i, m in enumerate(msgs) if m.get("keep")] == [2]
    fresh, _ = reply(gguf, None, msgs, batch=BATCH)
    cache = PromptStateCache(tmp_path, 1 << 30)
    first, llm1 = reply(gguf, cache, msgs, batch=BATCH)
    assert llm1.prefix_events == ["evaluated"] and len(list(tmp_path.glob("*.state"))) == 2
    second, llm2 = reply(gguf, cache, msgs, batch=BATCH)
    assert llm2.prefix_events == ["kept"]
    assert first == second == fresh
    counter = LlamaCppLLM(gguf, n_threads=2, prompt_state=None, prompt_cache_mb=0, n_batch=BATCH, n_ubatch=BATCH)
    try:
        counter._ensure_loaded()
        whole = len(counter._prompt_tokens(msgs) or [])
        kept = len(counter._llama.tokenize((counter.kept_text(msgs) or "").encode(), add_bos=False, special=True))
    finally:
        counter.close()
    assert llm1.stats.prompt_tokens_evaluated >= whole - 1 > kept > 0
    assert llm2.stats.prompt_tokens_evaluated <= whole - kept + KEEP_ALIGN  # (the state ends up to 7 short)
    other = demo_chat("Transcribe talk.wav, then read the summary aloud.")
    assert other[:3] == msgs[:3] and other != msgs  # the same first demo, another chat after it
    _, llm3 = reply(gguf, cache, other, batch=BATCH)
    assert llm3.prefix_events == ["kept"] and len(list(tmp_path.glob("*.state"))) == 2


def test_a_damaged_kept_prefix_is_rebuilt(gguf: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    msgs = demo_chat(REQUEST)
    fresh, _ = reply(gguf, None, msgs, batch=BATCH)
    cache = PromptStateCache(tmp_path, 1 << 30)
    reply(gguf, cache, msgs, batch=BATCH)
    kept = max(tmp_path.glob("*.state"), key=lambda p: p.stat().st_size)  # the longer prefix's
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0x55
    kept.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        text, llm = reply(gguf, cache, msgs, batch=BATCH)
    assert text == fresh and llm.prefix_events == ["disk"]  # the system prompt's state, the rest evaluated
    assert len([r for r in caplog.records if "prompt state" in r.getMessage()]) == 1
    _, again = reply(gguf, cache, msgs, batch=BATCH)
    assert again.prefix_events == ["kept"]


def test_a_kept_prefix_changes_no_number(gguf: Path, tmp_path: Path) -> None:
    """The kept state ends a multiple of KEEP_ALIGN tokens past the system prompt's, where llama.cpp's kernels
    take the same rows in the same groups as a call reading everything after the system prompt at once: the
    model's log-probabilities after it are those of that call, to the last bit."""
    msgs = demo_chat(REQUEST)
    unmarked = plain(msgs)
    cache = PromptStateCache(tmp_path, 1 << 30)
    reply(gguf, cache, msgs, batch=BATCH)  # saves the system prompt's state and the kept one
    saved = [cache.load(p.stem) for p in tmp_path.glob("*.state")]
    system, kept = sorted((s for s in saved if s is not None), key=lambda s: len(s.tokens))
    assert kept.tokens[: len(system.tokens)] == system.tokens
    assert (len(kept.tokens) - len(system.tokens)) % KEEP_ALIGN == 0 and len(kept.tokens) > len(system.tokens)
    scores = {}
    for name, chat_ in (("kept", msgs), ("disk", unmarked)):
        scores[name], how = logprobs(gguf, cache, chat_, BATCH)
        assert how == [name]
    assert scores["kept"] == scores["disk"]


def test_no_prefix_is_kept_where_batches_are_not_aligned(gguf: Path, tmp_path: Path) -> None:
    """With a batch size that is not a multiple of KEEP_ALIGN the cut would not give a full evaluation's numbers:
    only the system prompt's state is saved and loaded, and the reply is the same."""
    msgs = demo_chat(REQUEST)
    fresh, _ = reply(gguf, None, msgs, batch=BATCH)
    cache = PromptStateCache(tmp_path, 1 << 30)
    for expected in ("evaluated", "disk"):
        llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=0, n_batch=500, n_ubatch=500)
        try:
            assert not llm._aligned_batches()
            assert llm.generate(msgs, max_tokens=24) == fresh
        finally:
            llm.close()
        assert llm.prefix_events == [expected] and len(list(tmp_path.glob("*.state"))) == 1


def test_where_the_rest_of_the_prompt_is_two_batches_a_kept_prefix_gives_the_reply_of_its_first_call(
        gguf: Path, tmp_path: Path) -> None:
    """Past the system prompt, SmolLM2's planner chat is longer than a batch of 512. The call that finds no kept
    state evaluates the prefix up to the cut, saves it and reads the rest, as every later call reads the rest
    after loading it: the same reply, and the same log-probabilities to the last bit."""
    msgs = demo_chat(REQUEST)
    counter = LlamaCppLLM(gguf, n_threads=2, prompt_state=None, prompt_cache_mb=0)
    try:
        counter._ensure_loaded()
        system = counter._system_prefix(msgs)
        assert system is not None and len(counter._prompt_tokens(msgs) or []) - len(system[1]) > counter.n_batch
    finally:
        counter.close()
    cache = PromptStateCache(tmp_path, 1 << 30)
    replies = []
    for expected in ("evaluated", "kept"):
        text, llm = reply(gguf, cache, msgs)
        assert llm._aligned_batches() and llm.prefix_events == [expected]
        assert len(list(tmp_path.glob("*.state"))) == 2  # the system prompt's and the kept prefix's
        replies.append(text)
    assert replies[0] == replies[1]
    other = PromptStateCache(tmp_path / "other", 1 << 30)
    scores = []
    for expected in ("evaluated", "kept"):
        score, how = logprobs(gguf, other, msgs)
        assert how == [expected]
        scores.append(score)
    assert scores[0] == scores[1]


def test_a_state_llama_cpp_refuses_is_evaluated_again_and_the_reply_stays(gguf: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Where llama.cpp refuses both saved states (the kept prefix's and the system prompt's), each is dropped
    with a log line, the system prompt is evaluated and the prefix after it, as by a call that found none:
    the reply is the one the states give, and the next call saves them again."""
    msgs = demo_chat(REQUEST)
    cache = PromptStateCache(tmp_path, 1 << 30)
    first, _ = reply(gguf, cache, msgs)
    assert len(list(tmp_path.glob("*.state"))) == 2
    llm = LlamaCppLLM(gguf, n_threads=2, prompt_state=cache, prompt_cache_mb=0)
    try:
        llm._ensure_loaded()

        def refuse(state: object) -> None:
            raise RuntimeError("a state this build cannot take")

        llm._llama.load_state = refuse
        with caplog.at_level(logging.WARNING):
            text = llm.generate(msgs, max_tokens=24)
    finally:
        llm.close()
    assert llm.prefix_events == ["failed"] and text == first
    assert len([r for r in caplog.records if "could not be loaded" in r.getMessage()]) == 2
    again, llm2 = reply(gguf, cache, msgs)
    assert again == first and llm2.prefix_events == ["kept"]
