"""`text2art models`: list the known weights and download them into the cache."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from api.cli_common import fail

models_app = typer.Typer(
    help="Model weights (CLIP, VQGAN): list them, download them into the cache "
    "($TEXT2ART_CACHE, else $XDG_CACHE_HOME/text2art, else ~/.cache/text2art).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _squeezed(exc: BaseException) -> str:
    """The message on one line (a download error lists its mirrors over several)."""
    return " ".join(str(exc).split())


def _human(size: int) -> str:
    for scale, unit in ((10**9, "GB"), (10**6, "MB"), (10**3, "kB")):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


@models_app.command("list")
def list_models() -> None:
    """Show the known models, their size and whether each is in the cache."""
    from engine import cache_dir, list_models

    rows = [("KIND", "NAME", "SIZE", "CACHED", "PATH")]
    for m in list_models():
        cached = "bundled" if m.bundled and m.cached else "yes" if m.cached else "no"
        rows.append((m.kind, m.name, _human(m.size), cached, str(m.path)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    typer.echo(f"cache: {cache_dir()} (set TEXT2ART_CACHE to move it)")
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        )


class DownloadBar:
    """A tqdm bar on stderr, fed by the engine's (done, total) progress callback."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=total,
                initial=done,
                desc=self.label,
                unit="B",
                unit_scale=True,
                file=sys.stderr,
            )
        elif done < self.bar.n or total != self.bar.total:  # restarted, or another mirror
            self.bar.reset(total=total)
            self.bar.update(done)
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@models_app.command("download")
def download(
    name: Annotated[str, typer.Argument(help="Model name, e.g. ViT-B/32 or imagenet_f16_16384.")],
    kind: Annotated[
        str | None, typer.Option(help="clip or vqgan (found from NAME when omitted).")
    ] = None,
) -> None:
    """Download a model's files into the cache (resumes an interrupted download)."""
    from engine import bundled_models, ensure_file, model_files
    from engine.errors import WeightsError

    bundled = [m for m in bundled_models() if m.name == name and kind in (None, m.kind)]
    if bundled:
        for m in bundled:
            typer.echo(f"bundled with text2art, nothing to download: {m.path}")
        return
    try:
        files = model_files(name, kind)
    except ValueError as exc:
        fail(_squeezed(exc), 2)
    if not files:  # tiny-random: random weights built in process
        typer.echo(f"{name} is built in (random weights), nothing to download")
        return
    for label, spec, path in files:
        cached = path.is_file()
        bar = DownloadBar(path.name)
        try:
            ensure_file(spec, path, progress=bar, label=label)  # checks a cached file too
        except WeightsError as exc:
            bar.close()
            fail(_squeezed(exc), 1)
        bar.close()
        typer.echo(f"{'cached' if cached else 'downloaded'}: {path}")
