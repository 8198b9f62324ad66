"""Quoted passages of a request: text the user gives to work on ("Read 'hello there' aloud"), which is data,
not part of what is asked.

Two readings are in use, and each caller's plans depend on its own, so they stay apart behind one option:

- loose (``bounded=False``): any ``'...'`` or ``"..."`` around three characters or more, or backticks
  around one or more. What is left out before reading what a request asks (:func:`outside_quotes`), where
  an apostrophe taken for a quote costs little.
- bounded (``bounded=True``): ``'...'`` or ``"..."`` around three characters or more, opened at the start,
  after a space, ``:`` or ``(`` and closed before a space, punctuation or the end. The text a mended plan
  works on, where the apostrophe of "don't" or "the cat's" must not open a passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LOOSE = re.compile(r"'([^']{3,})'|\"([^\"]{3,})\"|`([^`]+)`")
_BOUNDED = re.compile(r"""(?:^|[\s:(])(['"])(.{3,}?)\1(?=[\s.,;:!?)]|$)""")


@dataclass(frozen=True)
class Quoted:
    """One quoted passage: where it lies in the request (quotes included) and its text (quotes left out)."""

    start: int
    end: int
    text: str


def quoted_passages(request: str, *, bounded: bool = False) -> list[Quoted]:
    """The quoted passages of ``request`` in order (see the module docstring for the two readings).

    Example::

        [q.text for q in quoted_passages("Say 'hi there' then `ls`")]  # ['hi there', 'ls']
    """
    if bounded:
        return [Quoted(m.start(1), m.end(), m.group(2)) for m in _BOUNDED.finditer(request)]
    return [Quoted(m.start(), m.end(), next(g for g in m.groups() if g is not None))
            for m in _LOOSE.finditer(request)]


def outside_quotes(request: str) -> str:
    """``request`` with each (loosely) quoted passage replaced by one space."""
    parts, at = [], 0
    for q in quoted_passages(request):
        parts += [request[at:q.start], " "]
        at = q.end
    return "".join(parts) + request[at:]
