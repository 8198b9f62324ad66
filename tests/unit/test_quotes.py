"""Quoted passages of a request, in the two readings the planner (loose) and the plan mender (bounded) use."""

from __future__ import annotations

import pytest

from localgpt.planning.quotes import outside_quotes, quoted_passages


def texts(request: str, bounded: bool = False) -> list[str]:
    return [q.text for q in quoted_passages(request, bounded=bounded)]


def test_loose_reading_takes_any_pair_and_backticks() -> None:
    assert texts("Say 'hello there' and \"good night\" then run `ls`") == ["hello there", "good night", "ls"]
    assert texts("Say 'hi' now") == []  # fewer than three characters between quotes
    assert texts("don't translate the cat's toy") == ["t translate the cat"]  # an apostrophe opens one
    assert texts("a 'multi\nline' text") == ["multi\nline"]


def test_bounded_reading_needs_a_boundary_on_both_sides() -> None:
    assert texts("Read 'hello there' aloud", bounded=True) == ["hello there"]
    assert texts('Summarize: "It was a dark night." Then stop', bounded=True) == ["It was a dark night."]
    assert texts("(\"abc\")", bounded=True) == ["abc"]
    assert texts("don't translate the cat's toy", bounded=True) == []
    assert texts("run `ls -l` now", bounded=True) == []  # backticks are not quotes here
    assert texts("say 'it's fine' please", bounded=True) == ["it's fine"]


@pytest.mark.parametrize("bounded", [False, True])
def test_spans_cover_the_quotes(bounded: bool) -> None:
    request = "Read 'hello there' aloud"
    [q] = quoted_passages(request, bounded=bounded)
    assert request[q.start:q.end] == "'hello there'"


def test_outside_quotes_blanks_each_passage() -> None:
    assert outside_quotes("Read 'then and also' aloud, then `x` and \"finally this\"") == \
        "Read   aloud, then   and  "
    assert outside_quotes("no quotes here") == "no quotes here"
