"""The package boundary: what ships to students is one package, apart from the grading engine.

``autograder/student/`` (the package ``dropout_course``) is the only code students get;
``autograder/engine/`` is the grading engine, ``autograder/demo/`` the demo submissions. Nothing in
the student package imports the rest, the sandbox sees only the student package and the two
engine modules that run inside it, and nothing in the repository points at files outside it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from course import (
    ASSIGNMENTS,
    ROOT,
    STUDENT_PACKAGE,
    package_modules,
    release_notebook,
    wheel_name,
)

ENGINE = ROOT / "autograder" / "engine"
ENGINE_MODULES = {"intake", "sandbox", "jail", "runner", "wire", "remote", "verify", "grade",
                  "feedback", "release", "benchmark", "answers", "kit"}
#: Engine modules that run inside the sandbox, next to the student's code.
IN_SANDBOX = {"runner", "wire"}


def imported_modules(path: Path) -> set[str]:
    """Every module name that ``path`` imports, at any depth (absolute names only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_tree_shows_what_ships_to_students() -> None:
    """autograder/ holds four parts: student (a package with its pyproject), engine, demo, and
    deploy (the scheduler recipes instructors run)."""
    top = {p.name for p in (ROOT / "autograder").iterdir() if p.name != "__pycache__"}
    assert top == {"__init__.py", "nbgrader_config.py", "student", "engine", "demo",
                   "deploy"}, top
    assert (ROOT / "autograder" / "student" / "pyproject.toml").is_file()
    assert {p.name for p in (ROOT / "autograder" / "student" / "src").iterdir()
            if not p.name.endswith(".egg-info")} == {"dropout_course"}
    assert {p.stem for p in ENGINE.glob("*.py")} >= ENGINE_MODULES
    assert (ROOT / "autograder" / "demo" / "__main__.py").is_file()


def test_the_student_package_imports_nothing_of_the_engine() -> None:
    """No module of dropout_course names autograder (the engine, demos, configuration)."""
    offenders = {str(module.relative_to(STUDENT_PACKAGE)): sorted(names)
                 for module in package_modules()
                 if (names := {n for n in imported_modules(module)
                               if n.split(".")[0] == "autograder"})}
    assert offenders == {}


def test_the_student_package_imports_alone() -> None:
    """Imported with only its own source on the path (the repository's root absent and any import
    of ``autograder`` refused), the package and every module of it load."""
    modules = sorted(".".join(m.relative_to(STUDENT_PACKAGE.parent).with_suffix("").parts)
                     .removesuffix(".__init__") for m in package_modules())
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(STUDENT_PACKAGE.parent)!r})\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'autograder':\n"
        "            raise ImportError('the student package imported ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    # -I: no PYTHONPATH, no user site, the current folder (/) not on the path.
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]
    assert len(modules) >= 10


def test_engine_code_in_the_sandbox_imports_only_itself() -> None:
    """runner and wire run inside the sandbox: they import the standard library, numpy, torch
    and each other, never another engine module (those are not copied in)."""
    for name in IN_SANDBOX:
        course = {n for n in imported_modules(ENGINE / f"{name}.py")
                  if n.split(".")[0] == "autograder"}
        assert course <= {f"autograder.engine.{m}" for m in IN_SANDBOX}, (name, course)


def test_the_sandbox_gets_the_student_package_and_its_runner_only(tmp_path: Path) -> None:
    """The read-only library copied into each sandbox (and the zygote's copy, which it runs
    from) is the student package plus the runner, the wire, the zygote and the jail it forks
    into: no other engine module, demo, solution or configuration, and those four import
    nothing else of the engine."""
    from autograder.engine.sandbox import prepare_workdir

    workdir = prepare_workdir(tmp_path)
    files = {str(p.relative_to(workdir / ".grader")) for p in (workdir / ".grader").rglob("*")
             if p.is_file()}
    engine = {f for f in files if not f.startswith("dropout_course/")}
    inside = {"runner", "wire", "zygote", "jail"}
    assert engine == {"autograder/__init__.py", "autograder/engine/__init__.py",
                      *(f"autograder/engine/{name}.py" for name in inside)}
    for name in inside:
        tree = ast.parse((workdir / ".grader" / "autograder" / "engine" / f"{name}.py")
                         .read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        engine_modules = {m for m in imported if m and m.startswith("autograder")}
        assert engine_modules <= {"autograder.engine", *(f"autograder.engine.{i}" for i in inside)
                                  }, (name, engine_modules)
    shipped = {str(m.relative_to(STUDENT_PACKAGE.parent)) for m in package_modules()}
    assert {f for f in files if f.startswith("dropout_course/") and f.endswith(".py")} == shipped
    for init in ("autograder/__init__.py", "autograder/engine/__init__.py"):
        tree = ast.parse((workdir / ".grader" / init).read_text(encoding="utf-8"))
        assert all(isinstance(n, ast.Expr) for n in tree.body), f"{init} must only document"


def test_the_repository_refers_to_no_file_outside_it() -> None:
    """Users of the repository do not have the notes beside it: no tracked file points there."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert len(tracked) > 50
    outside = []
    for name in tracked:
        path = ROOT / name
        if name == "tests/test_layout.py" or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        if "shared/reference" in text or "../shared" in text:
            outside.append(name)
    assert outside == []


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_setup_cell_says_how_to_install_the_package(assignment: str) -> None:
    """Without the package, the setup cell stops with the kit's install line and, for JupyterHub
    or Colab, the `%pip install` of the wheel the kit really holds."""
    setup = next(c for c in release_notebook(assignment).cells
                 if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('dropout_course', 'autograder'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        + setup.source
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd="/", capture_output=True,
                          text=True, check=False)
    assert proc.returncode != 0
    message = " ".join(proc.stderr.splitlines()[-3:])
    assert "ImportError: The course's package dropout_course is not installed" in message
    assert "pip install -r requirements.txt" in message
    assert f"%pip install {wheel_name()}" in message


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebook_does_not_depend_on_the_repository_layout(assignment: str) -> None:
    """A student notebook lives in the kit, not in this repository: no relative link out of its
    folder, no repository command or path."""
    import re

    text = "\n".join(c.source for c in release_notebook(assignment).cells)
    assert re.findall(r"\]\((?!https?://|#)[^)]*\)", text) == []
    for word in ("make lab", "autograder", "solutions/", "chapters/", "../"):
        assert word not in text, word
