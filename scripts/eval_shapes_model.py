"""Measure the bundled 'shapes' model: zero-shot retrieval gates and semantic generation.

Retrieval: for each held-out procedural image, the candidates are its full caption and the
captions that differ from it only in one attribute (colour: every other colour but the
background's; shape: the 5 others; position: the 8 others). An image scores when its own caption
has the highest similarity. Gates: colour >= 95%, shape >= 85%, position >= 80%.

Semantic (--styles): each tuning prompt is drawn in each style as `text2art generate PROMPT
--clip-model shapes` does on a CPU (scripts.shapes_gates.semantic_settings: the shapes world's
defaults) and judged: the model ranks the prompt first among its distractors; the named colours
dominate; the shapes sit where the prompt puts them. A contact sheet is written. The tests
(tests/test_shapes_semantic.py) judge prompts of their own.

python scripts/eval_shapes_model.py [--n 1000] [--seed 12345] [--styles "pixel art" painting image]
(or `python -m scripts.eval_shapes_model ...`)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run by path (`python scripts/eval_shapes_model.py`): import from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

from engine import ModelCache, generate
from engine.catalog import load_clip
from scripts.shapes_gates import (
    GATES,
    TUNING_PROMPTS,
    accuracies,
    held_out,
    judge,
    semantic_settings,
)


def retrieval(n: int, seed: int) -> None:
    acc = accuracies(load_clip("shapes"), held_out(n, seed), seed)
    print(f"| attribute | accuracy (n={n}) | gate | pass |\n|---|---|---|---|")
    for attr, gate in GATES.items():
        print(f"| {attr} | {acc[attr]:.1%} | {gate:.0%} | {'yes' if acc[attr] >= gate else 'NO'} |")


def semantic(styles: list[str], sheet: Path) -> None:
    models = ModelCache()
    clip = models.clip("shapes", torch.device("cpu"))
    rows = []
    print("\n| style | ranked first | colours | positions | s per picture |\n|---|---|---|---|---|")
    for style in styles:
        start, verdicts, row = time.perf_counter(), [], []
        for scene in TUNING_PROMPTS:
            image = np.asarray(generate(semantic_settings(scene, style), models=models).image)
            verdicts.append(judge(clip, image, scene))
            row.append(image)
        per = (time.perf_counter() - start) / len(TUNING_PROMPTS)
        counts = {k: sum(v[k] for v in verdicts) for k in verdicts[0]}
        n = len(verdicts)
        print(
            f"| {style} | {counts['ranked']}/{n} | {counts['colours']}/{n} "
            f"| {counts['positions']}/{n} | {per:.1f} |"
        )
        for scene, v in zip(TUNING_PROMPTS, verdicts, strict=True):
            if not all(v.values()):
                print(f"  {style}: {scene.caption()!r}: {v}")
        rows.append(np.concatenate(row, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(sheet)
    print(f"\ncontact sheet: {sheet} (rows: {', '.join(styles)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--styles", nargs="*", default=[], help="also run the semantic check")
    ap.add_argument("--sheet", type=Path, default=Path("shapes-semantic.png"))
    args = ap.parse_args()
    retrieval(args.n, args.seed)
    if args.styles:
        semantic(args.styles, args.sheet)


if __name__ == "__main__":
    main()
