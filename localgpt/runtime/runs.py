"""Run folders and produced files (content-addressed names), and the user's input files."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from localgpt.errors import InputError
from localgpt.fileio import sha256_file
from localgpt.runtime.media import MAX_INPUT_BYTES, check_media
from localgpt.tasks import Kind


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
        final = self.path / f"{sha256_file(tmp)[:16]}{suffix}"
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
