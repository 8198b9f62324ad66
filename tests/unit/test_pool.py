"""The model pool with real tiny transformers models: eviction under a RAM budget, the VRAM budget,
serialised concurrent use, and models that cannot fit."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import ExpertError
from localgpt.experts.base import ExpertContext
from localgpt.experts.hf import TransformersExpert
from localgpt.runtime.pool import ModelPool, expert_on_gpu
from localgpt.runtime.runs import RunDir
from localgpt.schema import ModelCard
from localgpt.testing import FakeExpert, Recorder, fake_card, fake_factory
from tests.integration.test_hf_vision import inputs_for, tiny_card


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny-hf"


def cpu_ctx(tmp: Path, **extra: Any) -> ExpertContext:
    return ExpertContext(settings=Settings(store=tmp / "store", runs_dir=tmp / "runs", device="cpu", threads=1),
                         extra=extra)


def test_small_budget_evicts_and_closes_the_first_real_model(tiny_base: Path, tmp_path: Path) -> None:
    vit, seg = tiny_card(tiny_base, "vit"), tiny_card(tiny_base, "segformer")
    assert vit.size_bytes > 0 and seg.size_bytes > 0
    pool = ModelPool(cpu_ctx(tmp_path), budget_bytes=max(vit.size_bytes, seg.size_bytes) + 1)
    out = RunDir(tmp_path / "run")

    with pool.use(vit) as first:
        assert isinstance(first, TransformersExpert) and first.loaded
        labels = first.run("image-classification", inputs_for("image-classification", tmp_path), out)
        assert labels.data["labels"]
    model_ref = weakref.ref(first.pipe.model)
    with pool.use(seg) as second:
        second.run("image-segmentation", inputs_for("image-segmentation", tmp_path), out)
    assert pool.loaded_ids() == ["tiny-segformer"]
    assert not first.loaded and first.pipe is None
    gc.collect()
    assert model_ref() is None  # the evicted model's weights are gone
    assert pool.used() == seg.size_bytes == pool.used(gpu=False) and pool.used(gpu=True) == 0
    # the first comes back on demand, pushing out the second
    with pool.use(vit) as again:
        assert again is not first and again.loaded
    assert pool.loaded_ids() == ["tiny-vit"] and not second.loaded and pool.loads == 3
    pool.close()
    assert pool.loaded_ids() == [] and not again.loaded


def test_budget_for_both_keeps_both(tiny_base: Path, tmp_path: Path) -> None:
    vit, seg = tiny_card(tiny_base, "vit"), tiny_card(tiny_base, "segformer")
    pool = ModelPool(cpu_ctx(tmp_path), budget_bytes=vit.size_bytes + seg.size_bytes)
    a, b = pool.get(vit), pool.get(seg)
    assert pool.get(vit) is a and pool.loaded_ids() == ["tiny-segformer", "tiny-vit"] and b.loaded
    assert pool.loads == 2


def test_model_that_cannot_fit_names_model_and_size(tiny_base: Path, tmp_path: Path) -> None:
    vit = tiny_card(tiny_base, "vit")
    big = vit.model_copy(update={"id": "big-vit", "size_bytes": 300 << 20})
    pool = ModelPool(cpu_ctx(tmp_path), budget_bytes=200 << 20)
    with pytest.raises(ExpertError) as err:
        pool.get(big)
    assert "big-vit" in err.value.message and "300 MB" in err.value.message and "200 MB" in err.value.message
    assert "RAM" in err.value.message and "LOCALGPT_MEMORY_BUDGET_MB" in (err.value.hint or "")
    assert pool.loaded_ids() == [] and pool.loads == 0


class CountingExpert(TransformersExpert):
    """A real tiny transformers expert that records how many runs are inside it at once."""

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> Any:
        gauge = self.ctx.extra["gauge"]
        with gauge["lock"]:
            gauge["active"] += 1
            gauge["peak"] = max(gauge["peak"], gauge["active"])
        try:
            time.sleep(0.05)  # widen the window in which an unserialised second run would overlap
            return super().run(task, inputs, out)
        finally:
            with gauge["lock"]:
                gauge["active"] -= 1


def test_concurrent_runs_of_one_expert_are_serialised(tiny_base: Path, tmp_path: Path) -> None:
    gauge: dict[str, Any] = {"lock": threading.Lock(), "active": 0, "peak": 0}
    ctx = cpu_ctx(tmp_path, gauge=gauge)
    pool = ModelPool(ctx, budget_bytes=1 << 30, factory=lambda card: CountingExpert(card, ctx))
    card = tiny_card(tiny_base, "vit")
    out = RunDir(tmp_path / "run")
    inputs = inputs_for("image-classification", tmp_path)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with pool.use(card) as expert:
                results.append(expert.run("image-classification", inputs, out).data["labels"][0]["label"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 6 and len(set(results)) == 1  # same model, same input, same answer
    assert gauge["peak"] == 1  # never two runs inside the expert at once
    assert pool.loads == 1


class GpuFake(FakeExpert):
    """A fake expert that reports it runs on a GPU."""

    device = "cuda"


def gpu_pool(tmp: Path, ram: int, vram: int) -> tuple[ModelPool, Recorder]:
    rec = Recorder()
    ctx = ExpertContext(settings=Settings(store=tmp / "store", runs_dir=tmp / "runs"), extra={"recorder": rec})
    factory = fake_factory(ctx, {"fake": FakeExpert, "gpu": GpuFake})
    pool = ModelPool(ctx, ram, factory=factory, vram_budget_bytes=vram,
                     placement=lambda card: "cuda" in card.devices)
    return pool, rec


def gpu_card(model_id: str, size: int) -> ModelCard:
    return fake_card(model_id, ["image-classification"], size=size, backend="gpu").model_copy(
        update={"devices": ["cpu", "cuda"]})


def test_vram_budget_evicts_only_gpu_models(tmp_path: Path) -> None:
    pool, rec = gpu_pool(tmp_path, ram=100, vram=100)
    pool.get(gpu_card("g1", 60))
    pool.get(fake_card("c1", ["summarization"], size=60))
    assert pool.used(gpu=True) == 60 and pool.used(gpu=False) == 60
    pool.get(gpu_card("g2", 60))  # VRAM is full: g1 goes, the CPU model stays
    assert rec.closes == ["g1"] and pool.loaded_ids() == ["c1", "g2"]
    pool.get(fake_card("c2", ["summarization"], size=60))  # RAM is full: c1 goes, the GPU model stays
    assert rec.closes == ["g1", "c1"] and pool.loaded_ids() == ["g2", "c2"]
    assert pool.used() == 120  # the two budgets are separate


def test_model_too_big_for_vram_is_a_clear_error(tmp_path: Path) -> None:
    pool, rec = gpu_pool(tmp_path, ram=1 << 40, vram=100 << 20)
    with pytest.raises(ExpertError) as err:
        pool.get(gpu_card("huge-gpu-model", 150 << 20))
    assert "huge-gpu-model" in err.value.message and "150 MB" in err.value.message
    assert "GPU memory" in err.value.message and "LOCALGPT_VRAM_BUDGET_MB" in (err.value.hint or "")
    assert rec.loads == []


def test_model_landing_on_the_gpu_unexpectedly_is_counted_there(tmp_path: Path) -> None:
    pool, rec = gpu_pool(tmp_path, ram=100, vram=100)
    pool.get(gpu_card("g1", 70))
    # predicted for the CPU (its card lists no cuda) but its expert reports a GPU: VRAM is made room in
    surprise = fake_card("surprise", ["image-classification"], size=70, backend="gpu")
    pool.get(surprise)
    assert rec.closes == ["g1"] and pool.used(gpu=True) == 70 and pool.used(gpu=False) == 0


def test_a_running_gpu_model_is_never_evicted(tmp_path: Path) -> None:
    pool, rec = gpu_pool(tmp_path, ram=1 << 30, vram=100)
    busy = gpu_card("busy", 60)
    with pool.use(busy), pytest.raises(ExpertError, match="does not fit in GPU memory beside the models now running"):
        pool.get(gpu_card("other", 60))
    assert rec.closes == [] and pool.loaded_ids() == ["busy"]


def test_vram_budget_from_settings_and_default_placement(tmp_path: Path) -> None:
    ctx = ExpertContext(settings=Settings(store=tmp_path, runs_dir=tmp_path, vram_budget_mb=512, device="cpu"))
    pool = ModelPool(ctx, 1 << 30)
    assert pool.vram_budget == 512 << 20
    card = gpu_card("g", 1)
    assert pool.placement(card) is False  # device=cpu keeps every model on the CPU
    assert expert_on_gpu(GpuFake(card, ctx)) and not expert_on_gpu(FakeExpert(card, ctx))
