"""Similarity of a request to the demos, for choosing the worked examples shown to the planner."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any


def word_overlap(request: str, candidates: Sequence[str]) -> list[float]:
    """Similarity of ``request`` to each candidate: Jaccard overlap of lower-case words."""
    wa = set(re.findall(r"[a-z]+", request.lower()))
    scores = []
    for text in candidates:
        wb = set(re.findall(r"[a-z]+", text.lower()))
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
