"""``python -m autograder.demo --out DIR``: build the demo submissions and autograde them."""

from __future__ import annotations

import argparse
import copy
import importlib
import sys
from pathlib import Path

import nbformat

from autograder.engine.grade import COURSE_ROOT, grade

ASSIGNMENTS = [
    "ex01_overfitting",
    "ex02_dropout_mechanics",
    "ex03_dropout_variants",
    "ex04_misconceptions",
]


def write_submissions(assignment: str, folder: Path) -> dict[str, float]:
    """Write each demo student's notebook under ``folder``; return the expected scores."""
    demo = importlib.import_module(f"autograder.demo.{assignment}")
    release = COURSE_ROOT / "exercises" / assignment / f"{assignment}.ipynb"
    template = nbformat.read(release, as_version=4)
    for student, answers in demo.STUDENTS.items():
        nb = copy.deepcopy(template)
        cells = []
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in answers:
                if answers[grade_id] is None:
                    continue  # the student deleted this cell
                cell.source = answers[grade_id].strip("\n")
            cells.append(cell)
        nb.cells = cells
        target = folder / student / assignment / f"{assignment}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    return dict(demo.EXPECTED)


def run(out: Path, assignments: list[str] = ASSIGNMENTS) -> bool:
    """Grade every assignment's demo submissions; True when all scores are as expected."""
    all_ok = True
    for assignment in assignments:
        submissions = out / "submissions" / assignment
        expected = write_submissions(assignment, submissions)
        results = grade(assignment, submissions, out / "courses" / assignment)
        print(f"{'student':<20} {'expected':>8} {'got':>6}")
        for r in results:
            ok = expected.get(r.student) == r.score
            all_ok &= ok
            mark = "ok" if ok else "UNEXPECTED"
            print(f"{r.student:<20} {expected.get(r.student, '-'):>8} {r.score:>6g}  {mark}")
        print(f"feedback: {out / 'courses' / assignment / 'feedback'}\n")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=COURSE_ROOT / "_build" / "grading" / "demo")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    return 0 if run(out) else 1


if __name__ == "__main__":
    sys.exit(main())
