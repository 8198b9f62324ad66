"""The controller LLM's protocol: one generation method, optionally constrained to a JSON schema; token counting;
the context window's budget and history trimming to it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, str]
TokenCallback = Callable[[str], None]

# The repeat penalty of free-text replies (answers, text tasks the LLM serves): llama.cpp's long-standing
# default. Greedy decoding without it can loop ("The quick brown fox." forty times in an answer);
# constrained replies (plans, model choices) are decoded without it.
FREE_TEXT_REPEAT_PENALTY = 1.1

# A message key saying that the chat up to and including this message is a prefix other chats repeat (the
# planner's system prompt and worked examples, when the same examples come back): an engine that keeps
# evaluated prompt states may keep this prefix's too. Any true value counts; engines send only role and content.
KEEP = "keep"


def plain(messages: Sequence[Message]) -> list[Message]:
    """``messages`` with their role and content only (no :data:`KEEP` mark), as a chat template takes them."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]

MESSAGE_OVERHEAD = 8  # tokens a chat template adds around one message's content (role, separators)


class LLM(Protocol):
    """What localgpt needs from a language model."""

    n_ctx: int

    def generate(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_token: TokenCallback | None = None,
        seed: int | None = None,
        repeat_penalty: float = 1.0,
    ) -> str:
        """Reply to a chat; with ``schema`` the reply is JSON valid against it; ``on_token`` streams;
        ``seed`` (default: the model's own) makes a sample at ``temperature`` > 0 repeatable;
        ``repeat_penalty`` above 1 makes tokens already in the context less likely (for free text,
        :data:`FREE_TEXT_REPEAT_PENALTY`: a greedy reply that starts repeating a line goes on with
        something else instead of looping to ``max_tokens``); 1 leaves decoding as it is."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes in this model."""
        ...


@dataclass(frozen=True)
class Completion:
    """One reply of the LLM and what it took: the tokens of the prompt and the tokens generated.

    An engine that knows its own counts has a ``complete`` method (the arguments of ``generate``) that
    returns one; :func:`complete` calls it, or counts with ``count_tokens`` for an engine without one.
    It is returned per call, never kept on the engine, so engines shared between threads stay so."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def prompt_tokens(llm: LLM, messages: Sequence[Message]) -> int:
    """The tokens of a chat as ``llm`` counts them, each message with :data:`MESSAGE_OVERHEAD`."""
    return sum(llm.count_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages)


def complete(llm: LLM, messages: Sequence[Message], **kwargs: Any) -> Completion:
    """``llm``'s reply to ``messages`` (the keyword arguments of :meth:`LLM.generate`) and its token
    counts: the engine's own, when it has a ``complete`` method, else counted with ``count_tokens``.

    Example::

        reply = complete(llm, [{"role": "user", "content": "Say hi"}], max_tokens=8)
        reply.text, reply.prompt_tokens, reply.completion_tokens
    """
    method = getattr(llm, "complete", None)
    if callable(method):
        done = method(messages, **kwargs)
        assert isinstance(done, Completion)
        return done
    text = llm.generate(messages, **kwargs)
    return Completion(text, prompt_tokens(llm, messages), llm.count_tokens(text))


def ending_logprobs(llm: LLM, messages: Sequence[Message], prefix: str, endings: Sequence[str]) -> list[float] | None:
    """The log-probability ``llm`` gives each of ``endings`` right after ``prefix`` at the start of its reply
    to ``messages``, unconstrained, when the engine can say (an ``ending_logprobs`` method, as
    :class:`~localgpt.llm.llamacpp.LlamaCppLLM` has); None otherwise."""
    method = getattr(llm, "ending_logprobs", None)
    if not callable(method):
        return None
    return list(method(messages, prefix, endings))


@dataclass
class LLMStats:
    """Counters an LLM keeps: calls, tokens, decode time and constraint build times."""

    calls: int = 0
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    forced_tokens: int = 0  # of the completion tokens, those the constraint forced and decoding skipped
    drafted_tokens: int = 0  # tokens proposed by prompt lookup (LlamaCppLLM's prompt_lookup)
    accepted_draft_tokens: int = 0  # of those, the ones greedy decoding would have chosen, taken as they were
    decode_seconds: float = 0.0
    constraint_builds: dict[str, float] = field(default_factory=dict)


def schema_key(schema: dict[str, Any] | None) -> str:
    """A stable key identifying a schema (for caching compiled constraints)."""
    return "" if schema is None else json.dumps(schema, sort_keys=True)


def schema_label(key: str) -> str:
    """A short label for a schema key, unique per schema (a digest, then the key's start)."""
    if not key:
        return ""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12] + " " + key[:60]




def context_budget(llm: LLM, reply_tokens: int, messages: Sequence[Message] = (), text: str = "",
                   margin: int = 0) -> int:
    """Tokens of ``llm``'s context window left once the reply (``reply_tokens``), ``messages`` (each with
    :data:`MESSAGE_OVERHEAD`), ``text`` (counted as it is) and a safety ``margin`` are taken out.

    Example::

        budget = context_budget(llm, 400, text=system + user, margin=32)
        history = trim_history(llm, history, budget)
    """
    used = sum(llm.count_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages)
    if text:
        used += llm.count_tokens(text)
    return llm.n_ctx - reply_tokens - used - margin


def trim_history(llm: LLM, history: Sequence[Message], budget: int) -> list[Message]:
    """The most recent history messages that fit in ``budget`` tokens (each with :data:`MESSAGE_OVERHEAD`),
    oldest first."""
    kept: list[Message] = []
    for msg in reversed(list(history)):
        cost = llm.count_tokens(msg["content"]) + MESSAGE_OVERHEAD
        if cost > budget:
            break
        budget -= cost
        kept.append({"role": msg["role"], "content": msg["content"]})
    return list(reversed(kept))
