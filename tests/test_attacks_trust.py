"""The red team's attacks that need a run of their own: Exercise 4's records rewritten inside
the sandbox, state that outlives a submission (graded with one job, in order), and an LMS
download with an impersonating file name, a lone surrogate and escape codes in a file name.

Each run is ONE grade() call with short limits. A run that raises is recorded, not fatal: the
results are then read back from what it saved, so that one run-stopper does not hide the other
attacks of its run (``test_*_run_completes`` reports it).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from course import SHORT_LIMITS, readable_text, run

from autograder.demo.attacks import (
    FORGED_ROW,
    LMS_STUDENTS,
    ORDERED,
    SHM_KEY,
    SHM_SECRET,
    write_lms_zip,
    write_ordered,
)
from autograder.demo.attacks_ex04 import ATTACKS as EX04_ATTACKS
from autograder.engine.grade import StudentResult

pytestmark = pytest.mark.slow
EX01, EX04 = "ex01_overfitting", "ex04_misconceptions"


class Run:
    """One grade() call: where it wrote, what it returned (or saved), and what it raised."""

    def __init__(self, out: Path, assignment: str, results: dict[str, StudentResult],
                 error: BaseException | None, seconds: float) -> None:
        self.out, self.assignment, self.results = out, assignment, results
        self.error, self.seconds = error, seconds

    def explain(self, student: str) -> str:
        r = self.results.get(student)
        if r is None:
            return f"no result for {student} (run error: {self.error!r})"
        return (f"score {r.score}, per test {r.per_test}, flags {r.flags}, problems "
                f"{r.problems}")

    def feedback(self, student: str) -> Path:
        return self.out / "feedback" / student / self.assignment / f"{self.assignment}.html"


def _grade(out: Path, assignment: str, source: Path, jobs: int) -> Run:
    """Grade ``source`` into ``out``; on an exception, read the results it saved."""
    from autograder.engine.grade import grade

    started, error = time.perf_counter(), None
    try:
        found = {r.student: r for r in grade(assignment, source, out, quiet=True, jobs=jobs,
                                             limits=SHORT_LIMITS)}
    except Exception as err:
        error, found = err, {}
        for path in (out / "results" / assignment).glob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                result = StudentResult(**json.loads(path.read_text("utf-8")))
                # Saved before the totals are filled in: add them up as grade() would.
                result.score = float(sum(v for v in result.per_test.values() if v is not None))
                found[result.student] = result
    return Run(out, assignment, found, error, time.perf_counter() - started)


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        return {row["student_id"]: row for row in csv.DictReader(fh)}


def _check_completed(run_: Run, students: list[str]) -> None:
    """The run returned, and grades.csv and report.txt have a row for each of ``students``."""
    assert run_.error is None, f"the run stopped: {type(run_.error).__name__}: {run_.error}"
    rows = _rows(run_.out)
    assert set(students) <= set(rows), f"rows missing: {set(students) - set(rows)}"
    report = (run_.out / "report.txt").read_text(encoding="utf-8").split("\n")
    for student in students:
        assert sum(line.split(" ", 1)[0] == student for line in report) == 1, student


# --------------------------------------------------------------------------- Exercise 4


@pytest.fixture(scope="module")
def ex04_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Every Exercise 4 attack and its twin, graded in one call, two at a time."""
    from autograder.demo.attacks_ex04 import write_attacks

    base = tmp_path_factory.mktemp("attacks_ex04").resolve()
    write_attacks(base / "submissions")
    return _grade(base / "course", EX04, base / "submissions", jobs=2)


@pytest.mark.parametrize("student", sorted(EX04_ATTACKS))
def test_ex04_records_cannot_be_rewritten(student: str, ex04_run: Run) -> None:
    """A builder's call record or a forward recorder's list rewritten inside the sandbox earns
    nothing: the exact score of the same wrong implementation without the rewrite (its twin,
    graded in the same run), flagged; the twins and the control exact and unflagged."""
    attack, result = EX04_ATTACKS[student], ex04_run.results.get(student)
    assert result is not None, ex04_run.explain(student)
    assert result.score == attack.expected, f"{attack.about}: {ex04_run.explain(student)}"
    assert result.max_score == 21.0, ex04_run.explain(student)
    if attack.twin is not None:
        twin = ex04_run.results[attack.twin]
        assert twin.score == attack.expected and not twin.flags, ex04_run.explain(attack.twin)
    if attack.control:
        assert not result.flags, f"an honest control was flagged: {ex04_run.explain(student)}"
    for flag in attack.flags:
        assert flag in result.flags, f"{attack.about}: no {flag!r} flag: " \
            f"{ex04_run.explain(student)}"
    assert ex04_run.feedback(student).is_file(), ex04_run.explain(student)


def test_ex04_run_completes(ex04_run: Run) -> None:
    _check_completed(ex04_run, sorted(EX04_ATTACKS))


# --------------------------------------------------------------------------- state, in order


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.restype, libc.shmget.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_size_t,
                                                               ctypes.c_int]
    libc.shmctl.restype, libc.shmctl.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int,
                                                               ctypes.c_void_p]
    return libc


def _remove_segment() -> bool:
    """Remove the attack's shared memory segment from this machine; whether there was one."""
    libc = _libc()
    shmid = libc.shmget(SHM_KEY, 0, 0)
    if shmid < 0:
        return False
    libc.shmctl(shmid, 0, None)  # IPC_RMID
    return True


@pytest.fixture(scope="module")
def ordered_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, bool]]:
    """``ORDERED`` graded with one job, in order: (the run, whether the writer's shared memory
    segment was still on this machine after grade() returned). The segment is removed."""
    _remove_segment()  # a leftover of an earlier, interrupted run
    base = tmp_path_factory.mktemp("attacks_ordered").resolve()
    write_ordered(base / "submissions")
    graded = _grade(base / "course", EX01, base / "submissions", jobs=1)
    left = _remove_segment()
    yield graded, left
    _remove_segment()


@pytest.mark.parametrize("student", sorted(ORDERED))
def test_state_does_not_outlive_a_submission(student: str,
                                             ordered_run: tuple[Run, bool]) -> None:
    """Each submission scores exactly its honest score: what an earlier one left in System V
    shared memory or in the trusted worker's random state changes nothing; a notebook with a
    file name that is not UTF-8 is graded like any other."""
    graded, _ = ordered_run
    attack, result = ORDERED[student], graded.results.get(student)
    assert result is not None, graded.explain(student)
    assert result.score == attack.expected, f"{attack.about}: {graded.explain(student)}"
    assert graded.feedback(student).is_file(), graded.explain(student)


def test_shared_memory_is_not_shared(ordered_run: tuple[Run, bool]) -> None:
    """The reader never sees the writer's segment (its feedback shows what it read), and no
    segment of a submission is left on the machine after grading."""
    graded, left = ordered_run
    page = graded.feedback("s6b_shm_reader")
    assert page.is_file(), graded.explain("s6b_shm_reader")
    text = readable_text(page)
    assert "SHM-READ:" in text, "the reader's cell did not run"
    assert SHM_SECRET not in text, "the reader found the previous submission's segment"
    assert not left, "a submission's shared memory segment outlived grading"


def test_ordered_run_completes_and_reruns(ordered_run: tuple[Run, bool]) -> None:
    """The run (with the non-UTF-8 file name) returns with every row; the command run again on
    the same folders exits 0, grades nothing twice and writes the same scores."""
    graded, _ = ordered_run
    _check_completed(graded, sorted(ORDERED))
    before = {s: r["score"] for s, r in _rows(graded.out).items()}
    proc = run([sys.executable, "-m",
                "autograder.engine.grade", EX01, str(graded.out.parent / "submissions"),
                "--out", str(graded.out), "--jobs", "1"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {s: r["score"] for s, r in _rows(graded.out).items()} == before


# --------------------------------------------------------------------------- an LMS download


@pytest.fixture(scope="module")
def lms_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The LMS zip (``LMS_FILES``) graded in one call, two at a time."""
    base = tmp_path_factory.mktemp("attacks_lms").resolve()
    return _grade(base / "course", EX01, write_lms_zip(base / "download"), jobs=2)


def test_victim_keeps_its_own_submission(lms_run: Run) -> None:
    """A file name that embeds the victim's id and a later attempt does not replace the
    victim's notebook: the victim scores its own 12, unflagged."""
    victim = lms_run.results.get("victim")
    assert victim is not None, lms_run.explain("victim")
    assert victim.score == LMS_STUDENTS["victim"].expected, lms_run.explain("victim")
    assert not victim.flags, lms_run.explain("victim")


def test_impersonating_file_is_reported_and_flagged(lms_run: Run) -> None:
    """The attacker's file is in the results (under the attacker's id or its raw file name),
    flagged, and named in the report."""
    mine = {s: r for s, r in lms_run.results.items() if "attacker" in s}
    assert mine, f"the attacker's file is in no result: {sorted(lms_run.results)}"
    assert all(r.flags for r in mine.values()), {s: r.flags for s, r in mine.items()}
    assert "attacker" in (lms_run.out / "report.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("student", ["surrogate", "escname"])
def test_odd_text_is_graded_normally(student: str, lms_run: Run) -> None:
    """A lone surrogate in a cell's output and in an exception's message, and a file name with
    escape codes and a newline: graded like any other, with feedback."""
    result = lms_run.results.get(student)
    assert result is not None, lms_run.explain(student)
    assert result.score == LMS_STUDENTS[student].expected, lms_run.explain(student)
    assert lms_run.feedback(student).is_file(), lms_run.explain(student)


def test_lms_run_completes_with_a_plain_report(lms_run: Run) -> None:
    """Every student has a row; the report has no escape codes and no row forged by a file
    name (exactly one line starts with the victim's id)."""
    _check_completed(lms_run, ["victim", "surrogate", "escname"])
    report = (lms_run.out / "report.txt").read_text(encoding="utf-8")
    assert "\x1b" not in report and "\r" not in report, "escape codes in the report"
    assert not any(line.startswith(("victim", FORGED_ROW)) and FORGED_ROW in line
                   for line in report.split("\n")), "a row forged by a file name"
