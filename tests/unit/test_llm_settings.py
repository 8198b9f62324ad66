"""llama.cpp's prompt-evaluation settings (flash attention, n_batch, n_ubatch): read from LOCALGPT_* variables,
given to the in-process LLM, and part of the prompt state's key; Pipeline.warm's prompts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from localgpt.config import FLASH_ATTN_DEFAULT, N_BATCH_DEFAULT, N_UBATCH_DEFAULT, Settings
from localgpt.errors import ConfigError
from localgpt.llm.llamacpp import LlamaCppLLM
from localgpt.llm.prompt_state import state_key
from localgpt.pipeline import Pipeline, controller_llm
from localgpt.planning.planner import min_steps
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeLLM


def gguf_in_store(tmp_path: Path) -> Path:
    folder = tmp_path / "store" / "tiny-planner"
    folder.mkdir(parents=True)
    (folder / "model.gguf").write_bytes(b"GGUF")  # never loaded here: the LLM loads on first use
    return tmp_path / "store"


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLASH_ATTN", "N_BATCH", "N_UBATCH"):
        monkeypatch.delenv(f"LOCALGPT_{name}", raising=False)
    plain = Settings.load()
    assert (plain.flash_attn, plain.n_batch, plain.n_ubatch) == (FLASH_ATTN_DEFAULT, N_BATCH_DEFAULT,
                                                                 N_UBATCH_DEFAULT)
    monkeypatch.setenv("LOCALGPT_FLASH_ATTN", "false" if FLASH_ATTN_DEFAULT else "true")
    monkeypatch.setenv("LOCALGPT_N_BATCH", "1024")
    monkeypatch.setenv("LOCALGPT_N_UBATCH", "256")
    env = Settings.load()
    assert (env.flash_attn, env.n_batch, env.n_ubatch) == (not FLASH_ATTN_DEFAULT, 1024, 256)


@pytest.mark.parametrize(("name", "value"), [("n_batch", 0), ("n_ubatch", -1), ("flash_attn", "sometimes")])
def test_bad_values_name_their_variable(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"LOCALGPT_{name.upper()}"):
        Settings.load(**{name: value})


def test_the_in_process_llm_gets_them(tmp_path: Path) -> None:
    store = gguf_in_store(tmp_path)
    llm, name = controller_llm(Settings(store=store, planner="tiny-planner", flash_attn=True, n_batch=1024,
                                        n_ubatch=256))
    assert isinstance(llm, LlamaCppLLM) and name == "tiny-planner"
    assert (llm.flash_attn, llm.n_batch, llm.n_ubatch) == (True, 1024, 256)
    # llama.cpp never computes more at once than it submits: n_ubatch is held to n_batch
    llm, _ = controller_llm(Settings(store=store, planner="tiny-planner", flash_attn=False, n_batch=128,
                                     n_ubatch=512))
    assert (llm.flash_attn, llm.n_batch, llm.n_ubatch) == (False, 128, 128)


def test_the_gguf_is_read_into_memory_unless_mapping_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # llama.cpp repacks most CPU weights into buffers of its own; mapped, the file's pages of those weights
    # would stay resident beside them (Qwen: 1.96 GB resident mapped, 1.37 GB read: docs/latency.md)
    store = gguf_in_store(tmp_path)
    monkeypatch.delenv("LOCALGPT_LLM_MMAP", raising=False)
    monkeypatch.delenv("LOCALGPT_PROMPT_CACHE_MB", raising=False)
    plain = Settings.load(store=store, planner="tiny-planner")
    assert plain.llm_mmap is False and plain.prompt_cache_mb == 128
    llm, _ = controller_llm(plain)
    assert isinstance(llm, LlamaCppLLM) and llm.use_mmap is False and llm.prompt_cache_mb == 128
    monkeypatch.setenv("LOCALGPT_LLM_MMAP", "true")
    llm, _ = controller_llm(Settings.load(store=store, planner="tiny-planner"))
    assert isinstance(llm, LlamaCppLLM) and llm.use_mmap is True


def state_settings(tmp_path: Path, **params: object) -> dict[str, object]:
    llm = LlamaCppLLM(gguf_in_store(tmp_path) / "tiny-planner" / "model.gguf", prompt_state=None)
    context = {"type_k": 1, "type_v": 1, "n_batch": 512, "n_ubatch": 512} | params
    llm._llama = SimpleNamespace(context_params=SimpleNamespace(**context))
    llm.flash_attn = bool(params.get("flash_attn", False))
    return llm._state_settings()


def test_each_setting_that_changes_a_state_changes_its_key(tmp_path: Path) -> None:
    variants = [{}, {"flash_attn": True}, {"n_batch": 1024}, {"n_ubatch": 256}, {"type_k": 8}]
    keys = set()
    for i, params in enumerate(variants):
        settings = state_settings(tmp_path / str(i), **params)
        keys.add(state_key("sha256:aa", "You are the planner", settings))
    assert len(keys) == len(variants)


def test_warm_builds_the_fixed_prompts_only(tmp_path: Path) -> None:
    llm = FakeLLM([])
    pipe = Pipeline(Settings(store=tmp_path, runs_dir=tmp_path / "runs"), llm, Catalog(tmp_path))
    assert pipe.warm() == {"planner": "evaluated", "planner-2": "evaluated", "responder": "evaluated"}
    planner, other, responder = llm.warmed
    assert planner.messages == [{"role": "system", "content": pipe.planner.system_prompt()}]
    # the system prompt of a request not in English (its demos written in: other_language_demos)
    assert other.messages == [{"role": "system", "content": pipe.planner.system_prompt("把 lecture.mp3 转成文字")}]
    assert planner.schema == other.schema == pipe.planner.schema
    assert responder.messages[0]["role"] == "system" and len(responder.messages) == 1
    assert responder.schema is None and llm.calls == []  # nothing generated

    class Compiling(FakeLLM):  # an in-process LLM compiles constraints ahead
        compiled: list[Any] = []

        def constraint(self, schema: Any) -> None:
            self.compiled.append(schema)

    compiling = Compiling([])
    planned = Pipeline(Settings(store=tmp_path, runs_dir=tmp_path / "runs"), compiling, Catalog(tmp_path))
    planned.warm()
    one, several = "Read 'hi' aloud", "Write a poem, then summarize it and then read the summary aloud"
    assert min_steps(one) == 1 and min_steps(several) == 2
    # the constraint of a request that reads as one action, and of one that reads as several, are ready
    assert compiling.compiled == [planned.planner.schema_for(one, ()), planned.planner.schema_for(several, ())]
    assert compiling.compiled[0] != compiling.compiled[1]

    class Engine(FakeLLM):  # an LLM with nothing to warm in this process (an engine over HTTP)
        warm = None  # type: ignore[assignment]

    assert Pipeline(Settings(store=tmp_path, runs_dir=tmp_path / "runs"), Engine([]), Catalog(tmp_path)).warm() == {}


def test_ngram_index_drafts_what_followed_the_latest_occurrence() -> None:
    from localgpt.llm.llamacpp import NgramIndex

    index = NgramIndex([1, 2, 3, 4, 5, 9, 2, 3, 7, 8])
    index.extend([2, 3])  # the last 3 tokens (8, 2, 3) never came before; the last 2 (2, 3) did, latest before 7
    assert index.draft(4) == [7, 8, 2, 3]
    assert index.draft(1) == [7]
    index.extend([4])  # (2, 3, 4) came first at the start: 5 followed it
    assert index.draft(3) == [5, 9, 2]
    assert NgramIndex([1, 2, 3]).draft(4) == []  # nothing repeats
    assert NgramIndex().draft(4) == []


def test_prompt_lookup_is_a_setting_passed_to_the_llm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCALGPT_PROMPT_LOOKUP", "5")
    assert Settings.load().prompt_lookup == 5
    with pytest.raises(ConfigError, match="LOCALGPT_PROMPT_LOOKUP"):
        Settings.load(prompt_lookup=-1)
    llm, _ = controller_llm(Settings(store=gguf_in_store(tmp_path), planner="tiny-planner", prompt_lookup=4))
    assert isinstance(llm, LlamaCppLLM) and llm.prompt_lookup == 4
