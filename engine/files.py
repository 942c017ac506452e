"""Atomic file writes: a reader sees the old file, or none, or the whole new one; never a part.

Every writer of the engine (outputs, the streamed video, downloaded weights) and of the service
(the local artifact store) writes under a hidden temporary name beside the target, then
`publish`es it: one rename, atomic on every POSIX file system. `publish` is the only place that
renames a file into place (`scripts.check_rules` holds each package to one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def part_path(path: str | Path) -> Path:
    """The hidden temporary name a file is written under before it is published: `.NAME.part`."""
    path = Path(path)
    return path.with_name(f".{path.name}.part")


def publish(part: str | Path, path: str | Path) -> Path:
    """Move the finished temporary file `part` over `path` in one atomic rename; returns `path`."""
    os.replace(part, path)
    return Path(path)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` to a hidden name beside `path` (its folder is made), then rename it over
    `path`; returns `path`. On any error (Ctrl-C included) the temporary file is removed and
    `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(path)
    try:
        write(part)
        return publish(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda part: part.write_bytes(data))
