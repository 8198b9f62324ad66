"""The DAG executor and the model pool, with fake experts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from localgpt.config import Settings
from localgpt.errors import ExpertError
from localgpt.experts.base import ExpertContext
from localgpt.runtime.executor import Executor, resolve_args
from localgpt.runtime.media import sniff_kind
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.runs import InputFiles, RunDir
from localgpt.schema import Event, ModelCard, Plan, Task, TaskResult
from localgpt.tasks import Kind
from localgpt.testing import FakeExpert, Recorder, fake_card, fake_factory, png_bytes, wav_bytes


class Env:
    """A pool of fake experts, a run folder and an event log."""

    def __init__(self, tmp: Path, budget: int = 1 << 30) -> None:
        self.rec = Recorder()
        self.ctx = ExpertContext(settings=Settings(store=tmp / "store", runs_dir=tmp / "runs"),
                                 extra={"recorder": self.rec})
        self.pool = ModelPool(self.ctx, budget, factory=fake_factory(self.ctx))
        self.out = RunDir(tmp / "run")
        self.events: list[Event] = []
        self.tmp = tmp

    def run(self, tasks: list[Task], cards: dict[int, ModelCard], files: InputFiles | None = None,
            timeout: float = 30.0, failed: dict[int, str] | None = None, workers: int = 4) -> list[TaskResult]:
        executor = Executor(self.pool, max_workers=workers, timeout=timeout)
        return executor.run(Plan(tasks=tasks), cards, files or InputFiles(roots=[self.tmp]), self.out,
                            self.events.append, failed=failed)

    def types(self, task_id: int) -> list[str]:
        return [e.type for e in self.events if e.data.get("id") == task_id]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def task(i: int, name: str, args: dict[str, str], dep: list[int] | None = None) -> Task:
    return Task(id=i, task=name, dep=dep or [], args=args)


def by_id(results: list[TaskResult]) -> dict[int, TaskResult]:
    return {r.id: r for r in results}


def test_independent_tasks_run_in_parallel(env: Env) -> None:
    a, b = fake_card("a", ["summarization"], sleep=0.5), fake_card("b", ["translation"], sleep=0.5)
    tasks = [task(0, "summarization", {"text": "x"}), task(1, "translation", {"text": "y"})]
    start = time.perf_counter()
    results = env.run(tasks, {0: a, 1: b})
    elapsed = time.perf_counter() - start
    assert [r.status for r in results] == ["done", "done"]
    assert elapsed < 0.85, f"independent tasks took {elapsed:.2f} s: not parallel"


def test_chain_runs_in_order(env: Env) -> None:
    a, b = fake_card("a", ["summarization"], sleep=0.5), fake_card("b", ["translation"], sleep=0.5)
    tasks = [task(0, "summarization", {"text": "x"}), task(1, "translation", {"text": "<resource>-0"}, [0])]
    start = time.perf_counter()
    results = env.run(tasks, {0: a, 1: b})
    assert time.perf_counter() - start >= 1.0
    assert [r.status for r in results] == ["done", "done"]


def test_text_reference_substituted(env: Env) -> None:
    a, b = fake_card("a", ["summarization"]), fake_card("b", ["text-to-speech"])
    tasks = [task(0, "summarization", {"text": "long story"}),
             task(1, "text-to-speech", {"text": "say <resource>-0 now"}, [0])]
    results = by_id(env.run(tasks, {0: a, 1: b}))
    first = results[0].outputs["text"]
    assert first == "a(summarization): text=long story"
    assert results[1].args["text"] == f"say {first} now"
    assert env.rec.runs[1]["inputs"]["text"] == f"say {first} now"


def test_text_reference_to_image_and_text_task_takes_text(env: Env, tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(png_bytes("cat"))
    det, summ = fake_card("det", ["object-detection"]), fake_card("sum", ["summarization"])
    tasks = [task(0, "object-detection", {"image": "cat.png"}),
             task(1, "summarization", {"text": "<GENERATED>-0"}, [0])]
    results = by_id(env.run(tasks, {0: det, 1: summ}, InputFiles([tmp_path / "cat.png"])))
    assert results[0].status == "done" and set(results[0].outputs) == {"image", "text"}
    assert results[1].args["text"] == results[0].outputs["text"]


def test_file_reference_substituted(env: Env) -> None:
    tts, asr = fake_card("tts", ["text-to-speech"]), fake_card("asr", ["automatic-speech-recognition"])
    tasks = [task(0, "text-to-speech", {"text": "hello"}),
             task(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, [0])]
    results = by_id(env.run(tasks, {0: tts, 1: asr}))
    wav = Path(results[0].outputs["audio"])
    assert wav.is_absolute() and wav.parent == env.out.path and wav.suffix == ".wav"
    assert sniff_kind(wav) is Kind.AUDIO
    assert results[1].status == "done"
    assert results[1].args["audio"] == str(wav)
    assert env.rec.runs[1]["read"]["audio"] == wav.read_bytes()


def test_user_file_resolved_to_absolute_path(env: Env, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes("photo"))
    card = fake_card("cls", ["image-classification"])
    results = env.run([task(0, "image-classification", {"image": "photo.png"})], {0: card}, InputFiles([photo]))
    assert results[0].status == "done"
    assert results[0].args["image"] == str(photo.resolve())


def test_failure_isolated_and_dependants_skipped(env: Env) -> None:
    bad = fake_card("bad", ["summarization"], fail="boom: out of memory")
    good = fake_card("good", ["translation"])
    tts = fake_card("tts", ["text-to-speech"])
    tasks = [task(0, "summarization", {"text": "x"}),
             task(1, "translation", {"text": "<resource>-0"}, [0]),
             task(2, "translation", {"text": "independent"}),
             task(3, "text-to-speech", {"text": "<resource>-1"}, [1])]
    results = by_id(env.run(tasks, {0: bad, 1: good, 2: good, 3: tts}))
    assert results[0].status == "failed"
    assert "boom: out of memory" in (results[0].error or "") and "bad" in (results[0].error or "")
    assert results[1].status == "skipped" and "task 0" in (results[1].error or "")
    assert results[2].status == "done"
    assert results[3].status == "skipped" and "task 1" in (results[3].error or "")
    assert "boom" in (results[3].error or "")  # the root cause travels down the chain
    assert [r["task"] for r in env.rec.runs] == ["summarization", "translation"]  # skipped ones never ran
    assert env.types(1) == ["task_failed"] and env.types(3) == ["task_failed"]


def test_timeout(env: Env) -> None:
    slow, quick = fake_card("slow", ["summarization"], sleep=2.0), fake_card("quick", ["translation"])
    tasks = [task(0, "summarization", {"text": "x"}), task(1, "translation", {"text": "<resource>-0"}, [0]),
             task(2, "translation", {"text": "y"})]
    start = time.perf_counter()
    results = by_id(env.run(tasks, {0: slow, 1: quick, 2: quick}, timeout=0.3))
    assert time.perf_counter() - start < 1.5
    assert results[0].status == "failed" and "timed out" in (results[0].error or "")
    assert results[1].status == "skipped"
    assert results[2].status == "done"


def test_wrong_kind_user_file_fails_task(env: Env, tmp_path: Path) -> None:
    fake_png = tmp_path / "x.png"
    fake_png.write_text("this is text, not an image")
    card = fake_card("cls", ["image-classification"])
    tasks = [task(0, "image-classification", {"image": "x.png"}), task(1, "summarization", {"text": "<resource>-0"},
                                                                       [0])]
    results = by_id(env.run(tasks, {0: card, 1: fake_card("s", ["summarization"])}, InputFiles([fake_png])))
    assert results[0].status == "failed"
    assert "x.png" in (results[0].error or "") and "should be image" in (results[0].error or "")
    assert results[1].status == "skipped"
    assert env.rec.runs == []


def test_user_file_outside_roots_fails_task(env: Env, tmp_path: Path) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other.png"
    elsewhere.write_bytes(png_bytes())
    try:
        files = InputFiles(roots=[tmp_path / "allowed"])
        results = env.run([task(0, "image-classification", {"image": str(elsewhere)})],
                          {0: fake_card("cls", ["image-classification"])}, files)
        assert results[0].status == "failed" and "outside" in (results[0].error or "")
    finally:
        elsewhere.unlink()


def test_events_in_order(env: Env) -> None:
    a, bad = fake_card("a", ["summarization"]), fake_card("bad", ["translation"], fail="nope")
    tasks = [task(0, "summarization", {"text": "x"}), task(1, "translation", {"text": "<resource>-0"}, [0]),
             task(2, "text-to-speech", {"text": "<resource>-1"}, [1])]
    env.run(tasks, {0: a, 1: bad, 2: fake_card("t", ["text-to-speech"])})
    assert env.types(0) == ["task_start", "task_done"]
    assert env.types(1) == ["task_start", "task_failed"]
    assert env.types(2) == ["task_failed"]
    order = [(e.type, e.data["id"]) for e in env.events]
    assert order.index(("task_done", 0)) < order.index(("task_start", 1))
    start = next(e for e in env.events if e.type == "task_start")
    assert start.data["model"] == "a" and start.data["args"] == {"text": "x"}
    skipped = env.events[-1]
    assert skipped.data["status"] == "skipped"


def test_prefailed_tasks_skip_dependants(env: Env) -> None:
    tasks = [task(0, "depth-estimation", {"image": "a.png"}), task(1, "image-to-text", {"image": "<resource>-0"}, [0]),
             task(2, "summarization", {"text": "x"})]
    results = by_id(env.run(tasks, {2: fake_card("s", ["summarization"])}, failed={0: "no installed model"}))
    assert results[0].status == "failed" and results[0].error == "no installed model"
    assert results[1].status == "skipped" and "no installed model" in (results[1].error or "")
    assert results[2].status == "done"
    assert env.types(0) == ["task_failed"]
    assert [r["task"] for r in env.rec.runs] == ["summarization"]


def test_results_follow_plan_order(env: Env) -> None:
    slow, fast = fake_card("slow", ["summarization"], sleep=0.2), fake_card("fast", ["translation"])
    results = env.run([task(0, "summarization", {"text": "x"}), task(1, "translation", {"text": "y"})],
                      {0: slow, 1: fast})
    assert [r.id for r in results] == [0, 1]
    assert [e.data["id"] for e in env.events if e.type == "task_done"] == [1, 0]


def test_expert_missing_primary_output_fails(env: Env) -> None:
    class Mute(FakeExpert):
        def run(self, task: str, inputs: dict[str, str], out: RunDir) -> Any:
            from localgpt.experts.base import ExpertOutput
            return ExpertOutput(outputs={})

    env.pool.factory = lambda card: Mute(card, env.ctx)
    results = env.run([task(0, "text-to-speech", {"text": "hi"})], {0: fake_card("mute", ["text-to-speech"])})
    assert results[0].status == "failed" and "no audio" in (results[0].error or "")


# --- the pool ---

def test_pool_reuses_loaded_expert(env: Env) -> None:
    card = fake_card("a", ["summarization"], size=10)
    for _ in range(2):
        results = env.run([task(0, "summarization", {"text": "x"})], {0: card})
        assert results[0].status == "done"
    assert env.rec.loads == ["a"] and env.pool.loads == 1
    assert env.pool.get(card) is env.pool.get(card)


def test_pool_evicts_least_recently_used(tmp_path: Path) -> None:
    env = Env(tmp_path, budget=100)
    a, b, c = (fake_card(x, ["summarization"], size=40) for x in "abc")
    env.pool.get(a)
    env.pool.get(b)
    env.pool.get(a)  # a is now the most recently used
    env.pool.get(c)
    assert env.rec.closes == ["b"]
    assert env.pool.loaded_ids() == ["a", "c"]
    assert env.pool.used() == 80
    env.pool.get(b)
    assert env.rec.closes == ["b", "a"]
    assert env.rec.loads == ["a", "b", "c", "b"]
    env.pool.close()
    assert env.pool.loaded_ids() == [] and sorted(env.rec.closes) == ["a", "b", "b", "c"]


def test_pool_refuses_model_over_budget(tmp_path: Path) -> None:
    env = Env(tmp_path, budget=100)
    huge = fake_card("huge-model", ["summarization"], size=101)
    with pytest.raises(ExpertError) as err:
        env.pool.get(huge)
    assert "huge-model" in err.value.message and err.value.hint
    assert env.rec.loads == []
    results = env.run([task(0, "summarization", {"text": "x"})], {0: huge})
    assert results[0].status == "failed" and "huge-model" in (results[0].error or "")


def test_pool_wraps_load_errors(tmp_path: Path) -> None:
    env = Env(tmp_path)

    class Broken(FakeExpert):
        def load(self) -> None:
            raise OSError("weights.bin is truncated")

    env.pool.factory = lambda card: Broken(card, env.ctx)
    with pytest.raises(ExpertError) as err:
        env.pool.get(fake_card("broken", ["summarization"]))
    assert "broken" in err.value.message and "truncated" in err.value.message
    assert env.pool.loaded_ids() == []


def test_resolve_args_missing_output_kind(tmp_path: Path) -> None:
    results = {0: TaskResult(id=0, task="text-to-speech", status="done", outputs={"text": "oops"})}
    t = task(1, "automatic-speech-recognition", {"audio": "<resource>-0"}, [0])
    with pytest.raises(Exception, match="produced no audio"):
        resolve_args(t, results, InputFiles(roots=[tmp_path]))


def test_wav_helper_is_valid(tmp_path: Path) -> None:
    import wave

    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes("tag"))
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnframes() >= 160


def test_unvalidated_bad_deps_fail_instead_of_hanging(env: Env) -> None:
    card = fake_card("a", ["summarization"])
    tasks = [task(0, "summarization", {"text": "x"}, [5]),
             task(1, "summarization", {"text": "y"}, [2]), task(2, "summarization", {"text": "z"}, [1]),
             task(3, "summarization", {"text": "fine"})]
    start = time.perf_counter()
    results = by_id(env.run(tasks, dict.fromkeys(range(4), card)))
    assert time.perf_counter() - start < 2
    assert results[3].status == "done"
    for i, blocker in ((0, "[5]"), (1, "[2]"), (2, "[1]")):
        assert results[i].status == "failed" and blocker in (results[i].error or "")


def test_pool_never_evicts_a_model_in_use(tmp_path: Path) -> None:
    env = Env(tmp_path, budget=100)
    a, b = (fake_card(x, ["summarization"], size=60) for x in "ab")
    with env.pool.use(a) as expert:
        assert expert.loaded
        with pytest.raises(ExpertError) as err:
            env.pool.get(b)  # would need a's memory, but a is running
        assert "does not fit" in err.value.message
        assert env.rec.closes == []
    env.pool.get(b)  # once a is free it is evicted
    assert env.rec.closes == ["a"] and env.pool.loaded_ids() == ["b"]


def test_check_task_names_the_model_and_what_it_serves(tmp_path: Path) -> None:
    from localgpt.experts.base import Expert, ExpertOutput

    class Speaker(Expert):
        TASKS = ("text-to-speech", "conversational")

        def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
            self.check_task(task, "voice")
            return ExpertOutput({"text": "ok"})

    expert = Speaker(fake_card("joe", ["text-to-speech"]), ExpertContext(settings=Settings(store=tmp_path)))
    assert expert.run("conversational", {}, RunDir(tmp_path / "r")).outputs == {"text": "ok"}
    with pytest.raises(ExpertError, match="^voice 'joe' serves text-to-speech, conversational, not 'summarization'$"):
        expert.run("summarization", {}, RunDir(tmp_path / "r"))
