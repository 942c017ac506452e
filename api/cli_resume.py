"""`text2art generate`'s stop and resume.

The first Ctrl-C (or a SIGTERM) asks the loop to stop between two iterations; the run's state is
then written atomically beside the output (`city.resume.safetensors` for `city.png`) and one
line says where it stopped and the command that continues it. A second Ctrl-C quits at once; a
state being written then is never left half-written (the previous file stays as it was).

`text2art generate --resume STATE` continues the run: its settings come from the state (only the
output and the device may be given), it prints `resuming at iteration N of M`, and it writes what
the uninterrupted run would have written; the state file is removed once the outputs are.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import click

from api.cli_common import fail

# Options that may go with --resume: they say where and on what, not what the run is.
RESUME_OPTIONS = {"device"}


class StopOnSignal:
    """Inside the block, the first SIGINT or SIGTERM sets `event` (the loop stops between two
    iterations) instead of raising; a second SIGINT raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.event.set()
        click.echo(
            "\nstopping after this iteration to save the run (Ctrl-C again quits without saving)",
            err=True,
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def default_output(state: Path) -> Path:
    """The output a state beside it belongs to: `city.resume.safetensors` -> `city.png`."""
    from engine import STATE_SUFFIX

    name = state.name
    stem = name[: -len(STATE_SUFFIX)] if name.endswith(STATE_SUFFIX) else state.stem
    return state.with_name(stem + ".png")


def load_resume(
    path: str, prompt: str | None, given: dict[str, Any], flags: dict[str, str]
) -> tuple[Any, Any]:
    """(state, settings) of `--resume PATH`; one line and exit 2 when it cannot be used.

    `given` holds the options given on the command line (only the device may be), `flags`
    their spellings."""
    from engine import SettingsError, StateError, read_state

    others = sorted(name for name in given if name not in RESUME_OPTIONS)
    if prompt is not None or others:
        what = "PROMPT" if prompt is not None else flags.get(others[0], others[0])
        fail(f"--resume: the run's settings come from its state; leave out {what}")
    try:
        state = read_state(path)
        settings = state.resolved_settings(**given)
    except StateError as exc:
        fail(f"--resume: {exc}")
    except SettingsError as exc:
        fail(f"--resume: {path} holds settings that cannot be used ({exc})")
    click.echo(f"resuming at iteration {state.iteration} of {state.total}", err=True)
    return state, settings


def save_stopped(exc: Any, out_path: Path) -> None:
    """After Ctrl-C: write the stopped run's state beside the output; say how to continue."""
    from engine import state_path, write_state

    if exc.state is None:
        fail("interrupted", code=130)
    state = exc.state()
    path = state_path(out_path)
    try:
        write_state(path, state)
    except KeyboardInterrupt:
        fail("interrupted while saving the run; nothing was saved", code=130)
    except OSError as exc2:
        fail(f"cannot save the run to {path}: {exc2.strerror or exc2}", code=1)
    command = f"text2art generate --resume {shlex.quote(str(path))}"
    if default_output(path) != out_path:
        command += f" --out {shlex.quote(str(out_path))}"
    click.echo(
        f"stopped at iteration {state.iteration} of {state.total}; saved {path}; "
        f"continue with: {command}",
        err=True,
    )
    sys.exit(130)


def finish_resumed(state_file: Path) -> None:
    """After the outputs of a resumed run are written: its state is spent, remove it."""
    if state_file.is_file():
        state_file.unlink()
        click.echo(f"removed {state_file} (the run is complete)")
