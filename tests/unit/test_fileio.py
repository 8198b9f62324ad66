"""The shared file helpers: hashing, copying while hashing, the free-disk check, sizes, stderr lines."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest

from localgpt import fileio
from localgpt.errors import StoreError
from localgpt.fileio import BLOCK, SPARE, check_disk, copy_hashing, human_size, print_err, sha256_file


def test_sha256_file_matches_hashlib_across_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * (BLOCK // 256 * 2 + 3)  # more than two blocks, not a whole number of them
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_copy_hashing_joins_sources_in_order() -> None:
    parts = [b"a" * (BLOCK + 5), b"", b"tail"]
    sink = io.BytesIO()
    digest, size = copy_hashing((io.BytesIO(p) for p in parts), sink)
    whole = b"".join(parts)
    assert sink.getvalue() == whole
    assert (digest, size) == (hashlib.sha256(whole).hexdigest(), len(whole))


def test_copy_hashing_without_sink_only_hashes() -> None:
    assert copy_hashing([io.BytesIO(b"abc")]) == (hashlib.sha256(b"abc").hexdigest(), 3)


def test_check_disk_keeps_the_margin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = 10 * SPARE
    seen: list[Path] = []

    def usage(path: Path) -> shutil._ntuple_diskusage:
        seen.append(Path(path))
        return shutil._ntuple_diskusage(free * 2, free, free)

    monkeypatch.setattr(fileio.shutil, "disk_usage", usage)
    check_disk(tmp_path / "not" / "yet", free - SPARE, "for m")  # exactly the margin left: fine
    assert seen == [tmp_path]  # the nearest folder that exists is asked
    with pytest.raises(StoreError, match=r"not enough disk space to install m: it needs 576\.0 MB more, .* has "
                                         r"640\.0 MB free") as err:
        check_disk(tmp_path, free - SPARE + 1, "to install m")
    assert err.value.hint == "free some space or use another --store"


def test_human_size() -> None:
    assert human_size(1_117_320_768) == "1.1 GB"
    assert human_size(98_362_432) == "98.4 MB"
    assert human_size(612) == "612 bytes"
    assert human_size(4_794) == "4.8 kB"
    assert human_size(5_000_000_000_000) == "5000.0 GB"


def test_print_err(capsys: pytest.CaptureFixture[str]) -> None:
    print_err("fetched 1 of 2")
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "fetched 1 of 2\n")
