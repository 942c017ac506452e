"""`text2art generate --prompts-file LIST.txt`: one picture per non-empty line of a file, the
other flags shared, outputs numbered; a bad line is reported with its line number and the rest
still run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from api.cli_common import fail


def prompt_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, prompt) of each non-empty line of the file; exit 2 when it cannot be read
    or holds no prompt."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"--prompts-file: cannot read {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"--prompts-file: {path} is not UTF-8 text")
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        fail(f"--prompts-file: {path} has no prompt (every line is empty)")
    return lines


def numbered(out: Path, k: int, count: int) -> Path:
    """The output of picture k of `count`: city.png -> city-1.png (city-01.png from 10 on)."""
    return out.with_name(f"{out.stem}-{k:0{len(str(count))}d}{out.suffix or '.png'}")


def run_prompts_file(
    path: Path,
    prompt: str | None,
    resume: str | None,
    values: dict[str, Any],
    out: Path,
    run_one: Callable[[Any, Path], None],
) -> None:
    """Make one picture per line with `values` (every other setting) through `run_one(settings,
    output)`, then print a summary. Exit code: 0 when every line made its picture, else the worst
    failure's (2: a line's input, 1: a run failed); Ctrl-C stops the whole list. A PROMPT or
    `--resume` beside the file is refused."""
    from engine import Settings, SettingsError, resolve

    if prompt is not None or resume:
        fail("--prompts-file: give no PROMPT and no --resume (each line is a prompt)")
    lines = prompt_lines(path)
    failed: list[tuple[int, int]] = []  # (line number, exit code)
    for k, (n, prompt) in enumerate(lines, start=1):
        target = numbered(out, k, len(lines))
        click.echo(f"[{k}/{len(lines)}] line {n}: {prompt} -> {target}", err=True)
        try:
            settings = resolve(Settings.create(**{**values, "prompts": prompt}))
        except SettingsError as exc:
            click.echo(f"error: line {n}: {exc}", err=True)
            failed.append((n, 2))
            continue
        try:
            run_one(settings, target)
        except SystemExit as exc:  # the run said why on stderr (one line)
            code = exc.code if isinstance(exc.code, int) else 1
            if code == 130:  # Ctrl-C: the list stops here (the picture's run was saved)
                raise
            failed.append((n, code))
    made = len(lines) - len(failed)
    summary = f"made {made} of {len(lines)} pictures"
    if failed:
        summary += "; failed: " + ", ".join(f"line {n}" for n, _ in failed)
    click.echo(summary)
    if failed:
        raise SystemExit(max(code for _, code in failed))
