"""The Expert interface every backend implements: load lazily, run, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from localgpt.errors import ExpertError

if TYPE_CHECKING:
    from localgpt.config import Settings
    from localgpt.llm import LLM
    from localgpt.runtime.runs import RunDir
    from localgpt.schema import ModelCard


@dataclass
class ExpertOutput:
    """What an expert produced: ``outputs`` maps a kind ("text", "image", "audio", "video")
    to text or to a file path in the run folder; ``data`` is JSON-serialisable detail (scores...)."""

    outputs: dict[str, str]
    data: Any = None


@dataclass
class ExpertContext:
    """What an expert may use beyond its card: settings, the controller LLM, the run folder."""

    settings: Settings
    llm: LLM | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Expert(ABC):
    """A model that serves one or more task types.

    ``run`` receives the task name and its resolved inputs: text values as text, media
    values as absolute file paths that were already checked to be of the right kind.
    """

    TASKS: tuple[str, ...] = ()  # the tasks a backend serves, where it names them (see :meth:`check_task`)
    # Tasks the backend serves only in part, with what it does of each (e.g. OCR "reads the text in an
    # image" for image-to-text, which also means captioning): the selector then lets a stand-in compete.
    SCOPE: Mapping[str, str] = MappingProxyType({})

    def __init__(self, card: ModelCard, ctx: ExpertContext) -> None:
        self.card = card
        self.ctx = ctx
        self.loaded = False

    def load(self) -> None:
        """Load weights (called once, lazily, before the first run)."""
        self.loaded = True

    def check_task(self, task: str, what: str = "model") -> None:
        """ExpertError unless ``task`` is one of :attr:`TASKS` (``what`` names the model in the message)."""
        if task not in self.TASKS:
            raise ExpertError(f"{what} '{self.card.id}' serves {', '.join(self.TASKS)}, not '{task}'")

    @abstractmethod
    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Serve one task; files go into ``out``."""

    def close(self) -> None:
        """Release memory held by the model."""
        self.loaded = False
