"""The exceptions localgpt raises. The library raises; only the CLI and the server format them."""

from __future__ import annotations


class LocalGPTError(Exception):
    """Base of every error localgpt reports to a user.

    ``message`` says what went wrong (naming the task, file or model involved);
    ``hint`` says what to do about it, when there is something to do.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(LocalGPTError):
    """A setting or a model file the user pointed to is missing or unusable."""


class PlanError(LocalGPTError):
    """The planner could not produce a plan that passes validation."""

    def __init__(self, message: str, hint: str | None = None, raw: str | None = None) -> None:
        super().__init__(message, hint)
        self.raw = raw


class NoModelError(LocalGPTError):
    """No installed model can serve a task type."""


class InputError(LocalGPTError):
    """A user-supplied input (file, argument, request) is unreadable or of the wrong kind."""


class ExpertError(LocalGPTError):
    """An expert model failed to load or to run."""


class StoreError(LocalGPTError):
    """Installing, verifying or reading a model in the model store failed."""


class RequestTooLong(InputError):
    """A request longer than the controller LLM's context window leaves room for: ``tokens`` (None when it
    was too long to count) against ``limit``, and its length in ``characters``."""

    def __init__(self, message: str, hint: str | None = None, tokens: int | None = None, limit: int = 0,
                 characters: int = 0) -> None:
        super().__init__(message, hint)
        self.tokens = tokens
        self.limit = limit
        self.characters = characters


class RunCancelled(Exception):  # noqa: N818 - not an error to report: the run's client is gone
    """Raised from a run's event callback to stop the run between tasks (its client went away)."""
