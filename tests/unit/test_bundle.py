"""Offline bundles: round trip into a fresh store, tampering, unsafe members, idempotent import."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from localgpt.cli import main as cli
from localgpt.errors import StoreError
from localgpt.schema import ModelCard
from localgpt.store.bundle import INDEX, import_bundle, make_bundle
from localgpt.store.catalog import Catalog


def quiet(_: str) -> None:
    pass


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with two small models (one with a sub-folder), registered through the catalog."""
    store = tmp_path / "store"
    for model_id, files in (("alpha", {"weights.bin": b"\x00\x01" * 5000, "config.json": b'{"a": 1}'}),
                            ("beta", {"sub/vocab.txt": b"hello\nworld\n", "model.onnx": b"onnx" * 100})):
        folder = tmp_path / f"{model_id}.build"
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        Catalog(store).add(ModelCard(id=model_id, tasks=["summarization"], backend="transformers", format="pytorch",
                                     description=f"model {model_id}", license="MIT"), folder)
    return store


def test_round_trip_into_a_fresh_store(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models.tar"
    assert cli(["models", "bundle", str(out), "--store", str(store)]) == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile(INDEX))  # type: ignore[arg-type]
    assert names[0] == INDEX and "alpha/model.json" in names and "beta/sub/vocab.txt" in names
    listed = {(m["id"], f["path"]) for m in index["models"] for f in m["files"]}
    assert ("beta", "sub/vocab.txt") in listed and ("alpha", "model.json") in listed

    fresh = tmp_path / "fresh"
    assert cli(["models", "import", str(out), "--store", str(fresh)]) == 0
    assert "imported 2 model(s)" in capsys.readouterr().out
    assert Catalog(fresh).ids() == ["alpha", "beta"]
    assert Catalog(fresh).verify() == {"alpha": [], "beta": []}
    assert Catalog(fresh).get("beta").description == "model beta"
    assert sorted(p.name for p in fresh.iterdir()) == ["alpha", "beta"]  # no temp folder left

    # the same bundle again: a successful no-op that leaves the installed files alone
    before = (fresh / "alpha" / "weights.bin").stat().st_mtime_ns
    assert import_bundle(fresh, out, progress=quiet) == []
    assert (fresh / "alpha" / "weights.bin").stat().st_mtime_ns == before


def test_bundle_of_chosen_ids_and_damaged_source(store: Path, tmp_path: Path) -> None:
    index = make_bundle(store, tmp_path / "one.tar.gz", ["beta"], progress=quiet)
    assert [m["id"] for m in index["models"]] == ["beta"]
    assert [c.id for c in import_bundle(tmp_path / "fresh", tmp_path / "one.tar.gz", progress=quiet)] == ["beta"]
    (store / "alpha" / "weights.bin").write_bytes(b"changed")
    with pytest.raises(StoreError, match="does not match its card"):
        make_bundle(store, tmp_path / "bad.tar", ["alpha"], progress=quiet)
    assert not (tmp_path / "bad.tar").exists()


def rewrite(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """Copy a bundle, replacing the data of members named in ``change`` (same size keeps the index sizes)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()  # type: ignore[union-attr]
            data = change.get(member.name, data)
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))


def test_tampered_bundle_registers_nothing(store: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    make_bundle(store, good, progress=quiet)
    with tarfile.open(good) as tar:
        original = tar.extractfile("beta/model.onnx").read()  # type: ignore[union-attr]
    bad = tmp_path / "bad.tar"
    rewrite(good, bad, {"beta/model.onnx": b"ONNX" + original[4:]})  # same size, other bytes
    fresh = tmp_path / "fresh"
    with pytest.raises(StoreError, match="does not match the bundle's index"):
        import_bundle(fresh, bad, progress=quiet)
    assert Catalog(fresh).ids() == []  # alpha passed its checks but was not registered either
    assert [p.name for p in fresh.iterdir()] == []

    # a consistent forgery of the index is still caught against the card inside the bundle
    with tarfile.open(good) as tar:
        index = json.load(tar.extractfile(INDEX))  # type: ignore[arg-type]
    forged = b"ONNX" + original[4:]
    for m in index["models"]:
        for f in m["files"]:
            if m["id"] == "beta" and f["path"] == "model.onnx":
                f["sha256"] = hashlib.sha256(forged).hexdigest()
    rewrite(good, bad, {"beta/model.onnx": forged, INDEX: json.dumps(index).encode()})
    with pytest.raises(StoreError, match="card and the bundle's index"):
        import_bundle(fresh, bad, progress=quiet)
    assert Catalog(fresh).ids() == []


def unsafe_bundle(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    """A bundle holding a valid index and one hostile member."""
    with tarfile.open(path, "w") as tar:
        index = json.dumps({"format": "localgpt-bundle", "version": 1, "models": []}).encode()
        info = tarfile.TarInfo(INDEX)
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize("name,kind,why", [
    ("../evil.txt", tarfile.REGTYPE, "leaves"),
    ("alpha/../../evil.txt", tarfile.REGTYPE, "leaves"),
    ("/tmp/evil.txt", tarfile.REGTYPE, "absolute"),
    ("alpha/link", tarfile.SYMTYPE, "symbolic link"),
    ("alpha/hard", tarfile.LNKTYPE, "hard link"),
    ("alpha/dev", tarfile.CHRTYPE, "device"),
])
def test_unsafe_members_are_refused_before_extracting(tmp_path: Path, name: str, kind: bytes, why: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        member.linkname = "/etc/passwd"
    bundle = tmp_path / "evil.tar"
    unsafe_bundle(bundle, member, b"owned" if kind == tarfile.REGTYPE else b"")
    fresh = tmp_path / "store"
    with pytest.raises(StoreError, match=why):
        import_bundle(fresh, bundle, progress=quiet)
    assert not fresh.exists() and not (tmp_path / "evil.txt").exists()


def test_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all")
    assert cli(["models", "import", str(junk), "--store", str(tmp_path / "s")]) == 1
    assert "cannot open bundle" in capsys.readouterr().err
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        info = tarfile.TarInfo("alpha/x")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(StoreError, match="not a localgpt bundle"):
        import_bundle(tmp_path / "s", plain, progress=quiet)
