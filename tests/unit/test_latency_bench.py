"""bench.latency's --server-variants: each variant a set of LOCALGPT_ settings checked against Settings."""

from __future__ import annotations

import pytest

from bench.latency import server_variants


def test_variants_are_settings_with_their_labels() -> None:
    assert server_variants("") == [("defaults", {})]
    assert server_variants(" llm_mmap = 1, PROMPT_CACHE_MB=512 ;") == [
        ("LLM_MMAP=1,PROMPT_CACHE_MB=512", {"LLM_MMAP": "1", "PROMPT_CACHE_MB": "512"}), ("defaults", {})]


@pytest.mark.parametrize(("text", "says"), [
    ("LLM_MMAP", "write NAME=VALUE"),
    ("NO_SUCH_THING=1", "LOCALGPT_NO_SUCH_THING is no setting"),
    ("PROMPT_CACHE_MB=64;PROMPT_CACHE_MB=64", "given twice"),
    (";", "given twice"),
])
def test_a_bad_variant_is_refused_with_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        server_variants(text)
