"""scripts/check_rules.py: each rule shown failing on a copy of the real tree with violations
injected, and the real tree passing.

An injected violation must be new: absent from the report of the unmodified copy. So these tests
hold while the tree still has violations of its own; `test_the_real_tree_keeps_every_rule` is the
one that says there are none. The real tree is copied once (others may edit it meanwhile), and
each test copies that copy, only the folders its rule reads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scripts import check_rules
from scripts.check_rules import Violation, check

ROOT = Path(__file__).resolve().parents[1]
HERE = "# here"  # the line an injected snippet breaks a rule on

Found = set[tuple[str, str, int]]  # (rule, path, line)


def _python_only(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore: all but .py files and folders (no caches, assets or pages)."""
    keep = [n for n in names if n.endswith(".py") or Path(folder, n).is_dir()]
    return [n for n in names if n not in keep or n == "__pycache__"]


class Pristine:
    """A copy of engine/, api/ and tests/ and its report."""

    def __init__(self, root: Path) -> None:
        for folder in ("engine", "api", "tests"):
            shutil.copytree(ROOT / folder, root / folder, ignore=_python_only)
        self.root = root
        report = check_rules.report(root)
        self.report: set[Violation] = set(report.violations)
        self.escapes = report.escapes

    def copy(self, to: Path, *folders: str) -> Path:
        for folder in folders or ("engine", "api"):
            shutil.copytree(self.root / folder, to / folder)
        return to

    def new(self, root: Path | list[Violation]) -> Found:
        """(rule, path, line) of the violations of root (or of a report) that the pristine copy
        does not have."""
        violations = check(root) if isinstance(root, Path) else root
        return {(v.rule, v.path, v.line) for v in set(violations) - self.report}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return Pristine(tmp_path_factory.mktemp("pristine"))


def inject(root: Path, rel: str, code: str, marker: str = HERE) -> int:
    """Append `code` to the file root/rel; the line number of the last line holding `marker`."""
    path = root / rel
    text = path.read_text(encoding="utf-8").rstrip("\n") + "\n\n\n" + textwrap.dedent(code)
    path.write_text(text, encoding="utf-8")
    return max(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def inject_all(root: Path, rel: str, rule: str, cases: list[str]) -> Found:
    """Append each case to root/rel; what each should report."""
    return {(rule, rel, inject(root, rel, code)) for code in cases}


# -- the real tree ------------------------------------------------------------------------------


def test_the_real_tree_keeps_every_rule() -> None:
    violations = check(ROOT)
    assert violations == [], "\n".join(map(str, violations))


# -- 1-3: imports -------------------------------------------------------------------------------


def test_engine_imports_api(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    cases = [
        "def _later():\n    from api.config import ApiConfig  # here\n    return ApiConfig\n",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import api.jobs  # here\n",
        "import api  # here\n",
        "from api import storage  # here\n",
    ]
    expected = inject_all(tree, "engine/output.py", "engine-imports-api", cases)
    assert pristine.new(tree) == expected


def test_api_imports_only_the_engines_face(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    broken = [
        "from engine import catalog  # here\n",  # engine/catalog.py exists: the submodule
        "def f():\n    from engine.settings import Settings  # here\n",
        "import typing\nif typing.TYPE_CHECKING:\n    import engine.weights  # here\n",
    ]
    expected = inject_all(tree, "api/gpu.py", "api-engine-face", broken)
    fine = [
        "from engine import Settings  # here\n",  # a name of the face
        # engine/resolve.py exists, but the face binds `resolve` (the function) itself
        "from engine import generate, resolve  # here\n",
        "from engine.errors import EngineError  # here\n",
        "import engine  # here\n",
    ]
    inject_all(tree, "api/gpu.py", "api-engine-face", fine)
    assert pristine.new(tree) == expected


def test_routes_do_not_import_a_storage_backend(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    (tree / "api" / "storage_ftp.py").write_text("X = 1\n", encoding="utf-8")  # a new backend
    rel = "api/routes/gallery.py"
    broken = [
        "from api.storage_s3 import S3ArtifactStore  # here\n",
        "from api import artifacts  # here\n",
        "def f():\n    import api.storage_ftp  # here\n",
    ]
    expected = inject_all(tree, rel, "route-imports-backend", broken)
    inject(tree, rel, "from api.storage import ArtifactStore  # here\n")  # the interface
    assert pristine.new(tree) == expected


# -- 4: weights ---------------------------------------------------------------------------------


def test_weights_are_read_in_checkpoints_only(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    cases = [
        "import safetensors.torch  # here\n",
        "def f():\n    from pickle import loads  # here\n",
        "import dill  # here\n",
        "def f(p):\n    import torch\n    return torch.load(p)  # here\n",
        "def f(p):\n    import torch as t\n    return t.jit.load(p)  # here\n",
        "def f(p):\n    import numpy as np\n    return np.load(p)  # here\n",
    ]
    expected = inject_all(tree, "engine/output.py", "weights-outside-checkpoints", cases)
    code = (
        "def f(p):\n    from safetensors.torch import load_file  # here\n    return load_file(p)\n"
    )
    line = inject(tree, "api/gpu.py", code)
    expected |= {("weights-outside-checkpoints", "api/gpu.py", n) for n in (line, line + 1)}
    assert pristine.new(tree) == expected


def test_checkpoints_may_read_weights_and_raw_bytes_are_no_weights(
    tmp_path: Path, pristine: Pristine
) -> None:
    tree = pristine.copy(tmp_path)
    inject(tree, "engine/checkpoints.py", "import pickle  # here\n")
    code = "def f(p, load):\n    with open(p, 'rb') as f:  # here\n        return load(f.read(8))\n"
    inject(tree, "engine/output.py", code)
    assert pristine.new(tree) == set()
    assert not [v for v in pristine.report if v.path == "engine/weights.py"]  # reads a header


# -- 5: style names -----------------------------------------------------------------------------


def test_style_names_outside_the_drawers(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    cases = [
        'def f(style):\n    if style == "pixel art":  # here\n        pass\n',
        'def f(style):\n    return style in ("pixel art", "other")  # here\n',
        'def f(style):\n    match style:\n        case "painting":  # here\n            pass\n',
        'LR = {"painting": 0.1}  # here\n',
        'def f(d):\n    return d["image"]  # here\n',
        'STYLES = ["image", "painting"]  # here\n',
    ]
    expected = inject_all(tree, "api/gpu.py", "style-name", cases)
    expected |= inject_all(tree, "engine/output.py", "style-name", [cases[0]])
    fine = 'def f(s):\n    return s == "Pixel Art" or s == "pixel  art" or s.startswith("image")\n'
    inject(tree, "api/gpu.py", fine, "Pixel Art")  # exact strings only, and no decision
    inject(tree, "engine/drawers/pixel.py", cases[0])  # the drawers may name themselves
    assert pristine.new(tree) == expected


def test_the_vocabulary_is_read_from_the_drawers_names_and_aliases(
    tmp_path: Path, pristine: Pristine
) -> None:
    tree = pristine.copy(tmp_path)
    drawer = """\
        from typing import ClassVar

        class WaterDrawer:
            name: ClassVar[str] = "watercolour"
            aliases: ClassVar[tuple[str, ...]] = ("aquarelle", "wash")

        class Other:
            name = "gouache"
            aliases = ["tempera"]
    """
    (tree / "engine/drawers/water.py").write_text(textwrap.dedent(drawer), encoding="utf-8")
    vocabulary = check_rules.style_vocabulary(tree)
    assert {"image", "painting", "pixel art", "watercolour", "wash", "gouache"} <= set(vocabulary)
    assert vocabulary["aquarelle"] == "WaterDrawer" and vocabulary["tempera"] == "Other"
    cases = [
        'def f(s):\n    return s != "aquarelle"  # here\n',
        'X = ("wash", "tempera")  # here\n',
    ]
    expected = inject_all(tree, "engine/output.py", "style-name", cases)
    assert pristine.new(tree) == expected


def test_an_escape_with_a_reason_silences_its_line_only(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    code = """\
        LINKS = {"image": 1}  # check_rules: not-a-style (the link to the picture)
        OTHER = {"image": 2}  # here
    """
    line = inject(tree, "api/gpu.py", code)
    report = check_rules.report(tree)
    assert pristine.new(report.violations) == {("style-name", "api/gpu.py", line)}
    assert report.escapes == pristine.escapes + 1


def test_an_escape_without_a_reason_does_not(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    cases = [
        'LINKS = {"image": 1}  # here # check_rules: not-a-style\n',
        'LINKS = {"image": 1}  # here # check_rules: not-a-style ( )\n',
    ]
    expected = inject_all(tree, "api/gpu.py", "style-name", cases)
    violations = check(tree)
    assert pristine.new(violations) == expected
    notes = [v.message for v in violations if (v.rule, v.path, v.line) in expected]
    assert len(notes) == 2 and all("needs a reason in parentheses" in note for note in notes)


# -- 6: atomic renames --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "def _also(a, b):\n    import os\n    os.replace(a, b)  # here\n",
        "def _also(a, b):\n    from shutil import move\n    move(a, b)  # here\n",
        "def _also(a, b):\n    from pathlib import Path\n    Path(a).rename(b)  # here\n",
        "class K:\n    def _also(self, a, b):\n        a.replace(b)  # here\n",
    ],
)
def test_one_function_per_package_renames_into_place(
    tmp_path: Path, pristine: Pristine, code: str
) -> None:
    tree = pristine.copy(tmp_path)
    line = inject(tree, "engine/output.py", code)
    found = pristine.new(tree)
    assert ("atomic-rename", "engine/output.py", line) in found
    assert {rule for rule, _, _ in found} == {"atomic-rename"}  # and the other function's calls


def test_what_is_not_a_rename(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path)
    cases = [
        'def f(name):\n    return name.replace("a", "b")  # here\n',  # str.replace: two arguments
        "def f(s):\n    import dataclasses\n    return dataclasses.replace(s)  # here\n",
        "def f(s):\n    return s.replace(tzinfo=None)  # here\n",  # keywords: not Path.replace
    ]
    inject_all(tree, "engine/output.py", "atomic-rename", cases)
    assert pristine.new(tree) == set()


# -- 7: tests -----------------------------------------------------------------------------------


def test_test_modules_do_not_import_test_modules(tmp_path: Path, pristine: Pristine) -> None:
    tree = pristine.copy(tmp_path, "tests")  # the rule reads tests/ only
    broken = [
        "from test_jobs import FORM  # here\n",
        "import test_cli  # here\n",
        "from conftest import run_cli  # here\n",
        "def f():\n    from tests.conftest import tiny_settings  # here\n",
        "from tests.test_api import error_of  # here\n",
        "from tests import test_api  # here\n",
    ]
    expected = inject_all(tree, "tests/test_prompts.py", "test-imports-test", broken)
    fine = ["from servers import running  # here\n", "from tests.s3_server import S3  # here\n"]
    inject_all(tree, "tests/test_prompts.py", "test-imports-test", fine)
    inject(tree, "tests/servers.py", "import test_jobs  # here\n")  # a helper: not a test module
    assert pristine.new(tree) == expected


# -- the command line ---------------------------------------------------------------------------


def test_the_command_line_on_a_clean_and_a_broken_tree(tmp_path: Path) -> None:
    files = {
        "engine/__init__.py": "from engine.files import publish\n",
        "engine/files.py": "import os\n\ndef publish(a, b):\n    os.replace(a, b)\n",
        "engine/drawers/pixel.py": 'class PixelDrawer:\n    name = "pixel art"\n',
        "api/__init__.py": "",
        "api/run.py": 'LINK = {"pixel art": 1}  # check_rules: not-a-style (a link)\n',
        "api/use.py": "from engine import publish\n",
        "tests/test_a.py": "from helpers import thing\n",
        "tests/helpers.py": "thing = 1\n",
    }
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source, encoding="utf-8")
    command = [sys.executable, "-m", "scripts.check_rules", "--root", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "check_rules: 7 files, 0 violation(s) of 0 rule(s), 1 not-a-style escape(s)\n"
    )
    (tmp_path / "tests/test_b.py").write_text("import test_a\n", encoding="utf-8")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    first, summary = done.stdout.splitlines()
    assert first.startswith("tests/test_b.py:1: test-imports-test: imports test_a: ")
    assert summary.startswith("check_rules: 8 files, 1 violation(s) of 1 rule(s)")
