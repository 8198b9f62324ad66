"""The `<resource>-N` grammar (and HuggingGPT's `<GENERATED>-N`): finding and renumbering references to task outputs."""

from __future__ import annotations

import re
from collections.abc import Mapping

# "<resource>-N" (localgpt) and "<GENERATED>-N" (HuggingGPT) both name task N's output.
REFERENCE = re.compile(r"<(?:resource|generated)>-(\d+)", re.IGNORECASE)


def references(value: str) -> list[int]:
    """Task ids referenced in an argument value."""
    return [int(m) for m in REFERENCE.findall(value)]


def renumber(value: str, new_id: Mapping[int, int]) -> str:
    """``value`` with each reference to task N pointing at task ``new_id[N]`` (written
    ``<resource>-M``), all in one pass; a reference to a task not in ``new_id`` is left as it is."""
    def sub(m: re.Match[str]) -> str:
        old = int(m.group(1))
        return f"<resource>-{new_id[old]}" if old in new_id else m.group(0)
    return REFERENCE.sub(sub, value)


def is_pure_reference(value: str) -> bool:
    """Whether the whole value is one reference (so it can stand for a file)."""
    return REFERENCE.fullmatch(value.strip()) is not None
