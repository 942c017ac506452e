"""`text2art generate`'s preparation: every weights file of the run, then the models, loaded
before the progress bar starts (so a missing file or a slow load never sits under a 0% bar)."""

from __future__ import annotations

from typing import Any

from api.cli_common import fail

OFFLINE_HINT = (
    "to try text2art offline, use the bundled models: "
    "text2art generate 'a red circle' --clip-model shapes"
)


def fetch_weights(settings: Any) -> None:
    """Download what the run needs and is missing; report every file that failed, at once."""
    from api.cli_models import DownloadBar
    from engine import ensure_file, missing_weights
    from engine.errors import WeightsError

    problems = []
    for label, spec, path in missing_weights(settings):
        if spec is None:
            problems.append(f"{label}: no file at {path}")
            continue
        bar = DownloadBar(path.name)
        try:
            ensure_file(spec, path, progress=bar, label=label)
        except WeightsError as exc:
            problems.append(str(exc))
        finally:
            bar.close()
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        files = "1 weights file" if len(problems) == 1 else f"{len(problems)} weights files"
        fail(f"{files} missing, the run cannot start:\n{listed}\n{OFFLINE_HINT}", code=1)


def load_models(settings: Any, device: Any) -> Any:
    """A `ModelCache` holding the run's models (its CLIP models, and the VQGAN of a style that
    decodes with one)."""
    from engine import load_models as load
    from engine.errors import EngineError, one_line

    try:
        return load(settings, device)
    except (EngineError, ValueError, OSError) as exc:
        fail(one_line(exc, typed=False), code=1)
