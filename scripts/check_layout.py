"""Fail on functions over 60 lines and modules over 400 lines in the `engine` and `api` packages.

    python -m scripts.check_layout [--root DIR] [PACKAGE ...]      # default: engine api

A function's length runs from its `def` line to its last line (docstring, comments and nested
functions included, decorators not); every function and method counts, nested ones too. A
module's length is its number of lines. A module may stay over the limit only when
ALLOWED_LONG_MODULES names it with the reason (the README's architecture section explains it);
an entry for a module that is no longer too long is reported too, so the list stays true.
Functions have no allow-list. Exits 1 printing each problem, 0 with a one-line summary.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.check_imports import PACKAGES, ROOT, module_files

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400

# Dotted module name -> why it may be longer than MAX_MODULE_LINES.
ALLOWED_LONG_MODULES: dict[str, str] = {
    "engine.catalog": "the tables of every model's mirrors and checksums: data, one table a kind",
    "engine.vqgan": "the taming VQGAN architecture, mirroring taming's modules and key names",
    "engine.raster": "the Bezier stroke rasteriser: one algorithm (tiles, coverage, SVG)",
    "engine.checkpoints": "every checkpoint reader and the restricted unpickler: one policy",
}


@dataclass(frozen=True)
class TooLong:
    """A function or module over its limit: `name` (dotted) at path:line is `lines` long."""

    name: str
    path: Path
    line: int
    lines: int
    limit: int

    def describe(self, root: Path) -> str:
        kind = "module" if self.limit == MAX_MODULE_LINES else "function"
        where = f"{self.path.relative_to(root)}:{self.line}"
        return f"{where}: {kind} {self.name} is {self.lines} lines (limit {self.limit})"


def _functions(
    node: ast.AST, prefix: str
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """(qualified name, node) of every function and method under node, nested ones too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{child.name}", child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def long_functions(modules: dict[str, Path], limit: int = MAX_FUNCTION_LINES) -> list[TooLong]:
    """Functions longer than `limit` lines, in file order."""
    out = []
    for name, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for qualname, fn in _functions(tree, f"{name}."):
            lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if lines > limit:
                out.append(TooLong(qualname, path, fn.lineno, lines, limit))
    return out


def long_modules(modules: dict[str, Path], limit: int = MAX_MODULE_LINES) -> list[TooLong]:
    """Modules longer than `limit` lines (allowed ones included: see `layout_problems`)."""
    out = []
    for name, path in sorted(modules.items()):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            out.append(TooLong(name, path, 1, lines, limit))
    return out


def layout_problems(
    root: Path = ROOT,
    packages: Iterable[str] = PACKAGES,
    allowed: dict[str, str] | None = None,
) -> tuple[list[str], str]:
    """(one line per problem, a one-line summary) for the packages under root."""
    allowed = ALLOWED_LONG_MODULES if allowed is None else allowed
    modules = module_files(root, packages)
    functions = long_functions(modules)
    too_long = long_modules(modules)
    problems = [f.describe(root) for f in functions]
    problems += [m.describe(root) for m in too_long if m.name not in allowed]
    over = {m.name for m in too_long}
    problems += [
        f"ALLOWED_LONG_MODULES: {name} is no longer over {MAX_MODULE_LINES} lines: remove it"
        for name in sorted(allowed)
        if name not in over
    ]
    excused = len(over & set(allowed))
    summary = (
        f"{len(modules)} modules, {len(functions)} function(s) over {MAX_FUNCTION_LINES} "
        f"lines, {len(too_long) - excused} module(s) over {MAX_MODULE_LINES} lines "
        f"(+{excused} allowed)"
    )
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail on over-long functions and modules.")
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    parser.add_argument("--root", type=Path, default=ROOT, help="the directory above the packages")
    args = parser.parse_args(argv)
    problems, summary = layout_problems(args.root.resolve(), args.packages)
    for problem in problems:
        print(problem)
    print(f"check_layout: {' '.join(args.packages)}: {summary}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
