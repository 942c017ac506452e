"""Make the README's picture of the bundled shapes models, docs/shapes.png, by running the very
commands the README shows above it (tests/test_readme.py checks that the two lists agree).

    python -m scripts.make_docs_images            # writes docs/shapes.png (about a minute on a CPU)
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "shapes.png"
# One picture per style, left to right; the README's "Offline models" block lists these lines.
COMMANDS = [
    'text2art generate "a yellow star on a purple background" --clip-model shapes '
    '--style "pixel art" --seed 1 --out star.png',
    'text2art generate "a red circle on a blue background" --clip-model shapes '
    "--style painting --seed 1 --out circle.png",
    'text2art generate "a green triangle at the left" --clip-model shapes '
    "--style image --seed 1 --out triangle.png",
]
TILE = 192  # pixels per picture in the strip (the 64x64 pictures, enlarged 3x)
GAP = 4


def cli_args(command: str, out_dir: Path) -> list[str]:
    """The arguments of `text2art ...` with its `--out FILE` moved into `out_dir`."""
    words = shlex.split(command)
    assert words[0] == "text2art", command
    args = words[1:]
    index = args.index("--out") + 1
    args[index] = str(out_dir / Path(args[index]).name)
    return args


def run_commands(out_dir: Path) -> list[Path]:
    """Run every command of COMMANDS through the real CLI; the PNG each wrote."""
    from api.cli import main

    pngs = []
    for command in COMMANDS:
        args = cli_args(command, out_dir)
        try:
            main(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"{command!r} failed with exit code {exc.code}") from None
        pngs.append(Path(args[args.index("--out") + 1]))
    return pngs


def strip(pngs: list[Path]) -> object:
    """The pictures side by side, each enlarged to TILE pixels, on white."""
    from PIL import Image

    sheet = Image.new("RGB", (len(pngs) * (TILE + GAP) - GAP, TILE), "white")
    for i, png in enumerate(pngs):
        with Image.open(png) as image:
            tile = image.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
        sheet.paste(tile, (i * (TILE + GAP), 0))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sheet = strip(run_commands(Path(tmp)))
        sheet.save(args.out)  # type: ignore[attr-defined]
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
