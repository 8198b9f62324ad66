"""Checks on the files a user hands in: the kind their bytes show, and a decode of images and audio."""

from __future__ import annotations

from pathlib import Path

from localgpt.errors import InputError
from localgpt.fileio import human_size
from localgpt.tasks import Kind, kind_by_name

# The largest file a user may hand in, unless InputFiles is given another limit.
MAX_INPUT_BYTES = 512 * 1024 * 1024
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
        raise InputError(f"file '{path.name}' is {human_size(size)}, more than the {human_size(max_bytes)} an "
                         "input may be", "give a smaller file")
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
