"""The grading benchmark end to end on a tiny class: it generates the class it was asked for,
grades it with stock nbgrader and with the course's command, and reports every figure in its
tables and in benchmark.json (timings are not judged here); class mode on a tiny class; and the
figures' arithmetic (phase medians, targets) on synthetic numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from course import run

from autograder.engine import benchmark as bm
from autograder.engine import grade

slow = pytest.mark.slow
EXERCISE = "ex01_overfitting"
PER_EXERCISE = 2
CLASS_SIZE = 6
ROW_FIELDS = {"exercise", "submissions", "stock_serial_s", "ours_jobs1_s", "ours_jobsN_s",
              "speedup_stock_over_jobsN", "speedup_stock_over_jobs1"}
WORKER_PHASES = {"start", "student", "tests", "stop", "feedback"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """Run the benchmark once on one exercise: its output folder, printed text and JSON."""
    out = tmp_path_factory.mktemp("bench") / "out"
    proc = run([sys.executable, "-m", "autograder.engine.benchmark", "--exercises", EXERCISE,
                "--per-exercise", str(PER_EXERCISE), "--out", str(out)], timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc.stdout, json.loads((out / "benchmark.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bench_class(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """Class mode once: a class of CLASS_SIZE (the demo's five students, cycled) at --jobs 2
    and --jobs 1."""
    out = tmp_path_factory.mktemp("bench-class") / "out"
    proc = run([sys.executable, "-m", "autograder.engine.benchmark", "--class-size",
                str(CLASS_SIZE), "--exercises", EXERCISE, "--jobs", "2", "--out", str(out)],
               timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc.stdout, json.loads((out / "benchmark.json").read_text(encoding="utf-8"))


def _table_rows(text: str, first: str) -> dict[str, list[str]]:
    """The rows of the printed table that follows the line starting with ``first``, by their
    first cell (up to the blank line or legend that ends it)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("  "):
            break
        if not line.startswith("-"):
            rows[line.split()[0]] = line.split()
    return rows


@slow
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
    full = ["full_correct", "full_correct_again", "full_correct_served"]
    assert sorted(p.name for p in (out / "full").iterdir()) == full
    results = out / "full_graded" / "results" / EXERCISE
    assert sorted(p.stem for p in results.glob("*.json")) == full


@slow
def test_json_has_every_figure(bench: tuple[Path, str, dict]) -> None:
    """Every row and the totals carry all columns; counts, latency, phases and targets are
    there; every run was timed and gave the same scores as the others and as the demo
    expects."""
    _out, _text, report = bench
    (row,) = report["exercises"]
    for entry in (row, report["total"]):
        assert set(entry) == ROW_FIELDS
        assert entry["submissions"] == PER_EXERCISE
        for key in ROW_FIELDS - {"exercise", "submissions"}:
            assert isinstance(entry[key], float) and entry[key] > 0, key
    assert row["exercise"] == EXERCISE and report["total"]["exercise"] == "total"
    assert report["per_exercise"] == PER_EXERCISE and report["jobs"] >= 1
    assert report["mode"] == "standard"
    full = report["full_submission"]
    assert list(full["per_exercise_s"]) == [EXERCISE] and full["per_exercise_s"][EXERCISE] > 0
    assert full["cold_s"] > 0 and full["warm_s"] > 0 and full["service_s"] > 0
    assert full["students"] == {EXERCISE: "ada_correct"}
    phases = report["phases"]
    assert phases["run"] == "--jobs 1"
    assert [r["exercise"] for r in phases["exercises"]] == [EXERCISE]
    for entry in (*phases["exercises"], phases["total"]):
        assert entry["results"] == PER_EXERCISE
        for phase in WORKER_PHASES:
            assert entry["median_s"][phase] >= 0, phase
        assert entry["median_worker_s"] > 0 and entry["peak_mib"]["worker"] > 0
    assert report["fixed_cost_s"] == phases["total"]["median_s"]["start"]
    targets = report["targets"]
    assert len(targets) == 4 and all(t["status"] in {"PASS", "FAIL"} for t in targets)
    assert [t["value"] for t in targets] == [
        report["total"]["speedup_stock_over_jobs1"], report["total"]["speedup_stock_over_jobsN"],
        report["fixed_cost_s"], full["service_s"]]
    assert "all 4" in targets[3]["note"]  # one exercise here: the run says so
    assert f"without the warm service (processes started by the command): {full['warm_s']:.1f} s" \
        in targets[3]["note"]
    assert report["failed_runs"] == []
    # the class, plus the full submission graded three times (new folder, the same folder, the
    # same folder with its warm service)
    assert report["score_check"] == {"students_compared": PER_EXERCISE + 3, "mismatches": []}


@slow
def test_results_carry_phases_and_memory(bench: tuple[Path, str, dict]) -> None:
    """Every result file the --jobs 1 run saved has the worker's phases (non-negative, adding
    up to no more than the submission's seconds) and the worker's and its zygote's peak
    memory."""
    out, _text, _report = bench
    records = bm.read_results(out / "jobs1" / EXERCISE / "results" / EXERCISE)
    assert len(records) == PER_EXERCISE
    for record in records:
        phases, memory = record["phases"], record["memory"]
        assert set(phases) >= WORKER_PHASES, phases
        assert all(isinstance(v, float) and v >= 0 for v in phases.values()), phases
        worker = sum(phases[p] for p in ("start", "student", "tests", "stop"))
        assert worker <= record["seconds"] + 1e-6
        assert memory["worker_peak"] > 0
        assert memory.get("sandbox_peak", 1) > 0
        assert memory["zygote_peak"] > 0  # each worker forks its sandboxes from a zygote


@slow
def test_table_shows_every_figure(bench: tuple[Path, str, dict]) -> None:
    """The printed tables have their columns, the exercise and totals rows with numbers, the
    latency line and the four targets with their verdicts."""
    _out, text, report = bench
    n = report["jobs"]
    for head in ("exercise", "submissions", "stock serial s", "ours --jobs 1 s",
                 f"ours --jobs {n} s", f"speed-up stock/jobs {n}", "speed-up stock/jobs 1"):
        assert head in text, head
    rows = _table_rows(text, "exercise  ")
    assert set(rows) == {EXERCISE, "total"}
    assert all(cells[1] == str(PER_EXERCISE) and len(cells) == 7 for cells in rows.values())
    assert "One full submission (1 exercise(s), one command" in text
    verdicts = [line.split()[0] for line in text.splitlines() if "(wanted " in line]
    assert len(verdicts) == 4 and set(verdicts) <= {"PASS", "FAIL"}
    assert "SCORE MISMATCH" not in text and "RUN FAILED" not in text


@slow
def test_phase_table_is_printed(bench: tuple[Path, str, dict]) -> None:
    """The phase table follows the main one: a row per exercise and one over all, each with a
    number in every worker phase, '-' for the gradebook when the command did not measure it,
    and the peak memory of worker and sandbox in MiB."""
    _out, text, report = bench
    assert "Where a submission's time goes (--jobs 1 run)" in text
    head = next(line for line in text.splitlines() if line.startswith("exercise ")
                and " start " in line)
    names = head.split()
    assert names[:8] == ["exercise", "results", "start", "student", "tests", "stop",
                         "feedback", "gradebook"]
    lines = text.splitlines()
    rows = _table_rows("\n".join(lines[lines.index(head) - 1:]), "Where a submission")
    assert set(rows) == {EXERCISE, "all"}
    for cells in rows.values():
        assert cells[1] == str(PER_EXERCISE)
        for value in cells[2:7]:
            assert float(value) >= 0
        gradebook = report["phases"]["total"]["median_s"]["gradebook"]
        assert cells[7] == ("-" if gradebook is None else f"{gradebook:.3f}")
        assert float(cells[8]) > 0 and float(cells[9]) > 0  # worker s, worker MiB
        assert cells[10] == "-" or float(cells[10]) > 0  # sandbox MiB (none without a cgroup)


@slow
def test_class_mode(bench_class: tuple[Path, str, dict]) -> None:
    """Class mode grades CLASS_SIZE generated submissions at --jobs 2 and --jobs 1 (no stock
    nbgrader, no full submission), every score exactly as the demo expects in both runs, and
    prints its two targets and the phase table."""
    out, text, report = bench_class
    assert report["mode"] == "class" and report["class_size"] == CLASS_SIZE
    students = sorted(p.name for p in (out / "class" / EXERCISE).iterdir())
    assert len(students) == CLASS_SIZE and students[-1] == "s006_ada_correct"
    assert not (out / "stock").exists() and not (out / "full").exists()
    (row,) = report["exercises"]
    assert row["stock_serial_s"] is None and row["ours_jobs1_s"] > 0 and row["ours_jobsN_s"] > 0
    assert report["failed_runs"] == []
    assert report["score_check"] == {"students_compared": CLASS_SIZE, "mismatches": []}
    assert report["grades_differing_from_jobs1"] == 0
    for mode in ("jobs1", "jobsN"):
        scores = bm.read_grades(out / mode / EXERCISE / "grades.csv")
        assert scores is not None and len(scores) == CLASS_SIZE
    wall, same = report["targets"]
    assert wall["value"] == row["ours_jobsN_s"] and wall["status"] == "n/a"
    assert "1,000" in wall["note"]  # a tiny class: no verdict, the target is for 1,000
    assert same["value"] == 0 and same["status"] == "PASS"
    assert report["phases"]["total"]["results"] == CLASS_SIZE
    assert "Where a submission's time goes (--jobs 1 run)" in text
    assert "Scores compared (--jobs 1, --jobs 2, expected): 6 student-exercises, 0 mismatch" \
        in text
    verdicts = [line.split()[0] for line in text.splitlines() if "(wanted " in line]
    assert len(verdicts) == 2 and verdicts[1] == "PASS"
    assert "One full submission" not in text


# ------------------------------------------------------------- the figures, on synthetic data


def _record(start: float | None, memory: dict[str, int] | None = None, **more: float) -> dict:
    phases = {} if start is None else {"start": start, "student": 0.01, "tests": 1.0, **more}
    return {"seconds": 2.0, "phases": phases, "memory": memory or {}}


def test_phase_row_medians_and_peaks() -> None:
    """Medians per phase over the results that have it; peaks are the highest, in MiB; an
    old result file without phases or memory counts but gives no figure; a figure no result
    has is None."""
    mib = 2**20
    records = [_record(0.2, {"worker_peak": 300 * mib, "sandbox_peak": 100 * mib}),
               _record(0.4, {"worker_peak": 310 * mib}, gradebook=0.05),
               _record(0.9, {"worker_peak": 305 * mib, "sandbox_peak": 120 * mib}),
               {"seconds": 3.0}]  # saved before phases existed
    row = bm.phase_row("ex", records)
    assert row["results"] == 4
    assert row["median_s"]["start"] == 0.4 and row["median_s"]["tests"] == 1.0
    assert row["median_s"]["gradebook"] == 0.05 and row["median_s"]["feedback"] is None
    assert row["median_worker_s"] == 2.0
    assert row["peak_mib"] == {"worker": 310.0, "sandbox": 120.0, "zygote": None}
    empty = bm.phase_row("none", [])
    assert empty["results"] == 0 and set(empty["median_s"].values()) == {None}


def test_phase_table_reads_saved_results(tmp_path: Path) -> None:
    """The table pools every exercise's result files into its 'all' row; unreadable files are
    left out; the zygote column appears only when a result has it; '-' where no figure."""
    for exercise, starts in (("a", [0.1, 0.3]), ("b", [0.5])):
        folder = tmp_path / exercise
        folder.mkdir()
        for i, start in enumerate(starts):
            (folder / f"s{i}.json").write_text(json.dumps(_record(start, {"worker_peak": 2**20})))
    (tmp_path / "a" / "broken.json").write_text("{")
    table = bm.phase_table({"a": tmp_path / "a", "b": tmp_path / "b"}, "--jobs 1")
    assert [r["results"] for r in table["exercises"]] == [2, 1]
    assert table["total"]["results"] == 3 and table["total"]["median_s"]["start"] == 0.3
    text = bm.format_phases(table)
    assert "zygote MiB" not in text
    rows = _table_rows(text, "Where a submission")
    assert rows["all"][2] == "0.300" and rows["all"][7] == "-"  # gradebook not measured
    assert rows["a"][-1] == "-"  # sandbox: no cgroup figure
    (tmp_path / "b" / "z.json").write_text(json.dumps(_record(0.5, {"zygote_peak": 50 * 2**20})))
    text = bm.format_phases(bm.phase_table({"b": tmp_path / "b"}, "--jobs 1"))
    assert "zygote MiB" in text and _table_rows(text, "Where a submission")["b"][-1] == "50"


def test_target_verdicts() -> None:
    """PASS when met, FAIL when not, n/a when not measured; the value's unit and any note are
    printed."""
    assert bm.target("t", ">= 4x", 4.0, lambda v: v >= 4)["status"] == "PASS"
    assert bm.target("t", ">= 4x", 3.99, lambda v: v >= 4)["status"] == "FAIL"
    assert bm.target("t", ">= 4x", None, lambda v: v >= 4)["status"] == "n/a"
    lines = bm.format_targets([bm.target("speed", ">= 4x", 1.5, lambda v: v >= 4, "x"),
                               bm.target("cost", "<= 0.3 s", None, lambda v: v <= 0.3, " s",
                                         note="not measured here")])
    assert lines == ["  FAIL  speed: 1.50x (wanted >= 4x)",
                     "  n/a   cost: - (wanted <= 0.3 s)", "        (not measured here)"]


def test_standard_targets() -> None:
    """The issue's four targets judged on synthetic figures: --jobs 1 >= 4x and --jobs N >= 7x
    stock serial, fixed cost <= 0.3 s, full submission <= 4 s; a skipped stock run leaves the
    speed-ups n/a; --jobs other than 2 and fewer than four exercises are said."""
    total = {"speedup_stock_over_jobs1": 4.2, "speedup_stock_over_jobsN": 6.9}
    got = bm.standard_targets(total, 0.25, 4.5, 2, 4)
    assert [t["status"] for t in got] == ["PASS", "FAIL", "PASS", "FAIL"]
    assert [t["note"] for t in got] == ["", "", "", ""]
    assert got[1]["target"].startswith("--jobs 2,")
    none = {"speedup_stock_over_jobs1": None, "speedup_stock_over_jobsN": None}
    got = bm.standard_targets(none, 0.31, 3.9, 4, 1)
    assert [t["status"] for t in got] == ["n/a", "n/a", "FAIL", "PASS"]
    assert got[1]["target"].startswith("--jobs 4,") and "--jobs 2" in got[1]["note"]
    assert "1 exercise(s)" in got[3]["note"]


def test_class_targets_and_grade_comparison() -> None:
    """Class mode: the wall time against 300 s, the grades against --jobs 1 (n/a when it was
    skipped; a different or missing grade, or unreadable grades, count as differing)."""
    expected = {"a": 1.0, "b": 2.0, "c": 3.0}
    one = bm.Run(1.0, True, {"a": 1.0, "b": 2.0, "c": 3.0}, "")
    same = bm.Run(1.0, True, dict(one.scores or {}), "")
    other = bm.Run(1.0, True, {"a": 1.0, "b": 2.5}, "")
    unreadable = bm.Run(1.0, False, None, "")
    assert bm.grades_differ(expected, one, same) == 0
    assert bm.grades_differ(expected, one, other) == 2
    assert bm.grades_differ(expected, one, unreadable) == 3
    assert bm.grades_differ(expected, None, same) is None
    wall, ident = bm.class_targets("ex02_dropout_mechanics", 1000, 2, 299.0, 0)
    assert (wall["status"], ident["status"]) == ("PASS", "PASS")
    assert wall["note"] == "" and wall["target"].startswith("1,000 ex02_dropout_mechanics")
    wall, ident = bm.class_targets("ex01_overfitting", 6, 2, 301.0, None)
    assert (wall["status"], ident["status"]) == ("n/a", "n/a") and "1,000" in wall["note"]
    assert bm.class_targets("ex02_dropout_mechanics", 1000, 2, 301.0, 0)[0]["status"] == "FAIL"
    # a smaller class under the time is no verdict on the 1,000-submission target
    assert bm.class_targets("ex02_dropout_mechanics", 200, 2, 146.0, 0)[0]["status"] == "n/a"
    assert bm.class_targets("ex02_dropout_mechanics", 1000, 2, None, 1)[1]["status"] == "FAIL"
    assert bm.format_targets([ident | {"value": 0.0, "status": "PASS"}])[0].endswith(
        ": 0 differing (wanted 0 differing)")


def test_class_ids_widen_past_999() -> None:
    """A class of 1,000 gets four-digit ids, all distinct, cycling the demo students."""
    ids = bm.class_ids(["x", "y", "z"], 1000)
    assert ids[0] == ("s0001_x", "x") and ids[-1] == ("s1000_x", "x")
    assert len({new for new, _ in ids}) == 1000
    assert bm.class_ids(["x"], 2) == [("s001_x", "x"), ("s002_x", "x")]


def test_results_keep_phases_and_tolerate_old_files(tmp_path: Path) -> None:
    """The grading command carries the worker's phases and memory into the saved result (also
    for a submission not graded), and a result file saved before they existed still loads."""
    task = grade.Task("ex01_overfitting", "ada", tmp_path / "nb.ipynb", "d1")
    data = {"seconds": 1.5, "problems": [], "flags": {}, "scores": {"t": 1.0},
            "phases": {"start": 0.2, "tests": 1.0}, "memory": {"worker_peak": 2048}}
    result = grade._from_outcome(task, data)
    assert result.phases == {"start": 0.2, "tests": 1.0}
    assert result.memory == {"worker_peak": 2048}
    grade._save(tmp_path, result)
    assert grade._cached(tmp_path, task) == result
    failed = grade._from_outcome(task, data | {"grader_error": "boom"})
    assert failed.grader_error == "boom" and failed.phases == {"start": 0.2, "tests": 1.0}
    old = {k: v for k, v in grade.asdict(result).items() if k not in {"phases", "memory"}}
    path = tmp_path / "results" / task.assignment / "ada.json"
    path.write_text(json.dumps(old), "utf-8")
    loaded = grade._cached(tmp_path, task)
    assert loaded is not None and loaded.phases == {} and loaded.memory == {}
    assert grade._from_outcome(task, {k: v for k, v in data.items()
                                      if k not in {"phases", "memory"}}).phases == {}
