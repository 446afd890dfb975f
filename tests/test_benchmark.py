"""The grading benchmark end to end on a tiny class: it generates the class it was asked for,
grades it with stock nbgrader and with the course's command, and reports every figure in its
table and in benchmark.json (timings are not judged here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from course import run

pytestmark = pytest.mark.slow
EXERCISE = "ex01_overfitting"
PER_EXERCISE = 2
ROW_FIELDS = {"exercise", "submissions", "stock_serial_s", "ours_jobs1_s", "ours_jobsN_s",
              "speedup_stock_over_jobsN", "speedup_stock_over_jobs1"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """Run the benchmark once on one exercise: its output folder, printed text and JSON."""
    out = tmp_path_factory.mktemp("bench") / "out"
    proc = run([sys.executable, "-m", "autograder.engine.benchmark", "--exercises", EXERCISE,
                "--per-exercise", str(PER_EXERCISE), "--out", str(out)], timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc.stdout, json.loads((out / "benchmark.json").read_text(encoding="utf-8"))


def test_generates_the_asked_class(bench: tuple[Path, str, dict]) -> None:
    """The class holds exactly the asked number of submissions, cycled demo students under new
    ids, and the stock course received all of them."""
    out, _text, _report = bench
    students = sorted(p.name for p in (out / "class" / EXERCISE).iterdir())
    assert students == ["s001_ada_correct", "s002_ben_partial"]
    for student in students:
        assert (out / "class" / EXERCISE / student / EXERCISE / f"{EXERCISE}.ipynb").is_file()
    assert sorted(p.name for p in (out / "stock" / EXERCISE / "submitted").iterdir()) == students
    # one full submission graded into a new course folder, then another into the same one
    full = ["full_correct", "full_correct_again"]
    assert sorted(p.name for p in (out / "full").iterdir()) == full
    results = out / "full_graded" / "results" / EXERCISE
    assert sorted(p.stem for p in results.glob("*.json")) == full


def test_json_has_every_figure(bench: tuple[Path, str, dict]) -> None:
    """Every row and the totals carry all columns; counts, latency and targets are there;
    every run was timed and gave the same scores as the others and as the demo expects."""
    _out, _text, report = bench
    (row,) = report["exercises"]
    for entry in (row, report["total"]):
        assert set(entry) == ROW_FIELDS
        assert entry["submissions"] == PER_EXERCISE
        for key in ROW_FIELDS - {"exercise", "submissions"}:
            assert isinstance(entry[key], float) and entry[key] > 0, key
    assert row["exercise"] == EXERCISE and report["total"]["exercise"] == "total"
    assert report["per_exercise"] == PER_EXERCISE and report["jobs"] >= 1
    full = report["full_submission"]
    assert list(full["per_exercise_s"]) == [EXERCISE] and full["per_exercise_s"][EXERCISE] > 0
    assert full["cold_s"] > 0 and full["warm_s"] > 0
    assert full["students"] == {EXERCISE: "ada_correct"}
    assert [t["status"] in {"PASS", "MISS"} for t in report["targets"]] == [True, True]
    assert report["targets"][1]["value"] == full["cold_s"]
    assert report["failed_runs"] == []
    # the class, plus the full submission graded twice (new folder, then the same folder)
    assert report["score_check"] == {"students_compared": PER_EXERCISE + 2, "mismatches": []}


def test_table_shows_every_figure(bench: tuple[Path, str, dict]) -> None:
    """The printed table has the columns, the exercise and totals rows, the latency line and
    both targets with their verdicts."""
    _out, text, report = bench
    n = report["jobs"]
    for head in ("exercise", "submissions", "stock serial s", "ours --jobs 1 s",
                 f"ours --jobs {n} s", f"speed-up stock/jobs {n}", "speed-up stock/jobs 1"):
        assert head in text, head
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith((EXERCISE, "total "))}
    assert set(rows) == {EXERCISE, "total"}
    assert all(cells[1] == str(PER_EXERCISE) and len(cells) == 7 for cells in rows.values())
    assert "One full submission (1 exercise(s), one command" in text
    verdicts = [line.split()[0] for line in text.splitlines() if "(wanted " in line]
    assert len(verdicts) == 2 and set(verdicts) <= {"PASS", "MISS"}
    assert "SCORE MISMATCH" not in text and "RUN FAILED" not in text
