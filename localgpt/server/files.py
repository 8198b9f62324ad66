"""The server's files: uploads and produced files live under one data folder and leave it only as ids.

An uploaded file's id is ``u-<32 hex><suffix>``, the folder ``<data>/uploads/<id>/`` that holds it under the
user's own file name (:func:`upload_name`), so the planner, shown a file by its name, reads the user's; an
upload kept by an earlier version as the file ``<data>/uploads/<id>`` is still found. A produced file's id is
``r-<run folder>-<16 hex><suffix>``, naming ``<data>/runs/<run folder>/<16 hex><suffix>``.
Ids are checked against these exact shapes before any path is built, so no id can point elsewhere.
Every string the server sends passes through :meth:`FileStore.scrub`, which turns paths under the
data folder back into ids.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from localgpt.errors import InputError
from localgpt.runtime.media import sniff_kind
from localgpt.runtime.runs import is_temporary
from localgpt.tasks import Kind, kind_by_name

UPLOAD_ID = re.compile(r"u-[0-9a-f]{32}\.[a-z0-9]{2,4}")
RUN_ID = re.compile(r"r-(\d{8}-\d{6}-[0-9a-f]{8})-([0-9a-f]{16}\.[a-z0-9]{2,4})")
ANY_ID = re.compile(rf"\b(?:{UPLOAD_ID.pattern}|{RUN_ID.pattern})\b")
UPLOAD_NAME_MAX = 120  # bytes (UTF-8) of the stem of a user's file name kept with an upload (a file name: 255)
# what could end a path in a text (FileStore.scrub) or name another folder: made "_" in an upload's name
_UNSAFE_IN_NAME = re.compile(r"[\s\"'<>()\[\],;:/\\|*?\x00-\x1f\x7f]")

# the suffix an upload is stored under, from its first bytes (the client's file name is not trusted)
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", ".png"), (0, b"\xff\xd8\xff", ".jpg"), (0, b"GIF8", ".gif"), (0, b"BM", ".bmp"),
    (8, b"WEBP", ".webp"), (0, b"II*\x00", ".tif"), (0, b"MM\x00*", ".tif"), (8, b"WAVE", ".wav"),
    (0, b"fLaC", ".flac"), (0, b"OggS", ".ogg"), (0, b"ID3", ".mp3"), (8, b"AVI ", ".avi"),
    (0, b"\x1a\x45\xdf\xa3", ".mkv"),
]
MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif", ".bmp": "image/bmp", ".webp": "image/webp",
    ".tif": "image/tiff", ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4", ".avi": "video/x-msvideo", ".mkv": "video/x-matroska", ".mp4": "video/mp4",
    ".webm": "video/webm", ".txt": "text/plain", ".json": "application/json",
}


def sniff_suffix(path: Path) -> str | None:
    """The file suffix matching a media file's content, or None when it is not a known media file."""
    kind = sniff_kind(path)
    if kind is None:
        return None
    with open(path, "rb") as fh:
        head = fh.read(16)
    for offset, magic, suffix in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return suffix
    if head[0:1] == b"\xff":
        return ".mp3"
    return ".m4a" if kind is Kind.AUDIO else ".mp4"  # the MP4 family (ftyp)


def upload_name(filename: str, suffix: str) -> str:
    """The name an upload is kept under: the last part of the user's file name, its characters that could
    end a path in a text or name a folder made ``_`` (no leading dot), the stem cut to
    :data:`UPLOAD_NAME_MAX` bytes of UTF-8 (whole characters); its ending is kept when it names the kind of
    media the content is (``suffix``, sniffed), and replaced by ``suffix`` otherwise. Any script is kept."""
    last = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ending = _UNSAFE_IN_NAME.sub("_", last).rpartition(".")
    if not dot:
        stem, ending = ending, ""
    stem = stem.lstrip(".").encode("utf-8")[:UPLOAD_NAME_MAX].decode("utf-8", errors="ignore") or "upload"
    ending = f".{ending}" if ending and kind_by_name(f"x.{ending}") is kind_by_name(f"x{suffix}") else suffix
    return stem + ending


class FileStore:
    """Uploads and produced files under ``data_dir``, addressed by id.

    Example::

        store = FileStore(Path("data"))
        info = store.save_upload(fh, "cat.png", limit=10 << 20)
        store.path_of(info["id"])     # data/uploads/u-....png
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()
        self.uploads = self.root / "uploads"
        self.runs = self.root / "runs"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)
        root = re.escape(str(self.root))
        self._path_re = re.compile(rf"{root}(?:/[^\s\"'<>()\[\],;]*)?")

    # ids and paths
    def path_of(self, file_id: str) -> Path:
        """The file an id names; :class:`InputError` for a malformed id, :class:`UnknownFile` for none."""
        if UPLOAD_ID.fullmatch(file_id):
            path, folder = self.uploads / file_id, self.uploads
            if path.is_dir():  # the one file the upload's folder holds
                kept = [p for p in path.iterdir() if not is_temporary(p)]
                path, folder = (kept[0] if len(kept) == 1 else path / file_id), path
        elif match := RUN_ID.fullmatch(file_id):
            path, folder = self.runs / match.group(1) / match.group(2), self.runs / match.group(1)
        else:
            raise InputError(f"'{file_id[:80]}' is not a file id", "use an id returned by POST /v1/files or a run")
        resolved = path.resolve()
        if resolved.parent != folder or not resolved.is_file():  # (no link on the way: root is resolved)
            raise UnknownFile(f"there is no file '{file_id}'", "upload it with POST /v1/files")
        return resolved

    def id_of(self, path: str | Path) -> str | None:
        """The id of a file under the data folder, or None for any other path."""
        p = Path(path)
        if p.parent == self.uploads and UPLOAD_ID.fullmatch(p.name):  # kept by an earlier version
            return p.name
        if p.parent.parent == self.uploads and UPLOAD_ID.fullmatch(p.parent.name):
            return p.parent.name
        if p.parent.parent == self.runs:
            candidate = f"r-{p.parent.name}-{p.name}"
            if RUN_ID.fullmatch(candidate):
                return candidate
        return None

    def describe(self, file_id: str) -> dict[str, Any]:
        """An id's public description: id, url, file name (an upload's as the user named it, made safe:
        :func:`upload_name`), kind, media type and size."""
        path = self.path_of(file_id)
        kind = sniff_kind(path)
        return {"id": file_id, "object": "file", "url": f"/v1/files/{file_id}", "filename": path.name,
                "kind": kind.value if kind else "text", "media_type": media_type(Path(file_id)),
                "bytes": path.stat().st_size}

    # uploads
    def save_upload(self, source: BinaryIO, filename: str, limit: int) -> dict[str, Any]:
        """Copy an uploaded stream into the uploads folder, refusing more than ``limit`` bytes
        (:class:`UploadTooLarge`) and content that is not an image, audio or video (:class:`InputError`)."""
        tmp = self.uploads / f".{uuid.uuid4().hex}.part"
        size = 0
        try:
            with open(tmp, "wb") as out:
                while block := source.read(1 << 20):
                    size += len(block)
                    if size > limit:
                        raise UploadTooLarge(f"the file is larger than the limit of {limit >> 20} MB",
                                             "send a smaller file or raise LOCALGPT_MAX_UPLOAD_MB")
                    out.write(block)
            suffix = sniff_suffix(tmp)
            if suffix is None:
                raise UnsupportedMedia(f"'{filename[:80]}' is not a recognised image, audio or video file",
                                 "upload PNG/JPEG/GIF/BMP/WebP/TIFF images, WAV/FLAC/OGG/MP3/M4A audio "
                                 "or MP4/WebM/MKV/AVI video")
            file_id, name = f"u-{uuid.uuid4().hex}{suffix}", upload_name(filename, suffix)
            folder = self.uploads / file_id
            folder.mkdir()
            try:
                shutil.move(str(tmp), folder / name)
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        finally:
            tmp.unlink(missing_ok=True)
        return self.describe(file_id)

    # what goes out, what comes in
    def scrub(self, value: Any) -> Any:
        """``value`` (str, list, dict, nested) with every path under the data folder replaced by its id."""
        if isinstance(value, str):
            if str(self.root) not in value:
                return value
            return self._path_re.sub(self._path_to_id, value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def _path_to_id(self, match: re.Match[str]) -> str:
        """One path found in a text, as its id (a sentence's closing punctuation kept outside)."""
        path = match.group(0)
        stripped = path.rstrip(".:!?")
        return (self.id_of(stripped) or "<server file>") + path[len(stripped):]

    def ids_in(self, texts: Iterable[str]) -> list[str]:
        """The file ids mentioned in ``texts``, in order, without repeats."""
        found: list[str] = []
        for text in texts:
            for match in ANY_ID.finditer(text):
                if match.group(0) not in found:
                    found.append(match.group(0))
        return found

    def unscrub(self, text: str, shown: Mapping[Path, str] | None = None) -> str:
        """``text`` with every known file id replaced by the name the planner is shown for that file:
        ``shown[path]`` (a run's ``planner_names`` of its files), else the file's name (an upload's is the
        user's own, :func:`upload_name`): fewer tokens to read and to copy than a path or an id, and the
        name resolves among the run's files. An id naming no file stays as written."""
        def swap(match: re.Match[str]) -> str:
            try:
                path = self.path_of(match.group(0))
            except InputError:
                return match.group(0)
            return (shown or {}).get(path, path.name)
        return ANY_ID.sub(swap, text)


class UnknownFile(InputError):
    """A well-formed file id that names no file."""


class UnsupportedMedia(InputError):
    """An upload whose content is not an image, audio or video file."""


class UploadTooLarge(InputError):
    """An upload over the size limit."""


def media_type(path: Path) -> str:
    """The HTTP media type of a served file."""
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
