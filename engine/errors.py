"""The engine's errors: one `EngineError` base, so callers catch one type and read its kind.

- `SettingsError`: bad user input for one option (`field` names it; a 422 or exit code 2).
- `WeightsError`: a weights file is missing or could not be fetched (one line, says what to do).
- `CheckpointError`: a config or checkpoint that cannot be used (wrong format, keys, or a file
  that would run code).
- `Cancelled`: the caller's `should_stop()` returned True; it carries the run's state.
- `StateError`: a saved run state that cannot continue this run (damaged, foreign, another
  run's, another version's); the message is one line.

Each also derives from the builtin it replaced (ValueError, RuntimeError), so older callers that
catch those keep working. `one_line(exc)` is how the engine and the service quote any exception
in a message: drivers' and libraries' messages run over many lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def one_line(exc: BaseException, limit: int | None = None, *, typed: bool = True) -> str:
    """`Type: first line` of an exception (only the first line with `typed=False`; the type's
    name when it says nothing), cut at `limit` characters if given."""
    first = (str(exc).strip().splitlines() or [""])[0][:limit]
    if not first:
        return type(exc).__name__
    return f"{type(exc).__name__}: {first}" if typed else first


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class SettingsError(EngineError, ValueError):
    """Bad user input for one option; `field` names it, the message says what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WeightsError(EngineError, RuntimeError):
    """A weights file is missing or could not be fetched; the message is one line."""


class CheckpointError(EngineError, ValueError):
    """A model config or checkpoint that cannot be used; the message says why."""


class Cancelled(EngineError):
    """Raised inside `generate` when `should_stop()` returned True.

    `state()`, when not None, captures the run as it stopped (an `engine.runstate.RunState`,
    between two iterations), so the caller can save it and continue later.
    """

    def __init__(self, message: str, state: Callable[[], Any] | None = None):
        super().__init__(message)
        self.state = state


class StateError(EngineError, ValueError):
    """A saved run state that cannot continue the run; the message says why, in one line."""
