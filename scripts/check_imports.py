"""Fail on import cycles between the modules of the `engine` and `api` packages.

    python -m scripts.check_imports [--root DIR] [PACKAGE ...]      # default: engine api

Every module is read with `ast` (nothing is imported or run). An edge a -> b means module a
imports module b somewhere: at module level, or inside a function or method (an import that
runs later still runs, and breaks the same way when the two modules need each other). Relative
imports are resolved against the importing module's package; `from pkg import name` is an edge
to the submodule `pkg.name` when that module exists, else to `pkg` itself. An edge goes to the
most specific module named: the parent packages that Python initialises on the way are not
edges, so `from engine.weights import x` depends on `engine.weights`, not on `engine`.

Not edges: imports under `if TYPE_CHECKING:` (they never run; the `else:` branch does count),
imports of anything outside the packages checked, and dynamic imports (importlib, __import__).

Exits 1 printing each elementary cycle as `a -> b -> c -> a`, with where each of its imports
is written; exits 0 with a one-line summary otherwise.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "api")
MAX_CYCLES = 200  # enumeration stops here: a tangle that large needs no more examples

Graph = dict[str, set[str]]


@dataclass(frozen=True)
class Import:
    """One import statement's edge: `source` imports `target` at path:line (in `function`)."""

    source: str
    target: str
    path: Path
    line: int
    function: str | None  # the enclosing function's qualified name; None at module level


def module_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file of every module under the packages (a package: __init__.py)."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING` (any module's attribute of that name)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Imports(ast.NodeVisitor):
    """Collects the imports of one module, skipping `if TYPE_CHECKING:` bodies unless told."""

    def __init__(
        self, name: str, path: Path, is_package: bool, modules: set[str], type_checking: bool
    ) -> None:
        self.name, self.path, self.modules = name, path, modules
        self.type_checking = type_checking  # also visit `if TYPE_CHECKING:` bodies
        self.package = name if is_package else name.rpartition(".")[0]
        self.scope: list[str] = []  # enclosing classes and functions
        self.functions = 0  # how many of them are functions
        self.found: list[Import] = []

    def _add(self, target: str | None, node: ast.stmt) -> None:
        if target is None:
            return
        function = ".".join(self.scope) if self.functions else None
        self.found.append(Import(self.name, target, self.path, node.lineno, function))

    def _known(self, dotted: str) -> str | None:
        """The longest prefix of `dotted` that is a module checked here."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if (candidate := ".".join(parts[:n])) in self.modules:
                return candidate
        return None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(self._known(alias.name), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".") if self.package else []
            if node.level - 1 > len(anchor):
                return  # beyond the top package: fails at run time, not a cycle
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:
            submodule = f"{base}.{alias.name}" if base else alias.name
            self._add(submodule if submodule in self.modules else self._known(base), node)

    def visit_If(self, node: ast.If) -> None:
        if self.type_checking or not _is_type_checking(node.test):
            self.visit(node.test)
            for statement in node.body:
                self.visit(statement)
        for statement in node.orelse:
            self.visit(statement)

    def generic_visit(self, node: ast.AST) -> None:
        """Into statements only: an expression cannot hold an import statement (and skipping
        them makes the walk several times faster)."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
                self.visit(child)

    def _scoped(self, node: ast.AST, name: str, is_function: bool) -> None:
        self.scope.append(name)
        self.functions += is_function
        self.generic_visit(node)
        self.functions -= is_function
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name, True)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node, node.name, True)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name, False)


def collect_imports(
    modules: dict[str, Path], type_checking: bool = False, known: Iterable[str] | None = None
) -> list[Import]:
    """Every edge between the given modules (self-imports left out: they are harmless).

    type_checking: count imports under `if TYPE_CHECKING:` too (for rules about what a module
    may know, not cycles). known: the module names an import may resolve to (default: the
    modules read), e.g. more spellings of the same files."""
    names = set(modules) if known is None else set(known)
    found: list[Import] = []
    for name, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visitor = _Imports(name, path, path.name == "__init__.py", names, type_checking)
        visitor.visit(tree)
        found += [i for i in visitor.found if i.target != name]
    return found


def build_graph(modules: Iterable[str], imports: Iterable[Import]) -> Graph:
    """Module -> the modules it imports (every module is a key, importing nothing or not)."""
    graph: Graph = {name: set() for name in modules}
    for i in imports:
        graph[i.source].add(i.target)
    return graph


def strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's components with more than one module (the only places cycles can be)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            nxt = next(successors, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(component)
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(sorted(graph[nxt]))))
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
    return out


def find_cycles(graph: Graph, limit: int = MAX_CYCLES) -> list[list[str]]:
    """The elementary cycles, each as [a, b, ..., a] starting at its smallest module name;
    shortest first, at most `limit` of them."""
    cycles: list[list[str]] = []
    for component in strongly_connected(graph):
        members = sorted(component)
        for i, start in enumerate(members):
            allowed = set(members[i:])  # a cycle is found from its smallest module only
            path, on_path = [start], {start}
            work = [iter(sorted(graph[start] & allowed))]
            while work and len(cycles) < limit:
                nxt = next(work[-1], None)
                if nxt is None:
                    work.pop()
                    on_path.discard(path.pop())
                elif nxt == start:
                    cycles.append([*path, start])
                elif nxt not in on_path:
                    path.append(nxt)
                    on_path.add(nxt)
                    work.append(iter(sorted(graph[nxt] & allowed)))
    return sorted(cycles, key=lambda c: (len(c), c))[:limit]


def where(imports: Iterable[Import], source: str, target: str, root: Path) -> list[str]:
    """Where `source` imports `target`: 'path:line' (and ' in function' when inside one)."""
    out: dict[str, None] = {}  # ordered, without repeats (one line may import two names)
    for i in imports:
        if (i.source, i.target) == (source, target):
            inside = f" in {i.function}()" if i.function else ""
            out[f"{i.path.relative_to(root)}:{i.line}{inside}"] = None
    return list(out)


def cycle_report(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> tuple[list[str], str]:
    """(one text block per cycle, a one-line summary) for the packages under root."""
    modules = module_files(root, packages)
    imports = collect_imports(modules)
    graph = build_graph(modules, imports)
    blocks = []
    for cycle in find_cycles(graph):
        lines = [" -> ".join(cycle)]
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines.append(f"    {a} -> {b}: {', '.join(where(imports, a, b, root))}")
        blocks.append("\n".join(lines))
    edges = sum(len(targets) for targets in graph.values())
    summary = f"{len(graph)} modules, {edges} import edges, {len(blocks)} import cycle(s)"
    return blocks, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail on import cycles between modules.")
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    parser.add_argument("--root", type=Path, default=ROOT, help="the directory above the packages")
    args = parser.parse_args(argv)
    blocks, summary = cycle_report(args.root.resolve(), args.packages)
    for block in blocks:
        print(block)
    if len(blocks) >= MAX_CYCLES:
        print(f"(stopped at {MAX_CYCLES} cycles)")
    print(f"check_imports: {' '.join(args.packages)}: {summary}")
    return 1 if blocks else 0


if __name__ == "__main__":
    sys.exit(main())
