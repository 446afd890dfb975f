"""Autograde a folder of submissions into grades and feedback.

Usage::

    python -m autograder.grade ASSIGNMENT SUBMISSIONS --out OUT

``SUBMISSIONS`` uses nbgrader's layout: ``SUBMISSIONS/<student>/<ASSIGNMENT>/<ASSIGNMENT>.ipynb``.
``OUT`` becomes a throw-away nbgrader course directory holding the gradebook, the autograded
notebooks, ``feedback/<student>/<ASSIGNMENT>/*.html``, ``grades.csv`` (nbgrader's export),
``scores_by_test.csv`` (one column per graded cell) and ``report.txt``.

A submission that cannot be graded (unreadable file, bad student name, crash) gets a problem
in the report and costs no other student anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

COURSE_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = COURSE_ROOT / "autograder"
MARKER = ".dropout-course-grading"
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class StudentResult:
    """What grading one student's submission produced."""

    student: str
    score: float = 0.0
    max_score: float = 0.0
    manual_pending: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    per_test: dict[str, float | None] = field(default_factory=dict)


def run_nbgrader(args: list[str], course: Path) -> subprocess.CompletedProcess[str]:
    """Run one nbgrader command against the course directory ``course``."""
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = str(CONFIG_DIR)
    # nbgrader creates the gradebook through the `alembic` executable: the venv's bin must be
    # on PATH even when this runs as `.venv/bin/python -m autograder.grade`.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(COURSE_ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]
    return subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True, check=False)


def require_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def prepare_course(out: Path, assignment: str) -> None:
    """Make ``out`` a fresh course directory with ``assignment`` released into its gradebook.

    ``out`` is deleted first only if an earlier run of this command created it.
    """
    if out.exists():
        if not (out / MARKER).exists():
            raise SystemExit(f"{out} exists and was not made by this command: not touching it")
        shutil.rmtree(out)
    source = COURSE_ROOT / "solutions" / assignment
    if not (source / f"{assignment}.ipynb").is_file():
        raise SystemExit(f"no source notebook solutions/{assignment}/{assignment}.ipynb")
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by python -m autograder.grade; safe to delete\n")
    shutil.copytree(source, out / "solutions" / assignment)
    proc = run_nbgrader(["generate_assignment", assignment, "--force"], out)
    require_ok(proc, "generate_assignment")


def collect(submissions: Path, out: Path, assignment: str) -> dict[str, list[str]]:
    """Copy each student's notebook into ``out/submitted``; return problems by student."""
    problems: dict[str, list[str]] = {}
    for folder in sorted(p for p in submissions.iterdir() if p.is_dir()):
        student = folder.name
        if not STUDENT_ID.match(student):
            problems.setdefault(student, []).append("bad student name: not graded")
            continue
        notebook = folder / assignment / f"{assignment}.ipynb"
        problems[student] = []
        if not notebook.is_file():
            problems[student].append(f"missing {assignment}/{assignment}.ipynb: not graded")
            continue
        try:
            json.loads(notebook.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problems[student].append(f"malformed notebook ({err.__class__.__name__}): not graded")
            continue
        target = out / "submitted" / student / assignment
        target.mkdir(parents=True)
        shutil.copy2(notebook, target / notebook.name)
    return problems


def _read_scores(out: Path, assignment: str, results: dict[str, StudentResult]) -> None:
    """Fill scores per student and per graded cell from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for student, result in results.items():
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            result.score, result.max_score = sub.score, sub.max_score
            for nb in sub.notebooks:
                for grade in nb.grades:
                    pending = bool(grade.needs_manual_grade)
                    result.per_test[grade.name] = None if pending else grade.score
                    result.manual_pending += pending
            if result.max_score == 0:
                result.max_score = gb.find_assignment(assignment).max_score


def grade(
    assignment: str, submissions: Path, out: Path, quiet: bool = False
) -> list[StudentResult]:
    """Autograde every submission; write grades, feedback and the report into ``out``."""
    started = time.perf_counter()
    prepare_course(out, assignment)
    problems = collect(submissions, out, assignment)
    results = {s: StudentResult(s, problems=list(p)) for s, p in problems.items()}
    todo = [student for student, result in results.items() if not result.problems]
    # A progress bar on stderr while submissions are graded (the report goes to stdout).
    bar = tqdm(todo, desc=f"grading {assignment}", unit="submission", disable=quiet,
               file=sys.stderr, dynamic_ncols=True)
    for student in bar:
        result = results[student]
        bar.set_postfix_str(student)
        t0 = time.perf_counter()
        proc = run_nbgrader(["autograde", assignment, f"--student={student}", "--force"], out)
        result.seconds = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        if proc.returncode != 0 or "[AutogradeApp | ERROR]" in log:
            result.problems.append("autograding failed: " + _last_error(log))
        elif "Timeout" in log or "timed out" in log.lower():
            result.problems.append("a cell ran past the time limit")
        if not quiet:
            bar.write(f"graded {student} in {result.seconds:.1f} s", file=sys.stdout)
    if any(r.seconds for r in results.values()):  # at least one notebook was autograded
        proc = run_nbgrader(["generate_feedback", assignment, "--force"], out)
        require_ok(proc, "generate_feedback")
        require_ok(run_nbgrader(["export", f"--to={out / 'grades.csv'}"], out), "export")
    _read_scores(out, assignment, results)
    ordered = [results[s] for s in sorted(results)]
    _write_per_test(out / "scores_by_test.csv", ordered)
    report = format_report(assignment, ordered, time.perf_counter() - started)
    (out / "report.txt").write_text(report, encoding="utf-8")
    if not quiet:
        print(report)
    return ordered


def _last_error(log: str) -> str:
    lines = [ln for ln in log.splitlines() if "ERROR" in ln or "Error" in ln]
    return (lines[-1] if lines else log.strip().splitlines()[-1] if log.strip() else "")[:300]


def _write_per_test(path: Path, results: list[StudentResult]) -> None:
    tests = sorted({name for r in results for name in r.per_test})
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", "score", "max_score", *tests])
        for r in results:
            cells = ["" if r.per_test.get(t) is None else r.per_test[t] for t in tests]
            writer.writerow([r.student, r.score, r.max_score, *cells])


def format_report(assignment: str, results: list[StudentResult], seconds: float) -> str:
    """A plain-text table: student, score, time, what needs a human, problems."""
    lines = [f"Autograded {assignment}: {len(results)} submissions in {seconds:.1f} s", ""]
    lines.append(f"{'student':<20} {'score':>11} {'time':>7}  notes")
    for r in results:
        notes = list(r.problems)
        if r.manual_pending:
            notes.append(f"{r.manual_pending} answer(s) to grade by hand")
        score = f"{r.score:g} / {r.max_score:g}"
        lines.append(f"{r.student:<20} {score:>11} {r.seconds:>6.1f}s  {'; '.join(notes)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="e.g. ex01_overfitting")
    parser.add_argument("submissions", type=Path, help="folder: <student>/<assignment>/*.ipynb")
    parser.add_argument("--out", type=Path, required=True, help="throw-away course directory")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    grade(args.assignment, args.submissions.resolve(), args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
