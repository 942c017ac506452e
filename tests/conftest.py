"""Shared fixtures: one model cache for the whole session (the tiny CLIP loads once)."""

from __future__ import annotations

from typing import Any

import pytest

from engine import ModelCache, Settings


@pytest.fixture(scope="session")
def models() -> ModelCache:
    return ModelCache()


def tiny_settings(**overrides: Any) -> Settings:
    """Small, fast settings on the tiny random CLIP: 32x32 pixel art, 8 cutouts, 4 steps."""
    values: dict[str, Any] = {
        "prompts": "underwater city",
        "style": "pixel art",
        "clip_models": ["tiny-random"],
        "size": (32, 32),
        "cutouts": 8,
        "iterations": 4,
        "seed": 7,
        "device": "cpu",
    }
    values.update(overrides)
    return Settings.create(**values)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`text2art ARGS` in this process: (exit code, stdout, stderr)."""
    from api.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# Real Redis and PostgreSQL servers on loopback (tests/servers.py).
from servers import postgres_cluster, postgres_db, redis_server  # noqa: E402, F401
