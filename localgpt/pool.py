"""The model pool: experts load lazily, stay loaded for reuse, and are evicted least-recently-used
when the memory budget would be exceeded. Runs of one expert are serialised."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from localgpt.errors import ExpertError
from localgpt.experts import expert_class
from localgpt.experts.base import Expert, ExpertContext
from localgpt.schema import ModelCard

ExpertFactory = Callable[[ModelCard], Expert]


class ModelPool:
    """Keeps loaded experts under ``budget_bytes`` (estimated from model sizes on disk).

    ``factory`` builds an (unloaded) expert from a card; tests pass fake experts this way.

    Example::

        pool = ModelPool(ExpertContext(settings), budget_bytes=8 << 30)
        with pool.use(card) as expert:   # loaded, and not evicted while in use
            expert.run(task, inputs, run_dir)
    """

    def __init__(self, ctx: ExpertContext, budget_bytes: int, factory: ExpertFactory | None = None) -> None:
        self.ctx = ctx
        self.budget = budget_bytes
        self.factory = factory or self._default_factory
        self._loaded: OrderedDict[str, tuple[Expert, int]] = OrderedDict()
        self._run_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def _default_factory(self, card: ModelCard) -> Expert:
        return expert_class(card.backend)(card, self.ctx)

    def lock_for(self, card: ModelCard) -> threading.Lock:
        """The lock that serialises runs of ``card``'s expert."""
        with self._lock:
            return self._run_locks.setdefault(card.id, threading.Lock())

    @contextmanager
    def use(self, card: ModelCard) -> Iterator[Expert]:
        """The loaded expert for ``card``, held for one run: runs of one model are serialised and
        a model in use is never evicted (its run lock is taken before it is looked up)."""
        with self.lock_for(card):
            yield self.get(card)

    def get(self, card: ModelCard) -> Expert:
        """The loaded expert for ``card``, loading it (and evicting others) when needed."""
        with self._lock:
            if card.id in self._loaded:
                self._loaded.move_to_end(card.id)
                return self._loaded[card.id][0]
            size = card.size_bytes
            if size > self.budget:
                raise ExpertError(
                    f"model '{card.id}' needs {size / 2**20:.0f} MB, more than the pool's budget of "
                    f"{self.budget / 2**20:.0f} MB", "raise LOCALGPT_MEMORY_BUDGET_MB or use a smaller model")
            while self.used() + size > self.budget:
                victim = next((k for k in self._loaded if not self._run_locks[k].locked()), None)
                if victim is None:
                    raise ExpertError(
                        f"model '{card.id}' does not fit beside the models now running",
                        "run fewer tasks at once (LOCALGPT_MAX_WORKERS) or raise LOCALGPT_MEMORY_BUDGET_MB")
                old, _ = self._loaded.pop(victim)
                old.close()
            expert = self.factory(card)
            try:
                expert.load()
            except ExpertError:
                raise
            except Exception as exc:
                raise ExpertError(f"model '{card.id}' failed to load: {exc}") from exc
            self.loads += 1
            self._run_locks.setdefault(card.id, threading.Lock())
            self._loaded[card.id] = (expert, size)
            return expert

    def used(self) -> int:
        """Bytes held by loaded experts (estimate)."""
        return sum(size for _, size in self._loaded.values())

    def loaded_ids(self) -> list[str]:
        """Ids of loaded experts, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def close(self) -> None:
        """Unload every expert not in use (one still running, e.g. after a timeout, is left to finish)."""
        with self._lock:
            for model_id in list(self._loaded):
                if not self._run_locks[model_id].locked():
                    expert, _ = self._loaded.pop(model_id)
                    expert.close()
