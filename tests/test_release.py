"""The nbgrader round trip: exercises/ is generated from solutions/, validates as it should,
and every notebook follows the course's rules for graded cells."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from course import (
    ASSIGNMENTS,
    DISTINCTIVE_LENGTH,
    EXERCISES,
    MARKERS,
    ROOT,
    SOLUTIONS,
    find_leaks,
    package_modules,
    release_notebook,
    run,
    secret_lines,
    source_notebook,
)

from autograder.engine.release import stale


def nbgrader(*args: str, cwd: Path = ROOT):
    import sys

    return run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, timeout=600)


def grade_code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade")]


def answer_code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("solution")]


def is_question(cell) -> bool:
    """A numeric question's answer cell (Exercise 2, Task 5): its grade id is the variable
    ``answer_...`` that it assigns; it defines no function or class."""
    return cell.metadata["nbgrader"]["grade_id"].startswith("answer_")


def test_assignments_pair_with_chapters() -> None:
    """Every exercise exNN_topic has a chapter NN_topic, and both folders list the same ones."""
    assert ASSIGNMENTS, "no source notebooks found"
    released = sorted(p.name for p in EXERCISES.iterdir() if p.is_dir())
    assert released == ASSIGNMENTS
    for assignment in ASSIGNMENTS:
        assert (ROOT / "chapters" / f"{assignment[2:]}.md").is_file(), assignment


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_regenerate_without_a_diff(assignment: str) -> None:
    """Generating the student version again gives exactly the committed files."""
    assert stale(assignment) == [], "exercises/ is stale: run `make release`"


def test_stale_detection_notices_an_edited_exercise(tmp_path: Path, monkeypatch) -> None:
    """The staleness check is not vacuous: an edited student notebook is reported."""
    from autograder.engine import release

    assignment = ASSIGNMENTS[0]
    shutil.copytree(EXERCISES, tmp_path / "exercises")
    edited = tmp_path / "exercises" / assignment / f"{assignment}.ipynb"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Task 1", "Task one"), "utf-8")
    monkeypatch.setattr(release, "EXERCISES", tmp_path / "exercises")
    assert release.stale(assignment) == [f"{assignment}.ipynb"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_passes_validation(assignment: str) -> None:
    """`nbgrader validate` passes the instructor's notebook (solutions + hidden tests)."""
    proc = nbgrader("validate", str(SOLUTIONS / assignment / f"{assignment}.ipynb"))
    assert "Success! Your notebook passes all the tests." in proc.stdout, proc.stdout[-4000:]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_student_notebook_fails_validation(assignment: str) -> None:
    """`nbgrader validate` fails the untouched student notebook: on every visible test cell."""
    proc = nbgrader("validate", str(EXERCISES / assignment / f"{assignment}.ipynb"))
    assert "VALIDATION FAILED" in proc.stdout, proc.stdout[-3000:]
    cells = grade_code_cells(release_notebook(assignment))
    visible = [c for c in cells if ast.parse(c.source).body]
    assert proc.stdout.count("The following cell failed:") >= len(visible)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_hold_no_solution_or_hidden_test(assignment: str) -> None:
    """The student notebook has no nbgrader markers and no line of a solution or hidden test."""
    text = (EXERCISES / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8")
    for marker in MARKERS:
        assert marker not in text
    assert find_leaks(EXERCISES / assignment) == {}



def _message_texts(module: Path) -> list[str]:
    """Every string literal in a module (adjacent literals already joined by the parser) and
    every ``"a" + "b"`` chain of literals, as the text a failure message may show."""
    texts: list[str] = []

    def fold(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = fold(node.left), fold(node.right)
            if left is not None and right is not None:
                return left + right
        return None

    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        text = fold(node)
        if text is not None:
            texts.append(text)
        elif isinstance(node, ast.JoinedStr):
            texts.append("".join(str(v.value) for v in node.values if isinstance(v, ast.Constant)))
    return texts


def test_check_messages_quote_no_solution_line() -> None:
    """No hint or message in the checks library spells out a solution or hidden-test line:
    feedback files show these messages to students."""
    secrets = [s for s in secret_lines() if len(s) >= DISTINCTIVE_LENGTH]
    assert secrets, "the secret-line finder found nothing"
    quoted = {(module.name, secret)
              for module in package_modules()
              for text in _message_texts(module)
              for secret in secrets if secret in " ".join(text.split())}
    assert quoted == set()

def _last_statement_is_passed(source: str) -> bool:
    body = ast.parse(source).body
    if not body:
        return True  # a released hidden-test cell: only a comment is left
    last = body[-1]
    return (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and ast.unparse(last.value.func) == "checks.passed")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_test_cells_follow_the_course_rules(assignment: str) -> None:
    """Every test cell ends with checks.passed(...) (never a bare value nbgrader would take as a
    score), holds no assertion logic of its own (that lives in the checks library), and is
    locked."""
    for nb in (source_notebook(assignment), release_notebook(assignment)):
        for cell in grade_code_cells(nb):
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            assert cell.metadata["nbgrader"].get("locked"), f"{grade_id} is not locked"
            assert _last_statement_is_passed(cell.source), f"{grade_id} does not end in passed()"
            tree = ast.parse(cell.source)
            assert not any(isinstance(n, ast.Assert) for n in ast.walk(tree)), (
                f"{grade_id} has its own assert: put the logic in autograder/checks")
            for banned in ("np.testing", "torch.testing", "assert_allclose"):
                assert banned not in cell.source, f"{grade_id} uses {banned}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_each_task_starts_with_a_docstring_contract(assignment: str) -> None:
    """Each graded function in the student notebook has a docstring that says what to implement,
    and the stub raises NotImplementedError."""
    for cell in answer_code_cells(release_notebook(assignment)):
        tree = ast.parse(cell.source)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        if is_question(cell):  # the stub sets the variable to None; the comment says what to write
            name = cell.metadata["nbgrader"]["grade_id"]
            assert not defs and f"{name} = None\n" in cell.source, name
            assert "a number, or an expression that computes it" in cell.source, name
            assert "raise NotImplementedError()" in cell.source
            continue
        assert defs, f"{cell.metadata['nbgrader']['grade_id']} defines nothing"
        for node in defs:
            doc = ast.get_docstring(node) or ""
            assert "Implement" in doc and ("Returns" in doc or "Raises" in doc), node.name
        assert "raise NotImplementedError()" in cell.source


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hidden_tests_sit_in_their_own_cells(assignment: str) -> None:
    """Each graded function has one visible test cell and at least one separate hidden one, so a
    student who passes the visible tests earns those points even if a hidden case fails; a hidden
    cell holds nothing but a comment outside its hidden region. A numeric question has one test
    cell instead (test_<key>_answer, after its answer cell): its visible part only checks that
    the answer is a number, which earns nothing by itself; its hidden part checks the value."""
    nb = source_notebook(assignment)
    questions = {c.metadata["nbgrader"]["grade_id"] for c in answer_code_cells(nb)
                 if is_question(c)}
    cells = grade_code_cells(nb)
    answered = [c for c in cells if c.metadata["nbgrader"]["grade_id"].endswith("_answer")]
    assert len(answered) == len(questions)
    for cell in answered:
        name = "answer_" + cell.metadata["nbgrader"]["grade_id"].removeprefix(
            "test_").removesuffix("_answer")
        before, _, rest = cell.source.partition("### BEGIN HIDDEN TESTS")
        hidden_part, _, after = rest.partition("### END HIDDEN TESTS")
        assert name in questions
        assert f"checks.questions.check_real_number({name}, " in before
        assert f"checks.questions.check_close({name}, answers." in hidden_part
        assert after.strip().startswith("checks.passed("), after
    cells = [c for c in cells if c not in answered]
    hidden = [c for c in cells if "BEGIN HIDDEN TESTS" in c.source]
    visible = [c for c in cells if "BEGIN HIDDEN TESTS" not in c.source]
    n_answers = len(answer_code_cells(nb)) - len(questions)
    assert len(visible) == n_answers <= len(hidden)
    for cell in hidden:
        before, _, rest = cell.source.partition("### BEGIN HIDDEN TESTS")
        _, _, after = rest.partition("### END HIDDEN TESTS")
        outside = [line for line in (before + after).splitlines() if line.strip()]
        assert all(line.lstrip().startswith("#") for line in outside), outside


def test_nbgrader_configuration() -> None:
    """The course's nbgrader settings are the ones the instructor guide promises."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT / "autograder")).load_config()
    assert config.CourseDirectory.source_directory == "solutions"
    assert config.CourseDirectory.release_directory == "exercises"
    assert 0 < config.Execute.timeout <= 300
    assert config.IgnorePattern.enabled is True
    assert config.OverwriteCells.add_missing_cells is True
    assert "autograder.engine.feedback.HideHiddenTests" in config.GenerateFeedback.preprocessors
