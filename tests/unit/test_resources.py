"""Run folders, content sniffing, references and the checks on user files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localgpt.errors import InputError
from localgpt.planning.references import is_pure_reference, references
from localgpt.runtime.media import sniff_kind
from localgpt.runtime.runs import InputFiles, RunDir, planner_names
from localgpt.tasks import Kind, kind_by_name
from localgpt.testing import mp4_bytes, png_bytes, wav_bytes

HEADERS = {
    "a.png": (png_bytes("x"), Kind.IMAGE),
    "b.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + b"\x00" * 40, Kind.IMAGE),
    "c.gif": (b"GIF89a\x01\x00\x01\x00" + b"\x00" * 20, Kind.IMAGE),
    "d.webp": (b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 20, Kind.IMAGE),
    "e.wav": (wav_bytes("x"), Kind.AUDIO),
    "f.flac": (b"fLaC\x00\x00\x00\x22" + b"\x00" * 20, Kind.AUDIO),
    "g.mp3": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 20, Kind.AUDIO),
    "h.mp4": (mp4_bytes("x"), Kind.VIDEO),
    "i.m4a": (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 16, Kind.AUDIO),
    "j.webm": (b"\x1a\x45\xdf\xa3" + b"\x00" * 20, Kind.VIDEO),
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_sniff_kind(tmp_path: Path, name: str) -> None:
    data, kind = HEADERS[name]
    path = tmp_path / name
    path.write_bytes(data)
    assert sniff_kind(path) is kind


def test_sniff_kind_unknown(tmp_path: Path) -> None:
    for i, data in enumerate([b"", b"hello, this is plain text", b"%PDF-1.7\n", b"RIFF\x00\x00\x00\x00WXYZ"]):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(data)
        assert sniff_kind(path) is None, data


def test_sniff_kind_common_recorder_and_legacy_formats(tmp_path: Path) -> None:
    cases = {
        "clip.avi": (b"RIFF\x00\x00\x00\x00AVI LIST", Kind.VIDEO),
        "memo.m4a": (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", Kind.AUDIO),  # phone recorders
        "movie.mp4": (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", Kind.VIDEO),
        "song.mp3": (b"\xff\xfa\x90\x00" + bytes(60), Kind.AUDIO),  # MPEG frame sync, no ID3 tag
        "low.mp3": (b"\xff\xe3\x18\xc4" + bytes(60), Kind.AUDIO),
    }
    for name, (data, kind) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert sniff_kind(path) is kind, name


def test_kind_by_name() -> None:
    assert kind_by_name("Photo.JPG") is Kind.IMAGE
    assert kind_by_name(" dir/clip.webm ") is Kind.VIDEO
    assert kind_by_name("song.flac") is Kind.AUDIO
    assert kind_by_name("notes.txt") is None
    assert kind_by_name("a cat") is None


def test_references() -> None:
    assert references("<resource>-0 and <GENERATED>-12 and <Resource>-3") == [0, 12, 3]
    assert references("no refs, <resource>-x, resource-1") == []
    assert is_pure_reference(" <resource>-2 ")
    assert is_pure_reference("<GENERATED>-1")
    assert not is_pure_reference("see <resource>-2")


def test_run_dir_content_addressed(tmp_path: Path) -> None:
    out = RunDir.create(tmp_path / "runs")
    assert out.path.parent == tmp_path / "runs" and out.path.is_dir()
    assert RunDir.create(tmp_path / "runs").path != out.path
    a = out.save(b"first", ".wav")
    b = out.save(b"second", ".wav")
    again = out.save(b"first", ".wav")
    assert a != b and again == a
    assert a.read_bytes() == b"first" and b.read_bytes() == b"second"
    assert a.suffix == ".wav" and a.parent == out.path
    assert sorted(p.name for p in out.path.iterdir()) == sorted([a.name, b.name])  # no .part left, no duplicate
    other_ext = out.save(b"first", ".png")
    assert other_ext.stem == a.stem and other_ext != a


def test_run_dir_adopt_temp_file(tmp_path: Path) -> None:
    out = RunDir(tmp_path / "run")
    tmp = out.temp_path(".wav")
    assert tmp.parent == out.path and not tmp.exists()
    tmp.write_bytes(b"audio")
    final = out.adopt(tmp, ".wav")
    assert final.read_bytes() == b"audio" and not tmp.exists()
    assert final == out.save(b"audio", ".wav")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (inside / "cat.png").write_bytes(png_bytes("cat"))
    (outside / "secret.png").write_bytes(png_bytes("secret"))
    return inside, outside


def test_input_files_inside_root(roots: tuple[Path, Path]) -> None:
    inside, _ = roots
    files = InputFiles(roots=[inside])
    assert files.check(inside / "cat.png", kind=Kind.IMAGE) == (inside / "cat.png").resolve()


def test_input_files_refuse_outside_root(roots: tuple[Path, Path]) -> None:
    inside, outside = roots
    files = InputFiles(roots=[inside])
    with pytest.raises(InputError, match="outside"):
        files.check(outside / "secret.png")
    with pytest.raises(InputError, match="outside"):
        files.check(str(inside / ".." / "outside" / "secret.png"))
    with pytest.raises(InputError, match="outside"):
        files.check("/etc/passwd")


def test_input_files_refuse_symlink_escape(roots: tuple[Path, Path]) -> None:
    inside, outside = roots
    link = inside / "link.png"
    os.symlink(outside / "secret.png", link)
    with pytest.raises(InputError, match="outside"):
        InputFiles(roots=[inside]).check(link)


def test_input_files_relative_escape(roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    inside, _ = roots
    monkeypatch.chdir(inside)
    files = InputFiles(roots=[Path(".")])
    assert files.check("cat.png") == (inside / "cat.png").resolve()
    with pytest.raises(InputError, match="outside"):
        files.check("../outside/secret.png")


def test_input_files_missing_directory_wrong_kind(roots: tuple[Path, Path]) -> None:
    inside, _ = roots
    files = InputFiles(roots=[inside])
    with pytest.raises(InputError, match="does not exist"):
        files.check(inside / "nope.png")
    (inside / "folder.png").mkdir()
    with pytest.raises(InputError, match="not a file"):
        files.check(inside / "folder.png")
    with pytest.raises(InputError) as err:
        files.check(inside / "cat.png", kind=Kind.AUDIO)
    assert "should be audio" in err.value.message and "image" in err.value.message
    (inside / "fake.png").write_text("just text")
    with pytest.raises(InputError, match="not a recognised"):
        files.check(inside / "fake.png", kind=Kind.IMAGE)


def test_explicit_files(roots: tuple[Path, Path], tmp_path: Path) -> None:
    _, outside = roots
    secret = outside / "secret.png"
    files = InputFiles([secret], roots=[tmp_path / "inside"])
    assert files.names() == ["secret.png"]  # the planner sees the bare name, which resolves to the file
    # a given file is allowed wherever it lies, by path or by bare name
    assert files.check("secret.png", kind=Kind.IMAGE) == secret.resolve()
    assert files.check(str(secret), kind=Kind.IMAGE) == secret.resolve()
    # its neighbours are not
    (outside / "other.png").write_bytes(png_bytes("o"))
    with pytest.raises(InputError, match="outside"):
        files.check(outside / "other.png")
    with pytest.raises(InputError, match="does not exist"):
        InputFiles([outside / "missing.png"])
    with pytest.raises(InputError, match="not a file"):
        InputFiles([outside])


def test_the_planner_sees_bare_names_unless_two_given_files_share_one(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "photo.png").write_bytes(png_bytes(folder))
    (tmp_path / "a" / "cat.png").write_bytes(png_bytes("c"))
    files = InputFiles([tmp_path / "a" / "cat.png", tmp_path / "a" / "photo.png", tmp_path / "b" / "photo.png"],
                       roots=[tmp_path])
    names = files.names()
    assert names == ["cat.png", *(str((tmp_path / d / "photo.png").resolve()) for d in ("a", "b"))]
    assert [files.check(n, kind=Kind.IMAGE) for n in names] == files.files


def test_the_server_names_its_files_to_the_planner_by_name(tmp_path: Path) -> None:
    import io

    from localgpt.server.files import FileStore

    store = FileStore(tmp_path / "data")
    upload = store.save_upload(io.BytesIO(png_bytes("u")), "C:\\Users\\me\\杯子 (1).png", limit=1 << 20)["id"]
    assert store.path_of(upload) == store.uploads / upload / "杯子__1_.png"
    assert store.id_of(store.path_of(upload)) == upload
    legacy = "u-" + "a" * 32 + ".png"  # kept as a bare file by an earlier version
    (store.uploads / legacy).write_bytes(png_bytes("l"))
    run = store.runs / "20200101-000000-00000000"
    run.mkdir()
    (run / ("b" * 16 + ".png")).write_bytes(png_bytes("r"))
    made = "r-20200101-000000-00000000-" + "b" * 16 + ".png"
    text = f"compare {upload}, {legacy} with {made} and u-{'c' * 32}.png"
    # the names InputFiles.names shows, the user's own for an upload, not server paths (an unknown id stays)
    assert store.unscrub(text) == f"compare 杯子__1_.png, {legacy} with {'b' * 16}.png and u-{'c' * 32}.png"
    files = InputFiles([store.path_of(upload), store.path_of(legacy), store.path_of(made)], roots=[])
    assert files.names() == ["杯子__1_.png", legacy, "b" * 16 + ".png"]
    # a run's names win: two uploads of one name are told apart as its planner tells them apart
    twin = store.save_upload(io.BytesIO(png_bytes("t")), "杯子 (1).png", limit=1 << 20)["id"]
    paths = [store.path_of(upload), store.path_of(twin)]
    shown = dict(zip(paths, planner_names(paths), strict=True))
    assert store.unscrub(f"{upload} {twin}", shown) == f"{paths[0]} {paths[1]}"
    assert store.scrub(f"see {paths[0]}.") == f"see {upload}."  # and a path goes out as its id


@pytest.mark.parametrize(("given", "suffix", "kept"), [
    ("photo.JPG", ".jpg", "photo.JPG"),  # an ending of the content's kind stays as written
    ("holiday.wav", ".png", "holiday.png"),  # one of another kind says what the content is
    ("notes", ".wav", "notes.wav"), ("", ".png", "upload.png"), (".hidden.png", ".png", "hidden.png"),
    ("../../etc/passwd", ".png", "passwd.png"), ("a b;c\"d'.ogg", ".ogg", "a_b_c_d_.ogg"),
    ("رسالة 1.ogg", ".ogg", "رسالة_1.ogg"), ("x" * 200 + ".png", ".png", "x" * 120 + ".png"),
    ("杯" * 100 + ".png", ".png", "杯" * 40 + ".png"),  # 120 bytes of UTF-8: a file name holds 255
])
def test_an_upload_is_kept_under_a_safe_form_of_the_users_name(given: str, suffix: str, kept: str) -> None:
    from localgpt.server.files import upload_name

    assert upload_name(given, suffix) == kept


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the test removes what it writes
@given(name=st.text(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".wav", ".ogg", ".mp4", ".mkv"]))
def test_any_upload_name_is_one_safe_file_name_of_the_contents_kind(tmp_path: Path, name: str, suffix: str) -> None:
    from localgpt.server.files import UPLOAD_NAME_MAX, upload_name

    kept = upload_name(name, suffix)
    assert kept and not kept.startswith(".") and kind_by_name(kept) is kind_by_name("x" + suffix)
    assert not any(c.isspace() or c in "\"'<>()[],;:/\\|*?" or ord(c) < 32 for c in kept)
    assert len(kept.rsplit(".", 1)[0].encode("utf-8")) <= UPLOAD_NAME_MAX
    (tmp_path / kept).write_bytes(b"x")  # the file system takes it as one name
    assert [p.name for p in tmp_path.iterdir()] == [kept]
    (tmp_path / kept).unlink()


def test_a_plan_made_from_bare_names_names_the_files_as_given() -> None:
    from localgpt.runtime.runs import planner_names, with_paths
    from localgpt.schema import Plan

    files = ["/data/uploads/a.png", "/x/b.png", "/y/b.png"]
    assert planner_names(files) == ["a.png", "/x/b.png", "/y/b.png"]
    plan = Plan.model_validate({"tasks": [
        {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "a.png"}},
        {"id": 1, "task": "visual-question-answering", "dep": [-1], "args": {"image": "/y/b.png", "text": "a.png?"}},
        {"id": 2, "task": "text-to-speech", "dep": [0], "args": {"text": "<resource>-0"}}]})
    args = [t.args for t in with_paths(plan, files).tasks]
    assert args == [{"image": "/data/uploads/a.png"}, {"image": "/y/b.png", "text": "a.png?"},
                    {"text": "<resource>-0"}]
    spoken = Plan.model_validate(
        {"tasks": [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "a.png"}}]})
    assert with_paths(spoken, files).tasks[0].args == {"text": "a.png"}  # a text is not a file argument
