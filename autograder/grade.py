"""Autograde a folder of submissions: sandboxed, verified outside the student's process, parallel.

Usage::

    python -m autograder.grade ASSIGNMENT SUBMISSIONS --out OUT [--jobs N] [--db-url URL]

``SUBMISSIONS`` is nbgrader's layout (``<student>/<ASSIGNMENT>/*.ipynb``), or a folder or
``.zip`` of files downloaded from an LMS, named per nbgrader's zip-collect conventions
(``--lms-regex``). Each submission's code runs in an operating-system sandbox
(``autograder/sandbox.py``); its tests, hidden ones included, run in a trusted worker process
that calls the student's functions in the sandbox and judges the plain data that comes back
(``autograder/verify.py``). ``OUT`` becomes an nbgrader course directory holding the gradebook
(sqlite by default, or ``--db-url``), ``autograded/`` and
``feedback/<student>/<ASSIGNMENT>/*.html``,
``grades.csv`` (totals and one column per graded cell, flags and problems),
``scores_by_test.csv`` and ``report.txt``. Running it again resumes: a submission already graded
(same file) is not graded twice; ``--force`` regrades all.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    flags: dict[str, list[str]] = field(default_factory=dict)
    per_test: dict[str, float | None] = field(default_factory=dict)
    digest: str = ""


# --------------------------------------------------------------------------- nbgrader plumbing

def nbgrader_env() -> dict[str, str]:
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = str(CONFIG_DIR)
    # nbgrader creates the gradebook through the `alembic` executable: the venv's bin must be
    # on PATH even when this runs as `.venv/bin/python -m autograder.grade`.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(COURSE_ROOT), env.get("PYTHONPATH", "")])
    return env


def run_nbgrader(args: list[str], course: Path, db_url: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
    """Run one nbgrader command against the course directory ``course``."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]
    if db_url:
        # nbgrader's default course id '' breaks PostgreSQL's foreign keys (its assignments
        # belong to "default_course"); sqlite does not check them.
        cmd += [f"--CourseDirectory.db_url={db_url}", "--CourseDirectory.course_id=default_course"]
    return subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                          check=False)


def require_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def default_db_url(out: Path) -> str:
    return f"sqlite:///{out / 'gradebook.db'}"


def prepare_course(out: Path, assignment: str, db_url: str | None = None) -> None:
    """Make ``out`` a course directory with ``assignment`` released into its gradebook.

    A folder this command did not create is never touched; one it created is reused, so that an
    interrupted run resumes.
    """
    if out.exists() and not (out / MARKER).exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and was not made by this command: not touching it")
    source = COURSE_ROOT / "solutions" / assignment
    if not (source / f"{assignment}.ipynb").is_file():
        raise SystemExit(f"no source notebook solutions/{assignment}/{assignment}.ipynb")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by python -m autograder.grade; safe to delete\n")
    target = out / "solutions" / assignment
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    proc = run_nbgrader(["generate_assignment", assignment, "--force"], out, db_url)
    require_ok(proc, "generate_assignment")


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(slots: Any) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["slot"] = slots.get()
    import torch

    torch.set_num_threads(1)


def _grade_one(student: str, notebook: str, assignment: str, out: str,
               limits: dict[str, Any]) -> dict[str, Any]:
    """Worker: grade one submission, write its autograded notebook and feedback HTML."""
    from autograder.sandbox import Limits
    from autograder.verify import Plan, feedback_notebook, grade_submission

    course = Path(out)
    plan = _WORKER.get(("plan", assignment))
    if plan is None:
        plan = Plan.load(course / "solutions" / assignment / f"{assignment}.ipynb",
                         course / "exercises" / assignment / f"{assignment}.ipynb")
        _WORKER[("plan", assignment)] = plan
    scratch = course / ".scratch"
    scratch.mkdir(exist_ok=True)
    outcome = grade_submission(student, Path(notebook), plan, Limits(**limits),
                               _WORKER.get("slot", 0), scratch)
    if outcome.autograded is not None:
        name = f"{assignment}.ipynb"
        graded = course / "autograded" / student / assignment
        graded.mkdir(parents=True, exist_ok=True)
        (graded / name).write_text(json.dumps(outcome.autograded, indent=1), "utf-8")
        feedback = course / "feedback" / student / assignment
        feedback.mkdir(parents=True, exist_ok=True)
        (feedback / f"{assignment}.html").write_text(
            _html(feedback_notebook(outcome.autograded)), "utf-8")
    result = asdict(outcome)
    result.pop("autograded")
    return result


def _html(nb_json: dict[str, Any]) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = _WORKER.get("exporter")
    if exporter is None:
        exporter = _WORKER["exporter"] = HTMLExporter(template_name="classic")
    body, _ = exporter.from_notebook_node(nbformat.from_dict(nb_json))
    return body


# --------------------------------------------------------------------------- gradebook

def record(gb: Any, assignment: str, result: StudentResult) -> None:
    """Write one student's scores into the nbgrader gradebook (idempotent)."""
    from nbgrader.api import MissingEntry

    gb.update_or_create_student(result.student)
    try:
        gb.find_submission(assignment, result.student)
    except MissingEntry:
        gb.add_submission(assignment, result.student)
    notebook = gb.find_submission_notebook(assignment, assignment, result.student)
    for grade in notebook.grades:
        score = result.per_test.get(grade.name, 0.0)
        grade.auto_score = score
        grade.needs_manual_grade = score is None
    notebook.flagged = bool(result.flags.get("tampering"))
    gb.db.commit()


def _fill_totals(gb: Any, assignment: str, result: StudentResult) -> None:
    max_score = gb.find_assignment(assignment).max_score
    result.max_score = float(max_score)
    auto = [v for v in result.per_test.values() if v is not None]
    result.score = float(sum(auto))
    result.manual_pending = sum(v is None for v in result.per_test.values())


# --------------------------------------------------------------------------- the command

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(out: Path, student: str, digest: str) -> StudentResult | None:
    path = out / "results" / f"{student}.json"
    try:
        data = json.loads(path.read_text("utf-8"))
        result = StudentResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    return result if result.digest == digest else None


def _save(out: Path, result: StudentResult) -> None:
    folder = out / "results"
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{result.student}.json.tmp"
    tmp.write_text(json.dumps(asdict(result)), "utf-8")
    tmp.replace(folder / f"{result.student}.json")  # atomic: a crash never leaves half a file


def _from_outcome(student: str, data: dict[str, Any], notes: list[str]) -> StudentResult:
    result = StudentResult(student, seconds=float(data["seconds"]))
    result.problems = [*notes, *data["problems"]]
    result.flags = data["flags"]
    result.per_test = dict(data["scores"])
    return result


def grade(assignment: str, submissions: Path, out: Path, quiet: bool = False,
          jobs: int | None = None, db_url: str | None = None, limits: dict[str, Any] | None = None,
          lms_regex: str | None = None, force: bool = False, shard: tuple[int, int] = (1, 1)
          ) -> list[StudentResult]:
    """Autograde every submission; write gradebook, grades, feedback and the report into ``out``."""
    from nbgrader.api import Gradebook

    from autograder.intake import gather
    from autograder.sandbox import unenforced

    started = time.perf_counter()
    os.environ["PATH"] = nbgrader_env()["PATH"]  # nbgrader's gradebook runs `alembic`
    jobs = jobs or os.cpu_count() or 1
    prepare_course(out, assignment, db_url)
    for warning in unenforced():
        print(f"WARNING: sandbox protection {warning}", file=sys.stderr)
    intake = gather(submissions, assignment, out / "submitted", lms_regex)
    results: dict[str, StudentResult] = {
        raw: StudentResult(raw, problems=[f"{p}: not graded" for p in problems],
                           flags={"malformed": list(problems)})
        for raw, problems in intake.problems.items()}
    index, count = shard
    todo = [s for i, s in enumerate(sorted(intake.notebooks)) if i % count == index - 1]
    digests = {s: _digest(intake.notebooks[s]) for s in todo}
    url = db_url or default_db_url(out)
    with Gradebook(url) as gb:
        fresh = []
        for student in todo:
            cached = None if force else _cached(out, student, digests[student])
            if cached is None:
                fresh.append(student)
            else:
                results[student] = cached
                record(gb, assignment, cached)
        _run_pool(assignment, out, fresh, intake, digests, results, gb, jobs, limits or {}, quiet)
        for student in todo:
            _fill_totals(gb, assignment, results[student])
        for student in intake.problems:
            if STUDENT_ID.match(student):
                results[student].max_score = float(gb.find_assignment(assignment).max_score)
    ordered = [results[s] for s in sorted(results)]
    write_csvs(out, assignment, ordered)
    report = format_report(assignment, ordered, time.perf_counter() - started, jobs)
    (out / "report.txt").write_text(report, encoding="utf-8")
    if not quiet:
        print(report)
    shutil.rmtree(out / ".scratch", ignore_errors=True)
    return ordered


def _run_pool(assignment: str, out: Path, fresh: list[str], intake: Any, digests: dict[str, str],
              results: dict[str, StudentResult], gb: Any, jobs: int, limits: dict[str, Any],
              quiet: bool) -> None:
    bar = tqdm(total=len(fresh), desc=f"grading {assignment}", unit="submission",
               disable=quiet, file=sys.stderr, dynamic_ncols=True)
    if not fresh:
        bar.close()
        return
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    with ProcessPoolExecutor(max_workers=min(jobs, len(fresh)), mp_context=context,
                             initializer=_init_worker, initargs=(slots,)) as pool:
        futures = {pool.submit(_grade_one, s, str(intake.notebooks[s]), assignment, str(out),
                               limits): s for s in fresh}
        for future in as_completed(futures):
            student = futures[future]
            try:
                result = _from_outcome(student, future.result(), intake.notes.get(student, []))
            except Exception as err:
                result = StudentResult(student, problems=[f"grading failed: {err}"[:300]],
                                       flags={"crash": [str(err)[:300]]})
            result.digest = digests[student]
            results[student] = result
            record(gb, assignment, result)
            _save(out, result)
            bar.update(1)
            bar.set_postfix_str(student)
            if not quiet:
                bar.write(f"graded {student} in {result.seconds:.1f} s", file=sys.stdout)
    bar.close()


def _cell(r: StudentResult, test: str) -> float | str:
    return "" if r.per_test.get(test) is None else float(r.per_test[test])


def write_csvs(out: Path, assignment: str, results: list[StudentResult]) -> None:
    """grades.csv (totals, per-test scores, flags, problems) and scores_by_test.csv."""
    tests = sorted({name for r in results for name in r.per_test})
    with (out / "grades.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["assignment", "student_id", "score", "max_score", "needs_manual_grade",
                         *tests, "flags", "problems"])
        for r in results:
            writer.writerow([assignment, r.student, r.score, r.max_score, r.manual_pending,
                             *(_cell(r, t) for t in tests), ";".join(sorted(r.flags)),
                             " | ".join(r.problems)])
    with (out / "scores_by_test.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", "score", "max_score", *tests])
        for r in results:
            writer.writerow([r.student, r.score, r.max_score, *(_cell(r, t) for t in tests)])


def format_report(assignment: str, results: list[StudentResult], seconds: float,
                  jobs: int = 1) -> str:
    """A plain-text table: student, score, time, flags, what needs a human, problems."""
    from autograder.sandbox import protections

    lines = [f"Autograded {assignment}: {len(results)} submissions in {seconds:.1f} s "
             f"({jobs} at a time)", "Sandbox: " + "; ".join(
                 f"{k}: {v}" for k, v in protections().items()), ""]
    lines.append(f"{'student':<24} {'score':>11} {'time':>7}  flags / notes")
    for r in results:
        notes = [f"[{word}] {'; '.join(reasons)[:300]}" for word, reasons in sorted(r.flags.items())
                 if word != "malformed"]
        notes += list(r.problems)
        if r.manual_pending:
            notes.append(f"{r.manual_pending} answer(s) to grade by hand")
        score = f"{r.score:g} / {r.max_score:g}"
        lines.append(f"{r.student:<24} {score:>11} {r.seconds:>6.1f}s  {' | '.join(notes)}")
    flagged = sorted(r.student for r in results if r.flags.get("tampering"))
    if flagged:
        lines += ["", f"Flagged for tampering (check by hand): {', '.join(flagged)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="e.g. ex01_overfitting")
    parser.add_argument("submissions", type=Path,
                        help="folder <student>/<assignment>/*.ipynb, or an LMS folder or .zip")
    parser.add_argument("--out", type=Path, required=True, help="the grading course directory")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="submissions graded at once (default: the number of cores)")
    parser.add_argument("--db-url", help="gradebook URL, e.g. postgresql://user@host/db "
                        "(default: sqlite in OUT)")
    parser.add_argument("--lms-regex", help="file-name pattern of an LMS download, with groups "
                        "student_id and file_id (nbgrader's zip-collect convention)")
    parser.add_argument("--force", action="store_true", help="regrade already graded submissions")
    parser.add_argument("--shard", default="1/1", help="K/N: grade only every N-th student, "
                        "starting with the K-th (one worker machine of N)")
    parser.add_argument("--cell-timeout", type=float, default=60.0)
    parser.add_argument("--call-timeout", type=float, default=60.0)
    parser.add_argument("--submission-timeout", type=float, default=600.0)
    parser.add_argument("--memory-mb", type=int, default=3072)
    args = parser.parse_args(argv)
    if not args.submissions.exists():
        parser.error(f"{args.submissions} does not exist")
    match = re.fullmatch(r"(\d+)/(\d+)", args.shard)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        parser.error("--shard must be K/N with 1 <= K <= N")
    limits = {"cell_seconds": args.cell_timeout, "call_seconds": args.call_timeout,
              "submission_seconds": args.submission_timeout,
              "memory_bytes": args.memory_mb << 20}
    grade(args.assignment, args.submissions.resolve(), args.out.resolve(), jobs=max(1, args.jobs),
          db_url=args.db_url, limits=limits, lms_regex=args.lms_regex, force=args.force,
          shard=(int(match.group(1)), int(match.group(2))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
