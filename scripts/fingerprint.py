"""Fingerprint what a restructuring must not change: the sha256 of every file `text2art generate`
writes for five fixed cases (pixel art, painting and image on the tiny random models; pixel art
and image on the bundled shapes models), each with its video, and a batch of two paintings.

    python -m scripts.fingerprint [--out DIR] [--check FILE]

Run it before a change (`--out /tmp/before > before.txt`) and after (`--check before.txt`): the
second run exits 1 naming every file whose bytes differ. On the CPU a seed gives the same bytes
on every run (the tests check the PNGs; H.264 from the same frames is also the same here).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

# name -> the `text2art generate` arguments of that case (all offline, seconds each).
CASES: dict[str, list[str]] = {
    "pixel": ["a red circle", "--style", "pixel art", "--clip-model", "tiny-random",
              "--iterations", "6", "--size", "64x64", "--seed", "3"],
    "painting": ["a red circle", "--style", "painting", "--clip-model", "tiny-random",
                 "--iterations", "6", "--size", "64x64", "--strokes", "64", "--seed", "3"],
    "image": ["a red circle", "--style", "image", "--clip-model", "tiny-random",
              "--iterations", "6", "--size", "64x64", "--seed", "3"],
    "shapes-pixel": ["a red circle on a blue background", "--style", "pixel art",
                     "--clip-model", "shapes", "--iterations", "12", "--seed", "3"],
    "shapes-image": ["a red circle on a blue background", "--style", "image",
                     "--clip-model", "shapes", "--iterations", "12", "--seed", "3"],
    # Two pictures of a batch: the sheet and each picture's PNG and SVG (their file names).
    "painting-batch": ["a red circle", "--style", "painting", "--clip-model", "tiny-random",
                       "--iterations", "4", "--size", "48x48", "--strokes", "32", "--seed", "5",
                       "--variations", "2"],
}  # fmt: skip


def sha256(path: Path) -> str:
    """The file's sha256 in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_case(name: str, args: list[str], out: Path) -> dict[str, str]:
    """Generate one case with its video into `out/name/`; file name -> sha256."""
    target = out / name / f"{name}.png"
    command = [sys.executable, "-m", "api.cli", "generate", *args, "--video", "--out", str(target)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return {p.name: sha256(p) for p in sorted(target.parent.iterdir())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temp dir)")
    parser.add_argument("--check", type=Path, help="a previous run's output to compare with")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="t2a-fingerprint-"))
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, case in CASES.items():
        lines += [f"{digest}  {file}" for file, digest in run_case(name, case, out).items()]
    print("\n".join(lines))
    if args.check is None:
        return 0
    before = set(args.check.read_text().split("\n")) - {""}
    changed = sorted(before ^ set(lines), key=lambda line: line.split()[-1])
    for line in changed:
        print(f"differs: {line}", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
