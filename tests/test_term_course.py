"""A term in one persistent course folder: nbgrader's own commands run there and see the grading
command's gradebook; timestamps and feedback files let `release_feedback` work; `--student` and a
subset run merge into the class results; one student's folder is refused; `--shard` is a stable
0-based hash; `make clean` never deletes the course folder (issue 17)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from course import ROOT, run, venv_env

from autograder.demo.__main__ import write_submissions

A = "ex01_overfitting"
CLASS = ("ada_correct", "ben_partial", "cy_raises")
CY_TIME = "2026-11-20 10:00:00.000000 UTC"


def rows(course: Path) -> dict[str, dict[str, str]]:
    with (course / "grades.csv").open(newline="", encoding="utf-8") as fh:
        return {r["student_id"]: r for r in csv.DictReader(fh)}


def grade_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "autograder.engine.grade", *args, "--jobs", "2"],
               timeout=600)


def bare_env() -> dict[str, str]:
    """The environment of an instructor's shell: the venv on PATH, no JUPYTER_CONFIG_PATH."""
    env = venv_env()
    env.pop("JUPYTER_CONFIG_PATH", None)
    return env


def nbgrader(args: list[str], cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd,
                          env=env or bare_env(), capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def term(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Three grading runs into one course folder: ada and ben (cy's folder has an nbgrader
    timestamp.txt and submission_secret.txt, due date before it); then a subset folder with cy
    only; then a hand grader scores ada's written answer and `--student ben_partial` regrades
    ben. Snapshots of grades.csv after each run."""
    base = tmp_path_factory.mktemp("term")
    full = base / "class"
    write_submissions(A, full)
    for extra in set(os.listdir(full)) - set(CLASS):
        shutil.rmtree(full / extra)
    cy = full / "cy_raises" / A
    (cy / "timestamp.txt").write_text(CY_TIME)
    (cy / "submission_secret.txt").write_text("ab" * 64)
    first = base / "first"
    for student in ("ada_correct", "ben_partial"):
        shutil.copytree(full / student, first / student)
    only_cy = base / "only_cy"
    shutil.copytree(full / "cy_raises", only_cy / "cy_raises")
    course = base / "course"
    proc = grade_cli(A, str(first), "--course", str(course), "--due", "2026-11-19T00:00:00")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after_first = rows(course)
    proc = grade_cli(A, str(only_cy), "--out", str(course))
    assert proc.returncode == 0, proc.stderr[-3000:]
    after_subset = rows(course)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grade = gb.find_grade("written_answer", A, A, "ada_correct")
        grade.manual_score = 2.0
        grade.needs_manual_grade = False
        gb.db.commit()
    ada_result = course / "results" / A / "ada_correct.json"
    ada_mtime = ada_result.stat().st_mtime_ns
    proc = grade_cli(A, str(full), "--course", str(course), "--student", "ben_partial")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"course": course, "full": full, "first": after_first, "subset": after_subset,
            "final": rows(course), "ada_untouched": ada_result.stat().st_mtime_ns == ada_mtime,
            "regrade_out": proc.stdout}


def test_course_config_points_nbgrader_at_the_commands_gradebook(term: dict) -> None:
    """nbgrader's own commands run in the course folder, with or without the Makefile's
    JUPYTER_CONFIG_PATH, open the gradebook the grading command wrote (formgrader's view)."""
    course = term["course"]
    assert (course / "nbgrader_config.py").is_file()
    for env in (bare_env(), venv_env()):
        proc = nbgrader(["db", "student", "list"], course, env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert all(s in proc.stdout for s in CLASS), proc.stdout


def test_instructor_settings_survive_a_rerun(tmp_path: Path) -> None:
    """Lines below the marker of the generated course config are kept when it is rewritten."""
    from autograder.engine.grade import CONFIG_MARKER, write_course_config

    path = write_course_config(tmp_path, None)
    path.write_text(path.read_text() + "c.Exchange.root = '/srv/exchange'\n")
    write_course_config(tmp_path, "postgresql://u@h/db")
    text = path.read_text()
    assert text.count(CONFIG_MARKER) == 1
    assert "c.Exchange.root = '/srv/exchange'" in text.split(CONFIG_MARKER)[1]
    assert "postgresql://u@h/db" in text.split(CONFIG_MARKER)[0]


def test_stock_generate_feedback_in_the_course_hides_hidden_tests(term: dict) -> None:
    """Plain `nbgrader generate_feedback` in the course folder (no JUPYTER_CONFIG_PATH) uses the
    course's preprocessors: hidden tests never reach the feedback."""
    course = term["course"]
    proc = nbgrader(["generate_feedback", A, "--student", "ben_partial", "--force"], course)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (course / "feedback" / "ben_partial" / A / f"{A}.html").read_text("utf-8")
    assert "BEGIN HIDDEN TESTS" not in html
    assert "ben_partial" in html or "test_count_hidden" in html or len(html) > 1000


def test_release_feedback_works_and_timestamps_travel(term: dict, tmp_path: Path) -> None:
    """feedback/<student>/<A>/ holds timestamp.txt (the submission's, else the grading time) and
    the submission secret: `nbgrader release_feedback` releases every student's feedback; cy's
    submission time is in the gradebook, grades.csv and the report (late)."""
    course = term["course"]
    fb = course / "feedback" / "cy_raises" / A
    assert (fb / "timestamp.txt").read_text() == CY_TIME
    assert (fb / "submission_secret.txt").read_text() == "ab" * 64
    assert (course / "feedback" / "ada_correct" / A / "timestamp.txt").read_text().strip()
    proc = nbgrader(["release_feedback", A, f"--Exchange.root={tmp_path}",
                     "--CourseDirectory.course_id=dropout"], course)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "dropout" / "feedback").glob("*.html"))) == len(CLASS)
    assert term["final"]["cy_raises"]["timestamp"].startswith("2026-11-20T10:00:00")
    report = (course / "report.txt").read_text("utf-8")
    assert "Late submissions: cy_raises" in report


def test_subset_run_merges_into_the_class(term: dict) -> None:
    """A run on a folder with one student adds that row; the others are kept."""
    assert set(term["first"]) == {"ada_correct", "ben_partial"}
    assert set(term["subset"]) == set(CLASS)
    assert term["subset"]["ben_partial"]["score"] == term["first"]["ben_partial"]["score"]


def test_manual_points_pending_then_counted_and_kept(term: dict) -> None:
    """Totals say "pending" before the written answer is graded by hand and include the manual
    points after; a later regrade of another student keeps them."""
    assert term["first"]["ada_correct"]["total"] == "pending"
    ada = term["final"]["ada_correct"]
    assert (float(ada["auto_score"]), float(ada["manual_score"])) == (12.0, 2.0)
    assert float(ada["score"]) == float(ada["total"]) == 14.0


def test_student_regrades_only_that_student(term: dict) -> None:
    """--student regrades ben only (ada's cached result untouched) and keeps everyone's rows."""
    assert term["ada_untouched"]
    assert "graded ben_partial in" in term["regrade_out"]
    assert "graded ada_correct in" not in term["regrade_out"]
    assert set(term["final"]) == set(CLASS)
    assert term["final"]["cy_raises"]["score"] == term["subset"]["cy_raises"]["score"]


def test_one_students_folder_is_refused(term: dict, tmp_path: Path) -> None:
    """`make grade A=ex01_overfitting S=/path/alice`: refused with exit 2, naming --student;
    nothing is written to the course folder."""
    course = tmp_path / "course"
    alice = term["full"] / "ben_partial"
    proc = grade_cli(A, str(alice), "--course", str(course))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--student" in proc.stderr and "one student's folder" in proc.stderr
    assert not course.exists()
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(alice / A / f"{A}.ipynb", flat / f"{A}.ipynb")
    proc = grade_cli(A, str(flat), "--course", str(course))
    assert proc.returncode == 2 and not course.exists()


def test_shard_membership_is_a_stable_hash() -> None:
    """Adding a student never moves another; shards partition the class."""
    from autograder.engine.grade import shard_of

    students = [f"s{i:03d}" for i in range(60)]
    before = {s: shard_of(s, 4) for s in students}
    after = {s: shard_of(s, 4) for s in [*students, "aaa_late_joiner"]}
    assert all(after[s] == before[s] for s in students)
    assert set(before.values()) == {0, 1, 2, 3}


def test_shard_is_zero_based_and_reads_scheduler_indices() -> None:
    """K/N is 0-based; auto reads SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX; a variable's
    name works; K = N or an unset variable is refused."""
    from autograder.engine.grade import parse_shard

    assert parse_shard("0/3", {}) == (0, 3)
    assert parse_shard("auto/4", {"SLURM_ARRAY_TASK_ID": "3"}) == (3, 4)
    assert parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "0"}) == (0, 4)
    assert parse_shard("MY_INDEX/2", {"MY_INDEX": "1"}) == (1, 2)
    for bad, env in (("3/3", {}), ("auto/2", {}), ("auto/2", {"SLURM_ARRAY_TASK_ID": "2"})):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad, env)
    proc = grade_cli(A, str(ROOT / "solutions"), "--shard", "2/2", "--course", "/nonexistent/x")
    assert proc.returncode == 2 and "0-based" in proc.stderr


def test_shards_partition_the_collected_students(tmp_path: Path) -> None:
    """collect's shards are disjoint, cover the class, and follow shard_of."""
    from autograder.engine.grade import collect, shard_of

    subs = tmp_path / "subs"
    expected = write_submissions(A, subs)
    seen: list[str] = []
    for k in range(2):
        tasks, _ = collect([A], subs, tmp_path / f"out{k}", None, (k, 2))
        assert all(shard_of(t.student, 2) == k for t in tasks)
        seen += [t.student for t in tasks]
    assert sorted(seen) == sorted(expected)


def test_default_course_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The course folder defaults to $DROPOUT_COURSE_DIR, else course/ (ignored by git)."""
    from autograder.engine.grade import default_course

    monkeypatch.delenv("DROPOUT_COURSE_DIR", raising=False)
    assert default_course() == ROOT / "course"
    monkeypatch.setenv("DROPOUT_COURSE_DIR", "/srv/term")
    assert default_course() == Path("/srv/term")
    proc = subprocess.run(["git", "check-ignore", "-q", "course/x"], cwd=ROOT, check=False)
    assert proc.returncode == 0


def test_make_clean_keeps_the_course_folder(tmp_path: Path) -> None:
    """`make clean` deletes _build/ and never the course folder (run on a copy of the
    Makefile)."""
    proc = run(["make", "-n", "clean"])
    assert proc.returncode == 0 and "course" not in proc.stdout
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "_build").mkdir()
    (tmp_path / "course").mkdir()
    (tmp_path / "course" / "gradebook.db").write_text("grades")
    proc = run(["make", "--no-print-directory", "clean"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "_build").exists()
    assert (tmp_path / "course" / "gradebook.db").read_text() == "grades"


def test_plain_generate_assignment_at_the_repo_root(tmp_path: Path) -> None:
    """`nbgrader generate_assignment A --force` at the repository root works with no
    JUPYTER_CONFIG_PATH (the root's nbgrader_config.py); run in a copy of the root's config
    files and solutions/ so that exercises/ is not touched."""
    root = tmp_path / "repo"
    for rel in ("nbgrader_config.py", "autograder/nbgrader_config.py",
                "autograder/student/kit/nbgrader_config.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    shutil.copytree(ROOT / "solutions" / A, root / "solutions" / A)
    proc = nbgrader(["generate_assignment", A, "--force", "--no-db"], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = root / "exercises" / A / f"{A}.ipynb"
    assert fresh.read_bytes() == (ROOT / "exercises" / A / f"{A}.ipynb").read_bytes()


def test_prepare_makes_a_course_folder_ready_for_release(tmp_path: Path) -> None:
    """`make course` (``--prepare``): before any submission the folder has its config, the
    released notebook and the assignment (with its due date) in the gradebook, so that stock
    `nbgrader db assignment list` there sees it; no SUBMISSIONS needed, nothing graded."""
    course = tmp_path / "course"
    proc = run([sys.executable, "-m", "autograder.engine.grade", A, "--prepare", "--course",
                str(course), "--due", "2027-02-01T23:59:00"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (course / "nbgrader_config.py").is_file()
    assert (course / "exercises" / A / f"{A}.ipynb").is_file()
    assert not (course / "grades.csv").exists(), "--prepare must grade nothing"
    listed = nbgrader(["db", "assignment", "list"], course)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert A in listed.stdout and "2027-02-01 23:59:00" in listed.stdout, listed.stdout
    missing = run([sys.executable, "-m", "autograder.engine.grade", A, "--course",
                   str(course)], timeout=120)
    assert missing.returncode == 2 and "SUBMISSIONS is required" in missing.stderr


def _copy_course(term: dict, tmp_path: Path) -> Path:
    """A copy of the term's course folder (its tests above keep the original)."""
    course = tmp_path / "course"
    shutil.copytree(term["course"], course)
    return course


def test_late_rule_is_applied_again_after_hand_grading(term: dict, tmp_path: Path) -> None:
    """With nbgrader's "zero" rule, a late submission's hand-graded points are taken too: the
    totals rebuilt by `export merge` (what the guide says to run after formgrader) apply the
    rule anew instead of keeping the penalty computed before the hand grade."""
    course = _copy_course(term, tmp_path)
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text() + 'c.LateSubmissionPlugin.penalty_method = "zero"\n')
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:  # cy: late, hand-graded now
        grade = gb.find_grade("written_answer", A, A, "cy_raises")
        grade.manual_score = 2.0
        grade.needs_manual_grade = False
        gb.db.commit()
    proc = run([sys.executable, "-m", "autograder.engine.export", "merge", "--course",
                str(course)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cy = rows(course)["cy_raises"]
    assert float(cy["manual_score"]) == 2.0, cy
    assert float(cy["late_penalty"]) == float(cy["score"]) >= 2.0, cy
    assert float(cy["total"]) == 0.0, cy


def test_student_found_nowhere_keeps_the_graded_row(term: dict, tmp_path: Path) -> None:
    """`--student ada_correct` on a class folder without her: a note, never a 0 in place of
    her graded submission."""
    course = _copy_course(term, tmp_path)
    before = rows(course)["ada_correct"]
    klass = tmp_path / "class"
    shutil.copytree(term["full"] / "ben_partial", klass / "ben_partial")
    proc = grade_cli(A, str(klass), "--course", str(course), "--student", "ada_correct")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ada = rows(course)["ada_correct"]
    assert (ada["status"], ada["score"], ada["total"]) == (
        "graded", before["score"], before["total"]), ada
    assert "nothing found" in ada["problems"], ada
