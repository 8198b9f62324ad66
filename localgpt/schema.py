"""Pydantic models for the data that flows through the pipeline.

Plans, model cards, task results, run results and pipeline events are defined once here;
the planner's JSON-schema constraint is generated from the task registry and these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Task(BaseModel):
    """One node of a plan. ``args`` values are literals or ``<resource>-N`` references."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0)
    task: str
    dep: list[int] = Field(default_factory=list)
    args: dict[str, str] = Field(default_factory=dict)


class Plan(BaseModel):
    """A validated task graph; tasks are in an order where every dep comes first. ``steps`` are the
    planner's plain-words decomposition of the request, when it wrote one."""

    tasks: list[Task]
    steps: list[str] = []

    def by_id(self, task_id: int) -> Task:
        """The task with ``task_id``."""
        return next(t for t in self.tasks if t.id == task_id)


class FileEntry(BaseModel):
    """One file of a model, relative to the model's folder, with its checksum."""

    path: str
    sha256: str
    size: int

    @field_validator("path")
    @classmethod
    def _inside_the_folder(cls, value: str) -> str:
        """A relative path that stays inside the model's folder (no ``..``, no absolute path)."""
        parts = value.replace("\\", "/").split("/")
        if not value or value.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts or "" in parts:
            raise ValueError(f"file path {value!r} must be relative and stay inside the model's folder")
        return value


class ModelSource(BaseModel):
    """Where a model came from: a hub repo at a revision, a PyPI package, or a local folder."""

    type: Literal["hub", "pypi", "local", "builtin"]
    repo: str | None = None
    revision: str | None = None
    packages: list[str] = Field(default_factory=list)


class ModelCard(BaseModel):
    """The manifest of an installed model (``model_store/<id>/model.json``).

    ``backend`` names the expert class that runs it (see ``localgpt.experts``);
    ``options`` carries backend-specific settings (file names, pooling, language...).
    """

    id: str
    tasks: list[str]
    backend: str
    format: str
    description: str
    license: str = "unknown"
    source: ModelSource = Field(default_factory=lambda: ModelSource(type="local"))
    devices: list[str] = Field(default_factory=lambda: ["cpu"])
    files: list[FileEntry] = Field(default_factory=list)
    size_bytes: int = 0
    options: dict[str, Any] = Field(default_factory=dict)
    path: Path | None = Field(default=None, exclude=True)

    def file(self, name: str) -> Path:
        """Absolute path of one of this model's files."""
        if self.path is None:
            raise ValueError(f"model {self.id} has no folder")
        return self.path / name


class Selection(BaseModel):
    """The model chosen for one task and why."""

    task_id: int
    task: str
    model: str
    backend: str
    reason: str
    candidates: list[str] = Field(default_factory=list)
    stand_in: str | None = None  # the task run in this task's place when no installed model serves it


Status = Literal["done", "failed", "skipped"]


class TaskResult(BaseModel):
    """What one task produced. ``outputs`` maps a kind to text or to a produced file's path."""

    id: int
    task: str
    args: dict[str, str] = Field(default_factory=dict)
    status: Status
    model: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    data: Any = None
    error: str | None = None
    seconds: float = 0.0
    stand_in: str | None = None  # the task that was run in this task's place (see localgpt.tasks.Substitute)
    note: str | None = None  # what stood in for what, and what to install for the real task


class RunResult(BaseModel):
    """Everything a run produced: plan, choices, per-task results, the answer and the files."""

    request: str
    plan: Plan
    selections: list[Selection] = Field(default_factory=list)
    results: list[TaskResult] = Field(default_factory=list)
    answer: str = ""
    files: list[str] = Field(default_factory=list)
    run_dir: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    llm_calls: int = 0


EventType = Literal["plan", "select", "task_start", "task_done", "task_failed", "answer_delta", "done", "error"]


class Event(BaseModel):
    """One step of a run, as the CLI, the server's stream and the web page consume it."""

    type: EventType
    data: dict[str, Any] = Field(default_factory=dict)
