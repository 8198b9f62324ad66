"""Similarity of a request to the demos, for choosing the worked examples shown to the planner."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from localgpt.tasks import kind_by_name

# Scripts written without spaces between words: Han, kana, Hangul syllables, Thai. A run of them is read
# as its character bigrams (and a lone character as itself), which match across requests where words
# cannot be split without a dictionary.
_UNSPACED = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u0e00-\u0e7f"
_TOKEN = re.compile(f"[{_UNSPACED}]+|[^\\W_{_UNSPACED}]+")
_IS_UNSPACED = re.compile(f"[{_UNSPACED}]")
_FILE = re.compile(r"[\w./\\~-]+\.([A-Za-z0-9]{2,5})\b")


def tokens(text: str) -> set[str]:
    """The tokens of ``text`` for comparing requests in any script: its words, case-folded (letters and
    digits of every script, ``_`` and punctuation splitting them), and for runs of Chinese, Japanese,
    Korean or Thai characters their character bigrams. A file name of an image, audio or video counts
    as the kind (``<image>``): its name says nothing of what is asked ("a.jpg" is no article).

    Example::

        tokens("Describe photo.jpg")  # {'describe', '<image>'}
        tokens("描述这张照片")          # {'描述', '述这', '这张', '张照', '照片'}
    """
    found: set[str] = set()

    def kind_token(m: re.Match[str]) -> str:
        kind = kind_by_name(m.group(0))
        if kind is None:
            return m.group(0)
        found.add(f"<{kind.value}>")
        return " "

    text = _FILE.sub(kind_token, text)
    for m in _TOKEN.finditer(text.casefold()):
        word = m.group(0)
        if _IS_UNSPACED.match(word) and len(word) > 1:
            found.update(word[i:i + 2] for i in range(len(word) - 1))
        else:
            found.add(word)
    return found


def word_overlap(request: str, candidates: Sequence[str]) -> list[float]:
    """Similarity of ``request`` to each candidate: the Jaccard overlap of their :func:`tokens`."""
    wa = tokens(request)
    scores = []
    for text in candidates:
        wb = tokens(text)
        scores.append(len(wa & wb) / max(1, len(wa | wb)))
    return scores


Embedder = Callable[[list[str]], Any]


class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings (e.g. the MiniLM expert's ``embed``).

    Demo embeddings are computed once and kept, so each request costs one embedding.
    """

    def __init__(self, embed: Embedder) -> None:
        self.embed = embed
        self._known: dict[str, Any] = {}

    def __call__(self, request: str, candidates: Sequence[str]) -> list[float]:
        """Cosine similarity of ``request`` to each candidate (vectors are unit length)."""
        import numpy as np

        missing = [c for c in dict.fromkeys(candidates) if c not in self._known]
        if missing:
            for text, vec in zip(missing, self.embed(missing), strict=True):
                self._known[text] = np.asarray(vec, dtype=np.float32)
        known = self._known.get(request)
        query = known if known is not None else np.asarray(self.embed([request])[0], dtype=np.float32)
        return [float(self._known[c] @ query) for c in candidates]


Similarity = Callable[[str, Sequence[str]], list[float]]
