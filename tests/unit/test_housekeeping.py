"""Retention of the data folder (oldest first, never what a running request uses) and run records
(atomic ``run.json``, crash recovery)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from localgpt.config import Settings
from localgpt.runtime.runs import RunDir, read_record, recover_runs, write_json_atomic
from localgpt.server.housekeeping import sweep, sweep_and_log

HOUR = 3600.0


def make(root: Path, rel: str, size: int, age_hours: float, now: float) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_hours * HOUR, now - age_hours * HOUR))
    if path.parent.parent.name == "runs":
        os.utime(path.parent, (now - age_hours * HOUR, now - age_hours * HOUR))
    return path


@pytest.fixture
def now() -> float:
    return time.time()


def test_old_items_go_and_new_ones_stay(tmp_path: Path, now: float) -> None:
    old_upload = make(tmp_path, "uploads/u-old.png", 10, 200, now)
    new_upload = make(tmp_path, "uploads/u-new.png", 10, 1, now)
    old_run = make(tmp_path, "runs/20200101-000000-aaaaaaaa/f.png", 10, 300, now).parent
    new_run = make(tmp_path, "runs/20990101-000000-bbbbbbbb/f.png", 10, 2, now).parent
    report = sweep(tmp_path, 168, 0, now=now)
    assert sorted(report.removed) == ["runs/20200101-000000-aaaaaaaa", "uploads/u-old.png"]
    assert not old_upload.exists() and not old_run.exists() and new_upload.exists() and new_run.exists()
    assert report.freed_bytes == 20 and report.kept_bytes == 20


def test_size_limit_removes_oldest_first(tmp_path: Path, now: float) -> None:
    for i, age in enumerate([5, 1, 3, 4, 2]):
        make(tmp_path, f"uploads/u-{i}.bin", 1 << 20, age, now)
    report = sweep(tmp_path, 0, 3 << 20, now=now)  # no age limit; 3 MB kept
    assert report.removed == ["uploads/u-0.bin", "uploads/u-3.bin"]
    assert report.kept_bytes == 3 << 20


def test_in_use_and_running_are_never_removed(tmp_path: Path, now: float) -> None:
    used = make(tmp_path, "uploads/u-used.png", 10, 500, now)
    running = RunDir(tmp_path / "runs" / "20200101-000000-cccccccc")
    running.record(state="running")
    (running.path / "a.png").write_bytes(b"x")
    for p in (running.path / "a.png", running.path / "run.json", running.path):
        os.utime(p, (now - 500 * HOUR, now - 500 * HOUR))
    asked: list[int] = []

    def in_use() -> set[Path]:
        asked.append(1)
        return {used.resolve()}

    report = sweep(tmp_path, 1, 1, in_use, now=now)  # everything is too old and too big
    assert used.exists() and running.path.exists()
    assert report.removed == [] and report.skipped_in_use == 2 and len(asked) == 2  # asked before each removal


def test_an_upload_whose_file_is_in_use_stays(tmp_path: Path, now: float) -> None:
    used = make(tmp_path, "uploads/u-used.png/photo.png", 10, 500, now)
    old = make(tmp_path, "uploads/u-old.png/photo.png", 10, 500, now)
    for f in (used, old):
        os.utime(f.parent, (now - 500 * HOUR, now - 500 * HOUR))
    report = sweep(tmp_path, 1, 0, lambda: {used.resolve()}, now=now)  # a request claims the file, not its folder
    assert report.removed == ["uploads/u-old.png"] and used.exists() and report.skipped_in_use == 1


def test_old_temporary_files_go(tmp_path: Path, now: float) -> None:
    stale = make(tmp_path, "uploads/.abc.part", 10, 2, now)
    fresh = make(tmp_path, "uploads/.def.part", 10, 0, now)
    sweep(tmp_path, 0, 0, now=now)
    assert not stale.exists() and fresh.exists()


def test_sweep_logs_what_it_removed(tmp_path: Path, now: float, caplog: pytest.LogCaptureFixture) -> None:
    make(tmp_path, "uploads/u-old.png", 10, 500, now)
    with caplog.at_level("INFO", logger="localgpt"):
        sweep_and_log(tmp_path, 1, 0)
    assert "housekeeping removed uploads/u-old.png" in caplog.text and "removed 1 item(s)" in caplog.text


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.retention_hours == 168 and s.data_max_mb == 10240
    monkeypatch.setenv("LOCALGPT_RETENTION_HOURS", "2.5")
    monkeypatch.setenv("LOCALGPT_DATA_MAX_MB", "0")
    s = Settings()
    assert s.retention_hours == 2.5 and s.data_max_mb == 0


def test_record_is_written_atomically(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path)
    run.record(state="running", files=["u-1.png"])
    run.record(state="finished")
    data = read_record(run.path)
    assert data is not None and data["state"] == "finished" and data["files"] == ["u-1.png"]
    assert data["id"] == run.id and sorted(p.name for p in run.path.iterdir()) == ["run.json"]

    class Boom:
        pass

    with pytest.raises(TypeError):  # not JSON: the old record stays whole, no temporary file is left
        write_json_atomic(run.path / "run.json", {"x": Boom()})
    assert json.loads((run.path / "run.json").read_text())["state"] == "finished"
    assert [p.name for p in run.path.iterdir()] == ["run.json"]


def test_recovery_fails_running_runs_and_removes_temporaries(tmp_path: Path) -> None:
    running, done = RunDir.create(tmp_path), RunDir(tmp_path / "20990101-000000-dddddddd")
    running.record(state="running")
    done.record(state="finished")
    (running.path / "tmpab12.part").write_bytes(b"half")
    (running.path / ".run.json.xyz.part").write_text("{")
    kept = done.save(b"result", ".txt")
    failed, removed = recover_runs(tmp_path)
    assert failed == [running.id] and removed == 2
    record = read_record(running.path)
    assert record is not None and record["state"] == "failed" and record["error"] == "interrupted: server stopped"
    assert read_record(done.path)["state"] == "finished" and kept.exists()  # type: ignore[index]
    assert recover_runs(tmp_path) == ([], 0)
