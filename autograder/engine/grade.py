"""Autograde a folder of submissions: sandboxed, verified outside the student's process, parallel.

Usage::

    python -m autograder.engine.grade ASSIGNMENT[,ASSIGNMENT...]|all SUBMISSIONS --out OUT
                               [--jobs N] [--db-url URL]

``SUBMISSIONS`` is nbgrader's layout (``<student>/<ASSIGNMENT>/*.ipynb``), or, for one
assignment, a folder or ``.zip`` of files downloaded from an LMS, named per nbgrader's
zip-collect conventions (``--lms-regex``). Several assignments (or ``all``) are graded in one
run by one pool of workers: a student's full submission is graded at once, and one gradebook
holds every assignment. Each submission's code runs in an operating-system sandbox
(``autograder/engine/sandbox.py``); its tests, hidden ones included, run in a trusted worker process
that calls the student's functions in the sandbox and judges the plain data that comes back
(``autograder/engine/verify.py``). ``OUT`` becomes an nbgrader course directory holding the
gradebook (sqlite by default, or ``--db-url``), ``autograded/`` and
``feedback/<student>/<ASSIGNMENT>/*.html``,
``grades.csv`` (one row per assignment and student: totals and one column per graded cell,
flags and problems), ``scores_by_test.csv`` and ``report.txt``. Running it again resumes: a
submission already graded (same file) is not graded twice; ``--force`` regrades all.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

COURSE_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = COURSE_ROOT / "autograder"
STUDENT_SRC = COURSE_ROOT / "autograder" / "student" / "src"  # the student package's import root
MARKER = ".dropout-course-grading"


@dataclass
class StudentResult:
    """What grading one student's submission produced."""

    student: str
    assignment: str = ""
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
    # on PATH even when this runs as `.venv/bin/python -m autograder.engine.grade`.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(COURSE_ROOT), str(STUDENT_SRC),
                                         env.get("PYTHONPATH", "")])
    return env


def run_nbgrader(args: list[str], course: Path) -> subprocess.CompletedProcess[str]:
    """Run one nbgrader command against the course directory ``course``."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]
    return subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                          check=False)


def require_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def default_db_url(out: Path) -> str:
    return f"sqlite:///{out / 'gradebook.db'}"


def claim_folder(out: Path) -> None:
    """Create ``out`` (or reuse one this command made, so an interrupted run resumes); a folder
    this command did not make is never touched."""
    if out.exists() and not (out / MARKER).exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and was not made by this command: not touching it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by python -m autograder.engine.grade; safe to delete\n")


def _source(assignment: str) -> Path:
    source = COURSE_ROOT / "solutions" / assignment / f"{assignment}.ipynb"
    if not source.is_file():
        raise SystemExit(f"no source notebook solutions/{assignment}/{assignment}.ipynb")
    return source


def nbgrader_api(out: Path, db_url: str | None = None) -> Any:
    """nbgrader's own API on the course directory ``out``, with the course's configuration."""
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(CONFIG_DIR)).load_config()
    config.CourseDirectory.root = str(out)
    if db_url:
        config.CourseDirectory.db_url = db_url
        # nbgrader's default course id '' breaks PostgreSQL's foreign keys (its assignments
        # belong to "default_course"); sqlite does not check them.
        config.CourseDirectory.course_id = "default_course"
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def prepare_course(out: Path, assignments: str | list[str], db_url: str | None = None) -> None:
    """Make ``out`` a course directory with every one of ``assignments`` released into its
    gradebook: ``nbgrader generate_assignment --force`` each, through nbgrader's API in this
    process (one import of nbgrader for all of them, not one command each).

    A folder this command did not create is never touched; one it created is reused, so that an
    interrupted run resumes.
    """
    names = [assignments] if isinstance(assignments, str) else list(assignments)
    sources = {a: _source(a) for a in names}
    claim_folder(out)
    for assignment, source in sources.items():
        target = out / "solutions" / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source.parent, target)
    api = nbgrader_api(out, db_url)
    for assignment in names:
        outcome = api.generate_assignment(assignment, force=True)
        if not outcome["success"]:
            raise RuntimeError(f"generate_assignment {assignment} failed:\n"
                               f"{(outcome.get('error') or outcome.get('log') or '')[-4000:]}")


def skip_iri_grammar() -> None:
    """Make jsonschema (imported by nbformat) skip its optional ``iri`` format checker.

    When ``rfc3987_syntax`` is installed, importing jsonschema compiles its IRI grammar: about
    0.9 s of CPU in every grading process. No schema used here checks that string format
    (nbformat's and nbgrader's have none), and jsonschema leaves the checker out when the
    module cannot be imported, which ``None`` in ``sys.modules`` makes it. Without effect once
    jsonschema is loaded.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(slots: Any) -> None:
    """Take a sandbox slot and load everything grading needs, so that the first submission
    does not wait for imports (this runs while the parent prepares the course)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["slot"] = slots.get()
    atexit.register(_exit_now)
    skip_iri_grammar()
    import torch

    importlib.import_module("autograder.engine.remote")  # imported now, used by _grade_one
    importlib.import_module("autograder.engine.verify")
    torch.set_num_threads(1)
    _html({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _exit_now() -> None:
    """A worker's last act once the pool shuts it down: every result has been sent and every
    file written and closed, so skip the interpreter's teardown of torch (about a second)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _grade_one(student: str, notebook: str, assignment: str, out: str,
               limits: dict[str, Any]) -> dict[str, Any]:
    """Worker: grade one submission, write its autograded notebook and feedback HTML."""
    from autograder.engine.sandbox import Limits
    from autograder.engine.verify import Plan, feedback_notebook, grade_submission

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


def start_workers(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` grading processes (spawned, not forked: the parent holds a gradebook
    connection and threads), each with its own sandbox slot. They start loading at once."""
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                               initializer=_init_worker, initargs=(slots,))
    pool.submit(int)  # the executor spawns its processes on the first task
    return pool


# --------------------------------------------------------------------------- gradebook

def record(gb: Any, result: StudentResult) -> None:
    """Write one student's scores for ``result.assignment`` into the nbgrader gradebook
    (idempotent)."""
    from nbgrader.api import MissingEntry

    gb.update_or_create_student(result.student)
    try:
        gb.find_submission(result.assignment, result.student)
    except MissingEntry:
        with warnings.catch_warnings():
            # nbgrader 0.9's add_submission autoflushes before it adds the new rows, and
            # SQLAlchemy 2 warns "not in session"; the rows are then added and committed.
            warnings.filterwarnings("ignore", message=".*not in session", module="nbgrader")
            gb.add_submission(result.assignment, result.student)
    notebook = gb.find_submission_notebook(result.assignment, result.assignment, result.student)
    for grade in notebook.grades:
        score = result.per_test.get(grade.name, 0.0)
        grade.auto_score = score
        grade.needs_manual_grade = score is None
    notebook.flagged = bool(result.flags.get("tampering"))
    gb.db.commit()


def _fill_totals(gb: Any, result: StudentResult) -> None:
    result.max_score = float(gb.find_assignment(result.assignment).max_score)
    auto = [v for v in result.per_test.values() if v is not None]
    result.score = float(sum(auto))
    result.manual_pending = sum(v is None for v in result.per_test.values())


# --------------------------------------------------------------------------- the command

@dataclass(frozen=True)
class Task:
    """One submission to grade: a student's notebook for one assignment."""

    assignment: str
    student: str
    notebook: Path
    digest: str
    notes: tuple[str, ...] = ()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_path(out: Path, assignment: str, student: str) -> Path:
    return out / "results" / assignment / f"{student}.json"


def _cached(out: Path, task: Task) -> StudentResult | None:
    try:
        data = json.loads(_result_path(out, task.assignment, task.student).read_text("utf-8"))
        result = StudentResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    return result if result.digest == task.digest else None


def _save(out: Path, result: StudentResult) -> None:
    path = _result_path(out, result.assignment, result.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(result)), "utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a file


def _from_outcome(task: Task, data: dict[str, Any]) -> StudentResult:
    result = StudentResult(task.student, assignment=task.assignment,
                           seconds=float(data["seconds"]), digest=task.digest)
    result.problems = [*task.notes, *data["problems"]]
    result.flags = data["flags"]
    result.per_test = dict(data["scores"])
    return result


def _order(tasks: list[Task]) -> list[Task]:
    """Bigger assignments first (their source notebook's size stands for their grading time),
    so that the last submissions to finish are short ones and no worker idles long."""
    size = {a: _source(a).stat().st_size for a in {t.assignment for t in tasks}}
    return sorted(tasks, key=lambda t: (-size[t.assignment], t.assignment, t.student))


def _not_submitted(folder: Path, assignment: str, others: list[str]) -> bool:
    """Whether a student's folder holds other assignments of this run but not ``assignment``:
    nothing was handed in for it (not a broken submission)."""
    return (folder.is_dir() and not (folder / assignment).exists()
            and any((folder / other).is_dir() for other in others))


def collect(assignments: list[str], submissions: Path, out: Path, lms_regex: str | None,
            shard: tuple[int, int]) -> tuple[list[Task], dict[tuple[str, str], StudentResult]]:
    """Stage every assignment's submissions; return the submissions to grade (this shard's)
    and a result for each one that cannot be graded."""
    from autograder.engine.intake import gather, is_lms_download

    if len(assignments) > 1 and is_lms_download(submissions, lms_regex):
        raise SystemExit("an LMS download holds one assignment's files: grade it with one "
                         "assignment name")
    tasks: list[Task] = []
    failed: dict[tuple[str, str], StudentResult] = {}
    index, count = shard
    for assignment in assignments:
        intake = gather(submissions, assignment, out / "submitted", lms_regex)
        others = [a for a in assignments if a != assignment]
        for raw, problems in intake.problems.items():
            if _not_submitted(submissions / raw, assignment, others):
                failed[(assignment, raw)] = StudentResult(raw, assignment=assignment,
                                                          problems=["not submitted"])
                continue
            failed[(assignment, raw)] = StudentResult(
                raw, assignment=assignment, problems=[f"{p}: not graded" for p in problems],
                flags={"malformed": list(problems)})
        for i, student in enumerate(sorted(intake.notebooks)):
            if i % count == index - 1:
                path = intake.notebooks[student]
                tasks.append(Task(assignment, student, path, _digest(path),
                                  tuple(intake.notes.get(student, []))))
    return tasks, failed


def grade(assignments: str | list[str], submissions: Path, out: Path, quiet: bool = False,
          jobs: int | None = None, db_url: str | None = None, limits: dict[str, Any] | None = None,
          lms_regex: str | None = None, force: bool = False, shard: tuple[int, int] = (1, 1)
          ) -> list[StudentResult]:
    """Autograde every submission of each of ``assignments`` (one name or a list); write the
    gradebook, grades, feedback and the report into ``out``. Returns one result per
    (assignment, student), in the order of ``assignments``, then by student."""
    started = time.perf_counter()
    skip_iri_grammar()
    names = [assignments] if isinstance(assignments, str) else list(dict.fromkeys(assignments))
    for name in names:
        _source(name)
    os.environ["PATH"] = nbgrader_env()["PATH"]  # nbgrader's gradebook runs `alembic`
    jobs = jobs or os.cpu_count() or 1
    claim_folder(out)
    tasks, results = collect(names, submissions, out, lms_regex, shard)
    done = {}
    for task in tasks:
        cached = None if force else _cached(out, task)
        if cached is not None:
            done[(task.assignment, task.student)] = cached
    fresh = _order([t for t in tasks if (t.assignment, t.student) not in done])
    pool = start_workers(min(jobs, len(fresh))) if fresh else None
    try:
        from nbgrader.api import Gradebook  # imported while the workers load, like the rest

        from autograder.engine.intake import STUDENT_ID
        from autograder.engine.sandbox import unenforced

        prepare_course(out, names, db_url)
        for warning in unenforced():
            print(f"WARNING: sandbox protection {warning}", file=sys.stderr)
        with Gradebook(db_url or default_db_url(out)) as gb:
            for result in done.values():
                record(gb, result)
            results |= done
            if pool is not None:
                _run_pool(pool, fresh, out, results, gb, limits or {}, quiet, names)
            graded = {(t.assignment, t.student) for t in tasks}
            for key, result in results.items():
                if key in graded:
                    _fill_totals(gb, result)
                elif STUDENT_ID.fullmatch(result.student):
                    result.max_score = float(gb.find_assignment(result.assignment).max_score)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    rank = {a: i for i, a in enumerate(names)}
    ordered = [results[k] for k in sorted(results, key=lambda k: (rank[k[0]], k[1]))]
    write_csvs(out, ordered)
    report = format_report(names, ordered, time.perf_counter() - started, jobs)
    (out / "report.txt").write_text(report, encoding="utf-8")
    if not quiet:
        print(report)
    shutil.rmtree(out / ".scratch", ignore_errors=True)
    return ordered


def _run_pool(pool: ProcessPoolExecutor, fresh: list[Task], out: Path,
              results: dict[tuple[str, str], StudentResult], gb: Any, limits: dict[str, Any],
              quiet: bool, names: list[str]) -> None:
    what = names[0] if len(names) == 1 else f"{len(names)} assignments"
    bar = tqdm(total=len(fresh), desc=f"grading {what}", unit="submission",
               disable=quiet, file=sys.stderr, dynamic_ncols=True)
    futures = {pool.submit(_grade_one, t.student, str(t.notebook), t.assignment, str(out),
                           limits): t for t in fresh}
    for future in as_completed(futures):
        task = futures[future]
        try:
            result = _from_outcome(task, future.result())
        except Exception as err:
            result = StudentResult(task.student, assignment=task.assignment,
                                   problems=[f"grading failed: {err}"[:300]],
                                   flags={"crash": [str(err)[:300]]}, digest=task.digest)
        results[(task.assignment, task.student)] = result
        record(gb, result)
        _save(out, result)
        label = task.student if len(names) == 1 else f"{task.assignment}/{task.student}"
        bar.update(1)
        bar.set_postfix_str(label)
        if not quiet:
            bar.write(f"graded {label} in {result.seconds:.1f} s", file=sys.stdout)
    bar.close()


def _cell(r: StudentResult, test: str) -> float | str:
    return "" if r.per_test.get(test) is None else float(r.per_test[test])


def write_csvs(out: Path, results: list[StudentResult]) -> None:
    """grades.csv (totals, per-test scores, flags, problems) and scores_by_test.csv, one row
    per (assignment, student); a test column is blank in another assignment's rows."""
    tests = sorted({name for r in results for name in r.per_test})
    with (out / "grades.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["assignment", "student_id", "score", "max_score", "needs_manual_grade",
                         *tests, "flags", "problems"])
        for r in results:
            writer.writerow([r.assignment, r.student, r.score, r.max_score, r.manual_pending,
                             *(_cell(r, t) for t in tests), ";".join(sorted(r.flags)),
                             " | ".join(r.problems)])
    with (out / "scores_by_test.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["assignment", "student", "score", "max_score", *tests])
        for r in results:
            writer.writerow([r.assignment, r.student, r.score, r.max_score,
                             *(_cell(r, t) for t in tests)])


def format_report(assignments: list[str], results: list[StudentResult], seconds: float,
                  jobs: int = 1) -> str:
    """A plain-text table per assignment: student, score, time, flags, what needs a human,
    problems; then everyone flagged for tampering."""
    from autograder.engine.sandbox import protections

    lines = [f"Autograded {', '.join(assignments)}: {len(results)} submissions in "
             f"{seconds:.1f} s ({jobs} at a time)", "Sandbox: " + "; ".join(
                 f"{k}: {v}" for k, v in protections().items())]
    for assignment in assignments:
        lines += ["", *([f"{assignment}:"] if len(assignments) > 1 else []),
                  f"{'student':<24} {'score':>11} {'time':>7}  flags / notes"]
        for r in (r for r in results if r.assignment == assignment):
            notes = [f"[{word}] {'; '.join(reasons)[:300]}"
                     for word, reasons in sorted(r.flags.items()) if word != "malformed"]
            notes += list(r.problems)
            if r.manual_pending:
                notes.append(f"{r.manual_pending} answer(s) to grade by hand")
            score = f"{r.score:g} / {r.max_score:g}"
            lines.append(f"{r.student:<24} {score:>11} {r.seconds:>6.1f}s  {' | '.join(notes)}")
    flagged = sorted({r.student if len(assignments) == 1 else f"{r.student} ({r.assignment})"
                      for r in results if r.flags.get("tampering")})
    if flagged:
        lines += ["", f"Flagged for tampering (check by hand): {', '.join(flagged)}"]
    return "\n".join(lines) + "\n"


def assignment_names(spec: str) -> list[str]:
    """The assignments a command-line argument names: comma-separated, or 'all' for every
    source notebook in solutions/ (in name order)."""
    if spec == "all":
        return sorted(p.parent.name for p in (COURSE_ROOT / "solutions").glob("*/*.ipynb")
                      if p.stem == p.parent.name)
    return [name for name in spec.split(",") if name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", help="an assignment (e.g. ex01_overfitting), several "
                        "separated by commas, or 'all': every assignment in solutions/")
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
    grade(assignment_names(args.assignments), args.submissions.resolve(), args.out.resolve(),
          jobs=max(1, args.jobs), db_url=args.db_url, limits=limits, lms_regex=args.lms_regex,
          force=args.force, shard=(int(match.group(1)), int(match.group(2))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
