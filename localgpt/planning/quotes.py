"""Quoted passages of a request: text the user gives to work on ("Read 'hello there' aloud", „Guten Tag“
vorlesen, 把「你好」读出来), which is data, not part of what is asked, and stays verbatim in the plan.

Every quotation mark in use is listed once, in :data:`PAIRS`. Typographic pairs (an opening mark that
differs from its closing one: “…”, ‘…’, „…“, «…», ‹…›, 「…」, 『…』) are unambiguous and read the same
way everywhere. Straight marks (``'``, ``"``, Hebrew ``״``) open and close alike, and an apostrophe
looks like a single quote, so they are read in one of two ways, each caller keeping its own:

- loose (``bounded=False``): any straight pair around three characters or more, or backticks around
  one or more. What is left out before reading what a request asks (:func:`outside_quotes`), where an
  apostrophe taken for a quote costs little.
- bounded (``bounded=True``): a straight pair around three characters or more, opened at the start,
  after a space, ``:`` or ``(`` and closed before a space, punctuation or the end. The text a mended plan
  works on, where the apostrophe of "don't" or "the cat's" must not open a passage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Opening mark -> closing marks. „ closes with “ (German) or ” (Polish, Hungarian); » opens Danish « ... ».
PAIRS: dict[str, str] = {
    "“": "”", "‘": "’", "„": "“”", "‚": "‘’", "«": "»", "‹": "›", "»": "«",
    "「": "」", "『": "』", "《": "》", "〈": "〉", "﹁": "﹂", "﹃": "﹄", "＂": "＂",
}
STRAIGHT = ("'", '"', "״")  # marks that open and close alike

_TYPOGRAPHIC = "|".join(
    f"{re.escape(o)}([^{re.escape(o + c)}\\n]+)[{re.escape(c)}]" for o, c in PAIRS.items()
)
_LOOSE = re.compile(r"'([^']{3,})'|\"([^\"]{3,})\"|״([^״]{3,})״|`([^`]+)`|" + _TYPOGRAPHIC)
_BOUNDED_STRAIGHT = re.compile(r"""(?:^|[\s:(（：])(['"״])(.{3,}?)\1(?=[\s.,;:!?)。，、！？）]|$)""")
_BOUNDED_TYPOGRAPHIC = re.compile(_TYPOGRAPHIC)


@dataclass(frozen=True)
class Quoted:
    """One quoted passage: where it lies in the request (quotes included) and its text (quotes left out)."""

    start: int
    end: int
    text: str


def _first(m: re.Match[str]) -> str:
    return next(g for g in m.groups() if g is not None)


def quoted_passages(request: str, *, bounded: bool = False) -> list[Quoted]:
    """The quoted passages of ``request`` in order (see the module docstring for the two readings).

    Example::

        [q.text for q in quoted_passages("Say 'hi there' then `ls`")]  # ['hi there', 'ls']
        [q.text for q in quoted_passages("把「你好世界」翻译成英文")]     # ['你好世界']
    """
    if not bounded:
        return [Quoted(m.start(), m.end(), _first(m)) for m in _LOOSE.finditer(request)]
    found = [Quoted(m.start(1), m.end(), m.group(2)) for m in _BOUNDED_STRAIGHT.finditer(request)]
    found += [Quoted(m.start(), m.end(), _first(m)) for m in _BOUNDED_TYPOGRAPHIC.finditer(request)
              if not any(q.start <= m.start() < q.end for q in found)]
    return sorted(found, key=lambda q: q.start)


def outside_quotes(request: str) -> str:
    """``request`` with each (loosely) quoted passage replaced by one space."""
    parts, at = [], 0
    for q in quoted_passages(request):
        if q.start < at:
            continue
        parts += [request[at:q.start], " "]
        at = q.end
    return "".join(parts) + request[at:]
