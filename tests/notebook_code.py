"""Run the code of an nbgrader source notebook outside Jupyter: its setup cell, its reference
solutions and its test cells, so the checks library can be tested against real answers.

Reads the notebook as plain JSON (no nbformat, no Jupyter), so the checks' tests also run on a
machine that has only Python, torch, numpy and pytest, such as the GPU machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"
SETUP_ID = "setup"
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"


class Cell(dict):
    """A notebook cell as read from JSON, with ``source`` joined into one string."""

    @property
    def source(self) -> str:
        text = self["source"]
        return text if isinstance(text, str) else "".join(text)

    @property
    def nbgrader(self) -> dict[str, Any]:
        return dict(self.get("metadata", {}).get("nbgrader", {}))


def _nbgrader(cell: Cell) -> dict[str, Any]:
    return cell.nbgrader


@cache
def _code_cells(assignment: str) -> tuple[Cell, ...]:
    path = SOLUTIONS / assignment / f"{assignment}.ipynb"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return tuple(Cell(c) for c in cells if c["cell_type"] == "code")


def exec_source(source: str, namespace: dict[str, Any], label: str) -> None:
    """Execute notebook code ``source`` in ``namespace``; ``label`` names it in tracebacks.

    Running notebook code is the whole point of this module, hence ``exec``.
    """
    exec(compile(source, f"<{label}>", "exec"), namespace)  # noqa: S102, RUF100


def setup_source(assignment: str) -> str:
    """Source of the notebook's setup cell (nbgrader grade_id "setup")."""
    for cell in _code_cells(assignment):
        if _nbgrader(cell).get("grade_id") == SETUP_ID:
            return cell.source
    raise LookupError(f"{assignment} has no code cell with grade_id {SETUP_ID!r}")


def setup_namespace(assignment: str) -> dict[str, Any]:
    """A fresh namespace in which only the setup cell has run (imports, ``checks``)."""
    namespace: dict[str, Any] = {"__name__": f"{assignment}_notebook"}
    exec_source(setup_source(assignment), namespace, f"{assignment}:{SETUP_ID}")
    return namespace


def solution_cells(assignment: str) -> list[tuple[str, str]]:
    """(grade_id, source) of every code cell marked nbgrader.solution, in notebook order."""
    return [
        (_nbgrader(c)["grade_id"], c.source)
        for c in _code_cells(assignment)
        if _nbgrader(c).get("solution")
    ]


def load_solution_namespace(assignment: str) -> dict[str, Any]:
    """Run the setup cell and every solution cell (full source: the markers are comments) in a
    fresh namespace and return it, so it holds the reference functions."""
    namespace = setup_namespace(assignment)
    for grade_id, source in solution_cells(assignment):
        exec_source(source, namespace, f"{assignment}:{grade_id}")
    return namespace


def test_cells(assignment: str, hidden: bool | None = None) -> list[tuple[str, str]]:
    """(grade_id, source) of the graded code cells (the test cells), in notebook order.

    ``hidden=True`` keeps only cells with hidden tests, ``False`` only visible ones, ``None`` all.
    """
    cells = [
        (_nbgrader(c)["grade_id"], c.source)
        for c in _code_cells(assignment)
        if _nbgrader(c).get("grade")
    ]
    if hidden is None:
        return cells
    return [(gid, src) for gid, src in cells if (HIDDEN_BEGIN in src) is hidden]


# pytest must not collect the helper above as a test because of its name.
test_cells.__test__ = False  # type: ignore[attr-defined]


def answer_cells(assignment: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(grade_id, source, test cells) of every code cell marked nbgrader.solution, in notebook
    order; its test cells are the graded code cells (grade_id, source) between it and the next
    solution code cell (each task's tests follow its answer cell)."""
    found: list[tuple[str, str, list[tuple[str, str]]]] = []
    for cell in _code_cells(assignment):
        meta = _nbgrader(cell)
        if meta.get("solution"):
            found.append((meta["grade_id"], cell.source, []))
        elif meta.get("grade"):
            if not found:
                raise LookupError(f"{assignment}: test cell {meta['grade_id']!r} comes before "
                                  "any answer cell")
            found[-1][2].append((meta["grade_id"], cell.source))
    return found


def task_of(grade_id: str, tasks: Iterable[str]) -> str:
    """The task a test cell belongs to: its grade id is ``test_<task>_...`` for one of ``tasks``
    (the longest such key, so 'np_forward' is not taken for 'np')."""
    matches = [task for task in tasks if grade_id.startswith(f"test_{task}_")]
    if not matches:
        raise LookupError(f"{grade_id!r} names none of the tasks {sorted(tasks)}")
    return max(matches, key=len)


def cells_of_task(task: str, cells: list[tuple[str, str]], tasks: Iterable[str]
                  ) -> list[tuple[str, str]]:
    """The (grade_id, source) test cells of one task, visible and hidden, in notebook order."""
    return [(gid, src) for gid, src in cells if task_of(gid, tasks) == task]


def run_test_cell(source: str, namespace: dict[str, Any]) -> None:
    """Execute a test cell's source in a shallow copy of ``namespace``; exceptions propagate
    (an ``AssertionError`` is a failed test). The names the cell defines are thrown away."""
    exec_source(source, dict(namespace), "test cell")


def answers_namespace(assignment: str, answers: dict[str, str | None], label: str
                      ) -> dict[str, Any]:
    """Setup cell, then the given answer cells (grade_id -> source; None = deleted), run as the
    notebook runs them. Answers that are not code cells (a written answer) are skipped."""
    namespace = setup_namespace(assignment)
    code_ids = {grade_id for grade_id, _ in solution_cells(assignment)}
    for grade_id, source in answers.items():
        if grade_id in code_ids and source is not None:
            exec_source(source, namespace, f"{label}:{grade_id}")
    return namespace


def cell_failures(cells: list[tuple[str, str]], namespace: dict[str, Any]
                  ) -> dict[str, AssertionError]:
    """Run the test cells; return {grade_id: AssertionError} of those that fail.

    Any other exception propagates: a check must report a wrong answer, never crash on it.
    """
    failures: dict[str, AssertionError] = {}
    for grade_id, source in cells:
        try:
            run_test_cell(source, namespace)
        except AssertionError as err:
            failures[grade_id] = err
    return failures


def run_cell_cleanly(source: str, namespace: dict[str, Any], capsys: Any) -> None:
    """Run a test cell that must pass: it prints 'Passed:' and nothing on stderr (which nbgrader
    would count as a failure). ``capsys`` is pytest's fixture."""
    run_test_cell(source, namespace)
    out, err = capsys.readouterr()
    assert "Passed:" in out
    assert err == ""


def not_written(*args: Any, **kwargs: Any) -> None:
    """The stub every released notebook starts with."""
    raise NotImplementedError()


#: Every failure message of the checks library has this part.
HINT = "What to check"


def expect_some_cell_fails(cells: list[tuple[str, str]], namespace: dict[str, Any]) -> None:
    """A wrong answer must fail at least one of ``cells``, and every failure says what to
    check (a test helper: it asserts)."""
    failures = cell_failures(cells, namespace)
    assert failures, "no test cell caught this wrong answer"
    assert all(HINT in str(err) for err in failures.values())


def task_answers(table: dict[str, list[Any]]) -> list[tuple[str, Any]]:
    """Flatten {task: [answer, ...]} into (task, answer) pairs for pytest.mark.parametrize."""
    return [(task, answer) for task, answers in table.items() for answer in answers]


def answer_id(value: Any) -> str:
    """A readable parametrize id: an answer's function name, or the task key."""
    return getattr(value, "__name__", str(value))


CUDA_ONLY = "this bug only shows on a CUDA device; on the CPU the answer is correct"
