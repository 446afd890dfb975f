"""Time this course's grading command against stock nbgrader on a generated class.

Usage::

    python -m autograder.engine.benchmark [--per-exercise 20] [--jobs N]
        [--exercises ex01_overfitting,...] [--out DIR] [--skip-stock]

For every exercise a class of ``--per-exercise`` submissions is made by cycling that exercise's
demo students (correct and wrong ones) under new ids (``s001_ada_correct``, ...). The class is
graded three ways, side by side, and each is timed by wall clock:

* stock nbgrader, serial: one ``nbgrader autograde EXERCISE`` over the whole class in a fresh
  course directory, as an instructor runs it (only that command is timed; releasing the
  assignment before and exporting the grades after are not);
* ``python -m autograder.engine.grade EXERCISE CLASS --out DIR --jobs 1`` (the whole command);
* the same with ``--jobs N`` (default: the machine's CPU count).

Then one student's full submission (every exercise asked for, each one the demo's correct
student) is graded by ONE command, ``python -m autograder.engine.grade EX1,EX2,... FULL --out DIR
--jobs N``, to measure what a single student waits: first into a new course folder (releasing
the exercises into a new gradebook included: the cold case), then, as a second student, into
that same folder (the usual case during a term, when the course is already prepared).

Prints a table (and writes ``OUT/benchmark.json``) with the times, the speed-ups and the
targets; every student's score must be the same in all three gradings and equal to what the
demo expects (a mismatch is printed loudly; it is a finding, not a crash). Everything the runs
leave (class, course directories, logs) stays under ``OUT`` for inspection.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autograder.demo.__main__ import ASSIGNMENTS, write_submissions
from autograder.engine.grade import COURSE_ROOT, run_nbgrader

MARKER = ".dropout-course-benchmark"
#: The targets: parallel grading this many times faster than stock serial nbgrader, and one
#: student's full submission (every exercise) graded within this many seconds.
TARGET_SPEEDUP = 1.7
TARGET_FULL_SUBMISSION_S = 15.0
#: The ids of the full submission graded into a new course folder, then into the same folder.
FULL_IDS = ("full_correct", "full_correct_again")


@dataclass
class Run:
    """One timed grading run: wall seconds, whether it worked, the scores it gave (None when
    they could not be read) and where its output went."""

    seconds: float
    ok: bool
    scores: dict[str, float] | None
    log: str
    problem: str = ""


# ------------------------------------------------------------------------- the generated class


def class_ids(demo_students: list[str], count: int) -> list[tuple[str, str]]:
    """``count`` (new id, demo student) pairs cycling through ``demo_students`` in order:
    ``s001_<first>``, ``s002_<second>``, ..."""
    return [(f"s{i + 1:03d}_{demo_students[i % len(demo_students)]}",
             demo_students[i % len(demo_students)]) for i in range(count)]


def correct_student(expected: dict[str, float]) -> str:
    """The demo student who represents a correct submission: the first one named ``*_correct``,
    else the first with the highest expected score."""
    named = [s for s in expected if s.endswith("_correct")]
    return named[0] if named else max(expected, key=lambda s: expected[s])


def _copy_submission(demo: Path, student: str, new_id: str, exercise: str, dest: Path) -> None:
    source = demo / student / exercise / f"{exercise}.ipynb"
    target = dest / new_id / exercise / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def make_classes(exercises: list[str], per_exercise: int, out: Path) -> dict[str, dict]:
    """Write every exercise's class under ``out/class`` and the full submissions under
    ``out/full`` (:data:`FULL_IDS`: one folder each, every exercise, the correct student's
    notebooks).

    Returns, per exercise: ``class`` (folder ``<id>/<exercise>/<exercise>.ipynb``), ``expected``
    (id -> the demo's expected score), ``single_student`` (the demo's correct student) and
    ``single_expected`` (the full submissions' ids -> that student's expected score).
    """
    made: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="benchmark-demo-") as tmp:
        for exercise in exercises:
            demo = Path(tmp) / exercise
            expected = write_submissions(exercise, demo)
            klass = out / "class" / exercise
            ids = class_ids(list(expected), per_exercise)
            for new_id, student in ids:
                _copy_submission(demo, student, new_id, exercise, klass)
            chosen = correct_student(expected)
            for full_id in FULL_IDS:
                _copy_submission(demo, chosen, full_id, exercise, out / "full" / full_id)
            made[exercise] = {
                "class": klass,
                "expected": {new_id: expected[student] for new_id, student in ids},
                "single_student": chosen,
                "single_expected": dict.fromkeys(FULL_IDS, expected[chosen]),
            }
    return made


# ----------------------------------------------------------------------------------- the runs


def read_grades(path: Path) -> dict[str, float] | None:
    """Scores by student from a grades file with ``student_id`` (nbgrader's export, the grading
    command's grades.csv) or ``student`` (scores_by_test.csv) and ``score`` columns; None when
    there is nothing readable."""
    if not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error):
        return None
    scores = {}
    for row in rows:  # a row without a number (not graded) leaves its student out
        try:
            scores[row.get("student_id") or row["student"]] = float(row["score"])
        except (KeyError, TypeError, ValueError):
            continue
    return scores or None


def _write_log(log: Path, proc: subprocess.CompletedProcess[str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n\n"
                   f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}", encoding="utf-8")


def time_stock(exercise: str, klass: Path, course: Path, log: Path) -> Run:
    """Stock nbgrader: release ``exercise`` in a fresh course, copy the class into
    ``submitted/`` and time ONE serial ``nbgrader autograde``; then export the grades."""
    shutil.copytree(COURSE_ROOT / "solutions" / exercise, course / "solutions" / exercise)
    proc = run_nbgrader(["generate_assignment", exercise, "--force"], course)
    if proc.returncode != 0:
        _write_log(log, proc)
        return Run(0.0, False, None, str(log), "generate_assignment failed")
    shutil.copytree(klass, course / "submitted")
    t0 = time.perf_counter()
    proc = run_nbgrader(["autograde", exercise], course)
    seconds = time.perf_counter() - t0
    _write_log(log, proc)
    problem = ""
    if proc.returncode != 0 or "[AutogradeApp | ERROR]" in proc.stdout + proc.stderr:
        problem = f"nbgrader autograde reported errors (exit {proc.returncode})"
    grades = course / "grades.csv"
    export = run_nbgrader(["export", f"--to={grades}"], course)
    if export.returncode != 0:
        problem = problem or "nbgrader export failed"
    return Run(seconds, not problem, read_grades(grades), str(log), problem)


def run_ours(assignments: str, submissions: Path, out: Path, jobs: int, log: Path) -> Run:
    """Time the whole ``python -m autograder.engine.grade ASSIGNMENTS SUBMISSIONS --out OUT --jobs
    JOBS`` command and log its output; the Run's scores are left for the caller to read."""
    cmd = [sys.executable, "-m", "autograder.engine.grade", assignments, str(submissions),
           "--out", str(out), "--jobs", str(jobs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=COURSE_ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    _write_log(log, proc)
    problem = f"exit {proc.returncode}" if proc.returncode != 0 else ""
    return Run(seconds, not problem, None, str(log), problem)


def time_ours(exercise: str, submissions: Path, out: Path, jobs: int, log: Path) -> Run:
    """Time the grading command on one exercise's class; scores from its ``grades.csv``."""
    run = run_ours(exercise, submissions, out, jobs, log)
    run.scores = read_grades(out / "grades.csv") or read_grades(out / "scores_by_test.csv")
    return run


FULL_MODES = ("full_cold", "full_warm")


def read_full_scores(path: Path, student: str) -> dict[str, float] | None:
    """Exercise -> score of ``student`` from a multi-assignment grades.csv; None when there is
    nothing readable."""
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("student_id") == student]
    try:
        return {r["assignment"]: float(r["score"]) for r in rows} or None
    except (KeyError, TypeError, ValueError):
        return None


def time_full(exercises: list[str], out: Path, jobs: int,
              say: Callable[[str], None]) -> dict:
    """Time one command grading a full submission into a new course folder, then another
    into the same folder. Returns ``runs`` (mode -> Run whose ``scores`` are by exercise) and
    ``per_exercise_s`` (the cold run's grading seconds per exercise, as the command measured
    them)."""
    runs: dict[str, Run] = {}
    course = out / "full_graded"
    per_exercise: dict[str, float] = {}
    for mode, full_id in zip(FULL_MODES, FULL_IDS, strict=True):
        say(f"one full submission ({len(exercises)} exercises, {mode.split('_')[1]}) ...")
        runs[mode] = run_ours(",".join(exercises), out / "full" / full_id, course, jobs,
                              out / "logs" / f"{mode}.log")
        runs[mode].scores = read_full_scores(course / "grades.csv", full_id)
        if mode == FULL_MODES[0]:
            for exercise in exercises:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    result = course / "results" / exercise / f"{full_id}.json"
                    per_exercise[exercise] = json.loads(result.read_text("utf-8"))["seconds"]
    return {"runs": runs, "per_exercise_s": per_exercise}


def warm_up() -> None:
    """Load torch and nbgrader once, untimed, so the first timed run does not pay for a cold
    disk cache."""
    subprocess.run([sys.executable, "-c", "import torch, nbgrader.apps"], cwd=COURSE_ROOT,
                   capture_output=True, check=False)


# ------------------------------------------------------------------------------ the figures


def ratio(slow: float | None, fast: float | None) -> float | None:
    """``slow / fast``, or None when either is missing or ``fast`` is not positive."""
    if slow is None or fast is None or fast <= 0:
        return None
    return slow / fast


def figures_row(name: str, submissions: int, runs: dict[str, Run | None]) -> dict:
    """One table row: seconds per mode (None when skipped) and both speed-ups."""
    secs = {m: (r.seconds if r is not None else None) for m, r in runs.items()}
    return {
        "exercise": name,
        "submissions": submissions,
        "stock_serial_s": secs.get("stock"),
        "ours_jobs1_s": secs.get("jobs1"),
        "ours_jobsN_s": secs.get("jobsN"),
        "speedup_stock_over_jobsN": ratio(secs.get("stock"), secs.get("jobsN")),
        "speedup_stock_over_jobs1": ratio(secs.get("stock"), secs.get("jobs1")),
    }


def total_row(rows: list[dict]) -> dict:
    """The totals of ``rows`` (a column with a missing value has no total)."""
    def total(key: str) -> float | None:
        values = [r[key] for r in rows]
        return None if any(v is None for v in values) else sum(values)

    stock, jobs1, jobs_n = total("stock_serial_s"), total("ours_jobs1_s"), total("ours_jobsN_s")
    return {
        "exercise": "total",
        "submissions": sum(r["submissions"] for r in rows),
        "stock_serial_s": stock,
        "ours_jobs1_s": jobs1,
        "ours_jobsN_s": jobs_n,
        "speedup_stock_over_jobsN": ratio(stock, jobs_n),
        "speedup_stock_over_jobs1": ratio(stock, jobs1),
    }


def compare_scores(exercise: str, expected: dict[str, float],
                   runs: dict[str, Run | None]) -> tuple[int, list[dict]]:
    """Compare every student's score across the runs whose grades were readable and with the
    demo's expected score. Returns (students compared, mismatches); a readable run that lacks
    a student counts as a mismatch (its score shows as None)."""
    readable = {m: r.scores for m, r in runs.items() if r is not None and r.scores is not None}
    mismatches = []
    for student, want in expected.items():
        scores: dict[str, float | None] = {"expected": want}
        scores |= {m: got.get(student) for m, got in readable.items()}
        if len(set(scores.values())) > 1:
            mismatches.append({"exercise": exercise, "student": student, "scores": scores})
    return (len(expected) if readable else 0), mismatches


def target(name: str, wanted: str, value: float | None, met: Callable[[float], bool]) -> dict:
    """A target with its measured value and PASS / MISS (n/a when not measured)."""
    status = "n/a" if value is None else ("PASS" if met(value) else "MISS")
    return {"target": name, "wanted": wanted, "value": value, "status": status}


def _cell(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else format(value, fmt) + unit


def format_table(report: dict) -> str:
    """The plain-text report: the timing table, the full-submission latency, the targets, and
    any failed run or score mismatch (loudly)."""
    n = report["jobs"]
    heads = ["exercise", "submissions", "stock serial s", "ours --jobs 1 s", f"ours --jobs {n} s",
             f"speed-up stock/jobs {n}", "speed-up stock/jobs 1"]
    widths = [24, 11, 14, 15, max(15, len(heads[4])), max(19, len(heads[5])), 21]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(heads, widths, strict=True)))]
    lines.append("-" * len(lines[0]))
    for row in [*report["exercises"], report["total"]]:
        cells = [row["exercise"], str(row["submissions"]),
                 _cell(row["stock_serial_s"], ".1f"), _cell(row["ours_jobs1_s"], ".1f"),
                 _cell(row["ours_jobsN_s"], ".1f"),
                 _cell(row["speedup_stock_over_jobsN"], ".2f", "x"),
                 _cell(row["speedup_stock_over_jobs1"], ".2f", "x")]
        if row["exercise"] == "total":
            lines.append("-" * len(lines[0]))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    full = report["full_submission"]
    parts = ", ".join(f"{ex} {s:.1f} s" for ex, s in full["per_exercise_s"].items())
    lines += ["", f"One full submission ({len(full['students'])} exercise(s), one command, "
              f"--jobs {n}, correct answers): {full['cold_s']:.1f} s in a new course folder "
              f"(releasing the exercises included), {full['warm_s']:.1f} s in a prepared one",
              f"  (each exercise's grading, as the command timed it: {parts})", "", "Targets:"]
    for t in report["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"  {t['status']:<4}  {t['target']}: {value} (wanted {t['wanted']})")
    check = report["score_check"]
    lines += ["", f"Scores compared (stock, --jobs 1, --jobs {n}, expected): "
              f"{check['students_compared']} student-exercises, "
              f"{len(check['mismatches'])} mismatch(es)"]
    for m in check["mismatches"]:
        lines.append(f"  !!! SCORE MISMATCH {m['exercise']} {m['student']}: {m['scores']}")
    for f in report["failed_runs"]:
        lines.append(f"  !!! RUN FAILED {f['mode']} {f['exercise']}: {f['problem']} "
                     f"(log: {f['log']})")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ driver


def prepare_out(out: Path) -> None:
    """Make ``out`` an empty folder; an existing one is deleted only if a benchmark made it
    (or it is empty)."""
    if out.exists():
        if not (out / MARKER).exists() and any(out.iterdir()):
            raise SystemExit(f"{out} exists and was not made by the benchmark: not touching it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by python -m autograder.engine.benchmark; safe to delete\n")


def _failures(exercise: str, runs: dict[str, Run | None]) -> list[dict]:
    return [{"mode": m, "exercise": exercise, "problem": r.problem, "log": r.log}
            for m, r in runs.items() if r is not None and not r.ok]


def time_class(exercise: str, klass: Path, out: Path, jobs: int,
               skip_stock: bool, say: Callable[[str], None]) -> dict[str, Run | None]:
    """Grade the class ``klass`` of ``exercise`` three ways (stock serial unless
    ``skip_stock``, ours ``--jobs 1``, ours ``--jobs jobs``). Returns the runs by mode
    (``stock`` is None when skipped)."""
    count = sum(1 for p in klass.iterdir() if p.is_dir())
    runs: dict[str, Run | None] = {"stock": None}
    if not skip_stock:
        say(f"[{exercise}] stock nbgrader, serial, {count} submissions ...")
        runs["stock"] = time_stock(exercise, klass, out / "stock" / exercise,
                                   out / "logs" / f"stock_{exercise}.log")
    for mode, n in (("jobs1", 1), ("jobsN", jobs)):
        say(f"[{exercise}] python -m autograder.engine.grade --jobs {n}, {count} submissions ...")
        runs[mode] = time_ours(exercise, klass, out / mode / exercise, n,
                               out / "logs" / f"{mode}_{exercise}.log")
    return runs


def benchmark(exercises: list[str], per_exercise: int, jobs: int, out: Path,
              skip_stock: bool = False, say: Callable[[str], None] = print) -> dict:
    """Run the whole benchmark into ``out`` (see the module docstring); return the report
    (the same dict that is written to ``out/benchmark.json``).

    ``out`` is emptied first (refused when a benchmark did not make it).
    """
    prepare_out(out)
    made = make_classes(exercises, per_exercise, out)
    warm_up()
    rows, failed, compared, mismatches = [], [], 0, []
    for exercise in exercises:
        runs = time_class(exercise, made[exercise]["class"], out, jobs, skip_stock, say)
        rows.append(figures_row(exercise, len(made[exercise]["expected"]), runs))
        failed += _failures(exercise, runs)
        n_compared, found = compare_scores(exercise, made[exercise]["expected"], runs)
        compared, mismatches = compared + n_compared, mismatches + found
    full = time_full(exercises, out, jobs, say)
    failed += _failures("full submission", full["runs"])
    for (mode, run), full_id in zip(full["runs"].items(), FULL_IDS, strict=True):
        for exercise in exercises:
            # unreadable grades compare nothing; a readable file without the score mismatches
            scores = None
            if run.scores is not None:
                scores = {full_id: run.scores[exercise]} if exercise in run.scores else {}
            one = Run(run.seconds, run.ok, scores, run.log)
            expected = {full_id: made[exercise]["single_expected"][full_id]}
            n_compared, found = compare_scores(exercise, expected, {mode: one})
            compared, mismatches = compared + n_compared, mismatches + found
    report = make_report(rows, full, made, jobs, per_exercise, skip_stock)
    report["score_check"] = {"students_compared": compared, "mismatches": mismatches}
    report["failed_runs"] = failed
    (out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def make_report(rows: list[dict], full: dict, made: dict[str, dict], jobs: int,
                per_exercise: int, skip_stock: bool) -> dict:
    """The report's figures: the table rows and totals, the full-submission latency (the
    target is judged on the cold run, the slower case) and the targets with PASS / MISS."""
    total = total_row(rows)
    cold, warm = (full["runs"][mode].seconds for mode in FULL_MODES)
    return {
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "per_exercise": per_exercise,
        "skip_stock": skip_stock,
        "exercises": rows,
        "total": total,
        "full_submission": {
            "students": {ex: made[ex]["single_student"] for ex in made},
            "cold_s": cold,
            "warm_s": warm,
            "per_exercise_s": full["per_exercise_s"],
        },
        "targets": [
            target(f"parallel (--jobs {jobs}) speed-up over stock serial nbgrader",
                   f">= {TARGET_SPEEDUP}x", total["speedup_stock_over_jobsN"],
                   lambda v: v >= TARGET_SPEEDUP),
            target("one full submission, one command, new course folder, wall seconds",
                   f"<= {TARGET_FULL_SUBMISSION_S:g} s", cold,
                   lambda v: v <= TARGET_FULL_SUBMISSION_S),
        ],
    }


def _exercise_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ASSIGNMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown exercise(s) {unknown}; known: {ASSIGNMENTS}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark, print the table; 0 unless it could not run at all."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-exercise", type=int, default=20,
                        help="submissions per exercise (default 20)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="--jobs of the parallel run and of the full submission "
                             "(default: CPU count)")
    parser.add_argument("--exercises", type=_exercise_list, default=list(ASSIGNMENTS),
                        help="comma-separated (default: all four)")
    parser.add_argument("--out", type=Path, default=COURSE_ROOT / "_build" / "benchmark")
    parser.add_argument("--skip-stock", action="store_true", help="do not time stock nbgrader")
    args = parser.parse_args(argv)
    if args.per_exercise < 1 or args.jobs < 1:
        parser.error("--per-exercise and --jobs must be at least 1")
    report = benchmark(args.exercises, args.per_exercise, args.jobs, args.out.resolve(),
                       skip_stock=args.skip_stock)
    print()
    print(format_table(report), end="")
    print(f"\nJSON: {args.out.resolve() / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
