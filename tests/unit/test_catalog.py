"""The catalog over a store of hand-written manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from localgpt import tasks
from localgpt.errors import NoModelError, StoreError
from localgpt.schema import FileEntry, ModelCard
from localgpt.store.catalog import Catalog, format_table


def put_model(store: Path, model_id: str, task_names: list[str], files: dict[str, bytes] | None = None,
              **extra: object) -> ModelCard:
    """Write a model folder with ``files`` and a manifest recording them."""
    files = files if files is not None else {"weights.bin": model_id.encode() * 10}
    folder = store / model_id
    folder.mkdir(parents=True)
    entries = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        entries.append(FileEntry(path=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    card = ModelCard(id=model_id, tasks=task_names, backend="fake", format="bin", description=f"{model_id} model",
                     files=entries, size_bytes=sum(e.size for e in entries), **extra)  # type: ignore[arg-type]
    (folder / "model.json").write_text(card.model_dump_json())
    return card


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    put_model(store, "sum-b", ["summarization"])
    put_model(store, "sum-a", ["summarization", "translation"])
    put_model(store, "tts", ["text-to-speech"], license="MIT")
    put_model(store, "ctl", ["controller"], license="Apache-2.0")
    (store / "half.partial").mkdir()
    (store / "half.partial" / "model.json").write_text("{not json")
    (store / "empty-folder").mkdir()
    (store / "README.md").write_text("readme")
    return store


def test_cards_sorted_with_paths(store: Path) -> None:
    cards = Catalog(store).cards()
    assert [c.id for c in cards] == ["ctl", "sum-a", "sum-b", "tts"]
    assert all(c.path == store / c.id for c in cards)
    assert Catalog(store / "absent").cards() == []


def test_get_and_unknown(store: Path) -> None:
    catalog = Catalog(store)
    assert catalog.get("tts").license == "MIT"
    with pytest.raises(NoModelError) as err:
        catalog.get("nope")
    assert err.value.hint is not None and "sum-a" in err.value.hint
    with pytest.raises(NoModelError):
        catalog.get("../store/tts")


def test_broken_manifest_names_file(store: Path) -> None:
    (store / "sum-b" / "model.json").write_text(json.dumps({"id": "sum-b", "tasks": "oops"}))
    with pytest.raises(StoreError) as err:
        Catalog(store).cards()
    assert str(store / "sum-b" / "model.json") in str(err.value)
    assert "tasks" in str(err.value) and "backend" in str(err.value)

    (store / "sum-b" / "model.json").write_text("{")
    with pytest.raises(StoreError, match="not valid JSON"):
        Catalog(store).cards()


@pytest.mark.parametrize("bad", ["../other/model.onnx", "/etc/passwd", "sub/../../x"])
def test_manifest_file_paths_must_stay_in_the_folder(store: Path, bad: str) -> None:
    data = json.loads((store / "tts" / "model.json").read_text())
    data["files"] = [{"path": bad, "sha256": "0" * 64, "size": 1}]
    (store / "tts" / "model.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="inside the model's folder"):
        Catalog(store).get("tts")


def test_manifest_id_must_match_folder(store: Path) -> None:
    data = json.loads((store / "tts" / "model.json").read_text())
    data["id"] = "other"
    (store / "tts" / "model.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="folder"):
        Catalog(store).get("tts")


def test_candidates_by_task_and_installed(store: Path) -> None:
    catalog = Catalog(store)
    assert [c.id for c in catalog.candidates("summarization")] == ["sum-a", "sum-b"]
    assert [c.id for c in catalog.candidates("translation")] == ["sum-a"]
    assert catalog.candidates("image-classification") == []
    (store / "sum-a" / "weights.bin").unlink()
    assert not catalog.is_installed(catalog.get("sum-a"))
    assert [c.id for c in catalog.candidates("summarization")] == ["sum-b"]


def test_controller_card_last_for_llm_servable_tasks(store: Path) -> None:
    catalog = Catalog(store, controller="ctl")
    found = catalog.candidates("summarization")
    assert [c.id for c in found] == ["sum-a", "sum-b", "controller-llm"]
    llm = found[-1]
    assert llm.backend == "llm" and llm.format == "gguf" and llm.source.type == "builtin"
    assert llm.license == "Apache-2.0"
    assert "(ctl)" in llm.description
    assert set(llm.tasks) == {t.name for t in tasks.TASKS if t.llm_servable}
    assert [c.id for c in catalog.candidates("conversational")] == ["controller-llm"]
    assert catalog.candidates("text-to-speech")[-1].id == "tts"
    assert all(c.id != "controller-llm" for c in catalog.candidates("text-to-speech"))
    assert catalog.candidates("no-such-task") == []
    assert all(c.id != "controller-llm" for c in Catalog(store).candidates("summarization"))
    assert Catalog(store, controller="/some/file.gguf").candidates("summarization")[-1].license == "unknown"


def test_verify_detects_altered_and_missing(store: Path) -> None:
    catalog = Catalog(store)
    assert catalog.verify() == {"ctl": [], "sum-a": [], "sum-b": [], "tts": []}
    weights = store / "sum-a" / "weights.bin"
    weights.write_bytes(b"X" + weights.read_bytes()[1:])  # same size, other content
    (store / "sum-b" / "weights.bin").unlink()
    (store / "tts" / "weights.bin").write_bytes(b"short")
    report = catalog.verify()
    assert report["ctl"] == []
    assert len(report["sum-a"]) == 1 and "sha256 differs" in report["sum-a"][0]
    assert report["sum-b"] == ["weights.bin: missing"]
    assert "size differs" in report["tts"][0]
    assert catalog.verify(["ctl"]) == {"ctl": []}
    with pytest.raises(NoModelError):
        catalog.verify(["nope"])


def test_remove(store: Path) -> None:
    catalog = Catalog(store)
    catalog.remove("sum-b")
    assert not (store / "sum-b").exists()
    assert [c.id for c in catalog.candidates("summarization")] == ["sum-a"]
    assert not any(p.name.endswith(".partial") and "sum-b" in p.name for p in store.iterdir())
    with pytest.raises(StoreError):
        catalog.remove("sum-b")
    with pytest.raises(StoreError):
        catalog.remove("..")


def test_add_hashes_and_replaces(store: Path, tmp_path: Path) -> None:
    catalog = Catalog(store)
    partial = store / "new.partial"
    (partial / "sub").mkdir(parents=True)
    (partial / "sub" / "w.bin").write_bytes(b"abc")
    card = catalog.add(ModelCard(id="new", tasks=["summarization"], backend="fake", format="bin",
                                 description="new"), partial)
    assert card.path == store / "new" and not partial.exists()
    assert card.files == [FileEntry(path="sub/w.bin", sha256=hashlib.sha256(b"abc").hexdigest(), size=3)]
    assert catalog.get("new").size_bytes == 3
    assert catalog.verify(["new"]) == {"new": []}

    again = tmp_path / "elsewhere"  # a folder outside the store replaces the installed model
    again.mkdir()
    (again / "x.bin").write_bytes(b"xyz!")
    catalog.add(ModelCard(id="new", tasks=["summarization"], backend="fake", format="bin", description="new"), again)
    assert [f.path for f in catalog.get("new").files] == ["x.bin"]
    assert not (store / "new" / "sub").exists()
    assert not [p for p in store.iterdir() if p.name.endswith(".partial") and p.name.startswith("new")]

    with pytest.raises(StoreError, match="missing"):
        bad = store / "bad.partial"
        bad.mkdir()
        catalog.add(ModelCard(id="bad", tasks=[], backend="f", format="f", description="d",
                              files=[FileEntry(path="gone.bin", sha256="0" * 64, size=1)]), bad)


def test_format_table(store: Path) -> None:
    (store / "tts" / "weights.bin").unlink()
    table = format_table(Catalog(store)).splitlines()
    assert table[0].split() == ["TASK", "ID", "BACKEND", "FORMAT", "SIZE", "LICENSE", "STATUS"]
    row = next(line for line in table if " tts " in line)
    assert row.endswith("missing files") and "MIT" in row
    assert next(line for line in table if " sum-a " in line).endswith("installed")
    assert "download_models.py" in format_table(Catalog(store / "absent"))
