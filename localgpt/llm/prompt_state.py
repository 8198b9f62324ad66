"""Evaluated prompt prefixes on disk, so a cold process skips re-reading the planner's fixed system prompt.

On a CPU most of a plan's time is prompt evaluation, and the system prompt (every task type and the rules)
is the same for every request. Its evaluated llama.cpp state (the KV cache of those tokens) is written
once to a file and read back by the next process, instead of being recomputed.

A file is named by a digest of everything that makes the state valid: the model file's sha256 (as the
store's ``model.json`` records it; a GGUF outside the store is identified by its resolved path, size and
modification time instead of hashing a gigabyte on every start), the exact prefix text, the context size,
the settings that change the state's layout, the llama.cpp bindings' version and the CPU features llama.cpp
was compiled for (AVX2 and AVX-512 kernels round differently, so a state from one build is not bit for bit
the other's). The folder is bounded
(least recently used files go first); a file that does not read back whole and checked is ignored with
one log line and rebuilt, never trusted.

``LOCALGPT_PROMPT_CACHE_DIR`` names the folder (default: ``$XDG_CACHE_HOME/localgpt/prompt-state``, i.e.
``~/.cache/localgpt/prompt-state``); ``LOCALGPT_PROMPT_CACHE_DISK_MB`` its limit (default 2048; 0 turns the
disk cache off).

Example::

    cache = PromptStateCache.from_env()
    key = state_key(model_identity(gguf), prefix_text, {"n_ctx": 4096})
    saved = cache.load(key)            # None on a miss (or a bad file, logged and removed)
    cache.save(key, saved_state)       # a SavedState: the prefix's tokens, llama.cpp's state bytes
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"LGPSTATE1\n"
DEFAULT_LIMIT_MB = 2048  # the system prompts and ~50 first-demo states of ~33 MB (Qwen): docs/latency.md
HEADER = struct.Struct("<Q")  # the JSON header's length, before it


@dataclass
class SavedState:
    """One evaluated prefix: its tokens and llama.cpp's state bytes (its KV cache)."""

    tokens: list[int]
    state: bytes
    seed: int = 0


def default_dir() -> Path:
    """The per-user cache folder for prompt states."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "localgpt" / "prompt-state"


def model_identity(gguf: Path) -> str:
    """What identifies a model file's content without reading it all: the sha256 and size the store's
    ``model.json`` records for it, else (a GGUF outside the store) its resolved path, size and mtime."""
    gguf = Path(gguf).resolve()
    stat = gguf.stat()
    manifest = gguf.parent / "model.json"
    try:
        card = json.loads(manifest.read_text(encoding="utf-8"))
        for entry in card.get("files", []):
            if entry.get("path") == gguf.name and int(entry.get("size", -1)) == stat.st_size:
                return f"sha256:{entry['sha256']}"
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return f"file:{gguf}:{stat.st_size}:{stat.st_mtime_ns}"


@functools.cache
def llama_build() -> tuple[str, str]:
    """The llama.cpp bindings' version and the build's CPU features (``llama_print_system_info``: "AVX2 = 1 |
    AVX512 = 1 | ..."), which both decide the numbers of an evaluated state."""
    try:
        import llama_cpp
    except ImportError:  # pragma: no cover - only the LLM calls this
        return "none", ""
    try:
        features = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    except (AttributeError, OSError):  # pragma: no cover - bindings without it
        features = "?"
    return str(getattr(llama_cpp, "__version__", "?")), features


def state_key(identity: str, prefix_text: str, settings: dict[str, Any]) -> str:
    """The file name (a sha256 hex digest) of the state of ``prefix_text`` under ``settings``, made by this
    llama.cpp build (:func:`llama_build`)."""
    version, features = llama_build()
    blob = json.dumps({"model": identity, "prefix": prefix_text, "llama_cpp": version, "build": features,
                       **settings}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class PromptStateCache:
    """A folder of saved prompt states, at most ``limit_bytes`` in all, least recently used removed first."""

    def __init__(self, folder: Path, limit_bytes: int) -> None:
        self.folder = Path(folder)
        self.limit_bytes = limit_bytes

    @classmethod
    def from_env(cls) -> PromptStateCache | None:
        """The cache ``LOCALGPT_PROMPT_CACHE_DIR`` / ``LOCALGPT_PROMPT_CACHE_DISK_MB`` describe; None when
        the limit is 0 (off) or not a number."""
        raw = os.environ.get("LOCALGPT_PROMPT_CACHE_DISK_MB", str(DEFAULT_LIMIT_MB)).strip()
        try:
            limit_mb = int(raw)
        except ValueError:
            log.warning("LOCALGPT_PROMPT_CACHE_DISK_MB=%r is not a whole number; the prompt-state disk cache is off",
                        raw)
            return None
        if limit_mb <= 0:
            return None
        folder = os.environ.get("LOCALGPT_PROMPT_CACHE_DIR")
        return cls(Path(folder).expanduser() if folder else default_dir(), limit_mb << 20)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.state"

    def load(self, key: str) -> SavedState | None:
        """The state saved under ``key``; None when there is none, or when the file is damaged or made
        for another key (then it is removed, with one log line, and will be rebuilt)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("prompt state %s cannot be read (%s); evaluating the prompt instead", path, exc)
            return None
        try:
            saved = _decode(data, key)
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            log.warning("prompt state %s is unusable (%s); removed, it will be rebuilt", path, exc)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return saved

    def touch(self, key: str) -> None:
        """Mark the state saved under ``key`` (if any) as just used, as :meth:`load` does."""
        with contextlib.suppress(OSError):
            os.utime(self.path(key))

    def save(self, key: str, saved: SavedState) -> Path | None:
        """Write ``saved`` under ``key`` (whole or not at all), then trim the folder to its limit. A state
        larger than the limit, or a folder that cannot be written, is skipped with a log line."""
        blob = _encode(saved, key)
        if len(blob) > self.limit_bytes:
            log.info("prompt state of %d MB exceeds the disk cache limit of %d MB; not saved",
                     len(blob) >> 20, self.limit_bytes >> 20)
            return None
        target = self.path(key)
        tmp = self.folder / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(blob)
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("prompt state cannot be saved in %s (%s); the next start evaluates the prompt again",
                        self.folder, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return None
        self.evict(keep=target)
        return target

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, size, path) of each saved state, least recently used first."""
        out = []
        for path in self.folder.glob("*.state"):
            try:
                stat = path.stat()
            except OSError:
                continue
            out.append((stat.st_mtime, stat.st_size, path))
        return sorted(out)

    def size(self) -> int:
        """Bytes the saved states take."""
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used states until the folder is within its limit; the removed paths."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in entries:
            if total <= self.limit_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        # temp files left by a process that died while writing
        for tmp in self.folder.glob(".*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime > 3600:
                    tmp.unlink(missing_ok=True)
            except OSError:
                continue
        return removed


def _encode(saved: SavedState, key: str) -> bytes:
    import array

    tokens = array.array("i", saved.tokens).tobytes()
    payload = tokens + saved.state
    header = json.dumps({"key": key, "n_tokens": len(saved.tokens), "tokens_bytes": len(tokens),
                         "state_bytes": len(saved.state), "seed": saved.seed,
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode("utf-8")
    return MAGIC + HEADER.pack(len(header)) + header + payload


def _decode(data: bytes, key: str) -> SavedState:
    import array

    if not data.startswith(MAGIC):
        raise ValueError("not a localgpt prompt state")
    offset = len(MAGIC)
    (size,) = HEADER.unpack_from(data, offset)
    offset += HEADER.size
    if size > len(data) - offset:
        raise ValueError("truncated header")
    header = json.loads(data[offset: offset + size].decode("utf-8"))
    offset += size
    if header["key"] != key:
        raise ValueError("made for another prompt or model")
    payload = data[offset:]
    lengths = (int(header["tokens_bytes"]), int(header["state_bytes"]))
    if len(payload) != sum(lengths):
        raise ValueError(f"{len(payload)} bytes of payload, the header says {sum(lengths)}")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ValueError("checksum mismatch")
    tokens = array.array("i")
    tokens.frombytes(payload[: lengths[0]])
    if len(tokens) != int(header["n_tokens"]) or not tokens:
        raise ValueError("token count mismatch")
    return SavedState(tokens=tokens.tolist(), state=payload[lengths[0]:], seed=int(header["seed"]))
