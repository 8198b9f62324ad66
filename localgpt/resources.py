"""Run directories, produced files, and checks on the files a user hands in."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from localgpt.errors import InputError
from localgpt.tasks import EXTENSIONS, Kind

# The largest file a user may hand in, unless InputFiles is given another limit.
MAX_INPUT_BYTES = 512 * 1024 * 1024

# "<resource>-N" (localgpt) and "<GENERATED>-N" (HuggingGPT) both name task N's output.
REFERENCE = re.compile(r"<(?:resource|generated)>-(\d+)", re.IGNORECASE)


def references(value: str) -> list[int]:
    """Task ids referenced in an argument value."""
    return [int(m) for m in REFERENCE.findall(value)]


def renumber(value: str, new_id: Mapping[int, int]) -> str:
    """``value`` with each reference to task N pointing at task ``new_id[N]`` (written
    ``<resource>-M``), all in one pass; a reference to a task not in ``new_id`` is left as it is."""
    def sub(m: re.Match[str]) -> str:
        old = int(m.group(1))
        return f"<resource>-{new_id[old]}" if old in new_id else m.group(0)
    return REFERENCE.sub(sub, value)


def is_pure_reference(value: str) -> bool:
    """Whether the whole value is one reference (so it can stand for a file)."""
    return REFERENCE.fullmatch(value.strip()) is not None


def kind_by_name(value: str) -> Kind | None:
    """The media kind a file name's ending suggests, or None."""
    suffix = Path(value.strip()).suffix.lower()
    for kind, endings in EXTENSIONS.items():
        if suffix in endings:
            return kind
    return None


def sniff_kind(path: Path) -> Kind | None:
    """The media kind of a file, from its first bytes; None when not a known media file."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return Kind.IMAGE
    if head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"BM"):
        return Kind.IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Kind.IMAGE
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Kind.IMAGE
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Kind.AUDIO
    if head[:4] in (b"fLaC", b"OggS") or head[:3] == b"ID3":
        return Kind.AUDIO
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame sync (MP3)
        return Kind.AUDIO
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Kind.VIDEO
    if head[4:8] == b"ftyp":  # MP4 family: audio-only brands, or an audio file name, else video
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ") or kind_by_name(path.name) is Kind.AUDIO:
            return Kind.AUDIO
        return Kind.VIDEO
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Kind.VIDEO
    return None


def _human(size: int) -> str:
    """A byte count for messages (e.g. "12.3 MB")."""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"


def _decode_image(path: Path) -> None:
    """Decode the whole image; InputError when it cannot be (truncated, damaged, too many pixels)."""
    try:
        from PIL import Image
    except ImportError:  # without Pillow only the header sniff checks images
        return
    try:
        with Image.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                raise ValueError("it has no pixels")
    except Image.DecompressionBombError as exc:
        raise InputError(f"image '{path.name}' has too many pixels to decode safely: {exc}",
                         "give a smaller image") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "damaged or truncated"
        raise InputError(f"image '{path.name}' cannot be decoded: {exc}",
                         "the file is damaged or truncated; give a PNG, JPEG, GIF, BMP, WebP or TIFF image") from exc


def _decode_audio(path: Path) -> None:
    """Decode the start of the audio; InputError when no sample can be read from it."""
    import wave

    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getnframes() == 0 or wav.getframerate() == 0:
                raise InputError(f"audio '{path.name}' holds no samples", "give a recording that is not empty")
            frames = wav.readframes(min(wav.getnframes(), 16_000))
            if not frames:
                raise InputError(f"audio '{path.name}' cannot be decoded: its sample data is missing",
                                 "the file is damaged or truncated")
            return
    except InputError:
        raise
    except Exception:  # wave raises Error, EOFError, RuntimeError...: not a PCM WAV, let FFmpeg judge
        pass
    try:
        import av
    except ImportError:  # without PyAV only the header sniff checks non-WAV audio
        return
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"audio '{path.name}' holds no audio stream")
            for _ in container.decode(audio=0):
                return
        raise InputError(f"audio '{path.name}' holds no samples", "give a recording that is not empty")
    except InputError:
        raise
    except Exception as exc:  # av raises its own error types
        raise InputError(f"audio '{path.name}' cannot be decoded: {exc}",
                         "the file is damaged or truncated; give a WAV, FLAC, MP3 or OGG file") from exc


def check_media(path: Path, kind: Kind, max_bytes: int | None = MAX_INPUT_BYTES) -> None:
    """Check a user file holds a decodable ``kind`` of at most ``max_bytes``; InputError saying what is wrong.

    Images are decoded fully, audio is decoded from its start, videos are only sniffed.

    Example::

        check_media(Path("cat.png"), Kind.IMAGE)  # returns, or raises InputError
    """
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"file '{path.name}' is {_human(size)}, more than the {_human(max_bytes)} an input may be",
                         "give a smaller file")
    found = sniff_kind(path)
    if found != kind:
        what = found.value if found else "not a recognised image, audio or video file"
        raise InputError(f"file '{path.name}' should be {kind.value} but its content is {what}",
                         f"a {found.value} was given where {kind.value} is needed" if found else
                         f"give a {kind.value} file")
    if kind is Kind.IMAGE:
        _decode_image(path)
    elif kind is Kind.AUDIO:
        _decode_audio(path)


class RunDir:
    """The folder of one run: produced files get content-addressed names that never collide.

    Example::

        out = RunDir.create(Path("runs"))
        wav = out.save(b"RIFF...", ".wav")
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, root: Path) -> RunDir:
        """A new, empty run folder under ``root``."""
        name = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
        return cls(Path(root) / name)

    def save(self, data: bytes, suffix: str) -> Path:
        """Write ``data`` as a new file named by its content hash; returns its path."""
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return self.adopt(Path(tmp), suffix)

    def temp_path(self, suffix: str) -> Path:
        """A fresh path inside the run folder for a writer that needs a file name."""
        return self.path / f".{uuid.uuid4().hex}{suffix}.part"

    def adopt(self, tmp: Path, suffix: str) -> Path:
        """Rename a finished temporary file to its content-addressed name."""
        digest = hashlib.sha256()
        with open(tmp, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        final = self.path / f"{digest.hexdigest()[:16]}{suffix}"
        if final.exists():
            tmp.unlink()
        else:
            os.replace(tmp, final)
        return final


class InputFiles:
    """The files a user may refer to, checked for existence, readability and kind.

    Paths outside ``roots`` (and not handed in explicitly) are refused; a file checked for a
    kind must decode as that kind and be at most ``max_bytes`` (None: no limit).
    """

    def __init__(self, files: Iterable[str | Path] = (), roots: Iterable[str | Path] = (),
                 max_bytes: int | None = MAX_INPUT_BYTES) -> None:
        self.files: list[Path] = []
        self.roots = [Path(r).resolve() for r in roots]
        self.max_bytes = max_bytes
        for f in files:
            self.files.append(self.check(f, explicit=True))

    def names(self) -> list[str]:
        """The given files as the planner should see them."""
        return [str(f) for f in self.files]

    def allowed(self, path: Path) -> bool:
        """Whether ``path`` lies inside an allowed root or is a given file."""
        resolved = path.resolve()
        if resolved in self.files:
            return True
        return any(resolved == r or r in resolved.parents for r in self.roots)

    def find(self, value: str) -> Path | None:
        """A given file matching ``value`` by path or by bare name."""
        want = Path(value)
        bare = want.name == value  # a bare name matches a given file of that name; a path must match exactly
        for f in self.files:
            if f == want.expanduser().resolve() or (bare and f.name == want.name):
                return f
        return None

    def check(self, value: str | Path, explicit: bool = False, kind: Kind | None = None) -> Path:
        """Resolve a user file, refusing missing, unreadable, disallowed or wrong-kind files."""
        path = Path(value).expanduser()
        if not explicit:
            found = self.find(str(value))
            if found is not None:
                path = found
            elif not self.allowed(path):
                raise InputError(
                    f"file '{value}' is outside the folders localgpt may read",
                    "pass it with --file, or run from the folder that holds it",
                )
        if not path.exists():
            raise InputError(f"file '{value}' does not exist", "check the path")
        if not path.is_file():
            raise InputError(f"'{value}' is not a file")
        if not os.access(path, os.R_OK):
            raise InputError(f"file '{value}' cannot be read (permission denied)")
        if kind is not None:
            try:
                check_media(path, kind, self.max_bytes)
            except InputError as exc:
                raise InputError(exc.message.replace(f"'{path.name}'", f"'{value}'", 1), exc.hint) from exc
        return path.resolve()
