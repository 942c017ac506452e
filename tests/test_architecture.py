"""Architecture rules of engine/ and api/: no import cycles, short functions, modules of a size
(scripts/check_imports.py, scripts/check_layout.py), and the checkers on tiny packages."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts import check_imports, check_layout
from scripts.check_imports import build_graph, collect_imports, find_cycles, module_files

ROOT = Path(__file__).resolve().parents[1]


# -- the real packages --------------------------------------------------------------------------


def test_engine_and_api_have_no_import_cycles() -> None:
    cycles, summary = check_imports.cycle_report()
    assert not cycles, "\n".join(cycles)
    assert "0 import cycle(s)" in summary


def test_no_function_over_60_lines() -> None:
    functions = check_layout.long_functions(module_files(ROOT, check_imports.PACKAGES))
    assert not functions, "\n".join(f.describe(ROOT) for f in functions)


def test_long_modules_are_allowed_for_a_reason() -> None:
    assert all(reason.strip() for reason in check_layout.ALLOWED_LONG_MODULES.values())
    problems, _ = check_layout.layout_problems()
    assert not problems, "\n".join(problems)


# -- the cycle finder on tiny packages ----------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> None:
    """files: path under root -> source; every directory on the way becomes a package."""
    for name, source in files.items():
        path = root / name
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent).mkdir(parents=True, exist_ok=True)
                (root / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source), encoding="utf-8")


def graph_of(root: Path, package: str = "pkg") -> dict[str, set[str]]:
    modules = module_files(root, [package])
    return build_graph(modules, collect_imports(modules))


def test_a_cycle_through_a_function_level_import_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_package(
        tmp_path,
        {
            "pkg/a.py": "import os\nimport pkg.b\n",
            "pkg/b.py": "def f():\n    from pkg import a\n    return a\n",
            "pkg/c.py": "from pkg.a import thing\n",
        },
    )
    assert find_cycles(graph_of(tmp_path)) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert check_imports.main(["--root", str(tmp_path), "pkg"]) == 1
    out = capsys.readouterr().out
    assert "pkg.a -> pkg.b -> pkg.a\n" in out
    assert "pkg/b.py:2 in f()" in out and "1 import cycle(s)" in out


def test_type_checking_imports_are_not_edges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_package(
        tmp_path,
        {
            "pkg/a.py": """\
                import typing
                from typing import TYPE_CHECKING

                from pkg.b import B

                if TYPE_CHECKING:
                    from pkg.c import C
                if typing.TYPE_CHECKING:
                    import pkg.c
                else:
                    import pkg.d
            """,
            "pkg/b.py": "from __future__ import annotations\n\nif True:\n    import pkg.c\n",
            "pkg/c.py": "from pkg import a\n",
            "pkg/d.py": "X = 1\n",
        },
    )
    graph = graph_of(tmp_path)
    assert graph["pkg.a"] == {"pkg.b", "pkg.d"}  # the else branch runs: an edge
    assert graph["pkg.b"] == {"pkg.c"}  # an ordinary `if`: an edge
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (tmp_path / "pkg/c.py").write_text("from typing import TYPE_CHECKING\n", encoding="utf-8")
    assert find_cycles(graph_of(tmp_path)) == []
    assert check_imports.main(["--root", str(tmp_path), "pkg"]) == 0
    assert capsys.readouterr().out == (
        "check_imports: pkg: 5 modules, 3 import edges, 0 import cycle(s)\n"
    )


def test_relative_imports_resolve_to_modules(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/top.py": "from .sub import x\n",
            "pkg/sub/__init__.py": "from .x import thing\nfrom . import y\n",
            "pkg/sub/x.py": "def f():\n    from ..top import T\n    from ..sub.y import Y\n",
            "pkg/sub/y.py": "from .. import top\nfrom ... import elsewhere\n",
        },
    )
    graph = graph_of(tmp_path)
    assert graph["pkg.sub"] == {"pkg.sub.x", "pkg.sub.y"}  # `from . import y`: the submodule
    assert graph["pkg.sub.x"] == {"pkg.top", "pkg.sub.y"}
    assert graph["pkg.sub.y"] == {"pkg.top"}  # `from ... import` beyond pkg: no edge
    assert find_cycles(graph) == [
        ["pkg.sub.x", "pkg.top", "pkg.sub.x"],
        ["pkg.sub.x", "pkg.sub.y", "pkg.top", "pkg.sub.x"],
    ]


def test_every_elementary_cycle_is_listed_once_shortest_first() -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert find_cycles(graph, limit=1) == [["a", "b", "a"]]


# -- the layout check on a tiny package ---------------------------------------------------------


def test_long_functions_and_modules_are_found(tmp_path: Path) -> None:
    def body(indent: int) -> str:  # def + these 59 lines: 60, the limit
        return "".join(f"{' ' * indent}x{i} = {i}\n" for i in range(59))

    write_package(
        tmp_path,
        {
            "pkg/ok.py": f"@staticmethod\ndef fine():\n{body(4)}",
            "pkg/long.py": f"class K:\n    def method(self):\n        def inner():\n{body(12) * 2}",
            "pkg/big.py": "x = 1\n" * 401,
        },
    )
    modules = module_files(tmp_path, ["pkg"])
    found = {(f.name, f.lines) for f in check_layout.long_functions(modules)}
    assert found == {("pkg.long.K.method", 120), ("pkg.long.K.method.inner", 119)}
    assert [m.name for m in check_layout.long_modules(modules)] == ["pkg.big"]
    allowed = {"pkg.big": "a table", "pkg.ok": "stale"}
    problems, summary = check_layout.layout_problems(tmp_path, ["pkg"], allowed)
    assert [p.split(": ")[0] for p in problems] == [
        "pkg/long.py:2",
        "pkg/long.py:3",
        "ALLOWED_LONG_MODULES",
    ]
    assert "pkg.ok is no longer over 400 lines" in problems[-1]
    assert summary == (
        "4 modules, 2 function(s) over 60 lines, 0 module(s) over 400 lines (+1 allowed)"
    )


# -- the scripts package ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["check_imports", "check_layout", "eval_shapes_model", "run_colab", "shapes_gates"]
    + ["train_shapes_model", "train_shapes_vqgan"],
)
def test_scripts_import_without_running(name: str) -> None:
    module = importlib.import_module(f"scripts.{name}")
    assert module.__doc__


@pytest.mark.parametrize("script", ["eval_shapes_model.py", "run_colab.py"])
def test_scripts_run_by_path(script: str, tmp_path: Path) -> None:
    # As the README and the notebook run them: by path, from anywhere, `scripts` not importable.
    env = {"PATH": "", "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "scripts" / script), "--help"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
