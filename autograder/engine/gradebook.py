"""The grading command's writes to nbgrader's gradebook, and what it reads back as totals.

nbgrader's own tools (formgrader, ``nbgrader export``, ``generate_feedback``) share the gradebook
with the grading command, so what one writes the others must keep:

* :func:`record` writes the automatic scores of one graded submission and its submission time.
  A score a hand grader set (``Grade.manual_score``, formgrader) is never overwritten, and a rerun,
  a resume, ``--force`` or a regrade of the automatic part never sets a graded cell back to
  "needs manual grade". Only a real reason to look again does: the written answer's source
  changed since the last run (a resubmission), or, for an automatic cell a hand grader overrode,
  the automatic score changed. The manual score is kept in both cases: formgrader shows it and
  the hand grader confirms or changes it.
* :func:`record_many` writes many graded submissions, each with its late penalty, in one
  transaction (the grading command's batches; why: its docstring), and :func:`record_batch`
  falls back to one transaction per submission when a batch fails, so that one refused
  submission does not keep the others out. The rows are nbgrader's own, as its ``add_student``
  and ``add_submission`` make them.
* :func:`set_due_date` and :func:`apply_late_penalty`: nbgrader's due dates and its
  ``LateSubmissionPlugin`` (``c.LateSubmissionPlugin.penalty_method = "none" | "zero"``, or a
  plugin of one's own in ``c.AssignLatePenalties.plugin_class``), applied per notebook into
  ``SubmittedNotebook.late_submission_penalty`` exactly as nbgrader's ``AssignLatePenalties``
  preprocessor does at ``nbgrader autograde``.
* :func:`totals`: automatic points, graded manual points, what is still pending, lateness,
  penalty and the total, from the gradebook (so they include formgrader's scores).

Where the written answers' sources are remembered: nbgrader's schema has no column for it (the
only per-cell text, ``Comment.auto_comment``, is shown to students by ``generate_feedback`` and
to graders by formgrader), and a file beside the gradebook would not be shared by shards that
write one PostgreSQL gradebook from different machines. So one small table of this module's own
lives in the gradebook's database, ``dropout_answer_digest(grade_id, digest)``: the SHA-256 of
the answer cell's source (:func:`answer_digests`) last recorded for each ``Grade`` row, keyed by
nbgrader's ``Grade.id``. It has no foreign key, so nbgrader's own commands that delete
submissions (``nbgrader db student remove``) are not hindered; a stale row is harmless (a new
submission gets new ``Grade`` ids). nbgrader's alembic migrations do not touch other tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DIGEST_TABLE = "dropout_answer_digest"
MISSING_ANSWER = "missing"
"""The digest recorded for a written-answer cell the submitted notebook does not hold."""


@dataclass(frozen=True)
class Totals:
    """One submission's points as the gradebook holds them now (formgrader's included)."""

    auto: float
    """Points of cells scored automatically and not overridden by a hand grader."""
    manual: float
    """Points a hand grader set (``manual_score``, with any extra credit)."""
    score: float
    """``auto + manual``: nbgrader's ``Grade.score`` summed (a cell not yet graded counts 0)."""
    max_score: float
    pending: int
    """Cells that need a hand grader's look (nbgrader's ``needs_manual_grade``): written answers
    not graded yet, and graded ones whose source changed since."""
    late_seconds: float
    """nbgrader's ``SubmittedAssignment.total_seconds_late`` (extensions included)."""
    penalty: float
    """The late penalty last applied (``SubmittedNotebook.late_submission_penalty`` summed)."""
    total: float
    """``max(score - penalty, 0)``, as ``nbgrader export`` computes its ``score`` column."""
    timestamp: datetime | None
    """The submission time (aware, UTC), or None when none was recorded."""


# --------------------------------------------------------------------------- answers' sources

def _source_text(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def answer_digests(notebook: Mapping[str, Any] | Path | str) -> dict[str, str] | None:
    """``{grade_id: SHA-256 hex of the source}`` for every cell of ``notebook`` (a parsed
    notebook, or the path of one) that carries an nbgrader ``grade_id``; what :func:`record`'s
    ``answers`` expects. Several cells claiming one ``grade_id`` are hashed together, in order.
    Pass the submitted notebook (the student's file as staged), not the autograded one. An
    unreadable file gives None: then :func:`record` learns nothing about resubmissions.
    """
    if isinstance(notebook, (Path, str)):
        try:
            notebook = json.loads(Path(notebook).read_bytes())
        except (OSError, ValueError):
            return None
    cells = notebook.get("cells") if isinstance(notebook, Mapping) else None
    if not isinstance(cells, list):
        return None
    sources: dict[str, list[str]] = {}
    for cell in cells:
        meta = cell.get("metadata") if isinstance(cell, Mapping) else None
        nbgrader = meta.get("nbgrader") if isinstance(meta, Mapping) else None
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, Mapping) else None
        if isinstance(grade_id, str):
            sources.setdefault(grade_id, []).append(_source_text(cell))
    return {gid: hashlib.sha256((texts[0] if len(texts) == 1 else json.dumps(texts))
                                .encode("utf-8", "surrogatepass")).hexdigest()
            for gid, texts in sources.items()}


def _digest_table() -> Any:
    from sqlalchemy import Column, MetaData, String, Table

    return Table(DIGEST_TABLE, MetaData(), Column("grade_id", String(32), primary_key=True),
                 Column("digest", String(64), nullable=False))


def _ensure_digest_table(gb: Any) -> Any:
    """The digest table, created in the gradebook's database on first use (idempotent, also
    when several shards create it at once)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    table = _digest_table()
    if inspect(gb.engine).has_table(DIGEST_TABLE):
        return table
    gb.db.commit()  # nothing of ours pending: the table is made on the engine's own connection
    try:
        table.create(gb.engine, checkfirst=True)
    except DBAPIError:
        if not inspect(gb.engine).has_table(DIGEST_TABLE):  # not another shard's race: real
            raise
    return table


def _in_chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """``values`` in slices small enough for one SQL ``IN (...)`` on every database."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _stored_digests(gb: Any, table: Any, grade_ids: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    found: dict[str, str] = {}
    for chunk in _in_chunks(sorted(set(grade_ids))):
        rows = gb.db.execute(select(table.c.grade_id, table.c.digest)
                             .where(table.c.grade_id.in_(chunk)))
        found.update((gid, digest) for gid, digest in rows)
    return found


def _store_digests(gb: Any, table: Any, old: dict[str, str], new: dict[str, str]) -> None:
    """Make the digest table hold ``new`` where it holds ``old`` (one statement for the new rows
    and one for the changed ones, each with many parameter sets)."""
    from sqlalchemy import bindparam

    added = [{"grade_id": gid, "digest": d} for gid, d in new.items() if gid not in old]
    changed = [{"gid": gid, "new_digest": d} for gid, d in new.items()
               if gid in old and old[gid] != d]
    if added:
        gb.db.execute(table.insert(), added)
    if changed:
        gb.db.execute(table.update().where(table.c.grade_id == bindparam("gid"))
                      .values(digest=bindparam("new_digest")), changed)


# --------------------------------------------------------------------------- writing

def _utc_naive(when: datetime | str) -> datetime:
    """nbgrader's storage form of a time: naive UTC (``utils.parse_utc``; naive input is UTC)."""
    from nbgrader.utils import parse_utc

    return parse_utc(when)


@dataclass(frozen=True)
class Entry:
    """One graded submission to write: :func:`record`'s arguments, for :func:`record_many`."""

    result: Any
    timestamp: datetime | str | None = None
    answers: Mapping[str, str] | None = None


def record(gb: Any, result: Any, timestamp: datetime | str | None = None,
           answers: Mapping[str, str] | None = None) -> None:
    """Write one graded submission (a ``grade.StudentResult``: ``student``, ``assignment``,
    ``per_test`` = ``{grade_id: points, or None for a written answer}``, ``flags``) into the
    nbgrader gradebook ``gb``, in one transaction. Idempotent.

    * Automatic cells get ``auto_score`` (a grade cell missing from ``per_test`` scores 0).
    * A hand grader's ``manual_score`` (and extra credit) is never changed. Without one, a
      written answer needs a manual grade and an automatic cell does not. With one, the cell's
      ``needs_manual_grade`` stays as the hand grader left it, unless the written answer's
      source changed since the last ``record`` (``answers`` differs from the digest stored
      then; a cell the notebook lacks counts as changed) or an overridden automatic cell's
      automatic score changed: then it needs a manual grade again.
    * ``answers`` is :func:`answer_digests` of the submitted notebook. None: nothing is known
      about the sources (no digest is stored or compared). A first digest, with no earlier one
      stored, is recorded without flagging anything.
    * ``timestamp`` (aware, or naive = UTC; or a string nbgrader's ``parse_utc`` reads) is the
      submission time; None leaves the recorded one, if any, as it is.
    * A ``tampering`` flag flags the notebook (``SubmittedNotebook.flagged``); a flag is never
      cleared here, since a hand grader may have set it in formgrader.

    On an error nothing of it is written (the transaction is rolled back) and the error is
    raised. Several submissions at once, with their late penalties: :func:`record_many`.
    """
    entry = Entry(result, timestamp, answers)
    table = _ensure_digest_table(gb) if answers is not None else None
    try:
        _write_all(gb, [entry], table)
        gb.db.commit()
    except BaseException:
        gb.db.rollback()
        raise


def _write_all(gb: Any, entries: list[Entry], table: Any) -> list[Any]:
    """:func:`record`'s writes of ``entries``, in order, into the session's transaction, not
    committed; ``table`` is the digest table (None: no entry's ``answers`` is used). Returns
    each entry's submission.

    A few statements for all of them, not a few per entry: the submissions that exist (with
    their notebooks and grades) in one query, each assignment's cells once, the stored digests
    in one query, the missing students and submissions made with their scores already set and
    everything written in one flush, the new digests in one statement.
    """
    keys = [(e.result.assignment, e.result.student) for e in entries]
    found = _existing_submissions(gb, set(keys))
    shapes = {name: _shape(gb, name) for name in dict.fromkeys(a for a, _ in keys)}
    names = {cell.id: cell.name for _, shape in shapes.values()
             for _, grade_cells, _, task_cells in shape for cell in (*grade_cells, *task_cells)}

    def written(entry: Entry, submission: Any) -> list[Any]:
        return [g for nb in submission.notebooks for g in nb.grades
                if entry.result.per_test.get(names.get(g.cell_id) or g.name, 0.0) is None]

    use = table is not None
    stored = _stored_digests(gb, table, [
        g.id for entry, key in zip(entries, keys, strict=True)
        if entry.answers is not None and key in found for g in written(entry, found[key])
    ]) if use else {}
    missing = [key for key in dict.fromkeys(keys) if key not in found]
    if missing:
        students = _existing_students(gb, {s for _, s in missing})
        # Nothing queries while they are made: a query would autoflush half-made rows.
        for assignment, student in missing:
            found[(assignment, student)] = _new_submission(gb, shapes[assignment], students,
                                                           student)
    digests = dict(stored)
    answered = []
    for entry, key in zip(entries, keys, strict=True):
        result, submission = entry.result, found[key]
        known = use and entry.answers is not None
        if entry.timestamp is not None:
            submission.timestamp = _utc_naive(entry.timestamp)
        for grade in (g for nb in submission.notebooks for g in nb.grades):
            score = result.per_test.get(names.get(grade.cell_id) or grade.name, 0.0)
            graded_by_hand = grade.manual_score is not None  # a new grade has none
            if score is None:
                grade.auto_score = None
                if not graded_by_hand:
                    grade.needs_manual_grade = True
                elif known and grade.id in digests and digests[grade.id] != (
                        entry.answers.get(names.get(grade.cell_id) or grade.name,
                                          MISSING_ANSWER)):
                    grade.needs_manual_grade = True  # resubmitted: the hand grader looks again
            else:
                changed = grade.auto_score is None or float(grade.auto_score) != float(score)
                grade.auto_score = float(score)
                if not graded_by_hand:
                    grade.needs_manual_grade = False
                elif changed:
                    grade.needs_manual_grade = True  # the override was made on another result
        if result.flags.get("tampering"):
            for notebook in submission.notebooks:
                notebook.flagged = True
        if known:  # what a later entry of the same submission compares with
            answered.append((entry, submission))
            digests.update(_new_digests(entry, written(entry, submission), names))
    gb.db.flush()  # every new row and every score, together; the new grades get their ids
    for entry, submission in answered:
        digests.update(_new_digests(entry, written(entry, submission), names))
    if use:
        _store_digests(gb, table, stored, digests)
    return [found[key] for key in keys]


def _new_digests(entry: Entry, written: list[Any], names: dict[str, str]) -> dict[str, str]:
    """The digests ``entry`` records for its written-answer grades (those that have an id)."""
    answers = entry.answers or {}
    return {g.id: answers.get(names.get(g.cell_id) or g.name, MISSING_ANSWER)
            for g in written if g.id is not None}


def _existing_submissions(gb: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """The submissions of ``keys`` (assignment, student) the gradebook holds, with their
    notebooks and grades loaded."""
    from nbgrader.api import Assignment, SubmittedAssignment, SubmittedNotebook
    from sqlalchemy.orm import selectinload

    found: dict[tuple[str, str], Any] = {}
    for assignment in sorted({a for a, _ in keys}):
        students = sorted(s for a, s in keys if a == assignment)
        for chunk in _in_chunks(students):
            query = (gb.db.query(SubmittedAssignment)
                     .join(Assignment, Assignment.id == SubmittedAssignment.assignment_id)
                     .filter(Assignment.name == assignment,
                             SubmittedAssignment.student_id.in_(chunk))
                     .options(selectinload(SubmittedAssignment.notebooks)
                              .selectinload(SubmittedNotebook.grades)))
            found.update(((assignment, s.student_id), s) for s in query)
    return found


def _existing_students(gb: Any, ids: set[str]) -> dict[str, Any]:
    from nbgrader.api import Student

    found: dict[str, Any] = {}
    for chunk in _in_chunks(sorted(ids)):
        found.update((s.id, s) for s in gb.db.query(Student).filter(Student.id.in_(chunk)))
    return found


def _shape(gb: Any, assignment: str) -> tuple[Any, list[tuple[Any, list, list, list]]]:
    """``assignment`` (nbgrader's ``MissingEntry`` when it is not in the gradebook) and, per
    notebook, its grade, solution and task cells."""
    what = gb.find_assignment(assignment)
    return what, [(nb, list(nb.grade_cells), list(nb.solution_cells), list(nb.task_cells))
                  for nb in what.notebooks]


def _new_submission(gb: Any, shape: tuple[Any, list[tuple[Any, list, list, list]]],
                    students: dict[str, Any], student: str) -> Any:
    """A new submission of the assignment of ``shape`` (:func:`_shape`) by ``student`` (made
    too, and put in ``students``, when new), added to the session, NOT committed or flushed:
    the rows nbgrader's ``Gradebook.add_student`` and ``add_submission`` make (a
    ``SubmittedNotebook`` per notebook, a ``Grade`` per grade cell, a ``Comment`` per solution
    cell, both per task cell), without their commit each, so that a batch is one transaction.
    Nothing here queries: a query would autoflush a half-made submission."""
    from nbgrader.api import Comment, Grade, Student, SubmittedAssignment, SubmittedNotebook

    who = students.get(student)
    if who is None:
        who = students[student] = Student(id=student)
        gb.db.add(who)
    what, notebooks = shape
    submission = SubmittedAssignment(assignment=what, student=who)
    for notebook, grade_cells, solution_cells, task_cells in notebooks:
        submitted = SubmittedNotebook(notebook=notebook, assignment=submission)
        for cell in grade_cells:
            Grade(cell_id=cell.id, notebook=submitted)
        for cell in solution_cells:
            Comment(cell_id=cell.id, notebook=submitted)
        for cell in task_cells:
            Comment(cell_id=cell.id, notebook=submitted)
            Grade(cell_id=cell.id, notebook=submitted)
    gb.db.add(submission)  # and, by the session's cascade, its notebooks, grades and comments
    return submission


def record_many(gb: Any, entries: list[Entry], config: Any = None) -> list[float]:
    """Write several graded submissions, each as :func:`record` does and then its late penalty
    as :func:`apply_late_penalty` does (``config``, a traitlets ``Config``; None = nbgrader's
    defaults), all in ONE transaction: one commit. Returns each entry's penalty (the sum over
    its notebooks). On an error the transaction is rolled back, nothing of ``entries`` is
    written and the error is raised (:func:`record_batch` then writes them one at a time).

    Why batches: the grading command records each submission a worker has graded, in the
    process that also collects the workers' results. One transaction per submission (nbgrader's
    ``add_student`` and ``add_submission``, the scores, the penalty, each committed) costs
    several commits (a disk sync each with SQLite, a round trip and a WAL flush with
    PostgreSQL) and, since a commit expires every object the session holds, the assignment's
    cells and the submission read again each time, some twenty statements per submission. In
    one transaction for many, each assignment is read once, the existing submissions and the
    stored digests in one query each, the new rows in one flush, and one commit: the same rows.
    """
    if not entries:
        return []
    table = (_ensure_digest_table(gb) if any(e.answers is not None for e in entries)
             else None)
    try:
        submissions = _write_all(gb, entries, table)
        gb.db.flush()  # the new scores, for the notebooks' scores the late rule reads
        penalties = _penalize_all(gb, _late_assigner(config), submissions,
                                  [e.result.student for e in entries])
        gb.db.commit()
    except BaseException:
        gb.db.rollback()
        raise
    return penalties


def record_batch(gb: Any, entries: list[Entry],
                 config: Any = None) -> list[Exception | None]:
    """:func:`record_many`, and when that fails, each entry in a transaction of its own, so that
    one submission the gradebook refuses (a constraint error, a late-penalty plugin that raises)
    does not keep the others out. Returns, per entry, None (written) or the error that kept it
    out of the gradebook (nothing of it written). When every entry of a batch of several fails
    alone too, the fault is not one submission's but the gradebook's (unreachable, locked):
    the first error is raised, nothing of the batch written."""
    try:
        record_many(gb, entries, config)
        return [None] * len(entries)
    except Exception as err:
        if len(entries) <= 1:
            return [err]
    errors: list[Exception | None] = []
    for entry in entries:
        try:
            record_many(gb, [entry], config)
            errors.append(None)
        except Exception as err:
            errors.append(err)
    if all(error is not None for error in errors):
        raise errors[0]  # type: ignore[misc]
    return errors


def set_due_date(gb: Any, assignment: str, when: datetime | str | None) -> datetime | None:
    """Set ``assignment``'s due date in the gradebook (aware, or naive = UTC, or a string as
    ``nbgrader db assignment add --duedate`` takes it; None removes it). Returns it as stored
    (naive UTC)."""
    gb.update_or_create_assignment(assignment,
                                   duedate=None if when is None else _utc_naive(when))
    return gb.find_assignment(assignment).duedate


def course_config(course: Path) -> Any:
    """The traitlets config of the nbgrader course folder ``course`` (its ``nbgrader_config.py``,
    with everything that loads), as nbgrader's commands run there see it; an empty config when
    there is none."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if not (course / "nbgrader_config.py").is_file():
        return Config()
    return PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()


def apply_late_penalty(gb: Any, config: Any, assignment: str, student: str) -> float:
    """Assign nbgrader's late penalty to each notebook of ``student``'s submission of
    ``assignment`` and return their sum, as ``nbgrader autograde`` does (its
    ``AssignLatePenalties`` with its ``plugin_class``, default ``LateSubmissionPlugin``, both
    configured by ``config``, a traitlets ``Config``, e.g. :func:`course_config`; None = nbgrader's
    defaults, no penalty): reset to none; if the submission is late
    (``total_seconds_late > 0``), the plugin's ``late_submission_penalty(student, notebook score,
    seconds late)``, kept between 0 and the notebook's score. The notebook score includes the
    manual scores graded so far: apply it again after hand grading (before :func:`totals`), as
    the penalty of ``penalty_method = "zero"`` is the score itself.
    """
    gb.db.commit()  # the scores just recorded, read back below through nbgrader's columns
    gb.db.expire_all()
    assigner = _late_assigner(config)
    total = _penalize_all(gb, assigner, [gb.find_submission(assignment, student)],
                          [student])[0]
    gb.db.commit()
    return total


def _late_assigner(config: Any) -> Any:
    """nbgrader's ``AssignLatePenalties`` configured by ``config`` (None = defaults), its plugin
    made."""
    from nbgrader.preprocessors import AssignLatePenalties
    from traitlets.config import Config

    assigner = AssignLatePenalties(config=config if config is not None else Config())
    assigner.init_plugin()
    return assigner


def _penalize_all(gb: Any, assigner: Any, submissions: list[Any],
                  students: list[str]) -> list[float]:
    """Set the late penalty of each notebook of each of ``submissions`` (by ``students``) in the
    session (its scores flushed, not committed), as nbgrader's ``AssignLatePenalties.preprocess``
    does; each submission's sum."""
    from nbgrader.api import SubmittedNotebook
    from sqlalchemy.orm import undefer

    late = {nb.id: nb for s in submissions if s.total_seconds_late > 0 for nb in s.notebooks}
    for notebook in late.values():
        gb.db.expire(notebook, ["score"])  # a sum over the grades: read it as flushed now
    for chunk in _in_chunks(list(late)):  # all of them in one query
        gb.db.query(SubmittedNotebook).options(undefer(SubmittedNotebook.score)).filter(
            SubmittedNotebook.id.in_(chunk)).all()
    totals = []
    for submission, student in zip(submissions, students, strict=True):
        seconds = submission.total_seconds_late
        total = 0.0
        for notebook in submission.notebooks:
            notebook.late_submission_penalty = None
            if seconds > 0:
                penalty = assigner.plugin_inst.late_submission_penalty(student, notebook.score,
                                                                       seconds)
                if penalty is not None:
                    notebook.late_submission_penalty = assigner._check_late_penalty(notebook,
                                                                                    penalty)
                    total += float(notebook.late_submission_penalty)
        totals.append(total)
    return totals


# --------------------------------------------------------------------------- reading

def totals(gb: Any, assignment: str, student: str) -> Totals:
    """``student``'s points for ``assignment`` as the gradebook holds them (raises nbgrader's
    ``MissingEntry`` when there is no such submission)."""
    gb.db.expire_all()  # another process (formgrader, a shard) may have written since
    submission = gb.find_submission(assignment, student)
    auto = manual = penalty = 0.0
    pending = 0
    for notebook in submission.notebooks:
        penalty += float(notebook.late_submission_penalty or 0.0)
        for grade in notebook.grades:
            extra = float(grade.extra_credit or 0.0)
            if grade.manual_score is not None:
                manual += float(grade.manual_score) + extra
            elif grade.auto_score is not None:
                auto += float(grade.auto_score) + extra
            pending += bool(grade.needs_manual_grade)
    score = auto + manual
    stamp = submission.timestamp
    return Totals(auto=auto, manual=manual, score=score,
                  max_score=float(gb.find_assignment(assignment).max_score),
                  pending=pending, late_seconds=float(submission.total_seconds_late),
                  penalty=penalty, total=max(score - penalty, 0.0),
                  timestamp=None if stamp is None else stamp.replace(tzinfo=UTC))


def fill_totals(gb: Any, result: Any) -> Totals:
    """Set a ``grade.StudentResult``'s ``max_score``, ``score`` (the total, after any late
    penalty) and ``manual_pending`` from :func:`totals`, and return those totals (what
    ``grade._fill_totals`` did, with the manual points and the penalty now counted)."""
    t = totals(gb, result.assignment, result.student)
    result.max_score = t.max_score
    result.score = t.total
    result.manual_pending = t.pending
    return t
