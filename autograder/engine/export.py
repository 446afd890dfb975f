"""Grades out of the course's nbgrader gradebook: LMS import files and Gradescope results.

Usage::

    python -m autograder.engine.export merge [--course DIR] [--db-url URL] [--include-pending]
    python -m autograder.engine.export lms --format canvas|moodle
                      [--id-column id|email|lms_user_id] [--out FILE|-] [--include-pending]
                      [--course DIR] [--db-url URL]
    python -m autograder.engine.export gradescope [--out DIR] [--course DIR] [--db-url URL]

Everything is read from the gradebook through nbgrader's own API (:class:`nbgrader.api.Gradebook`),
sqlite (``DIR/gradebook.db``, the default) or any other URL nbgrader accepts (PostgreSQL: the
course id is then ``default_course``). The scores are nbgrader's: a cell's score is
``Grade.score`` (the manual score once a grader set one, else the automatic one, plus extra
credit); a submission's late penalty is ``SubmittedNotebook.late_submission_penalty`` summed over
its notebooks; its points are ``max(0, score - penalty)``, as ``nbgrader export`` computes them;
a submission is *pending* while any of its grades has ``needs_manual_grade``.

``merge`` rebuilds the class outputs (``grades.csv``, ``scores_by_test.csv``, ``report.txt``,
through ``grade.write_class_outputs``) and then writes the default exports:
``DIR/exports/canvas.csv``, ``DIR/exports/moodle.csv`` and ``DIR/exports/gradescope/``.

LMS CSV (:func:`lms_rows`, :func:`write_lms`): one row per student of the gradebook, one column
per assignment holding the final points. A submission still waiting for hand grading is left
blank (an LMS does not import a blank cell, so nothing is overwritten) and listed in a warning on
stderr, unless ``include_pending``; a missing submission is blank too. Every text cell goes
through :func:`~autograder.engine.untrusted.csv_cell` (no formula, no control character).

* Canvas: the layout of the Canvas gradebook's own export, which is what its import reads
  ("Student, ID, SIS User ID, SIS Login ID, Section, <assignment columns>" and a second row
  "Points Possible" that the import skips). Canvas matches a row by ``ID`` (Canvas user id) or
  by ``SIS User ID`` / ``SIS Login ID``; the chosen id goes into one of them: ``lms_user_id``
  into ``ID``, ``id`` (nbgrader's student id) into ``SIS User ID``, ``email`` into
  ``SIS Login ID``; the others are left blank so that Canvas matches on the one chosen.
  Documented in Canvas's instructor guide "How do I import grades in the Gradebook?" and
  summarised with the required columns (student name or ID or SIS User ID, SIS Login ID,
  Section, assignment name) at
  https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/import-csv-file-carmen-grades
  ; notes on the export's columns (read-only columns, points):
  https://ts.vcu.edu/askit/teaching-and-learning/canvas/faculty/grading-faculty/gradebook-action-menu-faculty/
* Moodle: "Grade import" (CSV): a header row, then one row per user; at import the teacher
  maps one column to a user field ("Map from" a column, "Map to" ``useridnumber``,
  ``useremail`` or ``userid``) and each other column to a grade item. The identifier column is
  ``ID number`` (nbgrader's student id, to map to ``useridnumber``), ``Email address``
  (``useremail``) or ``User ID`` (``lms_user_id``, to map to ``userid``); then one column per
  assignment. https://docs.moodle.org/311/en/Grade_import (and
  https://docs.moodle.org/27/en/Grade_import).

Gradescope (:func:`gradescope_results`, :func:`write_gradescope`): one ``results.json`` per
submission, ``OUT/<assignment>/<student>/results.json``, in the autograder results format of
https://gradescope-autograders.readthedocs.io/en/latest/specs/ : top level ``score``,
``execution_time``, ``output``, ``visibility``, ``stdout_visibility``, ``extra_data`` and
``tests``, one test per graded cell with ``name``, ``number``, ``score``, ``max_score``,
``output``, ``output_format`` (``"text"``: never rendered as HTML), ``visibility`` and
``status`` (``"passed"``/``"failed"``; absent while a written answer waits for its grader).
A cell whose source holds hidden tests (``### BEGIN HIDDEN TESTS`` in ``DIR/solutions/<A>/``)
is ``"after_due_date"``; its output is only the message the student's feedback shows (the
printed text and ``ErrorName: message`` of the autograded cell, never a traceback), cut at
``TEST_OUTPUT_LIMIT`` characters, escaped, and with any line that quotes the hidden test source
removed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.engine.untrusted import csv_cell, terminal_text

COURSE_ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("canvas", "moodle")
ID_COLUMNS = ("id", "email", "lms_user_id")
CANVAS_FIXED = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_ID = {"lms_user_id": "ID", "id": "SIS User ID", "email": "SIS Login ID"}
MOODLE_ID = {"id": "ID number", "email": "Email address", "lms_user_id": "User ID"}
POINTS_POSSIBLE = "Points Possible"
TEST_OUTPUT_LIMIT = 4096
PENDING_NOTE = "Graded by hand: not graded yet."
MAX_NOTEBOOK_BYTES = 64 << 20
HIDDEN_REGION = re.compile(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", re.DOTALL)
HIDDEN_LINE_LENGTH = 12  # a hidden line at least this long (stripped) is never shown
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")


class ExportError(Exception):
    """Nothing to export from (no gradebook), or a request that cannot be met."""


# --------------------------------------------------------------------------- the gradebook

def default_course() -> Path:
    """The grading command's default course folder (``grade.default_course``):
    ``$DROPOUT_COURSE_DIR``, else ``<repo>/course``."""
    from autograder.engine import grade

    if hasattr(grade, "default_course"):
        return Path(grade.default_course())
    return Path(os.environ.get("DROPOUT_COURSE_DIR") or COURSE_ROOT / "course")


def course_db_url(course: Path, db_url: str | None = None) -> str:
    """``db_url``, else the one the course's ``nbgrader_config.py`` sets, else its sqlite
    gradebook (which must exist: nbgrader would silently create an empty one)."""
    if db_url:
        return db_url
    config = course / "nbgrader_config.py"
    if config.is_file():
        try:
            from traitlets.config.loader import PyFileConfigLoader

            loaded = PyFileConfigLoader(config.name, path=str(course)).load_config()
            url = loaded.CourseDirectory.get("db_url") if "CourseDirectory" in loaded else None
            if isinstance(url, str) and url:
                return url
        except Exception:  # an instructor's config with a mistake: fall back to sqlite
            pass
    path = course / "gradebook.db"
    if not path.is_file():
        raise ExportError(f"no gradebook at {path} (grade first, or give --db-url)")
    return f"sqlite:///{path}"


@contextmanager
def open_gradebook(course: Path, db_url: str | None = None) -> Any:
    """nbgrader's :class:`~nbgrader.api.Gradebook` of the course (closed afterwards)."""
    import warnings

    from nbgrader.api import Gradebook

    url = course_db_url(course, db_url)
    course_id = "" if url.startswith("sqlite") else "default_course"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gb = Gradebook(url, course_id=course_id)
    try:
        yield gb
    finally:
        gb.close()


@dataclass
class CellGrade:
    """One graded cell of one submission, as nbgrader's gradebook holds it."""

    name: str
    notebook: str
    cell_type: str
    score: float
    max_score: float
    pending: bool
    auto_score: float | None
    manual_score: float | None


@dataclass
class Submission:
    """One student's submission of one assignment: nbgrader's totals."""

    assignment: str
    student: str
    score: float
    max_score: float
    penalty: float
    pending: bool
    timestamp: Any = None
    cells: list[CellGrade] = field(default_factory=list)

    @property
    def points(self) -> float:
        """Final points as ``nbgrader export`` gives them: ``max(0, score - penalty)``."""
        return max(0.0, self.score - self.penalty)


def read_submission(gb: Any, assignment: str, student: str) -> Submission | None:
    """The submission's scores, or None when there is none."""
    from nbgrader.api import MissingEntry

    try:
        sub = gb.find_submission(assignment, student)
    except MissingEntry:
        return None
    return _submission(sub, assignment, student)


def read_submissions(gb: Any) -> dict[tuple[str, str], Submission]:
    """Every submission in the gradebook, by (assignment, student): what
    :func:`read_submission` gives for each, read at once (its notebooks, grades, cells and
    maximum points loaded with the submissions, not one query per attribute of each cell)."""
    from nbgrader.api import Assignment, Grade, SubmittedAssignment, SubmittedNotebook
    from sqlalchemy.orm import joinedload, selectinload, undefer

    query = gb.db.query(SubmittedAssignment).options(
        joinedload(SubmittedAssignment.assignment).undefer(Assignment.max_score),
        joinedload(SubmittedAssignment.student),
        selectinload(SubmittedAssignment.notebooks).options(
            joinedload(SubmittedNotebook.notebook),
            selectinload(SubmittedNotebook.grades).options(
                joinedload(Grade.cell), undefer(Grade.max_score))))
    found = {}
    for sub in query:
        key = (str(sub.assignment.name), str(sub.student.id))
        found[key] = _submission(sub, *key)
    return found


def _submission(sub: Any, assignment: str, student: str) -> Submission:
    """:class:`Submission` of nbgrader's ``SubmittedAssignment`` ``sub``."""
    cells, penalty = [], 0.0
    for nb in sub.notebooks:
        penalty += float(nb.late_submission_penalty or 0.0)
        for grade in nb.grades:
            cells.append(CellGrade(
                name=str(grade.name), notebook=str(nb.name), cell_type=str(grade.cell_type),
                score=float(grade.score or 0.0), max_score=float(grade.max_score or 0.0),
                pending=bool(grade.needs_manual_grade), auto_score=grade.auto_score,
                manual_score=grade.manual_score))
    return Submission(assignment=assignment, student=student,
                      score=sum(c.score for c in cells),
                      max_score=float(sub.assignment.max_score or 0.0), penalty=penalty,
                      pending=any(c.pending for c in cells), timestamp=sub.timestamp,
                      cells=cells)


def _assignments(gb: Any, only: Iterable[str] | None) -> list[str]:
    names = [a.name for a in gb.assignments]
    if only:
        wanted = list(only)
        missing = [a for a in wanted if a not in names]
        if missing:
            raise ExportError(f"not in the gradebook: {', '.join(missing)}")
        return wanted
    return names


# --------------------------------------------------------------------------- LMS CSV

@dataclass
class LmsExport:
    """A CSV ready to write: rows (header first), and what was left out and why."""

    rows: list[list[object]]
    pending: list[tuple[str, str]] = field(default_factory=list)  # (student, assignment)
    no_id: list[str] = field(default_factory=list)  # students without the chosen id


def _student_id(student: Any, id_column: str) -> str | None:
    value = {"id": student.id, "email": student.email,
             "lms_user_id": student.lms_user_id}[id_column]
    return str(value) if value else None


def _display_name(student: Any) -> str:
    if student.last_name or student.first_name:
        return ", ".join(str(p) for p in (student.last_name, student.first_name) if p)
    return str(student.id)


def lms_rows(gb: Any, fmt: str = "canvas", id_column: str = "id",
             include_pending: bool = False, assignments: Iterable[str] | None = None,
             submissions: dict[tuple[str, str], Submission] | None = None) -> LmsExport:
    """The LMS import table of the whole class (see the module's docstring for the layouts):
    one row per student, one column per assignment with the final points (blank: missing, or
    pending unless ``include_pending``). Text cells are already :func:`csv_cell`-escaped.
    ``submissions``: :func:`read_submissions` of ``gb``, when already read."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if id_column not in ID_COLUMNS:
        raise ExportError(f"unknown id column {id_column!r} (one of {', '.join(ID_COLUMNS)})")
    names = _assignments(gb, assignments)
    maxima = {a: float(gb.find_assignment(a).max_score or 0.0) for a in names}
    if fmt == "canvas":
        header: list[object] = [*CANVAS_FIXED, *names]
        rows: list[list[object]] = [header, [POINTS_POSSIBLE, "", "", "", "",
                                             *(maxima[a] for a in names)]]
    else:
        header = ["First name", "Last name", MOODLE_ID[id_column], *names]
        rows = [header]
    export = LmsExport(rows)
    if submissions is None:
        submissions = read_submissions(gb)
    for student in sorted(gb.students, key=lambda s: str(s.id)):
        ident = _student_id(student, id_column)
        if ident is None:
            export.no_id.append(str(student.id))
        points: list[object] = []
        for assignment in names:
            sub = submissions.get((assignment, str(student.id)))
            if sub is None:
                points.append(None)
            elif sub.pending and not include_pending:
                export.pending.append((str(student.id), assignment))
                points.append(None)
            else:
                points.append(round(sub.points, 4))
        if fmt == "canvas":
            fixed: list[object] = [_display_name(student), None, None, None, None]
            fixed[CANVAS_FIXED.index(CANVAS_ID[id_column])] = ident
        else:
            fixed = [student.first_name, student.last_name, ident]
        rows.append([*fixed, *points])
    export.rows = [[csv_cell(v) for v in row] for row in rows]
    return export


def write_lms(course: Path, fmt: str = "canvas", id_column: str = "id",
              out: Path | str | None = None, db_url: str | None = None,
              include_pending: bool = False, warn: Any = sys.stderr) -> LmsExport:
    """Write the LMS CSV (default ``DIR/exports/<fmt>.csv``; ``"-"``: stdout) and warn on
    ``warn`` about every submission left blank because it waits for hand grading."""
    with open_gradebook(course, db_url) as gb:
        export = lms_rows(gb, fmt, id_column, include_pending)
    return _write_lms(course, fmt, id_column, export, out, warn)


def _write_lms(course: Path, fmt: str, id_column: str, export: LmsExport,
               out: Path | str | None, warn: Any) -> LmsExport:
    """:func:`write_lms`'s file and warnings, for ``export`` (:func:`lms_rows`)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(export.rows)
    if str(out) == "-":
        sys.stdout.write(buffer.getvalue())
    else:
        target = Path(out) if out else course / "exports" / f"{fmt}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(buffer.getvalue(), "utf-8", newline="")
        tmp.replace(target)
    if warn is not None:
        if export.pending:
            listed = ", ".join(f"{terminal_text(s)}/{terminal_text(a)}"
                               for s, a in export.pending)
            print(f"warning: {fmt}: {len(export.pending)} submission(s) wait for hand grading "
                  f"and are left blank (not imported; --include-pending to export them): "
                  f"{listed}", file=warn)
        if export.no_id:
            print(f"warning: {fmt}: {len(export.no_id)} student(s) have no {id_column} in the "
                  f"gradebook (their row cannot be matched): "
                  f"{', '.join(terminal_text(s) for s in export.no_id)}", file=warn)
    return export


# --------------------------------------------------------------------------- Gradescope

@dataclass
class SourceInfo:
    """What the instructor's source notebook says about an assignment's graded cells."""

    order: list[str] = field(default_factory=list)  # grade ids in notebook order
    hidden: set[str] = field(default_factory=set)  # cells that hold hidden tests
    hidden_lines: set[str] = field(default_factory=set)  # their hidden source lines
    known: bool = False  # False: no source notebook found, every test treated as hidden


def _cell_text(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def source_info(course: Path, assignment: str) -> SourceInfo:
    """Hidden-test cells of ``assignment``, from ``DIR/solutions/<A>/*.ipynb`` (else the
    repository's ``solutions/``)."""
    info = SourceInfo()
    for root in (course / "solutions" / assignment, COURSE_ROOT / "solutions" / assignment):
        notebooks = sorted(root.glob("*.ipynb")) if root.is_dir() else []
        for path in notebooks:
            nb = json.loads(path.read_text("utf-8"))
            for cell in nb.get("cells", []):
                meta = cell.get("metadata", {}).get("nbgrader", {})
                gid = meta.get("grade_id") if isinstance(meta, dict) else None
                if not gid or not meta.get("grade"):
                    continue
                info.order.append(gid)
                text = _cell_text(cell)
                regions = HIDDEN_REGION.findall(text)
                if regions or "BEGIN HIDDEN TESTS" in text:
                    info.hidden.add(gid)
                    for region in regions or [text]:
                        info.hidden_lines.update(
                            line.strip() for line in region.splitlines()
                            if len(line.strip()) >= HIDDEN_LINE_LENGTH)
            info.known = True
        if info.known:
            break
    return info


def _autograded_cells(course: Path, student: str, assignment: str, notebook: str
                      ) -> dict[str, dict[str, Any]]:
    path = course / "autograded" / student / assignment / f"{notebook}.ipynb"
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return {}
        nb = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    cells = {}
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if isinstance(gid, str):
            cells[gid] = cell
    return cells


def test_message(cell: dict[str, Any] | None, hidden_lines: set[str],
                 limit: int = TEST_OUTPUT_LIMIT) -> str:
    """What the student's feedback shows of a test cell's result: its printed text and its
    error as ``ErrorName: message`` (never a traceback), as plain escaped text of at most
    ``limit`` characters, without any line that quotes hidden test source."""
    from autograder.engine.verify import plain_text

    if not isinstance(cell, dict):
        return ""
    pieces = []
    outputs = cell.get("outputs")
    for output in outputs if isinstance(outputs, list) else []:
        if not isinstance(output, dict):
            continue
        if output.get("output_type") == "stream":
            pieces.append(_cell_text({"source": output.get("text", "")}))
        elif output.get("output_type") == "error":
            pieces.append(f"{output.get('ename', '')}: {output.get('evalue', '')}\n")
    text = plain_text("".join(pieces)[:limit * 4], limit)
    kept = [line for line in text.splitlines()
            if not any(secret in line for secret in hidden_lines)]
    return "\n".join(kept).strip("\n")


def _seconds(course: Path, assignment: str, student: str) -> float | None:
    try:
        data = json.loads((course / "results" / assignment / f"{student}.json")
                          .read_text("utf-8"))
        return float(data["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gradescope_results(course: Path, sub: Submission, info: SourceInfo | None = None
                       ) -> dict[str, Any]:
    """The Gradescope ``results.json`` object of one submission (see the module's docstring)."""
    info = info if info is not None else source_info(course, sub.assignment)
    order = {gid: i for i, gid in enumerate(info.order)}
    cells = sorted(sub.cells, key=lambda c: (order.get(c.name, len(order)), c.name))
    autograded: dict[str, dict[str, dict[str, Any]]] = {}
    tests = []
    for number, cell in enumerate(cells, 1):
        if cell.notebook not in autograded:
            autograded[cell.notebook] = _autograded_cells(course, sub.student, sub.assignment,
                                                          cell.notebook)
        hidden = cell.name in info.hidden or not info.known
        test: dict[str, Any] = {
            "name": terminal_text(cell.name) + (" (hidden tests)" if hidden else ""),
            "number": str(number), "score": round(cell.score, 4),
            "max_score": round(cell.max_score, 4),
            "visibility": "after_due_date" if hidden else "visible", "output_format": "text",
        }
        if cell.pending:
            test["output"] = PENDING_NOTE
            test["tags"] = ["pending"]
        else:
            if cell.cell_type == "markdown":
                message = "Graded by hand." if cell.manual_score is not None else ""
            else:
                message = test_message(autograded[cell.notebook].get(cell.name),
                                       info.hidden_lines)
            test["output"] = message
            test["status"] = "passed" if cell.score >= cell.max_score else "failed"
        tests.append(test)
    pending = sum(c.pending for c in cells)
    lines = [f"Score: {sub.points:g} / {sub.max_score:g}"]
    if sub.penalty:
        lines.append(f"Late submission penalty: {sub.penalty:g} point(s).")
    if pending:
        lines.append(f"{pending} written answer(s) will be graded by hand (pending).")
    results: dict[str, Any] = {
        "score": round(sub.points, 4),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": {"raw_score": round(sub.score, 4), "late_penalty": round(sub.penalty, 4),
                       "pending": pending},
        "tests": tests,
    }
    seconds = _seconds(course, sub.assignment, sub.student)
    if seconds is not None:
        results["execution_time"] = round(seconds, 3)
    return results


def write_gradescope(course: Path, out: Path | None = None, db_url: str | None = None,
                     warn: Any = sys.stderr) -> list[Path]:
    """Write ``OUT/<assignment>/<student>/results.json`` (default OUT:
    ``DIR/exports/gradescope``) for every submission in the gradebook; return the paths."""
    with open_gradebook(course, db_url) as gb:
        return _write_gradescope(course, gb, out, warn)


def _write_gradescope(course: Path, gb: Any, out: Path | None, warn: Any,
                      submissions: dict[tuple[str, str], Submission] | None = None
                      ) -> list[Path]:
    """:func:`write_gradescope` from the open gradebook ``gb`` (``submissions``: its
    :func:`read_submissions`, when already read)."""
    out = Path(out) if out else course / "exports" / "gradescope"
    written = []
    if submissions is None:
        submissions = read_submissions(gb)
    for assignment in _assignments(gb, None):
        info = source_info(course, assignment)
        for student in sorted(str(s.id) for s in gb.students):
            sub = submissions.get((assignment, student))
            if sub is None:
                continue
            if not (_SAFE_NAME.match(student) and _SAFE_NAME.match(assignment)):
                if warn is not None:
                    print(f"warning: gradescope: {terminal_text(student)}/"
                          f"{terminal_text(assignment)} skipped (not a safe folder name)",
                          file=warn)
                continue
            path = out / assignment / student / "results.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(gradescope_results(course, sub, info), indent=1,
                                       ensure_ascii=True), "utf-8")
            written.append(path)
    return written


# --------------------------------------------------------------------------- the command

def merge(course: Path, db_url: str | None = None, include_pending: bool = False) -> None:
    """Class outputs rebuilt from the gradebook, then every default export."""
    from autograder.engine import grade

    write_class_outputs = getattr(grade, "write_class_outputs", None)
    if write_class_outputs is None:
        raise ExportError("this version of autograder.engine.grade has no write_class_outputs: "
                          "grades.csv and report.txt cannot be rebuilt")
    write_class_outputs(course, db_url)
    write_default_exports(course, db_url, include_pending)


def write_default_exports(course: Path, db_url: str | None = None,
                          include_pending: bool = False, warn: Any = sys.stderr) -> None:
    """``DIR/exports/canvas.csv``, ``DIR/exports/moodle.csv`` (id column: nbgrader's student
    id) and ``DIR/exports/gradescope/``."""
    with open_gradebook(course, db_url) as gb:
        submissions = read_submissions(gb)  # read once for the three
        exports = {fmt: lms_rows(gb, fmt, "id", include_pending, submissions=submissions)
                   for fmt in FORMATS}
        for fmt in FORMATS:
            _write_lms(course, fmt, "id", exports[fmt], None, warn)
        _write_gradescope(course, gb, None, warn, submissions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.engine.export",
                                     description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course", type=Path, default=None,
                        help="the course folder (default: $DROPOUT_COURSE_DIR, else course/)")
    common.add_argument("--db-url", default=None, help="the gradebook (default: the course's)")
    commands = parser.add_subparsers(dest="command", required=True)
    merge_cmd = commands.add_parser("merge", parents=[common],
                                    help="rebuild grades.csv, report.txt and every export")
    merge_cmd.add_argument("--include-pending", action="store_true")
    lms = commands.add_parser("lms", parents=[common], help="a Canvas or Moodle import CSV")
    lms.add_argument("--format", choices=FORMATS, default="canvas")
    lms.add_argument("--id-column", choices=ID_COLUMNS, default="id")
    lms.add_argument("--out", default=None, help="the CSV file ('-': stdout)")
    lms.add_argument("--include-pending", action="store_true",
                     help="export submissions that still wait for hand grading")
    scope = commands.add_parser("gradescope", parents=[common],
                                help="results.json per submission")
    scope.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    course = (args.course or default_course()).resolve()
    try:
        if args.command == "merge":
            merge(course, args.db_url, args.include_pending)
        elif args.command == "lms":
            write_lms(course, args.format, args.id_column, args.out, args.db_url,
                      args.include_pending)
        else:
            paths = write_gradescope(course, args.out, args.db_url)
            print(f"wrote {len(paths)} results.json file(s)")
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
