"""Fail where engine/, api/ or tests/ break a rule of docs/architecture.md.

    python -m scripts.check_rules [--root DIR]

Every file is read with `ast` (nothing is imported or run). The rules, by the name a violation
carries (imports are found by `scripts.check_imports`, `if TYPE_CHECKING:` ones too):

- engine-imports-api: a module of engine/ imports `api` or an `api.*` module.
- api-engine-face: api/ imports an engine module but `engine` (the face) and `engine.errors`.
- route-imports-backend: api/routes/ imports a storage backend (`api.storage_*`) or the factory
  that picks one (`api.artifacts`); the interface `api.storage` is fine.
- weights-outside-checkpoints: outside engine/checkpoints.py, engine/ or api/ imports safetensors,
  pickle, _pickle, dill or joblib, or calls torch.load, torch.jit.load, numpy.load, safe_open...
- style-name: outside engine/drawers/, a style name (a drawer's `name` or one of its `aliases`,
  read from engine/drawers/*.py) is compared with, used as a dict key or subscript, or listed
  with another style name. A line that uses the word in another sense says so with
  `# check_rules: not-a-style (REASON)`; the reason is required.
- atomic-rename: more than one function of a package renames files into place (os.replace,
  os.rename, shutil.move, a one-argument `.replace(x)` / `.rename(x)`).
- test-imports-test: a tests/test_*.py module imports another test module or conftest.

Exits 1 printing `path:line: RULE: message` per violation, 0 otherwise; a summary line last.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

from scripts.check_imports import PACKAGES, ROOT, collect_imports, module_files

API_FACE = ("engine", "engine.errors")
BACKEND = re.compile(r"api\.(storage_\w+|artifacts)")
WEIGHTS_READER = "engine/checkpoints.py"
WEIGHTS_MODULES = ("safetensors", "pickle", "_pickle", "dill", "joblib")
WEIGHTS_CALLS = [f"{m}.load" for m in ("torch", "torch.jit", "torch.serialization", "numpy", "np")]
SAFETENSORS_CALLS = (".safe_open", ".load_file")  # of any safetensors module
RENAMES = ("os.replace", "os.rename", "shutil.move")
ESCAPE = re.compile(r"#\s*check_rules:\s*not-a-style\b\s*(?:\((?P<reason>[^)]*)\))?")
ASK_THE_DRAWER = (
    "ask the drawer instead (engine.drawers: drawer_class(style) and its declarations, "
    "list_drawers(), normalise_style()), or mark another sense: "
    "`# check_rules: not-a-style (REASON)`"
)


@dataclass(frozen=True, order=True)
class Violation:
    """One broken rule at path:line (path relative to the checked root, with `/`)."""

    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class Report:
    violations: list[Violation]
    files: int  # Python files read
    escapes: int  # `# check_rules: not-a-style (REASON)` comments (with a reason)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# -- rules 1-3: who imports whom --------------------------------------------------------------


def _import_rule(source: str, target: str) -> tuple[str, str] | None:
    """(rule, message) when module `source` may not import module `target`."""
    if source.split(".")[0] == "engine" and target.split(".")[0] == "api":
        why = "the engine must not know the service exists"
        return "engine-imports-api", f"{source} imports {target}: {why}; pass values in instead"
    if source.split(".")[0] == "api" and target.startswith("engine.") and target not in API_FACE:
        fix = "export it from engine/__init__.py and import it from `engine`"
        return "api-engine-face", f"{source} imports {target}, behind the engine's face: {fix}"
    if source.split(".")[:2] == ["api", "routes"] and BACKEND.fullmatch(target):
        fix = "talk to the ArtifactStore (api.storage) the app hands the route"
        return "route-imports-backend", f"{source} imports the storage backend {target}: {fix}"
    return None


def import_violations(root: Path) -> list[Violation]:
    modules = module_files(root, PACKAGES)
    through_face = _through_the_face(root, modules)
    found = set()
    for i in collect_imports(modules, type_checking=True):
        if (i.path, i.line, i.target) in through_face:
            continue
        if broken := _import_rule(i.source, i.target):
            found.add(Violation(_rel(root, i.path), i.line, *broken))
    return sorted(found)


def _through_the_face(root: Path, modules: dict[str, Path]) -> set[tuple[Path, int, str]]:
    """`from engine import NAME` where engine/__init__.py binds NAME itself (`resolve`, the
    function it exports, shadows the submodule engine.resolve): (path, line, 'engine.NAME')."""
    face = root / "engine" / "__init__.py"
    if not face.is_file():
        return set()
    bound = {a.asname or a.name for n in _parse(face).body if isinstance(n, ast.ImportFrom)
             for a in n.names}  # fmt: skip
    found = set()
    for path in modules.values():
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.ImportFrom) and node.module == "engine" and not node.level:
                found |= {(path, node.lineno, f"engine.{a.name}") for a in node.names
                          if a.name in bound}  # fmt: skip
    return found


def suite_violations(root: Path) -> list[Violation]:
    """tests/test_*.py importing a test module or conftest (as `test_x` or `tests.test_x`)."""
    every = module_files(root, ["tests"])
    known = set(every) | {name.partition(".")[2] for name in every}
    top = set((root / "tests").glob("test_*.py"))
    sources = {name: path for name, path in every.items() if path in top}
    found = set()
    for i in collect_imports(sources, type_checking=True, known=known):
        stem, own = i.target.rpartition(".")[2], i.source.rpartition(".")[2]
        if stem == own or not (stem == "conftest" or stem.startswith("test_")):
            continue
        what = "conftest (fixtures are requested, not imported)" if stem == "conftest" else stem
        fix = "move what is shared to a helper module in tests/ not named test_*, import that"
        message = f"imports {what}: {fix}"
        found.add(Violation(_rel(root, i.path), i.line, "test-imports-test", message))
    return sorted(found)


# -- names as a module sees them ---------------------------------------------------------------


def aliases_of(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, for absolute imports anywhere in tree."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    out[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                out[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return out


def dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """`np.load` -> 'numpy.load' (through the module's imports); None for other expressions."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute) and (base := dotted(node.value, aliases)):
        return f"{base}.{node.attr}"
    return None


Sources = list[tuple[str, Path, ast.Module, dict[str, str]]]


def read_sources(root: Path) -> Sources:
    """(package, path, tree, aliases_of(tree)) of every module of engine/ and api/."""
    trees = [(n, p, _parse(p)) for n, p in sorted(module_files(root, PACKAGES).items())]
    return [(name.split(".")[0], path, tree, aliases_of(tree)) for name, path, tree in trees]


# -- rule 4: weights are read in engine/checkpoints.py ----------------------------------------


def _reads_weights(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """What `node` does that reads a weights file, or None."""
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names = [node.module]
    for name in names:
        if name.split(".")[0] in WEIGHTS_MODULES:
            return f"imports {name}"
    if isinstance(node, ast.Call) and (called := dotted(node.func, aliases)):
        safetensors = called.startswith("safetensors.") and called.endswith(SAFETENSORS_CALLS)
        if called in WEIGHTS_CALLS or safetensors:
            return f"calls {called}"
    return None


def weights_violations(root: Path, sources: Sources | None = None) -> list[Violation]:
    out = []
    fix = f"read weights through {WEIGHTS_READER} (one reader, one safety policy)"
    for _, path, tree, aliases in sources or read_sources(root):
        if (rel := _rel(root, path)) == WEIGHTS_READER:
            continue
        for node in ast.walk(tree):
            if what := _reads_weights(node, aliases):
                line = getattr(node, "lineno", 0)
                out.append(Violation(rel, line, "weights-outside-checkpoints", f"{what}: {fix}"))
    return sorted(out)


# -- rule 5: no decisions by a style's name outside engine/drawers/ ---------------------------


def _strings(node: ast.expr | None) -> list[str]:
    """The str constants of a str constant or of a tuple/list of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List):
        return [s for e in node.elts for s in _strings(e)]
    return []


def style_vocabulary(root: Path) -> dict[str, str]:
    """Style name or alias -> its drawer class, from every `name = "..."` / `aliases = (...)`
    class attribute in engine/drawers/*.py."""
    out: dict[str, str] = {}
    for path in sorted((root / "engine" / "drawers").glob("*.py")):
        for cls in (n for n in ast.walk(_parse(path)) if isinstance(n, ast.ClassDef)):
            for statement in cls.body:
                pairs: list[tuple[ast.expr, ast.expr | None]] = []
                if isinstance(statement, ast.Assign):
                    pairs = [(target, statement.value) for target in statement.targets]
                elif isinstance(statement, ast.AnnAssign):
                    pairs = [(statement.target, statement.value)]
                for target, value in pairs:
                    if isinstance(target, ast.Name) and target.id in ("name", "aliases"):
                        out.update((word, cls.name) for word in _strings(value) if word not in out)
    return out


class _StyleNames(ast.NodeVisitor):
    """(line, message) of each use of a style name as a decision in one module."""

    def __init__(self, vocabulary: dict[str, str]) -> None:
        self.vocabulary = vocabulary
        self.found: list[tuple[int, str]] = []
        self.operands: set[int] = set()  # tuples/lists/sets compared with: reported as compares

    def _styles(self, nodes: list[ast.expr]) -> list[ast.Constant]:
        return [n for n in nodes if isinstance(n, ast.Constant) and n.value in self.vocabulary]

    def _flag(self, nodes: list[ast.expr], how: str) -> None:
        """Report each style name among `nodes`, saying `how` it is used."""
        for node in self._styles(nodes):
            drawer = self.vocabulary[str(node.value)]
            self.found.append((node.lineno, f"{how} the style name {node.value!r} ({drawer})"))

    def visit_Compare(self, node: ast.Compare) -> None:
        for operand in [node.left, *node.comparators]:
            if isinstance(operand, ast.Tuple | ast.List | ast.Set):
                self.operands.add(id(operand))
                elements = operand.elts
            else:
                elements = [operand]
            self._flag(elements, "compares with")
        self.generic_visit(node)

    def visit_MatchValue(self, node: ast.MatchValue) -> None:
        self._flag([node.value], "matches")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        self._flag([k for k in node.keys if k is not None], "uses as a key")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self._flag([node.slice], "subscripts with")
        self.generic_visit(node)

    def _collection(self, node: ast.Tuple | ast.List | ast.Set) -> None:
        styles = self._styles(node.elts)
        if len(styles) > 1 and id(node) not in self.operands:
            listed = ", ".join(repr(c.value) for c in styles)
            self.found.append((node.lineno, f"lists the style names {listed}"))
        self.generic_visit(node)

    visit_Tuple = visit_List = visit_Set = _collection


def escapes_of(text: str) -> dict[int, str]:
    """Line -> the reason of its `# check_rules: not-a-style (REASON)` comment ('' if none)."""
    out: dict[int, str] = {}
    if "check_rules" not in text:
        return out  # tokenizing is the slow part: skip the files without the word
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and (match := ESCAPE.search(token.string)):
            out[token.start[0]] = (match["reason"] or "").strip()
    return out


def style_violations(root: Path, sources: Sources | None = None) -> tuple[list[Violation], int]:
    """(violations, how many escapes with a reason) outside engine/drawers/."""
    vocabulary, out, escaped = style_vocabulary(root), [], 0
    drawers = root / "engine" / "drawers"
    for _, path, tree, _ in sources or read_sources(root):
        if drawers in path.parents:
            continue
        escapes = escapes_of(path.read_text(encoding="utf-8"))
        escaped += sum(1 for reason in escapes.values() if reason)
        visitor = _StyleNames(vocabulary)
        visitor.visit(tree)
        for line, what in visitor.found:
            if escapes.get(line):
                continue
            note = " (its escape comment needs a reason in parentheses)" if line in escapes else ""
            message = f"{what}: {ASK_THE_DRAWER}{note}"
            out.append(Violation(_rel(root, path), line, "style-name", message))
    return sorted(set(out)), escaped


# -- rule 6: one function a package renames files into place ----------------------------------


class _Renames(ast.NodeVisitor):
    """(function, line) of each call that renames a file into place in one module."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases
        self.scope: list[str] = []
        self.function = "<module>"
        self.found: list[tuple[str, int]] = []

    def _renames(self, node: ast.Call) -> bool:
        name = dotted(node.func, self.aliases)
        if name in RENAMES:
            return True
        func = node.func
        if not isinstance(func, ast.Attribute) or func.attr not in ("replace", "rename"):
            return False
        receiver = func.value  # a module's function (dataclasses.replace) is not a method
        if isinstance(receiver, ast.Name) and receiver.id in self.aliases:
            return False
        return len(node.args) == 1 and not node.keywords

    def visit_Call(self, node: ast.Call) -> None:
        if self._renames(node):
            self.found.append((self.function, node.lineno))
        self.generic_visit(node)

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        outer = self.function
        self.scope.append(node.name)
        if not isinstance(node, ast.ClassDef):
            self.function = ".".join(self.scope)
        self.generic_visit(node)
        self.scope.pop()
        self.function = outer

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped


def rename_violations(root: Path, sources: Sources | None = None) -> list[Violation]:
    calls: dict[str, dict[str, list[tuple[str, int]]]] = {p: {} for p in PACKAGES}
    for package, path, tree, aliases in sources or read_sources(root):
        visitor = _Renames(aliases)
        visitor.visit(tree)
        for function, line in visitor.found:
            where = f"{_rel(root, path)}:{function}"
            calls[package].setdefault(where, []).append((_rel(root, path), line))
    out = []
    for package, functions in calls.items():
        if len(functions) < 2:
            continue
        for where, sites in functions.items():
            others = ", ".join(f"{w}()" for w in functions if w != where)
            fix = f"{package}/ keeps one such function (engine's: engine.files.publish): call it"
            message = f"{where}() renames a file into place, and so do {others}: {fix}"
            out += [Violation(path, line, "atomic-rename", message) for path, line in sites]
    return sorted(out)


# -- all of them ------------------------------------------------------------------------------


def report(root: Path = ROOT) -> Report:
    sources = read_sources(root)
    styles, escapes = style_violations(root, sources)
    found = import_violations(root) + weights_violations(root, sources) + styles
    found += rename_violations(root, sources) + suite_violations(root)
    files = len(module_files(root, PACKAGES)) + len(list((root / "tests").glob("test_*.py")))
    return Report(sorted(found), files, escapes)


def check(root: Path = ROOT) -> list[Violation]:
    """Every violation of every rule under root, by path and line."""
    return report(root).violations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail where the architecture's rules break.")
    parser.add_argument("--root", type=Path, default=ROOT, help="the directory above the packages")
    args = parser.parse_args(argv)
    result = report(args.root.resolve())
    for violation in result.violations:
        print(violation)
    rules = len({v.rule for v in result.violations})
    print(
        f"check_rules: {result.files} files, {len(result.violations)} violation(s) of "
        f"{rules} rule(s), {result.escapes} not-a-style escape(s)"
    )
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
