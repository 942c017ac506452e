"""Make the README's picture of the three animation examples, docs/animation.png: each command the
README's "Animation" block shows is run through the real CLI with `--save-frames`, and its first,
middle and last frames are put side by side, one row per command (tests/test_readme.py checks
that the two lists agree).

    python -m scripts.make_animation_images       # writes docs/animation.png (minutes on a CPU)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from scripts.make_docs_images import GAP, TILE, cli_args

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "animation.png"
COMMANDS = [
    'text2art generate "a red circle on a blue background" --clip-model shapes '
    '--style "pixel art" --seed 3 --frames 24 --frame-iterations 5 --zoom 1.05 --out zoom.png',
    'text2art generate "a yellow star at the left on a purple background" --clip-model shapes '
    "--style painting --seed 3 --frames 24 --frame-iterations 5 "
    '--angle "0:(0), 12:(8), 24:(0)" --translate-x 1 --out spin.png',
    'text2art generate "a red circle on a blue background ^ a blue square on a red background" '
    '--clip-model shapes --style "pixel art" --seed 3 --frames 24 --frame-iterations 5 '
    "--out story.png",
]


def frames_of(command: str, out_dir: Path) -> list[Path]:
    """Run one command with --save-frames; its first, middle and last frames."""
    from api.cli import main

    frames = out_dir / (Path(cli_args(command, out_dir)[-1]).stem + "-frames")
    args = [*cli_args(command, out_dir), "--save-frames", str(frames)]
    try:
        main(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"{command!r} failed with exit code {exc.code}") from None
    saved = sorted(frames.glob("frame-*.png"))
    return [saved[0], saved[len(saved) // 2], saved[-1]]


def sheet(rows: list[list[Path]]) -> object:
    """The frames in a grid, each enlarged to TILE pixels, on white."""
    from PIL import Image

    width = max(len(row) for row in rows) * (TILE + GAP) - GAP
    image = Image.new("RGB", (width, len(rows) * (TILE + GAP) - GAP), "white")
    for r, row in enumerate(rows):
        for c, png in enumerate(row):
            with Image.open(png) as frame:
                tile = frame.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
            image.paste(tile, (c * (TILE + GAP), r * (TILE + GAP)))
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [frames_of(command, Path(tmp)) for command in COMMANDS]
        sheet(rows).save(args.out)  # type: ignore[attr-defined]
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
