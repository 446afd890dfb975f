"""Time this course's grading command against stock nbgrader on a generated class.

Usage::

    python -m autograder.engine.benchmark [--per-exercise 20] [--jobs N]
        [--exercises ex01_overfitting,...] [--out DIR] [--skip-stock]
    python -m autograder.engine.benchmark --class-size 1000 --exercises ex02_dropout_mechanics
        [--jobs 2] [--skip-jobs1] [--with-stock] [--out DIR]

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
that same folder (the usual case during a term, when the course is already prepared), then, as
a third, into it again while the folder's warm service runs (``autograder.engine.warm``: started
and loaded before the timed command, stopped after; the full-submission target is judged on
this run, the second is reported beside it).

Prints a table (and writes ``OUT/benchmark.json``) with the times, the speed-ups and the
targets; every student's score must be the same in all three gradings and equal to what the
demo expects (a mismatch is printed loudly; it is a finding, not a crash). Everything the runs
leave (class, course directories, logs) stays under ``OUT`` for inspection.

A second table says where a submission's time goes, from the result files the ``--jobs 1`` run
saved (``results/<exercise>/<student>.json`` in its course folder; each carries the worker's
``phases`` and ``memory``): per exercise, the median seconds per submission of each phase
(:data:`PHASE_COLUMNS`: the sandbox's start up to the first student cell, the student's cells,
the test cells on the trusted side, stopping the sandbox, writing the autograded notebook and
feedback page, and the gradebook writes when the grading command measured them) and the peak
memory, the highest over the submissions, of a grading worker, of a sandbox and, where there is
one, of the warm "zygote" sandbox.

**Class mode** (``--class-size N``, ``make benchmark-class N=1000 A=ex02_dropout_mechanics``):
one exercise, a class of N generated submissions, graded with ``--jobs`` (default here 2 in the
Makefile) and then ``--jobs 1`` (``--skip-jobs1`` skips it; stock nbgrader only with
``--with-stock``: on 1,000 submissions it takes most of an hour); no full submission. Its
targets: the parallel run's wall time, and the grades identical to the ``--jobs 1`` run's.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autograder.demo.__main__ import ASSIGNMENTS, write_submissions
from autograder.engine.grade import COURSE_ROOT, optional_libraries, run_nbgrader

MARKER = ".dropout-course-benchmark"
#: The targets (issue 20), as ratios and times of one run on the course's 2-core machine: the
#: whole command with ``--jobs 1`` and with ``--jobs 2`` this many times faster than stock serial
#: nbgrader on the same class; the fixed cost of a submission (median ``start`` phase: the
#: sandbox's start up to the first student cell); one student's full submission (all four
#: exercises, one command, a prepared course folder); a class of 1,000 Exercise 2 submissions
#: at ``--jobs 2``.
TARGET_JOBS1_SPEEDUP = 4.0
TARGET_JOBSN_SPEEDUP = 7.0
TARGET_JOBSN_FOR = 2
TARGET_FIXED_COST_S = 0.3
TARGET_FULL_SUBMISSION_S = 4.0
TARGET_CLASS_WALL_S = 300.0
TARGET_CLASS_SIZE = 1000
TARGET_CLASS_EXERCISE = "ex02_dropout_mechanics"
#: The phase table's columns: a result file's ``phases`` keys, in order.
PHASE_COLUMNS = ("start", "student", "tests", "stop", "feedback", "gradebook")
PHASE_LEGEND = (
    "start: the work folder, the sandbox's start and the course's setup cells, up to the first "
    "student cell; student: the student's cells; tests: the test cells (trusted side) and the "
    "integrity checks; stop: stopping the sandbox; feedback: writing the autograded notebook and "
    "the feedback page; gradebook: this submission's share of the gradebook writes (- where the "
    "command did not measure it); worker s: the whole submission in the worker, from its start "
    "to the sandbox's stop; worker MiB: the grading process's peak resident memory; sandbox "
    "MiB: the peak of the sandbox's memory cgroup (- without one).")
ZYGOTE_LEGEND = " zygote MiB: the warm sandbox's peak, the highest reported."
#: Peak memory columns: (a result file's ``memory`` key, the column's name).
MEMORY_COLUMNS = (("worker_peak", "worker"), ("sandbox_peak", "sandbox"),
                  ("zygote_peak", "zygote"))
#: The ids of the full submission graded into a new course folder, into the same folder, and into
#: it with the folder's warm service running.
FULL_IDS = ("full_correct", "full_correct_again", "full_correct_served")


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
    ``s001_<first>``, ``s002_<second>``, ... (four digits and more from 1,000 on)."""
    width = max(3, len(str(count)))
    return [(f"s{i + 1:0{width}d}_{demo_students[i % len(demo_students)]}",
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


def make_classes(exercises: list[str], per_exercise: int, out: Path,
                 full: bool = True) -> dict[str, dict]:
    """Write every exercise's class under ``out/class`` and, unless not ``full``, the full
    submissions under ``out/full`` (:data:`FULL_IDS`: one folder each, every exercise, the
    correct student's notebooks).

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
            for full_id in FULL_IDS if full else ():
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


#: A full submission graded into a new course folder, into the same folder, and into it again
#: while the folder's warm service runs (``autograder.engine.warm``, started untimed before).
FULL_MODES = ("full_cold", "full_warm", "full_service")
SERVICE_USED = "grading in the warm service"  # what the command says when it uses one


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
    into the same folder, then a third into it with the folder's warm service running (started
    and loaded before, untimed; stopped after). Returns ``runs`` (mode -> Run whose ``scores``
    are by exercise; the service's run is not ok unless the command said it used the service)
    and ``per_exercise_s`` (the cold run's grading seconds per exercise, as the command
    measured them)."""
    runs: dict[str, Run] = {}
    course = out / "full_graded"
    per_exercise: dict[str, float] = {}
    for mode, full_id in zip(FULL_MODES, FULL_IDS, strict=True):
        say(f"one full submission ({len(exercises)} exercises, {mode.split('_')[1]}) ...")
        if mode == "full_service":
            started = _service(["start", str(course), "--jobs", str(jobs), "--optional",
                                ",".join(optional_libraries(exercises))])
        try:
            runs[mode] = run_ours(",".join(exercises), out / "full" / full_id, course, jobs,
                                  out / "logs" / f"{mode}.log")
        finally:
            if mode == "full_service":
                _service(["stop", str(course)])
        if mode == "full_service" and runs[mode].ok and (
                started.returncode != 0 or SERVICE_USED not in Path(runs[mode].log).read_text(
                    "utf-8")):
            runs[mode].ok, runs[mode].problem = False, "the warm service was not used"
        runs[mode].scores = read_full_scores(course / "grades.csv", full_id)
        if mode == FULL_MODES[0]:
            for exercise in exercises:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    result = course / "results" / exercise / f"{full_id}.json"
                    per_exercise[exercise] = json.loads(result.read_text("utf-8"))["seconds"]
    return {"runs": runs, "per_exercise_s": per_exercise}


def _service(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autograder.engine.warm", *args],
                          cwd=COURSE_ROOT, capture_output=True, text=True, check=False)


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


def grades_differ(expected: dict[str, float], one: Run | None, other: Run | None) -> int | None:
    """How many of ``expected``'s students got a different score (or none) in ``other`` than in
    ``one``; every student when either run's grades are unreadable; None when a run was not
    made."""
    if one is None or other is None:
        return None
    if one.scores is None or other.scores is None:
        return len(expected)
    return sum(1 for s in expected if one.scores.get(s) != other.scores.get(s))


# ------------------------------------------------------------------- where the time goes


def read_results(folder: Path) -> list[dict]:
    """Every result file the grading command saved under ``folder`` (its course folder's
    ``results/<exercise>/``), as dicts; unreadable files are left out."""
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text("utf-8"))
            if isinstance(data, dict):
                records.append(data)
    return records


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _numbers(records: list[dict], field: str, key: str) -> list[float]:
    """``record[field][key]`` of every record that has a number there (a negative one, which
    no phase can take, is left out)."""
    found = []
    for record in records:
        figures = record.get(field)
        value = figures.get(key) if isinstance(figures, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            found.append(float(value))
    return found


def phase_row(name: str, records: list[dict]) -> dict:
    """One row of the phase table: how many results, the median seconds per submission of each
    of :data:`PHASE_COLUMNS` and of the whole submission in the worker (``seconds``), and the
    peak memory in MiB of each of :data:`MEMORY_COLUMNS` (the highest over the results); None
    where no result has the figure."""
    seconds = [float(r["seconds"]) for r in records
               if isinstance(r.get("seconds"), int | float) and r["seconds"] >= 0]
    peaks = {}
    for key, column in MEMORY_COLUMNS:
        values = _numbers(records, "memory", key)
        peaks[column] = max(values) / 2**20 if values else None
    return {
        "exercise": name,
        "results": len(records),
        "median_s": {p: _median(_numbers(records, "phases", p)) for p in PHASE_COLUMNS},
        "median_worker_s": _median(seconds),
        "peak_mib": peaks,
    }


def phase_table(folders: dict[str, Path], run: str) -> dict:
    """The phase figures of one grading run: a row per exercise (``folders``: exercise -> its
    ``results/<exercise>`` folder) and a ``total`` row over every result pooled."""
    pooled: list[dict] = []
    rows = []
    for exercise, folder in folders.items():
        records = read_results(folder)
        pooled += records
        rows.append(phase_row(exercise, records))
    return {"run": run, "exercises": rows, "total": phase_row("all", pooled)}


def format_phases(phases: dict) -> str:
    """The phase table: median seconds per submission by phase, peak memory in MiB (the zygote
    column only when some result has it)."""
    memory = [c for _, c in MEMORY_COLUMNS
              if c != "zygote" or any(r["peak_mib"]["zygote"] is not None
                                      for r in [*phases["exercises"], phases["total"]])]
    heads = ["exercise", "results", *PHASE_COLUMNS, "worker s", *(f"{c} MiB" for c in memory)]
    widths = [24, 7, *(max(8, len(h)) for h in heads[2:])]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    lines = [f"Where a submission's time goes ({phases['run']} run): median seconds per "
             "submission; peak memory, the highest over the submissions, in MiB",
             line(heads)]
    lines.append("-" * len(lines[1]))
    for row in [*phases["exercises"], phases["total"]]:
        if row is phases["total"]:
            lines.append("-" * len(lines[1]))
        lines.append(line([row["exercise"], str(row["results"]),
                           *(_cell(row["median_s"][p], ".3f") for p in PHASE_COLUMNS),
                           _cell(row["median_worker_s"], ".3f"),
                           *(_cell(row["peak_mib"][c], ".0f") for c in memory)]))
    legend = PHASE_LEGEND + (ZYGOTE_LEGEND if "zygote" in memory else "")
    lines += textwrap.wrap(legend, 100, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the targets


def target(name: str, wanted: str, value: float | None, met: Callable[[float], bool],
           unit: str = "", note: str = "", digits: int = 2) -> dict:
    """A target with its measured value and PASS / FAIL (n/a when not measured). The value is
    printed with ``digits`` decimals and ``unit`` after it; ``note`` says how this run differs
    from what the target names."""
    status = "n/a" if value is None else ("PASS" if met(value) else "FAIL")
    return {"target": name, "wanted": wanted, "value": value, "unit": unit, "digits": digits,
            "status": status, "note": note}


def standard_targets(total: dict, fixed_cost: float | None, full_served: float | None,
                     jobs: int, exercises: int, full_unserved: float | None = None
                     ) -> list[dict]:
    """The issue's targets for the standard benchmark: ``--jobs 1`` and ``--jobs N`` speed-ups
    over stock serial nbgrader (totals), the median fixed cost per submission, and one full
    submission in a prepared course folder whose warm service runs (``full_unserved``: the
    same without the service, said in the note)."""
    jobs_note = "" if jobs == TARGET_JOBSN_FOR else f"the target is for --jobs {TARGET_JOBSN_FOR}"
    full_note = "; ".join(filter(None, [
        "" if exercises == 4 else f"this run: {exercises} exercise(s); the target: all 4",
        "" if full_unserved is None else
        f"without the warm service (processes started by the command): {full_unserved:.1f} s"]))
    return [
        target("--jobs 1, whole command, speed-up over stock serial nbgrader",
               f">= {TARGET_JOBS1_SPEEDUP:g}x", total["speedup_stock_over_jobs1"],
               lambda v: v >= TARGET_JOBS1_SPEEDUP, "x"),
        target(f"--jobs {jobs}, whole command, speed-up over stock serial nbgrader",
               f">= {TARGET_JOBSN_SPEEDUP:g}x", total["speedup_stock_over_jobsN"],
               lambda v: v >= TARGET_JOBSN_SPEEDUP, "x", jobs_note),
        target("fixed cost per submission (median start phase, --jobs 1), seconds",
               f"<= {TARGET_FIXED_COST_S:g} s", fixed_cost,
               lambda v: v <= TARGET_FIXED_COST_S, " s"),
        target("one full submission, one command, prepared course folder with its warm "
               "service running, wall seconds",
               f"<= {TARGET_FULL_SUBMISSION_S:g} s", full_served,
               lambda v: v <= TARGET_FULL_SUBMISSION_S, " s", full_note),
    ]


def class_targets(exercise: str, size: int, jobs: int, wall: float | None,
                  differing: int | None) -> list[dict]:
    """Class mode's targets: the ``--jobs N`` run's wall seconds (judged only for the class the
    target names: 1,000 Exercise 2 submissions at ``--jobs 2``; n/a for any other), and how
    many grades differ from the ``--jobs 1`` run's (n/a when it was skipped)."""
    asked = (TARGET_CLASS_SIZE, TARGET_CLASS_EXERCISE, TARGET_JOBSN_FOR)
    note = "" if (size, exercise, jobs) == asked else (
        f"the target is for {TARGET_CLASS_SIZE:,} {TARGET_CLASS_EXERCISE} submissions at "
        f"--jobs {TARGET_JOBSN_FOR}")
    timed = target(f"{size:,} {exercise} submissions at --jobs {jobs}, whole command, wall "
                   "seconds", f"<= {TARGET_CLASS_WALL_S:g} s", wall,
                   lambda v: v <= TARGET_CLASS_WALL_S, " s", note)
    if note:  # another class size, exercise or --jobs measures something else: no verdict
        timed["status"] = "n/a"
    return [
        timed,
        target(f"grades at --jobs {jobs} identical to --jobs 1", "0 differing",
               None if differing is None else float(differing), lambda v: v == 0,
               " differing", digits=0),
    ]


def _cell(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else format(value, fmt) + unit


def format_targets(targets: list[dict]) -> list[str]:
    """One line per target: status, name, measured value, what is wanted, and any note."""
    lines = []
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.{t['digits']}f}{t['unit']}"
        lines.append(f"  {t['status']:<4}  {t['target']}: {value} (wanted {t['wanted']})")
        if t["note"]:
            lines.append(f"        ({t['note']})")
    return lines


def format_table(report: dict) -> str:
    """The plain-text report: the timing table, the phase table, the full-submission latency
    (not in class mode), the targets, and any failed run or score mismatch (loudly)."""
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
    lines += ["", format_phases(report["phases"]).rstrip("\n")]
    full = report.get("full_submission")
    if full is not None:
        parts = ", ".join(f"{ex} {s:.1f} s" for ex, s in full["per_exercise_s"].items())
        lines += ["", f"One full submission ({len(full['students'])} exercise(s), one command, "
                  f"--jobs {n}, correct answers): {full['cold_s']:.1f} s in a new course folder "
                  f"(releasing the exercises included), {full['warm_s']:.1f} s in a prepared one, "
                  f"{full['service_s']:.1f} s in it with its warm service running",
                  f"  (each exercise's grading in the new folder, as the command timed it: "
                  f"{parts})"]
    lines += ["", "Targets:", *format_targets(report["targets"])]
    check = report["score_check"]
    runs = ", ".join(report["compared_runs"])
    lines += ["", f"Scores compared ({runs}, expected): {check['students_compared']} "
              f"student-exercises, {len(check['mismatches'])} mismatch(es)"]
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


def time_class(exercise: str, klass: Path, out: Path, jobs: int, skip_stock: bool,
               say: Callable[[str], None], modes: tuple[str, ...] = ("jobs1", "jobsN")
               ) -> dict[str, Run | None]:
    """Grade the class ``klass`` of ``exercise`` with stock serial nbgrader (unless
    ``skip_stock``), then ours in each of ``modes`` in that order (``jobs1``: ``--jobs 1``;
    ``jobsN``: ``--jobs jobs``). Returns the runs by mode (None: not made)."""
    count = sum(1 for p in klass.iterdir() if p.is_dir())
    runs: dict[str, Run | None] = {"stock": None, "jobs1": None, "jobsN": None}
    if not skip_stock:
        say(f"[{exercise}] stock nbgrader, serial, {count} submissions ...")
        runs["stock"] = time_stock(exercise, klass, out / "stock" / exercise,
                                   out / "logs" / f"stock_{exercise}.log")
    for mode in modes:
        n = 1 if mode == "jobs1" else jobs
        say(f"[{exercise}] python -m autograder.engine.grade --jobs {n}, {count} submissions ...")
        runs[mode] = time_ours(exercise, klass, out / mode / exercise, n,
                               out / "logs" / f"{mode}_{exercise}.log")
    return runs


def _results_folders(out: Path, mode: str, exercises: list[str]) -> dict[str, Path]:
    """Where the ``mode`` run saved each exercise's result files."""
    return {ex: out / mode / ex / "results" / ex for ex in exercises}


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
    phases = phase_table(_results_folders(out, "jobs1", exercises), "--jobs 1")
    report = make_report(rows, full, made, jobs, per_exercise, skip_stock, phases)
    report["compared_runs"] = [*([] if skip_stock else ["stock"]), "--jobs 1", f"--jobs {jobs}"]
    report["score_check"] = {"students_compared": compared, "mismatches": mismatches}
    report["failed_runs"] = failed
    (out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def make_report(rows: list[dict], full: dict, made: dict[str, dict], jobs: int,
                per_exercise: int, skip_stock: bool, phases: dict) -> dict:
    """The report's figures: the table rows and totals, the phase table, the full-submission
    latency and the targets with PASS / FAIL (the full submission's target is judged on the
    run into the prepared folder; the cold run is reported beside it)."""
    total = total_row(rows)
    cold, warm, service = (full["runs"][mode].seconds for mode in FULL_MODES)
    fixed_cost = phases["total"]["median_s"]["start"]
    return {
        "mode": "standard",
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "per_exercise": per_exercise,
        "skip_stock": skip_stock,
        "exercises": rows,
        "total": total,
        "phases": phases,
        "fixed_cost_s": fixed_cost,
        "full_submission": {
            "students": {ex: made[ex]["single_student"] for ex in made},
            "cold_s": cold,
            "warm_s": warm,
            "service_s": service,
            "per_exercise_s": full["per_exercise_s"],
        },
        "targets": standard_targets(total, fixed_cost,
                                    service if full["runs"]["full_service"].ok else None,
                                    jobs, len(made),
                                    warm if full["runs"]["full_warm"].ok else None),
    }


def benchmark_class(exercise: str, size: int, jobs: int, out: Path, skip_jobs1: bool = False,
                    with_stock: bool = False, say: Callable[[str], None] = print) -> dict:
    """Class mode: grade ``size`` generated submissions of ``exercise`` with ``--jobs jobs``,
    then (unless ``skip_jobs1``) ``--jobs 1`` (stock nbgrader first only ``with_stock``);
    compare every score across the runs and with the demo's; write and return the report."""
    prepare_out(out)
    made = make_classes([exercise], size, out, full=False)
    warm_up()
    modes = ("jobsN",) if skip_jobs1 else ("jobsN", "jobs1")
    runs = time_class(exercise, made[exercise]["class"], out, jobs, not with_stock, say, modes)
    expected = made[exercise]["expected"]
    row = figures_row(exercise, size, runs)
    compared, mismatches = compare_scores(exercise, expected, runs)
    differing = grades_differ(expected, runs["jobs1"], runs["jobsN"])
    source = "jobsN" if skip_jobs1 else "jobs1"
    phases = phase_table(_results_folders(out, source, [exercise]),
                         f"--jobs {jobs if skip_jobs1 else 1}")
    wall = runs["jobsN"].seconds if runs["jobsN"] is not None and runs["jobsN"].ok else None
    report = {
        "mode": "class",
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "class_size": size,
        "skip_stock": not with_stock,
        "skip_jobs1": skip_jobs1,
        "exercises": [row],
        "total": total_row([row]),
        "phases": phases,
        "fixed_cost_s": phases["total"]["median_s"]["start"],
        "grades_differing_from_jobs1": differing,
        "targets": class_targets(exercise, size, jobs, wall, differing),
        "compared_runs": [*(["stock"] if with_stock else []),
                          *([] if skip_jobs1 else ["--jobs 1"]), f"--jobs {jobs}"],
        "score_check": {"students_compared": compared, "mismatches": mismatches},
        "failed_runs": _failures(exercise, runs),
    }
    (out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


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
    parser.add_argument("--exercises", type=_exercise_list, default=None,
                        help="comma-separated (default: all four; in class mode "
                             f"{TARGET_CLASS_EXERCISE})")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default _build/benchmark, or _build/benchmark-class "
                             "in class mode)")
    parser.add_argument("--skip-stock", action="store_true", help="do not time stock nbgrader")
    parser.add_argument("--class-size", type=int, default=None, metavar="N",
                        help="class mode: N generated submissions of one exercise, graded with "
                             "--jobs JOBS and --jobs 1 (no stock nbgrader, no full submission)")
    parser.add_argument("--skip-jobs1", action="store_true",
                        help="class mode: grade only with --jobs JOBS (no comparison with 1)")
    parser.add_argument("--with-stock", action="store_true",
                        help="class mode: time stock nbgrader too (slow: about 3 s a submission)")
    args = parser.parse_args(argv)
    if args.per_exercise < 1 or args.jobs < 1:
        parser.error("--per-exercise and --jobs must be at least 1")
    if args.class_size is None:
        if args.skip_jobs1 or args.with_stock:
            parser.error("--skip-jobs1 and --with-stock are for class mode (--class-size N)")
        out = (args.out or COURSE_ROOT / "_build" / "benchmark").resolve()
        report = benchmark(args.exercises or list(ASSIGNMENTS), args.per_exercise, args.jobs,
                           out, skip_stock=args.skip_stock)
    else:
        exercises = args.exercises or [TARGET_CLASS_EXERCISE]
        if args.class_size < 1 or len(exercises) != 1 or args.skip_stock:
            parser.error("class mode takes --class-size N >= 1 and one exercise (stock nbgrader "
                         "is skipped unless --with-stock)")
        out = (args.out or COURSE_ROOT / "_build" / "benchmark-class").resolve()
        report = benchmark_class(exercises[0], args.class_size, args.jobs, out,
                                 skip_jobs1=args.skip_jobs1, with_stock=args.with_stock)
    print()
    print(format_table(report), end="")
    print(f"\nJSON: {out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
