"""``localgpt chat``: a multi-turn conversation in the terminal over the same pipeline as the server.

Each turn sees the conversation so far (as history) and every file of the session: the files the
user attached and every file an earlier turn produced, so "caption the image you drew" works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from localgpt.errors import LocalGPTError
from localgpt.llm import Message
from localgpt.pipeline import Emit, Pipeline

HELP = ("Type a request. Commands: /file PATH (attach a file), /files (list the session's files), "
        "/reset (forget the conversation), /quit.")


class ChatSession:
    """The state of one conversation: history and files, carried from turn to turn.

    Example::

        session = ChatSession(pipe, files=["photo.png"])
        result = session.turn("caption photo.png")
        session.turn("now read the caption aloud")     # sees the first turn's answer and files
    """

    def __init__(self, pipeline: Pipeline, files: Iterable[str | Path] = ()) -> None:
        self.pipeline = pipeline
        self.history: list[Message] = []
        self.files: list[Path] = []
        for f in files:
            self.attach(f)

    def attach(self, path: str | Path) -> Path:
        """Add a user file to the session (checked: it must exist and be readable)."""
        checked = self.pipeline.input_files([path]).files[0]
        if checked not in self.files:
            self.files.append(checked)
        return checked

    def turn(self, request: str, on_event: Emit | None = None) -> str:
        """Run one request with the session's history and files; returns the answer."""
        result = self.pipeline.run(request, self.files, self.history, on_event=on_event)
        self.history += [{"role": "user", "content": request}, {"role": "assistant", "content": result.answer}]
        for produced in result.files:
            path = Path(produced).resolve()
            if path not in self.files:
                self.files.append(path)
        return result.answer

    def reset(self) -> None:
        """Forget the conversation (the attached files stay)."""
        self.history.clear()

    def loop(self, lines: TextIO, out: Callable[[str], None], printer: Callable[[], Emit]) -> int:
        """Read requests from ``lines`` until EOF or /quit; ``printer()`` makes each turn's event printer."""
        out(HELP)
        while True:
            out("you> ")
            line = lines.readline()
            if not line:
                return 0
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                return 0
            try:
                if text.startswith("/file "):
                    out(f"attached {self.attach(text[len('/file '):].strip())}")
                elif text == "/files":
                    out("\n".join(str(f) for f in self.files) or "no files yet")
                elif text == "/reset":
                    self.reset()
                    out("conversation forgotten")
                elif text.startswith("/"):
                    out(HELP)
                else:
                    self.turn(text, on_event=printer())
            except LocalGPTError as exc:
                out(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""))
