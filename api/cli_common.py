"""What every `text2art` command shares: the one way to fail (one line on stderr and an exit
code, never a traceback) and the one way to read the service's configuration."""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

if TYPE_CHECKING:
    from api.config import ServiceConfig


def fail(message: str, code: int = 2) -> typing.NoReturn:
    """Print `error: MESSAGE` on stderr and exit with `code` (2: bad input, 1: it failed).

    SystemExit, not click's Exit: `text2art` runs click with standalone_mode=False, where an
    Exit would be returned, not raised, and the exit code lost.
    """
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def load_config(**overrides: Any) -> ServiceConfig:
    """The service's configuration from the `T2A_*` environment, with `overrides` (command-line
    options) on top; read once per process. A bad variable is a one-line `click.UsageError`
    naming it."""
    from api.config import ServiceConfig

    try:
        return ServiceConfig(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "T2A_" + str(err["loc"][0]).upper() if err["loc"] else "T2A_*"
        raise click.UsageError(f"{name}: {err['msg']}") from None
