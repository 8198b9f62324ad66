"""The model pool: experts load lazily, stay loaded for reuse, and are evicted least-recently-used
when a memory budget would be exceeded — RAM for models on the CPU, VRAM for models on a GPU.
Runs of one expert are serialised."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from localgpt.errors import ExpertError
from localgpt.experts import expert_class
from localgpt.experts.base import Expert, ExpertContext
from localgpt.schema import ModelCard

log = logging.getLogger(__name__)

ExpertFactory = Callable[[ModelCard], Expert]
Placement = Callable[[ModelCard], bool]

RAM, VRAM = "RAM", "GPU memory"


@dataclass
class _Entry:
    """A loaded expert, the bytes it is counted for and whether they sit on the GPU."""

    expert: Expert
    size: int
    on_gpu: bool


def gpu_total_bytes() -> int:
    """Memory of the first CUDA GPU as the driver reports it; 0 when there is none."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    device, total = ctypes.c_int(0), ctypes.c_size_t(0)
    try:
        if driver.cuInit(0) != 0 or driver.cuDeviceGet(ctypes.byref(device), 0) != 0:
            return 0
        if driver.cuDeviceTotalMem_v2(ctypes.byref(total), device) != 0:
            return 0
    except AttributeError:
        return 0
    return int(total.value)


def expert_on_gpu(expert: Expert) -> bool:
    """Whether a loaded expert says it runs on a GPU (its ``device`` or its onnxruntime ``providers``)."""
    if getattr(expert, "device", None) == "cuda":
        return True
    providers = getattr(expert, "providers", None) or []
    return bool(providers) and str(providers[0]).startswith("CUDA")


class ModelPool:
    """Keeps loaded experts under ``budget_bytes`` of RAM and ``vram_budget_bytes`` of GPU memory
    (both estimated from model sizes on disk).

    ``factory`` builds an (unloaded) expert from a card; tests pass fake experts this way.
    ``vram_budget_bytes`` defaults to ``settings.vram_budget_mb``, or 90% of the GPU's memory when
    that is 0. Where a model goes is guessed before loading (``placement``: by default a GPU when
    the card lists "cuda", the device setting allows it and a GPU answers) and corrected from what
    the loaded expert reports.

    Example::

        pool = ModelPool(ExpertContext(settings), budget_bytes=8 << 30)
        with pool.use(card) as expert:   # loaded, and not evicted while in use
            expert.run(task, inputs, run_dir)
    """

    def __init__(self, ctx: ExpertContext, budget_bytes: int, factory: ExpertFactory | None = None, *,
                 vram_budget_bytes: int | None = None, placement: Placement | None = None) -> None:
        self.ctx = ctx
        self.budget = budget_bytes
        self.factory = factory or self._default_factory
        self.placement = placement or self._default_placement
        self._vram_budget = vram_budget_bytes
        self._gpu: bool | None = None
        self._loaded: OrderedDict[str, _Entry] = OrderedDict()
        self._run_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def _default_factory(self, card: ModelCard) -> Expert:
        return expert_class(card.backend)(card, self.ctx)

    def _default_placement(self, card: ModelCard) -> bool:
        """A GPU when the card supports one, the settings allow it and a GPU is present."""
        if self.ctx.settings.device == "cpu" or "cuda" not in card.devices:
            return False
        if self._gpu is None:
            from localgpt.experts.onnx import cuda_gpu_present

            self._gpu = cuda_gpu_present()
        return self._gpu

    @property
    def vram_budget(self) -> int:
        """Bytes of GPU memory the pool may fill."""
        if self._vram_budget is None:
            configured = int(getattr(self.ctx.settings, "vram_budget_mb", 0) or 0)
            self._vram_budget = configured << 20 if configured else int(gpu_total_bytes() * 0.9)
        return self._vram_budget

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
            entry = self._loaded.get(card.id)
            if entry is not None:
                self._loaded.move_to_end(card.id)
                return entry.expert
            size = card.size_bytes
            on_gpu = self.placement(card)
            budget, where = (self.vram_budget, VRAM) if on_gpu else (self.budget, RAM)
            if size > budget:
                setting = "LOCALGPT_VRAM_BUDGET_MB" if on_gpu else "LOCALGPT_MEMORY_BUDGET_MB"
                raise ExpertError(
                    f"model '{card.id}' needs {size / 2**20:.0f} MB, more than the pool's {where} budget of "
                    f"{budget / 2**20:.0f} MB", f"raise {setting} or use a smaller model")
            self._make_room(card, size, on_gpu, strict=True)
            expert = self.factory(card)
            try:
                expert.load()
            except ExpertError:
                raise
            except Exception as exc:
                raise ExpertError(f"model '{card.id}' failed to load: {exc}") from exc
            actual = expert_on_gpu(expert)
            if actual != on_gpu:  # it went elsewhere than expected: count it there
                log.info("model %s was loaded on the %s", card.id, "GPU" if actual else "CPU")
                self._make_room(card, size, actual, strict=False)
            self.loads += 1
            self._run_locks.setdefault(card.id, threading.Lock())
            self._loaded[card.id] = _Entry(expert, size, actual)
            return expert

    def _make_room(self, card: ModelCard, size: int, on_gpu: bool, strict: bool) -> None:
        """Close least-recently-used idle experts of the same memory until ``size`` more bytes fit.

        ``strict``: an ExpertError when the models now running leave no room; else only a warning."""
        budget, where = (self.vram_budget, VRAM) if on_gpu else (self.budget, RAM)
        while self.used(gpu=on_gpu) + size > budget:
            victim = next((k for k, e in self._loaded.items()
                           if e.on_gpu == on_gpu and not self._run_locks[k].locked()), None)
            if victim is None:
                if not strict:
                    log.warning("model %s goes over the pool's %s budget", card.id, where)
                    return
                raise ExpertError(
                    f"model '{card.id}' ({size / 2**20:.0f} MB) does not fit in {where} beside the models now "
                    "running", "run fewer tasks at once (LOCALGPT_MAX_WORKERS) or raise "
                    + ("LOCALGPT_VRAM_BUDGET_MB" if on_gpu else "LOCALGPT_MEMORY_BUDGET_MB"))
            self._loaded.pop(victim).expert.close()

    def used(self, gpu: bool | None = None) -> int:
        """Bytes held by loaded experts (estimate): all of them, or only those on the GPU (``gpu=True``)
        or the CPU (``gpu=False``)."""
        return sum(e.size for e in self._loaded.values() if gpu is None or e.on_gpu == gpu)

    def loaded_ids(self) -> list[str]:
        """Ids of loaded experts, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def close(self) -> None:
        """Unload every expert not in use (one still running, e.g. after a timeout, is left to finish)."""
        with self._lock:
            for model_id in list(self._loaded):
                if not self._run_locks[model_id].locked():
                    self._loaded.pop(model_id).expert.close()
