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
import warnings
from collections.abc import Mapping
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


def _stored_digests(gb: Any, table: Any, grade_ids: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    if not grade_ids:
        return {}
    rows = gb.db.execute(select(table.c.grade_id, table.c.digest)
                         .where(table.c.grade_id.in_(grade_ids)))
    return {gid: digest for gid, digest in rows}


def _store_digests(gb: Any, table: Any, old: dict[str, str], new: dict[str, str]) -> None:
    for gid, digest in new.items():
        if gid not in old:
            gb.db.execute(table.insert().values(grade_id=gid, digest=digest))
        elif old[gid] != digest:
            gb.db.execute(table.update().where(table.c.grade_id == gid).values(digest=digest))


# --------------------------------------------------------------------------- writing

def _utc_naive(when: datetime | str) -> datetime:
    """nbgrader's storage form of a time: naive UTC (``utils.parse_utc``; naive input is UTC)."""
    from nbgrader.utils import parse_utc

    return parse_utc(when)


def _submission(gb: Any, assignment: str, student: str) -> Any:
    from nbgrader.api import MissingEntry

    gb.update_or_create_student(student)
    try:
        return gb.find_submission(assignment, student)
    except MissingEntry:
        with warnings.catch_warnings():
            # nbgrader 0.9's add_submission autoflushes before it adds the new rows, and
            # SQLAlchemy 2 warns "not in session"; the rows are then added and committed.
            warnings.filterwarnings("ignore", message=".*not in session", module="nbgrader")
            return gb.add_submission(assignment, student)


def record(gb: Any, result: Any, timestamp: datetime | str | None = None,
           answers: Mapping[str, str] | None = None) -> None:
    """Write one graded submission (a ``grade.StudentResult``: ``student``, ``assignment``,
    ``per_test`` = ``{grade_id: points, or None for a written answer}``, ``flags``) into the
    nbgrader gradebook ``gb``. Idempotent.

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
    """
    submission = _submission(gb, result.assignment, result.student)
    table = _ensure_digest_table(gb) if answers is not None else None
    if timestamp is not None:
        submission.timestamp = _utc_naive(timestamp)
    grades = [g for nb in submission.notebooks for g in nb.grades]
    written = [g for g in grades if result.per_test.get(g.name, 0.0) is None]
    old = _stored_digests(gb, table, [g.id for g in written]) if table is not None else {}
    new = {g.id: (answers or {}).get(g.name, MISSING_ANSWER) for g in written}
    for grade in grades:
        score = result.per_test.get(grade.name, 0.0)
        graded_by_hand = grade.manual_score is not None
        if score is None:
            grade.auto_score = None
            if not graded_by_hand:
                grade.needs_manual_grade = True
            elif table is not None and grade.id in old and old[grade.id] != new[grade.id]:
                grade.needs_manual_grade = True  # resubmitted: the hand grader looks again
        else:
            changed = grade.auto_score is None or float(grade.auto_score) != float(score)
            grade.auto_score = float(score)
            if not graded_by_hand:
                grade.needs_manual_grade = False
            elif changed:
                grade.needs_manual_grade = True  # the override was made on another result
    if table is not None:
        _store_digests(gb, table, old, new)
    if result.flags.get("tampering"):
        for notebook in submission.notebooks:
            notebook.flagged = True
    gb.db.commit()


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
    from nbgrader.preprocessors import AssignLatePenalties
    from traitlets.config import Config

    gb.db.commit()  # the scores just recorded, read back below through nbgrader's columns
    gb.db.expire_all()
    assigner = AssignLatePenalties(config=config if config is not None else Config())
    assigner.init_plugin()
    submission = gb.find_submission(assignment, student)
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
    gb.db.commit()
    return total


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
