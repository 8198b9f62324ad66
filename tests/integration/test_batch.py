"""Batch runs: resume after kills, bad lines, failing items, the concurrency limit, Ray, folder mode.

The pipelines here are real ``Pipeline`` objects over a temp model store of fake-backend models,
with a scripted FakeLLM; ``fake_pipeline`` is importable, so the kill test's subprocess and the
Ray workers build the same pipeline from settings.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from localgpt.batch.inputs import BadLine, Item, folder_items, read_items
from localgpt.batch.log import OutputLog
from localgpt.batch.progress import Progress
from localgpt.batch.runner import run_batch
from localgpt.cli import main as cli_main
from localgpt.config import Settings
from localgpt.errors import InputError, PlanError
from localgpt.experts.base import ExpertContext, ExpertOutput
from localgpt.llm import Message
from localgpt.pipeline import Pipeline
from localgpt.runtime.pool import ModelPool
from localgpt.runtime.runs import RunDir
from localgpt.store.catalog import Catalog
from localgpt.testing import FakeExpert, FakeLLM, Recorder, fake_factory, install, png_bytes, wav_bytes
from tests.helpers import missing, store_dir

REPO = Path(__file__).resolve().parents[2]
ANSWER = "Batch answer."
TEXT_MODELS = {"summarization": "sum-fake", "translation": "tr-fake", "text-generation": "gen-fake",
               "conversational": "chat-fake"}


# ---- the fake world: a store of fake-backend models and a pipeline over it ----------------------

class Gauge:
    """Counts expert runs in progress and remembers the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


class GaugedExpert(FakeExpert):
    """A fake expert that reports its runs to the pipeline's gauge."""

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        marker = inputs.get("text", "").partition("CRASH-ONCE:")[2]
        if marker and not os.path.exists(marker):  # a worker process dying mid-item (Ray test only)
            Path(marker).touch()
            os._exit(1)
        with self.ctx.extra["gauge"]:
            return super().run(task, inputs, out)


def reply(messages: Sequence[Message], schema: dict[str, Any] | None) -> str:
    """The FakeLLM's answers: the responder gets ANSWER; the planner a TTS→ASR plan of the request
    (an unknown task when the request says PLANFAIL)."""
    if messages[0]["content"].startswith("You are localgpt, an assistant that answered"):
        return ANSWER
    if any("PLANFAIL" in m["content"] for m in messages):  # the first try and the repair round
        return json.dumps([{"id": 0, "task": "no-such-task", "dep": [-1], "args": {}}])
    return json.dumps(SPEAK_AND_HEAR)


SPEAK_AND_HEAR = [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello"}},
                  {"id": 1, "task": "automatic-speech-recognition", "dep": [0], "args": {"audio": "<resource>-0"}}]


def fake_pipeline(settings: Settings) -> Pipeline:
    """A pipeline on ``settings.store`` (fake backends) with a scripted FakeLLM (module-level: Ray and
    subprocesses import it)."""
    llm = FakeLLM(default=reply)  # type: ignore[arg-type]  # a callable default reply
    ctx = ExpertContext(settings=settings, llm=llm, extra={"recorder": Recorder(), "gauge": Gauge()})
    pool = ModelPool(ctx, 1 << 30, factory=fake_factory(ctx, {"fake": GaugedExpert}))
    return Pipeline(settings, llm, Catalog(settings.store), pool)




def make_settings(tmp: Path, sleep: float = 0.0) -> Settings:
    """Settings over a fresh fake store: TTS, ASR, a broken captioner and four text models."""
    store = tmp / "store"
    store.mkdir()
    install(store, "tts-fake", ["text-to-speech"], sleep=sleep)
    install(store, "asr-fake", ["automatic-speech-recognition"], sleep=sleep)
    install(store, "caption-broken", ["image-to-text"], fail="the captioner is broken")
    for task, model_id in TEXT_MODELS.items():
        install(store, model_id, [task], sleep=max(sleep, 0.15))
    return Settings(store=store, runs_dir=tmp / "runs", max_workers=4, task_timeout=30, demo_similarity="words")


def speak(text: str) -> list[dict[str, Any]]:
    """A fixed TTS→ASR plan for ``text``."""
    return [{"id": 0, "task": "text-to-speech", "args": {"text": text}},
            {"id": 1, "task": "automatic-speech-recognition", "dep": [0], "args": {"audio": "<resource>-0"}}]


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    """Rows as JSONL; a str row is written as it is (for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_output(path: Path, torn_tail: bool = False) -> list[dict[str, Any]]:
    """The output's records, asserting the file is whole JSONL with each id once.

    ``torn_tail`` accepts a last line without its newline (the next start cuts it off): a record is
    one ``write``, which SIGKILL can cut short only between pages of a record longer than a page.
    """
    data = path.read_bytes()
    if torn_tail:
        data = data[: data.rfind(b"\n") + 1]
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-80:]!r}"
    records = [json.loads(line) for line in data.decode().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    return records


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in records}


# ---- resume after SIGKILL at random points ------------------------------------------------------

DRIVER = """
import signal
import sys
# Ctrl-C as in a shell: a SIGINT disposition inherited from the test process (ignored) must not leak in
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
sys.path[:0] = [{repo!r}]
from tests.integration.test_batch import fake_pipeline
from localgpt.batch.inputs import read_items
from localgpt.batch.runner import run_batch
from localgpt.config import Settings

settings = Settings(store={store!r}, runs_dir={runs!r}, max_workers=4, task_timeout=30, demo_similarity="words")
summary = run_batch(read_items(Path(sys.argv[1])), Path(sys.argv[2]), settings, workers=2,
                    pipeline_factory=fake_pipeline)
print(summary.done, summary.failed, summary.invalid, summary.skipped, int(summary.interrupted))
"""


def kill_inputs(tmp: Path, n: int) -> tuple[Path, dict[str, str]]:
    """An input of ``n`` good items (some fixed plans, some planned) plus failing and bad lines,
    and the status each id must end with."""
    rows: list[Any] = []
    expected: dict[str, str] = {}
    for i in range(n):
        row: dict[str, Any] = {"id": f"item-{i}", "request": f"Say number {i} aloud and transcribe it"}
        if i % 3:
            row["plan"] = speak(f"number {i}")
        rows.append(row)
        expected[f"item-{i}"] = "done"
    rows.insert(5, {"id": "missing-file", "request": "Transcribe gone.wav", "files": ["gone.wav"]})
    expected["missing-file"] = "failed"
    rows.insert(9, "{not json")
    expected["!line10"] = "invalid"
    return write_jsonl(tmp / "in.jsonl", rows), expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resume_after_random_kills(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    # 0.1 s an item, two workers: ~1.2 s of work, so a test process descheduled for a few hundred
    # milliseconds on a busy CI machine still finds the batch running when it means to kill it
    settings = make_settings(tmp_path, sleep=0.05)
    inp, expected = kill_inputs(tmp_path, 24)
    out = tmp_path / "out.jsonl"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=str(REPO), store=str(settings.store), runs=str(settings.runs_dir)))
    cmd = [sys.executable, str(driver), str(inp), str(out)]

    kills = 0
    for _ in range(3):
        before = len(read_output(out, torn_tail=True)) if out.exists() else 0
        want = before + rng.randint(1, 6)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= want:
                time.sleep(rng.uniform(0, 0.03))  # somewhere inside the next item or write
                break
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        records = read_output(out, torn_tail=True)  # whole lines, no duplicates, after every kill
        assert all(r["status"] == expected[r["id"]] for r in records)
        assert len(records) >= want or proc.returncode == 0
    assert kills >= 2, "the batch finished before it could be killed; the kill points test nothing"

    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    records = read_output(out)
    assert {r["id"]: r["status"] for r in records} == expected
    skipped = int(done.stdout.split()[3])
    assert 0 < skipped < len(expected)  # the rerun skipped what the killed runs had written
    final = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert final.stdout.split() == ["0", "0", "0", str(len(expected)), "0"]
    assert read_output(out) == records  # a finished batch is left as it is


def test_ctrl_c_finishes_the_items_in_progress_and_stops(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sleep=0.15)  # 0.3 s an item: all 16 would take seconds
    inp, expected = kill_inputs(tmp_path, 16)
    out = tmp_path / "out.jsonl"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=str(REPO), store=str(settings.store), runs=str(settings.runs_dir)))
    cmd = [sys.executable, str(driver), str(inp), str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.read_bytes().count(b"\n") >= 2):
        time.sleep(0.01)  # the bad line, then the first item
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    done, failed, invalid, skipped, interrupted = map(int, stdout.split())
    records = read_output(out)
    assert interrupted == 1 and invalid == 1 and skipped == 0
    assert len(records) == done + failed + invalid
    assert 2 <= len(records) <= 5  # the two items running when it stopped were finished and written
    assert all(r["status"] == expected[r["id"]] for r in records)

    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert rerun.stdout.split()[3:] == [str(len(records)), "0"]
    assert {r["id"]: r["status"] for r in read_output(out)} == expected


def test_torn_last_line_is_cut_and_redone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": f"a{i}", "request": "r", "plan": speak(f"t{i}")}
                                              for i in range(4)])
    out = tmp_path / "out.jsonl"
    run_batch(read_items(inp), out, settings, workers=1, respond=False, pipeline_factory=fake_pipeline)
    whole = out.read_bytes()
    last_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    lost = json.loads(whole[last_start:])["id"]
    out.write_bytes(whole[: last_start + 25])  # the last record cut mid-line, as a crash may leave it

    summary = run_batch(read_items(inp), out, settings, workers=1, respond=False, pipeline_factory=fake_pipeline)
    assert summary.repaired_bytes == 25 and summary.skipped == 3 and summary.done == 1
    records = read_output(out)
    assert out.read_bytes().startswith(whole[:last_start]) and records[-1]["id"] == lost
    assert sorted(r["id"] for r in records) == ["a0", "a1", "a2", "a3"]

    # a whole last line that is not a record (zeros after a power cut) is dropped too; one in the middle is refused
    with out.open("ab") as fh:
        fh.write(b"\x00" * 10 + b"\n")
    with OutputLog(out) as log:
        assert log.repaired == 11 and len(log.ids) == 4
    out.write_bytes(b"garbage\n" + out.read_bytes())
    with pytest.raises(InputError, match="line 1 of"):
        OutputLog(out)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputLog(out) as log:
        log.write({"id": "x", "status": "done"})
        with pytest.raises(InputError, match="another batch run"):
            OutputLog(out)
    with OutputLog(out) as log:  # free again once closed
        assert log.ids == {"x"}


# ---- bad lines and failing items ----------------------------------------------------------------

def test_malformed_lines_are_recorded_and_the_batch_goes_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "ok-1", "request": "say one", "plan": speak("one")},
        "{broken json",
        "[1, 2]",
        {"request": "no id here"},
        {"id": "no-request"},
        {"id": "ok-1", "request": "the same id again"},
        {"id": "bad-plan", "request": "x", "plan": [{"id": 0, "task": "no-such-task", "args": {}}]},
        {"id": "bad-files", "request": "x", "files": [3]},
        "",
        {"id": 7, "request": "say seven", "plan": speak("seven")},
    ])
    entries = read_items(inp)
    assert [type(e).__name__ for e in entries] == ["Item"] + ["BadLine"] * 7 + ["Item"]
    out = tmp_path / "out.jsonl"
    summary = run_batch(entries, out, settings, workers=2, respond=False, pipeline_factory=fake_pipeline)
    assert (summary.done, summary.invalid, summary.failed) == (2, 7, 0)

    rec = by_id(read_output(out))
    assert rec["ok-1"]["status"] == "done" and rec["7"]["status"] == "done"  # ids are strings in the output
    invalid = {k: (r["line"], r["error"]["message"]) for k, r in rec.items() if r["status"] == "invalid"}
    assert invalid["!line2"][1].startswith("line 2 is not JSON")
    assert "not a JSON object" in invalid["!line3"][1]
    assert "has no id" in invalid["!line4"][1]
    assert invalid["no-request"] == (5, "line 5 (id 'no-request') has no request text")
    assert invalid["!line6"][1] == "line 6 repeats the id 'ok-1' of line 1"
    assert "bad plan" in invalid["bad-plan"][1] and "no-such-task" in invalid["bad-plan"][1]
    assert "files must be a list" in invalid["bad-files"][1]
    assert rec["!line2"]["input"] == "{broken json"

    before = out.read_bytes()
    again = run_batch(read_items(inp), out, settings, workers=2, respond=False, pipeline_factory=fake_pipeline)
    assert again.skipped == 9 and again.processed == 0 and out.read_bytes() == before


def test_failing_items_become_error_records(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes("photo"))
    caption = {"id": 2, "task": "image-to-text", "args": {"image": str(photo)}}
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "no-file", "request": "Transcribe gone.wav", "files": [str(tmp_path / "gone.wav")]},
        {"id": "broken-model", "request": "caption it", "files": [str(photo)], "plan": [caption]},
        {"id": "half", "request": "say and caption", "files": [str(photo)], "plan": speak("hi") + [caption]},
        {"id": "unplannable", "request": "PLANFAIL please"},
        {"id": "fine", "request": "Say hello and transcribe it"},
    ])
    out = tmp_path / "out.jsonl"
    summary = run_batch(read_items(inp), out, settings, workers=2, pipeline_factory=fake_pipeline)
    assert (summary.done, summary.partial, summary.failed) == (1, 1, 3)
    rec = by_id(read_output(out))

    assert rec["no-file"]["status"] == "failed" and rec["no-file"]["error"]["type"] == "InputError"
    assert "does not exist" in rec["no-file"]["error"]["message"]
    broken = rec["broken-model"]
    assert broken["status"] == "failed" and broken["error"]["type"] == "TaskFailed"
    assert "the captioner is broken" in broken["error"]["message"] and broken["models"] == {"2": "caption-broken"}
    half = rec["half"]
    assert half["status"] == "partial" and [t["status"] for t in half["tasks"]] == ["done", "done", "failed"]
    assert half["outputs"]["1"]["text"].startswith("asr-fake(automatic-speech-recognition)")
    assert half["produced_files"] and all(Path(f).is_file() for f in half["produced_files"])
    assert rec["unplannable"]["status"] == "failed" and rec["unplannable"]["error"]["type"] == "PlanError"
    fine = rec["fine"]
    assert fine["status"] == "done" and fine["planned"] and fine["answer"].startswith(ANSWER)
    assert fine["plan"][0]["task"] == "text-to-speech" and fine["models"] == {"0": "tts-fake", "1": "asr-fake"}
    assert set(fine["timings"]) == {"plan", "select", "execute", "respond", "first_token", "total"}


# ---- throughput: fixed plans, the concurrency limit, grouping -----------------------------------

def test_fixed_plan_and_no_answer_make_no_llm_call(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    built: list[Pipeline] = []

    def factory(s: Settings) -> Pipeline:
        built.append(fake_pipeline(s))
        return built[-1]

    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": f"i{i}", "request": "r", "plan": speak(f"w{i}")}
                                              for i in range(6)])
    summary = run_batch(read_items(inp), tmp_path / "out.jsonl", settings, workers=2, respond=False,
                        pipeline_factory=factory)
    assert summary.done == 6 and len(built) == 1
    assert built[0].llm.calls == []  # type: ignore[attr-defined]
    records = read_output(tmp_path / "out.jsonl")
    assert all(r["answer"] == "" and r["llm_calls"] == 0 and not r["planned"] for r in records)
    assert all("respond" not in r["timings"] for r in records)
    # experts stay loaded across items: one load per model for the whole batch
    assert sorted(built[0].pool.ctx.extra["recorder"].loads) == ["asr-fake", "tts-fake"]

    with_answer = run_batch(read_items(write_jsonl(tmp_path / "in2.jsonl", [{"id": "x", "request": "r",
                                                                             "plan": speak("x")}])),
                            tmp_path / "out2.jsonl", settings, workers=1, pipeline_factory=factory)
    assert with_answer.done == 1 and len(built[1].llm.calls) == 1  # type: ignore[attr-defined]  # the answer only


@pytest.mark.parametrize("workers", [1, 3])
def test_concurrency_limit_is_honoured(tmp_path: Path, workers: int) -> None:
    settings = make_settings(tmp_path)
    built: list[Pipeline] = []

    def factory(s: Settings) -> Pipeline:
        built.append(fake_pipeline(s))
        return built[-1]

    tasks = list(TEXT_MODELS)  # four single-task plans on four models (runs of one model are serialised)
    rows = [{"id": f"t{i}", "request": "r", "plan": [{"id": 0, "task": tasks[i % 4], "args": {"text": f"x{i}"}}]}
            for i in range(8)]
    start = time.monotonic()
    summary = run_batch(read_items(write_jsonl(tmp_path / "in.jsonl", rows)), tmp_path / "out.jsonl", settings,
                        workers=workers, respond=False, pipeline_factory=factory)
    elapsed = time.monotonic() - start
    assert summary.done == 8
    gauge = built[0].pool.ctx.extra["gauge"]
    assert gauge.most == workers  # reached, never exceeded
    assert len({r["worker"] for r in read_output(tmp_path / "out.jsonl")}) == workers
    if workers > 1:
        assert elapsed < 8 * 0.15  # faster than one at a time


def test_group_by_plan_runs_the_same_experts_together(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    say = speak("x")
    summ = [{"id": 0, "task": "summarization", "args": {"text": "long text"}}]
    rows = [{"id": f"g{i}", "request": "r", "plan": say if i % 2 else summ} for i in range(6)]
    rows.insert(2, {"id": "planned", "request": "say hi"})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    run_batch(read_items(inp), tmp_path / "out.jsonl", settings, workers=1, group_by_plan=True,
              pipeline_factory=fake_pipeline)
    order = [r["id"] for r in read_output(tmp_path / "out.jsonl")]
    assert order == ["g0", "g2", "g4", "g1", "g3", "g5", "planned"]
    run_batch(read_items(inp), tmp_path / "plain.jsonl", settings, workers=1, pipeline_factory=fake_pipeline)
    assert [r["id"] for r in read_output(tmp_path / "plain.jsonl")] == [r["id"] for r in rows]


def test_progress_line_and_summary(tmp_path: Path) -> None:
    bar = Progress(4, io.StringIO(), every=0)
    bar.update("done")
    bar.update("failed")
    line = bar.line()
    assert line.startswith("[" + "#" * 12 + "." * 12 + "] 2/4 (1 ok, 1 not)") and "items/min, ETA 0:" in line

    settings = make_settings(tmp_path)
    stream = io.StringIO()
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "request": "r", "plan": speak("a")}, "oops"])
    summary = run_batch(read_items(inp), tmp_path / "out.jsonl", settings, workers=1, respond=False,
                        progress=stream, pipeline_factory=fake_pipeline)
    assert stream.getvalue().splitlines()[-1].startswith("[" + "#" * 24 + "] 2/2 (1 ok, 1 not)")
    assert summary.items_per_minute > 0
    assert summary.text().startswith("batch finished: 1 done, 0 partial, 0 failed, 1 invalid, 0 skipped")


# ---- folder mode --------------------------------------------------------------------------------

def test_folder_mode_makes_one_item_per_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    for name in ["a.wav", "sub/b.wav", ".hidden.wav"]:
        (folder / name).write_bytes(wav_bytes(name))
    (folder / "notes.txt").write_text("not audio")
    plan = [{"id": 0, "task": "automatic-speech-recognition", "args": {"audio": "{file}"}}]
    entries = folder_items(folder, "Transcribe {file} ({name})", "*.wav", plan)
    assert [e.id for e in entries] == ["a.wav", "sub/b.wav"]
    first = entries[0]
    assert isinstance(first, Item) and first.files == [str(folder / "a.wav")]
    assert first.request == f"Transcribe {folder / 'a.wav'} (a.wav)"

    summary = run_batch(entries, tmp_path / "out.jsonl", settings, workers=2, respond=False,
                        pipeline_factory=fake_pipeline)
    assert summary.done == 2
    rec = by_id(read_output(tmp_path / "out.jsonl"))
    assert rec["sub/b.wav"]["outputs"]["0"]["text"] == (
        f"asr-fake(automatic-speech-recognition): audio={(folder / 'sub/b.wav').resolve()}")

    with pytest.raises(InputError, match="names no file"):
        folder_items(folder, "Transcribe everything")
    with pytest.raises(PlanError, match="given for every item"):
        folder_items(folder, "Transcribe {file}", "*.wav", [{"id": 0, "task": "no-such-task", "args": {}}])
    assert isinstance(read_items(write_jsonl(tmp_path / "x.jsonl", ["{"]))[0], BadLine)


def test_cli_folder_mode_with_real_whisper(tmp_path: Path) -> None:
    store = store_dir()
    for model_id in ("whisper-tiny-en", "smollm2-135m-instruct"):
        if not (store / model_id / "model.json").exists():
            missing(f"model '{model_id}' is not installed in {store}; run: python download_models.py --profile test")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "one.wav").write_bytes(wav_bytes("one", samples=8000))
    plan = json.dumps([{"id": 0, "task": "automatic-speech-recognition", "args": {"audio": "{file}"}}])
    out = tmp_path / "out.jsonl"
    argv = ["batch", "--files", str(folder), "--request", "Transcribe {file}", "--glob", "*.wav", "--plan", plan,
            "--no-answer", "-o", str(out), "--store", str(store), "--planner", "smollm2-135m-instruct",
            "--runs-dir", str(tmp_path / "runs"), "--workers", "1"]
    assert cli_main(argv) == 0
    (rec,) = read_output(out)
    assert rec["id"] == "one.wav" and rec["status"] == "done", rec["error"]
    assert rec["models"] == {"0": "whisper-tiny-en"} and "text" in rec["outputs"]["0"] and rec["llm_calls"] == 0
    assert cli_main(argv) == 0 and len(read_output(out)) == 1  # a rerun finds it done
    assert cli_main(["batch", "-o", str(out), "--store", str(store)]) == 1  # no input given


# ---- Ray ----------------------------------------------------------------------------------------

def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs from run to run (times, worker, folders)."""
    text = json.dumps(record)
    if record["run_dir"]:
        text = text.replace(record["run_dir"], "<run>")
    out = json.loads(text)
    for key in ("timings", "worker", "finished_at", "run_dir"):
        out.pop(key)
    for task in out["tasks"]:
        task.pop("seconds")
    return out


def test_ray_run_matches_local_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("ray") is None:
        missing("ray is not installed; pip install '.[batch]'")
    settings = make_settings(tmp_path, sleep=0.01)
    rows: list[Any] = [{"id": f"r{i}", "request": f"say {i}", "plan": speak(f"say {i}")} for i in range(5)]
    rows += [{"id": "planned", "request": "Say hello and transcribe it"},
             {"id": "no-file", "request": "Transcribe gone.wav", "files": [str(tmp_path / "gone.wav")]},
             "{bad"]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    # one thread: each record's llm_calls is exact (threads share one LLM, whose counter they all move)
    local = run_batch(read_items(inp), tmp_path / "local.jsonl", settings, workers=1,
                      pipeline_factory=fake_pipeline)
    assert (local.done, local.failed, local.invalid) == (6, 1, 1)

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import tests.integration.test_batch.fake_pipeline
    ray_imported_before = "ray" in sys.modules
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED"):  # run_batch sets them; undone after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    # on Ray, one more item kills its worker process the first time it runs: the actor is replaced, the item redone
    crash = {"id": "crash", "request": "say it", "plan": speak(f"CRASH-ONCE:{tmp_path / 'crashed'}")}
    ray_inp = write_jsonl(tmp_path / "ray-in.jsonl", rows + [crash])
    out = tmp_path / "ray.jsonl"
    write_jsonl(out, [json.loads((tmp_path / "local.jsonl").read_text().splitlines()[0])])  # one done before
    summary = run_batch(read_items(ray_inp), out, settings, workers=2, ray="local", ray_cpus=1,
                        pipeline_factory=fake_pipeline)
    assert (summary.skipped, summary.processed) == (1, 8)
    ray_records = by_id(read_output(out))
    assert (tmp_path / "crashed").exists() and ray_records.pop("crash")["status"] == "done"
    local_records = by_id([comparable(r) for r in read_output(tmp_path / "local.jsonl")])
    assert sorted(ray_records) == sorted(local_records)
    for record in ray_records.values():
        mine = comparable(record)
        assert mine == local_records[mine["id"]], [k for k in mine if mine[k] != local_records[mine["id"]][k]]
    workers = {r["worker"] for r in ray_records.values() if r["status"] != "invalid"}
    assert len(workers) >= 2
    if ray_imported_before:
        assert all(w.startswith("ray:") for w in workers)
    else:  # the private instance took the loopback address: nothing listens on the network
        assert all(w.startswith("ray:127.0.0.1:") for w in workers), workers
    assert not sys.modules["ray"].is_initialized()  # the private instance is shut down
    again = run_batch(read_items(ray_inp), out, settings, workers=2, ray="local", pipeline_factory=fake_pipeline)
    assert again.skipped == 9 and again.processed == 0
