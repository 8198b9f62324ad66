"""The command line, run in subprocesses: light imports, clear errors, the models and tasks commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from localgpt.schema import ModelCard
from localgpt.store.catalog import Catalog

HEAVY = ["torch", "transformers", "diffusers", "optimum", "onnxruntime", "llama_cpp", "outlines", "outlines_core",
         "llguidance", "faster_whisper", "ctranslate2", "piper", "tokenizers"]
REPO = Path(__file__).resolve().parents[2]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=60)


def localgpt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "localgpt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=60)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALGPT_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def heavy_loaded(output: str) -> list[str]:
    return json.loads(output.strip().splitlines()[-1])


FIND_HEAVY = f"""
heavy = {HEAVY!r}
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set(heavy))))
"""


def test_import_is_light(tmp_path: Path) -> None:
    proc = python(textwrap.dedent("""
        import json, sys
        import localgpt, localgpt.cli.main, localgpt.cli.models, localgpt.pipeline, localgpt.planning.planner
        import localgpt.runtime.executor
        import localgpt.store.catalog, localgpt.runtime.pool, localgpt.runtime.selector, localgpt.runtime.responder
        import localgpt.experts, localgpt.planning.mend, localgpt.planning.passes, localgpt.batch.runner
        import localgpt.llm.http, localgpt.cli.remote
    """) + FIND_HEAVY, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert heavy_loaded(proc.stdout) == []


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["models", "list", "--help"]])
def test_help_is_light(tmp_path: Path, argv: list[str]) -> None:
    proc = python(textwrap.dedent(f"""
        import json, sys
        import localgpt.cli
        try:
            localgpt.cli.main({argv!r})
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """) + FIND_HEAVY, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage: localgpt" in proc.stdout
    assert heavy_loaded(proc.stdout) == []


def test_help_from_the_command(tmp_path: Path) -> None:
    proc = localgpt("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("run", "plan", "models", "tasks"):
        assert command in proc.stdout


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_missing_planner_is_one_clear_error(tmp_path: Path) -> None:
    proc = localgpt("plan", "x", "--planner", "/nonexistent.gguf", cwd=tmp_path)
    line = _one_error(proc)
    assert "/nonexistent.gguf" in line and "does not exist" in line
    assert "hint:" in proc.stderr
    other = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("error:", "  hint:"))]
    assert other == []


def test_planner_not_in_store_is_one_clear_error(tmp_path: Path) -> None:
    proc = localgpt("run", "say hi", "--planner", "no-such-model", "--store", str(tmp_path / "store"), cwd=tmp_path)
    line = _one_error(proc)
    assert "no-such-model" in line and "not installed" in line


def test_run_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    # The LLM loads lazily, so a bad --file is reported before the (dummy) GGUF is ever read.
    dummy = tmp_path / "dummy.gguf"
    dummy.write_bytes(b"not really a gguf")
    proc = localgpt("run", "caption missing.png", "--file", "missing.png", "--planner", str(dummy),
                    "--store", str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    line = _one_error(proc)
    assert "missing.png" in line and "does not exist" in line


def test_models_list_empty_store(tmp_path: Path) -> None:
    proc = localgpt("models", "list", "--store", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "No models" in proc.stdout and "download_models.py" in proc.stdout
    proc = localgpt("models", "list", "--json", "--store", str(tmp_path / "empty"), cwd=tmp_path)
    assert json.loads(proc.stdout) == []


def _store_with_model(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    folder = tmp_path / "staging"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"weights " * 100)
    (folder / "config.json").write_text("{}")
    Catalog(store).add(ModelCard(id="tiny", tasks=["summarization"], backend="fake", format="bin",
                                 description="a tiny model"), folder)
    return store


def test_models_list_and_verify(tmp_path: Path) -> None:
    store = _store_with_model(tmp_path)
    proc = localgpt("models", "list", "--store", str(store), cwd=tmp_path)
    assert proc.returncode == 0 and "tiny" in proc.stdout and "installed" in proc.stdout
    listed = json.loads(localgpt("models", "list", "--json", "--store", str(store), cwd=tmp_path).stdout)
    assert [(m["id"], m["installed"]) for m in listed] == [("tiny", True)]

    ok = localgpt("models", "verify", "--store", str(store), cwd=tmp_path)
    assert ok.returncode == 0 and "tiny: ok" in ok.stdout

    weights = store / "tiny" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    bad = localgpt("models", "verify", "--store", str(store), cwd=tmp_path)
    assert bad.returncode == 1
    assert "tiny: PROBLEMS" in bad.stdout and "weights.bin" in bad.stdout and "sha256" in bad.stdout

    unknown = localgpt("models", "verify", "nope", "--store", str(store), cwd=tmp_path)
    assert "nope" in _one_error(unknown)


def test_tasks_json(tmp_path: Path) -> None:
    store = _store_with_model(tmp_path)
    dummy = tmp_path / "planner.gguf"
    dummy.write_bytes(b"x")
    proc = localgpt("tasks", "--json", "--store", str(store), "--planner", str(dummy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {row["task"]: row for row in json.loads(proc.stdout)}
    assert len(rows) == 34
    assert rows["summarization"]["models"] == ["tiny", "controller-llm"]
    assert rows["translation"]["models"] == ["controller-llm"]
    assert rows["text-to-speech"]["models"] == []
    assert rows["image-editing"]["produces"] == ["image"]
    assert rows["translation"]["inputs"] == {"text": "text", "target_language": "text?"}


def test_tasks_without_installed_planner_shows_no_controller(tmp_path: Path) -> None:
    # the default planner id is not installed in this store, so the controller cannot serve anything
    proc = localgpt("tasks", "--json", "--store", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {row["task"]: row for row in json.loads(proc.stdout)}
    assert rows["summarization"]["models"] == []
    # a planner named explicitly must exist
    proc = localgpt("tasks", "--store", str(tmp_path / "empty"), "--planner", "/nonexistent.gguf", cwd=tmp_path)
    assert "/nonexistent.gguf" in _one_error(proc)


def test_tasks_text_listing(tmp_path: Path) -> None:
    proc = localgpt("tasks", "--store", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 0
    assert "text-to-speech" in proc.stdout and "none installed" in proc.stdout


def test_unknown_command_is_usage_error(tmp_path: Path) -> None:
    proc = localgpt("frobnicate", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    proc = localgpt("--threads", "0", "plan", "x", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: setting 'threads' (LOCALGPT_THREADS) is invalid")
    assert "Traceback" not in proc.stderr


def test_the_table_parses_shared_options_before_or_after_and_dispatches(capsys: pytest.CaptureFixture[str]) -> None:
    from localgpt.cli import build_parser
    from localgpt.cli.main import COMMANDS

    parser = build_parser()
    assert parser.parse_args(["--store", "A", "models", "list"]).store == "A"  # before: kept by SUPPRESS below
    assert parser.parse_args(["--store", "A", "models", "--store", "B", "list", "--json"]).store == "B"
    args = parser.parse_args(["run", "hi", "--threads", "3", "--file", "a", "--file", "b"])
    assert (args.threads, args.file, args.func.__name__) == (3, ["a", "b"], "cmd_run")
    for command in COMMANDS:  # every leaf of the table has a handler
        for leaf in command.subcommands or (command,):
            assert callable(leaf.handler), leaf.name
    assert parser.parse_args(["models", "export", "m", "--id", "n"]).func.__name__ == "cmd_export"
    with pytest.raises(SystemExit):
        parser.parse_args(["plan", "x", "--json", "--as-demo"])
    assert "not allowed with argument --json" in capsys.readouterr().err
