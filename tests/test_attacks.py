"""Hostile submissions get exactly their honest score and are flagged.

Every class of attack in the course's nbgrader notes (``autograder/demo/attacks.py``): in-kernel
tampering, patched assertion helpers, lying objects, reading solutions or the gradebook,
background processes, denial of grading, edited test cells. Each is wrapped around a correct
implementation (12 of 14 points, the rest is a written answer) or a wrong one (that wrong one's
score), and all of them are graded in ONE run with short limits, two at a time.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
from course import ROOT, find_leaks, grade_written, readable_text

from autograder.demo.attacks import ATTACKS, LINGER_NAMES
from autograder.engine.sandbox import UID_BASE, UID_COUNT

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"
SANDBOX_UIDS = range(UID_BASE, UID_BASE + UID_COUNT)  # the uids sandboxes may run as


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Write every attack's notebook and grade them all in one call: (course folder, results)."""
    from autograder.demo.attacks import write_attacks

    return grade_written(tmp_path_factory.mktemp("attacks").resolve(), ASSIGNMENT, write_attacks)


def _explain(result: Any) -> str:
    return (f"score {result.score}, per test {result.per_test}, flags {result.flags}, "
            f"problems {result.problems}")


@pytest.mark.parametrize("student", sorted(ATTACKS))
def test_attack_scores_honestly_and_is_flagged(student: str,
                                               attack_run: tuple[Path, dict[str, Any]]) -> None:
    """The exact automatic score of the implementation under the attack, the attack's flag
    (an honest control: no flag at all), and feedback for the student."""
    out, results = attack_run
    attack, result = ATTACKS[student], results[student]
    assert result.score == attack.expected, f"{attack.about}: {_explain(result)}"
    assert result.max_score == 14.0, f"{attack.about}: {_explain(result)}"
    if attack.flag is None:
        assert not result.flags, f"an honest control was flagged: {_explain(result)}"
    else:
        assert attack.flag in result.flags, f"{attack.about}: no {attack.flag!r} flag: " \
            f"{_explain(result)}"
    feedback = out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert feedback.is_file(), f"no feedback for {student}: {_explain(result)}"


def test_secrets_never_reach_the_feedback(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """The attack that opens and globs for solutions, notebooks and gradebooks finds none of
    them, and no feedback shows a solution or hidden test."""
    out, _ = attack_run
    html = out / "feedback" / "k4_secrets" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    text = readable_text(html)
    assert "SECRETS FOUND: 0" in text, "the attack found files it must not see (or never ran)"
    for student in ATTACKS:
        folder = out / "feedback" / student
        if not folder.is_dir():
            continue  # reported by the per-submission test
        page = readable_text(folder / ASSIGNMENT / f"{ASSIGNMENT}.html")
        assert "BEGIN SOLUTION" not in page and "BEGIN HIDDEN TESTS" not in page, student
        submitted = out / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        own = frozenset(line.strip() for line in readable_text(submitted).splitlines())
        assert find_leaks(folder, own_lines=own) == {}, student


def _left_running(out: Path) -> list[str]:
    """Live processes of the sandbox uids that this run started (or that belong to no grading
    run at all). A sandbox's processes see its working folder, ``OUT/.scratch/work-*``,
    mounted as their home: that tells this run's from another grading run's on the machine."""
    mine = f"{out}/.scratch/work-"
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
            uids = {int(u) for u in fields["Uid"].split()}
            if not uids & set(SANDBOX_UIDS) or fields["State"].strip()[:1] in "ZX":
                continue
            mounts = (status.parent / "mountinfo").read_text()
        except (OSError, KeyError, ValueError):
            continue  # ended meanwhile
        if mine in mounts or "/.scratch/work-" not in mounts:
            found.append(f"pid {status.parent.name} ({fields['Name'].strip()}, uids {uids})")
    return found


def _process_names() -> set[str]:
    names = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            names.add(comm.read_text().strip())
    return names


@pytest.mark.skipif(not Path("/proc/self/status").exists() or os.geteuid() != 0,
                    reason="the sandbox uses separate uids only on Linux, as root")
def test_no_process_outlives_grading(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """After grading, no process of the sandbox uids from this run is alive (the background,
    fork-storm and Popen attacks included), and the gradebook holds the honest score of the
    attack that tried to rewrite it later."""
    from nbgrader.api import Gradebook

    out, _ = attack_run
    deadline = time.monotonic() + 5
    while (left := _left_running(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"still running after grading: {left}"
    assert not _process_names() & set(LINGER_NAMES)
    time.sleep(0.5)  # the lingering writer retried every 0.2 s while it lived
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        submission = gb.find_submission(ASSIGNMENT, "k5_background")
        assert submission.score == ATTACKS["k5_background"].expected
    assert b"UPDATE grade" not in (out / "gradebook.db").read_bytes()
    source = ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert "UPDATE grade" not in source.read_text(encoding="utf-8")


def test_report_lists_the_flagged(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """The report names every submission flagged for tampering, and no honest control."""
    out, results = attack_run
    report = (out / "report.txt").read_text(encoding="utf-8")
    flagged_line = next(line for line in report.splitlines()
                        if line.startswith("Flagged for tampering"))
    for student, result in results.items():
        assert (student in flagged_line) == ("tampering" in result.flags), student
    assert "ctl_correct" not in flagged_line and "ctl_raises" not in flagged_line


def test_gradebook_holds_what_was_reported(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """The gradebook's score of each submission is the reported one, out of the released 14
    points (raised points in a student's metadata change nothing), flagged when tampering."""
    from nbgrader.api import Gradebook

    out, results = attack_run
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        assert gb.find_assignment(ASSIGNMENT).max_score == 14.0
        for student, result in results.items():
            submission = gb.find_submission(ASSIGNMENT, student)
            assert submission.score == result.score, student
            notebook = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
            assert notebook.flagged == ("tampering" in result.flags), student
