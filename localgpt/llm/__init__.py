"""The controller LLM: the protocol every engine implements (``localgpt.llm.base``) and its engines
(``localgpt.llm.llamacpp``: a GGUF in-process). The protocol's names are importable from here."""

from localgpt.llm.base import (
    FREE_TEXT_REPEAT_PENALTY,
    KEEP,
    LLM,
    MESSAGE_OVERHEAD,
    Completion,
    LLMStats,
    Message,
    TokenCallback,
    complete,
    context_budget,
    ending_logprobs,
    plain,
    prompt_tokens,
    schema_key,
    schema_label,
    trim_history,
)

__all__ = ["FREE_TEXT_REPEAT_PENALTY", "KEEP", "LLM", "MESSAGE_OVERHEAD", "Completion", "LLMStats", "Message",
           "TokenCallback", "complete", "context_budget", "ending_logprobs", "plain", "prompt_tokens", "schema_key",
           "schema_label", "trim_history"]
