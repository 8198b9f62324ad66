"""The prompt-state disk cache: round trip, damaged files ignored and removed, LRU eviction, keys, settings."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from localgpt.llm.prompt_state import PromptStateCache, SavedState, default_dir, model_identity, state_key


def saved(n: int = 5, size: int = 1000) -> SavedState:
    return SavedState(tokens=list(range(1, n + 1)), state=bytes(range(256)) * (size // 256 + 1), seed=7)


def test_round_trip(tmp_path: Path) -> None:
    cache = PromptStateCache(tmp_path / "c", 1 << 20)
    assert cache.load("k1") is None  # a miss, and no folder needed for it
    state = saved()
    assert cache.save("k1", state) == tmp_path / "c" / "k1.state"
    back = cache.load("k1")
    assert back == state


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty", "other-key"])
def test_damaged_file_is_ignored_logged_and_removed(tmp_path: Path, damage: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    cache = PromptStateCache(tmp_path, 1 << 20)
    path = cache.save("k1", saved())
    assert path is not None
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "garbage":
        data = bytearray(b"\x00" * 64)
    elif damage == "empty":
        data = bytearray()
    else:  # a file renamed to another key's name
        other = cache.save("k2", saved())
        assert other is not None
        data = bytearray(other.read_bytes())
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="localgpt.llm.prompt_state"):
        assert cache.load("k1") is None
    lines = [r for r in caplog.records if "k1.state" in r.getMessage()]
    assert len(lines) == 1 and "rebuilt" in lines[0].getMessage()
    assert not path.exists()  # removed, so the next start writes a good one
    assert cache.save("k1", saved()) is not None and cache.load("k1") == saved()


def test_eviction_keeps_the_most_recently_used(tmp_path: Path) -> None:
    cache = PromptStateCache(tmp_path / "c", 1 << 20)
    size = len((cache.save("a", saved(size=100_000)) or Path()).read_bytes())
    cache.limit_bytes = 3 * size + size // 2  # room for three
    for i, key in enumerate(["b", "c"]):
        cache.save(key, saved(size=100_000))
        os.utime(cache.path(key), (1000 + i, 1000 + i))
    os.utime(cache.path("a"), (500, 500))
    assert cache.load("a") is not None  # using "a" makes it the most recent; "b" is now the oldest
    cache.save("d", saved(size=100_000))
    assert sorted(p.stem for p in cache.folder.glob("*.state")) == ["a", "c", "d"]
    assert cache.size() <= cache.limit_bytes


def test_a_state_over_the_limit_is_not_saved(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = PromptStateCache(tmp_path, 500)
    with caplog.at_level(logging.INFO, logger="localgpt.llm.prompt_state"):
        assert cache.save("big", saved(size=10_000)) is None
    assert not list(tmp_path.glob("*.state")) and "exceeds" in caplog.text


def test_unwritable_folder_is_a_log_line_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = PromptStateCache(blocker / "sub", 1 << 20)
    with caplog.at_level(logging.WARNING, logger="localgpt.llm.prompt_state"):
        assert cache.save("k", saved()) is None
    assert "cannot be saved" in caplog.text


def test_key_depends_on_every_part() -> None:
    base = state_key("sha256:aa", "prefix", {"n_ctx": 4096})
    assert base == state_key("sha256:aa", "prefix", {"n_ctx": 4096})
    assert len({base, state_key("sha256:bb", "prefix", {"n_ctx": 4096}),
                state_key("sha256:aa", "prefix ", {"n_ctx": 4096}),
                state_key("sha256:aa", "prefix", {"n_ctx": 2048})}) == 4
    assert state_key("sha256:aa", "日本語の指示", {}) != state_key("sha256:aa", "日本語の指亦", {})


def test_key_depends_on_the_llama_cpp_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state from an AVX2 build is not loaded by an AVX-512 build of the same version: their kernels round
    differently."""
    from localgpt.llm import prompt_state

    features = "CPU : AVX2 = 1 | "
    monkeypatch.setattr(prompt_state, "llama_build", lambda: ("0.3.36", features))
    avx2 = state_key("sha256:aa", "prefix", {"n_ctx": 4096})
    features = "CPU : AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | "
    assert state_key("sha256:aa", "prefix", {"n_ctx": 4096}) != avx2
    features = "CPU : AVX2 = 1 | "
    assert state_key("sha256:aa", "prefix", {"n_ctx": 4096}) == avx2


def test_the_installed_build_names_its_cpu_features() -> None:
    from localgpt.llm.prompt_state import llama_build

    version, features = llama_build()
    assert version[0].isdigit() and "CPU" in features


def test_model_identity_reads_the_manifest_sha(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 100)
    loose = model_identity(gguf)
    assert loose.startswith("file:") and str(gguf) in loose
    (tmp_path / "model.json").write_text(json.dumps(
        {"id": "m", "files": [{"path": "model.gguf", "sha256": "ab" * 32, "size": 104}]}))
    assert model_identity(gguf) == "sha256:" + "ab" * 32
    gguf.write_bytes(b"GGUF" + b"\x00" * 200)  # the file no longer matches its manifest: not trusted
    assert model_identity(gguf).startswith("file:")


def test_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCALGPT_PROMPT_CACHE_DIR", raising=False)
    monkeypatch.delenv("LOCALGPT_PROMPT_CACHE_DISK_MB", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = PromptStateCache.from_env()
    assert cache is not None and cache.folder == default_dir() == tmp_path / "xdg" / "localgpt" / "prompt-state"
    monkeypatch.setenv("LOCALGPT_PROMPT_CACHE_DIR", str(tmp_path / "here"))
    monkeypatch.setenv("LOCALGPT_PROMPT_CACHE_DISK_MB", "3")
    cache = PromptStateCache.from_env()
    assert cache is not None and cache.folder == tmp_path / "here" and cache.limit_bytes == 3 << 20
    monkeypatch.setenv("LOCALGPT_PROMPT_CACHE_DISK_MB", "0")
    assert PromptStateCache.from_env() is None
    monkeypatch.setenv("LOCALGPT_PROMPT_CACHE_DISK_MB", "lots")
    assert PromptStateCache.from_env() is None


def test_touch_makes_a_state_the_most_recently_used(tmp_path: Path) -> None:
    """A state used from memory is touched on disk, so longer states saved meanwhile go first."""
    cache = PromptStateCache(tmp_path / "c", 1 << 30)
    size = len((cache.save("a", saved(size=100_000)) or Path()).read_bytes())
    cache.save("b", saved(size=100_000))
    os.utime(cache.path("a"), (500, 500))
    os.utime(cache.path("b"), (1000, 1000))
    cache.touch("a")
    cache.touch("missing")  # nothing there: nothing happens
    cache.limit_bytes = 2 * size + size // 2
    cache.save("c", saved(size=100_000))
    assert sorted(p.stem for p in cache.folder.glob("*.state")) == ["a", "c"]
