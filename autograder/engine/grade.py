"""Autograde a folder of submissions: sandboxed, verified outside the student's process, parallel.

Usage::

    python -m autograder.engine.grade ASSIGNMENT[,ASSIGNMENT...]|all SUBMISSIONS --out OUT
                               [--jobs N] [--db-url URL] [--allow-weaker-sandbox NAME[,NAME]|all]

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

A grader failure is never a student's score. Before anything else the sandbox's self-test
measures each protection; if one it promises is lost, the command refuses (exit status
``EXIT_REFUSED``, nothing written) unless ``--allow-weaker-sandbox`` names it, and then the
report says so on every student's line. A submission the grader failed on (its sandbox could
not start, or its worker raised) is "not graded": no gradebook score, no cached result (a
rerun retries it), shown so in grades.csv and report.txt; the command then ends with
``EXIT_NOT_GRADED``. Every string a submission controls (names, messages) is written escaped
(``autograder/engine/untrusted.py``) and the feedback HTML is sanitised.
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

from autograder.engine.untrusted import (
    csv_cell,
    safe_html,
    scrub_surrogates,
    terminal_text,
)

COURSE_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = COURSE_ROOT / "autograder"
STUDENT_SRC = COURSE_ROOT / "autograder" / "student" / "src"  # the student package's import root
MARKER = ".dropout-course-grading"
EXIT_REFUSED = 3  # the sandbox self-test found a protection lost: nothing was graded
EXIT_NOT_GRADED = 4  # the run completed, but the grader failed on some submissions
NOT_ENFORCED = "NOT ENFORCED"


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
    grader_error: str | None = None
    """Set when the grader failed on this submission: then it has no score (it is "not
    graded"), is neither recorded in the gradebook nor cached, and a rerun retries it."""


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


# --------------------------------------------------------------------------- sandbox self-test

class SandboxRefusedError(RuntimeError):
    """The sandbox self-test found protections lost that the instructor did not accept: the
    command grades and records nothing. ``str()`` is the message for the instructor."""


@dataclass(frozen=True)
class SandboxCheck:
    """What the sandbox's self-test measured on this machine, and what grading accepts."""

    measured: dict[str, str]
    """Protection -> how it is enforced here, or "NOT ENFORCED: why" (measured, not claimed,
    when ``self_tested``)."""
    weaker: tuple[str, ...] = ()
    """The protections not enforced here that ``--allow-weaker-sandbox`` accepted."""
    self_tested: bool = True
    """False on an engine whose sandbox has no self-test yet: ``measured`` holds its claims."""


def _protection_names() -> tuple[str, ...]:
    from autograder.engine import sandbox

    names = getattr(sandbox, "PROTECTIONS", None)
    return tuple(names) if names else tuple(sandbox.protections())


def allowed_weaker(spec: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The protection names that ``--allow-weaker-sandbox`` accepts: comma-separated names
    (or a sequence of them), ``all`` for every protection, None or empty for none. Raises
    ValueError for a name the sandbox does not know."""
    if not spec:
        return ()
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    known = _protection_names()
    if "all" in names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown sandbox protection(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known)} (or all)")
    return tuple(dict.fromkeys(names))


def _limits(limits: dict[str, Any] | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The sandbox limits as keyword arguments of ``Limits``, with the accepted weaker
    protections when this sandbox's ``Limits`` takes them."""
    from autograder.engine.sandbox import Limits

    out = dict(limits or {})
    if "allow_weaker" in getattr(Limits, "__dataclass_fields__", {}):
        out["allow_weaker"] = tuple(allowed)
    return out


def check_sandbox(limits: dict[str, Any], allowed: tuple[str, ...]) -> SandboxCheck:
    """Run the sandbox's self-test with ``limits`` (``Limits`` keyword arguments); raise
    :class:`SandboxRefusedError` if a protection is lost that ``allowed`` does not name."""
    from autograder.engine import sandbox

    messages: list[str] = []
    if hasattr(sandbox, "self_test"):
        test = sandbox.self_test(sandbox.Limits(**limits))
        measured = {str(k): str(v) for k, v in test.measured.items()}
        lost = [str(name) for name in test.lost(allowed)]
        messages = [str(m) for m in getattr(test, "messages", [])][:5]
        self_tested = True
    else:  # an engine without the self-test: judge its claims the same way
        measured = dict(sandbox.protections())
        lost = [k for k, v in measured.items() if v.startswith(NOT_ENFORCED) and k not in allowed]
        self_tested = False
    if lost:
        shown = "\n".join([*(f"  {terminal_text(name)}: {terminal_text(measured[name])}"
                             if name in measured else f"  {terminal_text(name)}"
                             for name in lost),
                           *(f"  (sandbox: {terminal_text(m)})" for m in messages)])
        names = ",".join(name for name in lost if name in measured) or "all"
        raise SandboxRefusedError(
            "refusing to grade: the sandbox self-test found protection(s) lost on this "
            f"machine:\n{shown}\n"
            "Nothing was graded or recorded. Fix the machine (README: \"How a submission is "
            "graded, and what the sandbox enforces\"; e.g. run as root on Linux with cgroups), "
            f"or accept grading without them: --allow-weaker-sandbox {names}")
    weaker = tuple(k for k, v in measured.items() if v.startswith(NOT_ENFORCED))
    return SandboxCheck(measured, weaker, self_tested)


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
    """The feedback page of a notebook whose cells and outputs a student controls.

    Two layers, because the student writes markdown and nbconvert renders it: the
    ``SanitizeStudentContent`` preprocessor shows a markdown cell that holds HTML as text and
    keeps only inert outputs; nbconvert's ``sanitize_html`` mode then passes every rendered
    markdown cell and HTML output through ``clean_html``, which is replaced by
    :func:`~autograder.engine.untrusted.safe_html` (nbconvert's own allows too little markup
    to show ordinary markdown, and nothing of the page template's own scripts is touched).
    Lone surrogates are escaped, so the page always encodes as UTF-8.
    """
    import nbformat
    from nbconvert import HTMLExporter

    from autograder.engine.feedback import SanitizeStudentContent

    exporter = _WORKER.get("exporter")
    if exporter is None:
        exporter = HTMLExporter(template_name="feedback", extra_template_basedirs=[
            str(Path(__file__).resolve().parent / "templates")], sanitize_html=True,
            filters={"clean_html": safe_html})
        exporter.register_preprocessor(SanitizeStudentContent(), enabled=True)
        _WORKER["exporter"] = exporter
    body, _ = exporter.from_notebook_node(nbformat.from_dict(nb_json))
    return scrub_surrogates(body)


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
    flags: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (flag word, reasons) from the intake


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_path(out: Path, assignment: str, student: str) -> Path:
    return out / "results" / assignment / f"{student}.json"


# How earlier versions recorded a grader failure as a 0 (a worker that raised; an exception
# inside grade_submission): such cached results are regraded, not kept.
_LEGACY_GRADER_ERRORS = ("grading failed: ", "grading stopped: ")


def _cached(out: Path, task: Task) -> StudentResult | None:
    try:
        data = json.loads(_result_path(out, task.assignment, task.student).read_text("utf-8"))
        result = StudentResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    if result.grader_error is not None or any(p.startswith(_LEGACY_GRADER_ERRORS)
                                              for p in result.problems):
        return None  # a grader failure must not stand as a grade: grade it again
    return result if result.digest == task.digest else None


def _save(out: Path, result: StudentResult) -> None:
    path = _result_path(out, result.assignment, result.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # ASCII JSON: a lone surrogate a submission smuggled into a message is written as \udcxx.
    tmp.write_text(json.dumps(asdict(result), ensure_ascii=True), "utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a file


def _merge_flags(result: StudentResult, flags: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    for word, reasons in flags:
        have = result.flags.setdefault(word, [])
        have += [r for r in reasons if r not in have]


def _not_graded(task: Task, error: str, seconds: float = 0.0,
                problems: list[str] | None = None) -> StudentResult:
    """The result of a submission the grader failed on: no score, the error said."""
    result = StudentResult(task.student, assignment=task.assignment, seconds=seconds,
                           digest=task.digest, grader_error=error)
    said = [p for p in problems or [] if p.startswith("not graded (grader error")]
    result.problems = [*task.notes, *(problems or [])]
    if not said:
        result.problems.append(f"not graded (grader error: {error})")
    _merge_flags(result, task.flags)
    return result


def _from_outcome(task: Task, data: dict[str, Any]) -> StudentResult:
    if data.get("grader_error"):
        return _not_graded(task, str(data["grader_error"]), float(data.get("seconds", 0.0)),
                           list(data.get("problems", [])))
    result = StudentResult(task.student, assignment=task.assignment,
                           seconds=float(data["seconds"]), digest=task.digest)
    result.problems = [*task.notes, *data["problems"]]
    result.flags = data["flags"]
    result.per_test = dict(data["scores"])
    _merge_flags(result, task.flags)
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
                raw, assignment=assignment,
                problems=[*intake.notes.get(raw, []), *(f"{p}: not graded" for p in problems)],
                flags={"malformed": list(problems)})
            _merge_flags(failed[(assignment, raw)], _flag_items(intake.flags.get(raw, {})))
        for i, student in enumerate(sorted(intake.notebooks)):
            if i % count == index - 1:
                path = intake.notebooks[student]
                tasks.append(Task(assignment, student, path, _digest(path),
                                  tuple(intake.notes.get(student, [])),
                                  _flag_items(intake.flags.get(student, {}))))
    return tasks, failed


def _flag_items(flags: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((word, tuple(reasons)) for word, reasons in sorted(flags.items()))


def grade(assignments: str | list[str], submissions: Path, out: Path, quiet: bool = False,
          jobs: int | None = None, db_url: str | None = None, limits: dict[str, Any] | None = None,
          lms_regex: str | None = None, force: bool = False, shard: tuple[int, int] = (1, 1),
          allow_weaker: str | tuple[str, ...] | list[str] | None = None
          ) -> list[StudentResult]:
    """Autograde every submission of each of ``assignments`` (one name or a list); write the
    gradebook, grades, feedback and the report into ``out``. Returns one result per
    (assignment, student), in the order of ``assignments``, then by student.

    First the sandbox's self-test runs: a protection lost that ``allow_weaker`` (names, a
    comma-separated string, or ``all``) does not accept raises :class:`SandboxRefusedError`
    before anything is written. A result whose ``grader_error`` is set was not graded: it is
    neither in the gradebook nor cached, and the next run grades it again.
    """
    started = time.perf_counter()
    skip_iri_grammar()
    names = [assignments] if isinstance(assignments, str) else list(dict.fromkeys(assignments))
    for name in names:
        _source(name)
    allowed = allowed_weaker(allow_weaker)
    sandbox_limits = _limits(limits, allowed)
    sandbox = check_sandbox(sandbox_limits, allowed)
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
        # imported while the workers load, like the rest
        from nbgrader.api import Gradebook

        from autograder.engine.intake import STUDENT_ID

        prepare_course(out, names, db_url)
        for name in sandbox.weaker:
            print(f"WARNING: sandbox protection {terminal_text(name)}: "
                  f"{terminal_text(sandbox.measured[name])} (accepted with "
                  "--allow-weaker-sandbox)", file=sys.stderr)
        with Gradebook(db_url or default_db_url(out)) as gb:
            for result in done.values():
                record(gb, result)
            results |= done
            if pool is not None:
                _run_pool(pool, fresh, out, results, gb, sandbox_limits, quiet, names)
            graded = {(t.assignment, t.student) for t in tasks}
            for key, result in results.items():
                if key in graded and result.grader_error is None:
                    _fill_totals(gb, result)
                elif key in graded or STUDENT_ID.fullmatch(result.student):
                    result.max_score = float(gb.find_assignment(result.assignment).max_score)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    rank = {a: i for i, a in enumerate(names)}
    ordered = [results[k] for k in sorted(results, key=lambda k: (rank[k[0]], k[1]))]
    write_csvs(out, ordered)
    report = format_report(names, ordered, time.perf_counter() - started, jobs, sandbox)
    (out / "report.txt").write_text(report, encoding="utf-8")
    if not quiet:
        print(report)
    failures = [r for r in ordered if r.grader_error is not None]
    if failures:
        print(not_graded_message(failures), file=sys.stderr)
    shutil.rmtree(out / ".scratch", ignore_errors=True)
    return ordered


def not_graded_message(failures: list[StudentResult]) -> str:
    """What the command says at the end when the grader failed on ``failures``."""
    shown = ", ".join(terminal_text(f"{r.assignment}/{r.student}") for r in failures[:10])
    more = f" and {len(failures) - 10} more" if len(failures) > 10 else ""
    return (f"ERROR: {len(failures)} submission(s) not graded because of a grader error "
            f"({shown}{more}): no score was recorded for them. Rerun the same command to "
            "retry only those (the others are kept); see report.txt for each error.")


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
            result = _not_graded(task, f"{type(err).__name__}: {err}"[:300])
        results[(task.assignment, task.student)] = result
        label = terminal_text(task.student if len(names) == 1
                              else f"{task.assignment}/{task.student}")
        bar.update(1)
        bar.set_postfix_str(label)
        if result.grader_error is None:
            record(gb, result)
            _save(out, result)
            said = f"graded {label} in {result.seconds:.1f} s"
        else:
            said = f"NOT GRADED {label}: grader error: {terminal_text(result.grader_error)}"
        if not quiet:
            bar.write(said, file=sys.stdout)
    bar.close()


def _status(r: StudentResult) -> str:
    if r.grader_error is not None:
        return "not graded"
    return "not submitted" if r.problems == ["not submitted"] else "graded"


def _cell(r: StudentResult, test: str) -> float | str:
    return "" if r.per_test.get(test) is None else float(r.per_test[test])


def _score(r: StudentResult) -> float | str:
    return "" if r.grader_error is not None else r.score


def write_csvs(out: Path, results: list[StudentResult]) -> None:
    """grades.csv (totals, status, per-test scores, flags, problems) and scores_by_test.csv,
    one row per (assignment, student); a test column is blank in another assignment's rows.

    Every text cell goes through :func:`~autograder.engine.untrusted.csv_cell` (escaped, never
    a formula); numbers stay numbers. A submission not graded has a blank score and the
    status "not graded"."""
    tests = sorted({name for r in results for name in r.per_test})
    with (out / "grades.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(h) for h in (
            "assignment", "student_id", "score", "max_score", "status", "needs_manual_grade",
            *tests, "flags", "problems")])
        for r in results:
            writer.writerow([csv_cell(v) for v in (
                r.assignment, r.student, _score(r), r.max_score, _status(r), r.manual_pending,
                *(_cell(r, t) for t in tests), ";".join(sorted(r.flags)),
                " | ".join(r.problems))])
    with (out / "scores_by_test.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(h) for h in ("assignment", "student", "score", "max_score",
                                               *tests)])
        for r in results:
            writer.writerow([csv_cell(v) for v in (r.assignment, r.student, _score(r),
                                                   r.max_score, *(_cell(r, t) for t in tests))])


def format_report(assignments: list[str], results: list[StudentResult], seconds: float,
                  jobs: int = 1, sandbox: SandboxCheck | None = None) -> str:
    """A plain-text table per assignment: student, score, time, flags, what needs a human,
    problems; then everyone flagged for tampering and everyone not graded.

    The header gives the sandbox's protections as ``sandbox`` measured them; when some were
    not enforced (accepted with ``--allow-weaker-sandbox``) the header says so and so does
    every student's line. Every string a submission controls is shown with
    :func:`~autograder.engine.untrusted.terminal_text`: one line per student, no control
    character reaches the file or the terminal."""
    t = terminal_text
    lines = [(f"Autograded {t(', '.join(assignments))}: {len(results)} submissions in "
              f"{seconds:.1f} s ({jobs} at a time)")]
    weaker_note = ""
    if sandbox is not None:
        how = "measured by its self-test" if sandbox.self_tested else "claimed (no self-test)"
        lines += [f"Sandbox ({how}):",
                  *(f"  {t(k)}: {t(v)}" for k, v in sandbox.measured.items())]
        if sandbox.weaker:
            weak = ", ".join(t(k) for k in sandbox.weaker)
            lines.append(f"WARNING: graded with a weaker sandbox: {weak} NOT ENFORCED "
                         "(accepted with --allow-weaker-sandbox)")
            weaker_note = f"[sandbox: {weak} not enforced]"
    for assignment in assignments:
        lines += ["", *([f"{t(assignment)}:"] if len(assignments) > 1 else []),
                  f"{'student':<24} {'score':>11} {'time':>7}  flags / notes"]
        for r in (r for r in results if r.assignment == assignment):
            notes = [weaker_note] if weaker_note else []
            notes += [f"[{t(word)}] {t('; '.join(reasons)[:300])}"
                      for word, reasons in sorted(r.flags.items()) if word != "malformed"]
            notes += [t(p) for p in r.problems]
            if r.manual_pending:
                notes.append(f"{r.manual_pending} answer(s) to grade by hand")
            score = "not graded" if r.grader_error is not None else \
                f"{r.score:g} / {r.max_score:g}"
            lines.append(f"{t(r.student):<24} {score:>11} {r.seconds:>6.1f}s  {' | '.join(notes)}")
    flagged = sorted({t(r.student) if len(assignments) == 1 else f"{t(r.student)} "
                      f"({t(r.assignment)})" for r in results if r.flags.get("tampering")})
    if flagged:
        lines += ["", f"Flagged for tampering (check by hand): {', '.join(flagged)}"]
    failures = [r for r in results if r.grader_error is not None]
    if failures:
        lines += ["", f"Not graded because of a grader error ({len(failures)}; no score "
                  "recorded, a rerun retries only these): " + ", ".join(
                      t(r.student) if len(assignments) == 1 else f"{t(r.student)} "
                      f"({t(r.assignment)})" for r in failures)]
    return "\n".join(lines) + "\n"


def assignment_names(spec: str) -> list[str]:
    """The assignments a command-line argument names: comma-separated, or 'all' for every
    source notebook in solutions/ (in name order)."""
    if spec == "all":
        return sorted(p.parent.name for p in (COURSE_ROOT / "solutions").glob("*/*.ipynb")
                      if p.stem == p.parent.name)
    return [name for name in spec.split(",") if name]


def main(argv: list[str] | None = None) -> int:
    """The command line. Exit status: 0 when every submission was graded; ``EXIT_REFUSED``
    when the sandbox self-test refused (nothing graded or written); ``EXIT_NOT_GRADED`` when
    the run completed but the grader failed on some submissions (a rerun retries them)."""
    for stream in (sys.stdout, sys.stderr):
        # A terminal or pipe that cannot show some character must never stop the run.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
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
                        "student_id and file_id, optionally timestamp (nbgrader's zip-collect "
                        "convention; default: Blackboard's <assignment>_<id>_attempt_"
                        "<YYYY-MM-DD-HH-MM-SS>_<file>). Only file_id is the student's: anchor "
                        "the rest to what the LMS writes (no greedy .*), or one student's file "
                        "name can claim another's submission")
    parser.add_argument("--force", action="store_true", help="regrade already graded submissions")
    parser.add_argument("--shard", default="1/1", help="K/N: grade only every N-th student, "
                        "starting with the K-th (one worker machine of N)")
    parser.add_argument("--allow-weaker-sandbox", default="", metavar="NAME[,NAME]|all",
                        help="grade even though the sandbox self-test finds these protections "
                        "lost (the report then says so on every line); default: refuse")
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
    try:
        allowed_weaker(args.allow_weaker_sandbox)
    except ValueError as err:
        parser.error(f"--allow-weaker-sandbox: {err}")
    limits = {"cell_seconds": args.cell_timeout, "call_seconds": args.call_timeout,
              "submission_seconds": args.submission_timeout,
              "memory_bytes": args.memory_mb << 20}
    try:
        results = grade(assignment_names(args.assignments), args.submissions.resolve(),
                        args.out.resolve(), jobs=max(1, args.jobs), db_url=args.db_url,
                        limits=limits, lms_regex=args.lms_regex, force=args.force,
                        shard=(int(match.group(1)), int(match.group(2))),
                        allow_weaker=args.allow_weaker_sandbox)
    except SandboxRefusedError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_NOT_GRADED if any(r.grader_error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
