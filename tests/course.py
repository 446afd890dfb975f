"""Shared facts about the course for the tests: where things are, and what must never leak."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from functools import cache
from pathlib import Path
from typing import Any

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
BUILD_HTML = ROOT / "_build" / "html"
#: The student package's source: everything under it ships to students (public).
STUDENT_PACKAGE = ROOT / "autograder" / "student" / "src" / "dropout_course"
ASSIGNMENTS = sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").is_file())

# A secret line must be at least this long (after stripping) to be searched for: shorter lines
# such as `return out` or `else:` are too generic to mean anything when found elsewhere. Lines
# shorter than DISTINCTIVE_LENGTH count only when they appear as a whole line; longer ones count
# anywhere, even inside a longer line (e.g. in a JSON search index).
MIN_SECRET_LENGTH = 16
#: nbgrader's markers around solutions and hidden tests in source notebooks.
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
DISTINCTIVE_LENGTH = 30


def toc_files() -> list[str]:
    """The book's pages in table-of-contents order (paths without suffix, from the repo root)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))
            walk(entry.get("chapters", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return files


def source_notebook(assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)


def release_notebook(assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(EXERCISES / assignment / f"{assignment}.ipynb", as_version=4)


def _regions(source: str, begin: str, end: str) -> list[str]:
    lines, inside, found = source.splitlines(), False, []
    for line in lines:
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            found.append(line)
    return found


def package_modules() -> list[Path]:
    """Every Python module of the student package (it is public: students get all of it)."""
    modules = sorted(STUDENT_PACKAGE.rglob("*.py"))
    assert len(modules) >= 10, f"the student package was not found under {STUDENT_PACKAGE}"
    return modules


def wheel_name() -> str:
    """The file name of the wheel the student package builds (PEP 427 normalisation)."""
    import tomllib

    project = tomllib.loads((ROOT / "autograder" / "student" / "pyproject.toml")
                            .read_text(encoding="utf-8"))["project"]
    return f"{re.sub(r'[-_.]+', '_', project['name'])}-{project['version']}-py3-none-any.whl"


def answer_source_lines() -> set[str]:
    """The solution and hidden-test lines of every source notebook, unstripped: solution markdown
    cells whole, code between nbgrader's markers."""
    found: set[str] = set()
    for assignment in ASSIGNMENTS:
        for cell in source_notebook(assignment).cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and meta.get("solution"):
                found.update(cell.source.splitlines())
            elif cell.cell_type == "code":
                found.update(_regions(cell.source, "BEGIN SOLUTION", "END SOLUTION"))
                found.update(_regions(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"))
    return found


@cache
def secret_lines() -> frozenset[str]:
    """Solution and hidden-test lines of every source notebook that no student may see.

    Lines that also occur in a released notebook or in the checks library (both public: students
    get them) are left out, as are lines shorter than MIN_SECRET_LENGTH.
    """
    secret = answer_source_lines()
    public: set[str] = set()
    for assignment in ASSIGNMENTS:
        for cell in release_notebook(assignment).cells:
            public.update(line.strip() for line in cell.source.splitlines())
    for module in package_modules():
        public.update(line.strip() for line in module.read_text(encoding="utf-8").splitlines())
    stripped = {line.strip() for line in secret}
    return frozenset(s for s in stripped if len(s) >= MIN_SECRET_LENGTH and s not in public)


@cache
def answer_values() -> dict[str, float]:
    """The reference value of every numeric question, {variable: value}: each hidden test's
    ``checks.questions.check_close(variable, <reference>, ...)`` with ``<reference>`` evaluated as
    the grader evaluates it (from ``autograder/engine/answers.py``)."""
    from autograder.engine import answers

    found: dict[str, float] = {}
    for assignment in ASSIGNMENTS:
        for cell in source_notebook(assignment).cells:
            if cell.cell_type != "code" or "check_close" not in cell.source:
                continue
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr == "check_close":
                    code = compile(ast.Expression(node.args[1]), "<reference>", "eval")
                    found[ast.unparse(node.args[0])] = float(eval(code, {"answers": answers}))
    return found


#: A reference value is searched for written with this many significant digits or more (fewer
#: would find innocent numbers: 0.96 is everywhere).
VALUE_DIGITS = 5


def value_texts(value: float) -> frozenset[str]:
    """``value`` as a person would write it with 5 to 12 significant digits, rounded or cut
    (8.8333, 8.83333, ..., and 0.96428 as well as 0.96429), and its full ``repr``."""
    exact = Decimal(repr(value))
    texts = {repr(value)}
    for digits in range(VALUE_DIGITS, 13):
        step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
        texts.update(str(exact.quantize(step, rounding=mode)) for mode in (ROUND_DOWN,
                                                                           ROUND_HALF_EVEN))
    return frozenset(texts)


@cache
def answer_value_texts() -> dict[str, str]:
    """{text: the variable whose reference value it writes} for every numeric question."""
    return {text: name for name, value in answer_values().items() for text in value_texts(value)}


def readable_text(path: Path) -> str:
    """The text a person could read in ``path``: HTML as rendered text plus its raw form,
    notebooks as their cell sources and outputs, anything else as decoded text."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    parts = [raw]
    if path.suffix in {".html", ".htm"}:
        from bs4 import BeautifulSoup

        parts.append(BeautifulSoup(raw, "html.parser").get_text())
    elif path.suffix == ".ipynb":
        try:
            nb = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        for cell in nb.get("cells", []):
            src = cell.get("source", "")
            parts.append("".join(src) if isinstance(src, list) else src)
            for out in cell.get("outputs", []):
                parts.append(json.dumps(out, ensure_ascii=False))
    return "\n".join(parts)


def find_leaks(folder: Path, own_lines: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Secret lines and reference values of the numeric questions (``answer_value_texts``) found
    in any file under ``folder``: {relative path: [lines or "reference value of NAME: TEXT"]}.

    ``own_lines`` are lines a student wrote themselves (a feedback file may show them back,
    with a number the student typed).
    """
    secrets = secret_lines() - own_lines
    values = {text: name for text, name in answer_value_texts().items()
              if not any(text in line for line in own_lines)}
    leaks: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix in {".png", ".jpg", ".gif", ".woff", ".woff2",
                                                 ".ttf", ".eot", ".ico", ".db", ".svg"}:
            continue
        text = readable_text(path)
        lines = {line.strip() for line in text.splitlines()}
        hits = [s for s in secrets if s in lines or (len(s) >= DISTINCTIVE_LENGTH and s in text)]
        hits += [f"reference value of {name}: {t}" for t, name in values.items() if t in text]
        if hits:
            leaks[str(path.relative_to(folder))] = sorted(hits)
    return leaks


def venv_env() -> dict[str, str]:
    """Environment for course commands: the venv's bin first, nbgrader's config found."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["JUPYTER_CONFIG_PATH"] = str(ROOT / "autograder")
    return env


def run(cmd: list[str], cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command with the course environment; output captured as text."""
    return subprocess.run(
        cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True, check=False, **kwargs
    )


#: Short sandbox limits for the attack and bad-input suites (a loop costs seconds, not minutes).
SHORT_LIMITS = {"cell_seconds": 10, "call_seconds": 10, "submission_seconds": 90,
                "memory_bytes": 1 << 30}


def grade_written(base: Path, assignment: str, write: Callable[[Path], object]
                  ) -> tuple[Path, dict[str, object]]:
    """Write submissions with ``write(folder)`` and grade them all in one call with short limits
    and two jobs: (course folder, results by student)."""
    from autograder.engine.grade import grade

    write(base / "submissions")
    out = base / "course"
    results = grade(assignment, base / "submissions", out, quiet=True, jobs=2,
                    limits=SHORT_LIMITS)
    return out, {r.student: r for r in results}


@contextmanager
def sandbox_session(tmp_path: Path, code: str) -> Iterator[Any]:
    """A real sandbox (``SHORT_LIMITS``) whose first cell ran ``code``, and the grader's Session
    on it; ``session.fn(name)`` is the student's function ``name`` there."""
    from autograder.engine.remote import RemoteFunction, Session
    from autograder.engine.sandbox import Limits, Sandbox, prepare_workdir

    sandbox = Sandbox(prepare_workdir(tmp_path), Limits(**SHORT_LIMITS), 0)
    sandbox.start()
    try:
        reply, _ = sandbox.request({"op": "cell", "source": code, "name": "<cell 1>"})
        assert reply["error"] is None, reply
        session = Session(sandbox)
        session.fn = lambda name: RemoteFunction(session, name)
        yield session
    finally:
        sandbox.stop()
