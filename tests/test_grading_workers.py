"""The grading command at scale: parallel grades equal serial ones, a rerun (or a resumed,
interrupted run) neither loses nor duplicates a grade, an LMS zip download is graded like the
nbgrader layout, and the gradebook can live in a real PostgreSQL server."""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pg_server import postgres_url  # noqa: F401 (a pytest fixture)

from autograder.demo.__main__ import write_submissions
from autograder.demo.ex02_dropout_mechanics import EXPECTED as EX02_EXPECTED
from autograder.engine.grade import grade

pytestmark = pytest.mark.slow
EX02 = "ex02_dropout_mechanics"
EX01 = "ex01_overfitting"


def scores(results: list) -> dict[str, tuple[float, dict]]:
    return {r.student: (r.score, r.per_test) for r in results}


def test_parallel_grades_equal_serial_and_reruns_resume(tmp_path: Path) -> None:
    """--jobs 2 gives the same per-test grades as --jobs 1; running again regrades nothing; a
    lost result (an interrupted run) is regraded once, and the gradebook keeps one submission
    per student."""
    from nbgrader.api import Gradebook

    expected = write_submissions(EX02, tmp_path / "subs")
    serial = grade(EX02, tmp_path / "subs", tmp_path / "serial", quiet=True, jobs=1)
    out = tmp_path / "parallel"
    parallel = grade(EX02, tmp_path / "subs", out, quiet=True, jobs=2)
    assert scores(serial) == scores(parallel)
    assert {r.student: r.score for r in parallel} == expected
    again = grade(EX02, tmp_path / "subs", out, quiet=True, jobs=2)
    assert scores(again) == scores(parallel)
    assert [r.seconds for r in again] == [r.seconds for r in parallel], "regraded a cached result"
    lost = sorted(expected)[0]
    (out / "results" / EX02 / f"{lost}.json").unlink()  # as if the run was killed before saving it
    resumed = grade(EX02, tmp_path / "subs", out, quiet=True, jobs=2)
    assert scores(resumed) == scores(parallel)
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        graded = sorted(s.student.id for s in gb.find_assignment(EX02).submissions)
        assert graded == sorted(expected)
        assert {s: gb.find_submission(EX02, s).score for s in expected} == expected


def test_lms_zip_download_is_graded(tmp_path: Path) -> None:
    """A zip named per nbgrader's zip-collect convention grades like the nbgrader layout."""
    expected = write_submissions(EX01, tmp_path / "subs")
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for student in expected:
            notebook = tmp_path / "subs" / student / EX01 / f"{EX01}.ipynb"
            # The convention's greedy pattern reads ids without underscores (e.g. Blackboard's).
            lms_id = student.replace("_", "")
            zf.write(notebook, f"{EX01}_{lms_id}_attempt_2026-11-20-10-00-00_{EX01}.ipynb")
    results = grade(EX01, archive, tmp_path / "out", quiet=True, jobs=2)
    assert {r.student: r.score for r in results} == {
        s.replace("_", ""): score for s, score in expected.items()}


def test_postgres_gradebook(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    """With --db-url the grades land in a real PostgreSQL gradebook, the same as with sqlite."""
    from nbgrader.api import Gradebook

    expected = write_submissions(EX01, tmp_path / "subs")
    keep = {"ada_correct", "ben_partial"}
    for student in set(expected) - keep:
        for path in sorted((tmp_path / "subs" / student).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / "subs" / student).rmdir()
    results = grade(EX01, tmp_path / "subs", tmp_path / "out", quiet=True, jobs=2,
                    db_url=postgres_url)
    assert {r.student: r.score for r in results} == {s: expected[s] for s in keep}
    assert not (tmp_path / "out" / "gradebook.db").exists()
    with Gradebook(postgres_url) as gb:
        assert "postgresql" in str(gb.db.get_bind().url)
        got = {s: gb.find_submission(EX01, s).score for s in keep}
    assert got == {s: expected[s] for s in keep}


def test_full_submissions_in_one_run(tmp_path: Path) -> None:
    """`grade` with every assignment grades each student's full submission in one run, into
    one gradebook; a student who handed in one assignment is 'not submitted' (not broken) for
    the others; a second run regrades nothing."""
    from nbgrader.api import Gradebook

    from autograder.demo.__main__ import ASSIGNMENTS
    from autograder.engine.grade import assignment_names

    assert assignment_names("all") == ASSIGNMENTS
    demo, subs = tmp_path / "demo", tmp_path / "subs"
    expected: dict[tuple[str, str], float] = {}
    for assignment in ASSIGNMENTS:
        scores = write_submissions(assignment, demo / assignment)
        correct = next(s for s in scores if s.endswith("_correct"))
        (subs / "full" / assignment).mkdir(parents=True)
        source = demo / assignment / correct / assignment / f"{assignment}.ipynb"
        (subs / "full" / assignment / source.name).write_bytes(source.read_bytes())
        expected[(assignment, "full")] = scores[correct]
    only = demo / EX02 / "bo_partial" / EX02 / f"{EX02}.ipynb"
    (subs / "bo" / EX02).mkdir(parents=True)
    (subs / "bo" / EX02 / only.name).write_bytes(only.read_bytes())
    expected[(EX02, "bo")] = EX02_EXPECTED["bo_partial"]

    out = tmp_path / "out"
    results = grade(ASSIGNMENTS, subs, out, quiet=True, jobs=2)
    got = {(r.assignment, r.student): r for r in results}
    assert {k: r.score for k, r in got.items() if not r.problems} == expected
    missing = {k for k, r in got.items() if r.problems}
    assert missing == {(a, "bo") for a in ASSIGNMENTS if a != EX02}
    for key in missing:
        assert got[key].problems == ["not submitted"] and not got[key].flags, key
        assert got[key].score == 0 and got[key].max_score > 0, key
    assert [(r.assignment, r.student) for r in results] == sorted(
        got, key=lambda k: (ASSIGNMENTS.index(k[0]), k[1]))
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert sorted(a.name for a in gb.assignments) == sorted(ASSIGNMENTS)
        for (assignment, student), score in expected.items():
            assert gb.find_submission(assignment, student).score == score
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        rows = {(row["assignment"], row["student_id"]): row for row in csv.DictReader(fh)}
    assert {k: float(row["score"]) for k, row in rows.items()} == {
        k: r.score for k, r in got.items()}
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert all(f"{a}:" in report for a in ASSIGNMENTS)
    for assignment in ASSIGNMENTS:
        assert (out / "feedback" / "full" / assignment / f"{assignment}.html").is_file()

    again = grade(ASSIGNMENTS, subs, out, quiet=True, jobs=2)
    assert [(r.assignment, r.student, r.score, r.seconds) for r in again] == [
        (r.assignment, r.student, r.score, r.seconds) for r in results], "regraded a cached one"


def test_an_lms_download_is_one_assignment(tmp_path: Path) -> None:
    """Several assignments cannot share one LMS download: refused before anything is graded."""
    from autograder.demo.__main__ import ASSIGNMENTS

    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{EX01}_ann_attempt_2026-11-20-10-00-00_{EX01}.ipynb", "{}")
    with pytest.raises(SystemExit, match="one assignment"):
        grade(ASSIGNMENTS, archive, tmp_path / "out", quiet=True, jobs=1)
    assert not (tmp_path / "out" / "gradebook.db").exists()


def test_concurrent_graders_never_share_a_sandbox_uid() -> None:
    """Each grading process claims its own sandbox uid (a lock file held while it lives), so
    two grading runs on one machine never share one; an exited process frees its uid."""
    from autograder.engine.sandbox import UID_BASE, UID_COUNT

    code = ("import sys; from autograder.engine.sandbox import claim_uid; "
            "print(claim_uid(), claim_uid(), flush=True); sys.stdin.read()")
    root = Path(__file__).resolve().parent.parent

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", code], cwd=root, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    procs = [start() for _ in range(3)]
    try:
        claimed = [proc.stdout.readline().split() for proc in procs]
    finally:
        for proc in procs:
            proc.communicate("", timeout=30)
    uids = [int(first) for first, again in claimed if first == again]
    assert len(uids) == 3, f"a process's uid changed between two claims: {claimed}"
    assert len(set(uids)) == 3 and all(UID_BASE <= u < UID_BASE + UID_COUNT for u in uids)
    late = start()
    line = late.stdout.readline()
    late.communicate("", timeout=30)
    assert int(line.split()[0]) <= max(uids), "the uids of exited processes were not freed"
