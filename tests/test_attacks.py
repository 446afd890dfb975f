"""Hostile submissions get exactly their honest score and are flagged.

Every class of attack in the course's nbgrader notes (``autograder/demo/attacks.py``): in-kernel
tampering, patched assertion helpers, lying objects, reading solutions or the gradebook,
background processes, denial of grading, edited test cells. Each is wrapped around a correct
implementation (12 of 14 points, the rest is a written answer) or a wrong one (that wrong one's
score), and all of them are graded in ONE run with short limits, two at a time. The same run
holds the red team's attacks (``t<class>_...``): forged jail warnings and integrity answers, an
undecodable reply, script and escape-code injection, a setsid daemon, disk, output and blob
floods, flags evaded by string tricks; it is watched for the host disk used and the workers'
memory. Attacks that need runs of their own are in ``test_attacks_trust.py``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Any, Self

import pytest
from course import ROOT, find_leaks, grade_written, readable_text

from autograder.demo.attacks import ATTACKS, FORGED, LINGER_NAMES, XSS_MARKERS
from autograder.engine.sandbox import UID_BASE, UID_COUNT

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"
SANDBOX_UIDS = range(UID_BASE, UID_BASE + UID_COUNT)  # the uids sandboxes may run as


class Monitor:
    """Polls, while a run grades, the size of its sandboxes' working folders on the host disk
    (``OUT/.scratch``) and the peak resident memory of this process's children (the grading
    workers)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.peak_disk = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _disk(self) -> int:
        """Bytes in regular files under the scratch folder now (folders vanish meanwhile)."""
        total = 0
        for top, _dirs, files in os.walk(self.scratch):  # os.walk ignores vanished folders
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(top, name))
                    total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        return total

    def _poll(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(0.25):
            self.peak_disk = max(self.peak_disk, self._disk())
            for status in Path("/proc").glob("[0-9]*/status"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                                  if ":" in line)
                    if fields["PPid"].strip() == me:
                        rss = int(fields["VmHWM"].split()[0]) << 10
                        self.peak_rss = max(self.peak_rss, rss)


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Path, dict[str, Any], Monitor]:
    """Write every attack's notebook and grade them all in one call, watching the host's disk
    and the workers' memory: (course folder, results, monitor)."""
    from autograder.demo.attacks import write_attacks

    base = tmp_path_factory.mktemp("attacks").resolve()
    with Monitor(base / "course" / ".scratch") as monitor:
        out, results = grade_written(base, ASSIGNMENT, write_attacks)
    return out, results, monitor


@pytest.fixture(scope="module")
def attack_run(monitored_run: tuple[Path, dict[str, Any], Monitor]
               ) -> tuple[Path, dict[str, Any]]:
    """(course folder, results) of the one graded run of every attack."""
    return monitored_run[0], monitored_run[1]


def _explain(result: Any) -> str:
    return (f"score {result.score}, per test {result.per_test}, flags {result.flags}, "
            f"problems {result.problems}")


@pytest.mark.parametrize("student", sorted(ATTACKS))
def test_attack_scores_honestly_and_is_flagged(student: str,
                                               attack_run: tuple[Path, dict[str, Any]]) -> None:
    """The exact automatic score of the implementation under the attack (its honest twin's,
    graded in the same run), the attack's flags (an honest control: no flag at all), and
    feedback for the student."""
    out, results = attack_run
    attack, result = ATTACKS[student], results[student]
    assert result.score == attack.expected, f"{attack.about}: {_explain(result)}"
    assert result.max_score == 14.0, f"{attack.about}: {_explain(result)}"
    if attack.twin is not None:
        twin = results[attack.twin]
        assert twin.score == attack.expected and not twin.flags, f"twin: {_explain(twin)}"
    if attack.control:
        assert not result.flags, f"an honest control was flagged: {_explain(result)}"
    for flag in attack.flags:
        assert flag in result.flags, f"{attack.about}: no {flag!r} flag: {_explain(result)}"
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


# --------------------------------------------------------------------------- the red team's


def _pages(out: Path) -> dict[str, Path]:
    """Every student's feedback page: {student: path}."""
    return {p.parts[-3]: p for p in (out / "feedback").glob(f"*/{ASSIGNMENT}/{ASSIGNMENT}.html")}


def test_forged_jail_messages_are_not_believed(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """Lines that student code writes to its own standard error, made to look like the jail's
    warnings, reach neither the results, the report, grades.csv nor any feedback page."""
    out, results = attack_run
    for student, result in results.items():
        assert not any(FORGED in p for p in result.problems), (student, result.problems)
        assert not any(FORGED in r for rs in result.flags.values() for r in rs), student
    for name in ("report.txt", "grades.csv"):
        assert FORGED not in (out / name).read_text(encoding="utf-8"), name
    for student, page in _pages(out).items():
        if student != "t1_jail_warning":  # its own cell printed that it wrote them: fine
            assert FORGED not in page.read_text(encoding="utf-8"), student


def test_feedback_carries_no_script_of_the_student(attack_run: tuple[Path, dict[str, Any]]
                                                   ) -> None:
    """A student's markdown, printed output and kernel name never become a script or an event
    handler in a feedback page: no <script> and no on...= attribute holds an attack's marker."""
    from bs4 import BeautifulSoup

    out, _ = attack_run
    found = []
    for student, page in sorted(_pages(out).items()):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for tag in soup.find_all(True):
            active = [str(v) for k, v in tag.attrs.items() if k.lower().startswith("on")]
            if tag.name in ("script", "iframe", "object", "embed"):
                active.append(tag.get_text())
            active += [str(tag.get(k, "")) for k in ("src", "href") if
                       str(tag.get(k, "")).lower().lstrip().startswith("javascript:")]
            found += [f"{student}: <{tag.name}> {m}" for m in XSS_MARKERS
                      if any(m in text for text in active)]
    assert found == [], found


def test_report_rows_cannot_be_forged(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """report.txt is plain text: no terminal escape codes or carriage returns, exactly one row
    per student (text that a submission controls cannot start a line: an integrity finding,
    a kernel name) and at most one line of students flagged for tampering, naming no control."""
    out, results = attack_run
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert "\x1b" not in report and "\r" not in report, "escape codes in the report"
    lines = report.split("\n")
    for student in results:
        rows = [line for line in lines if line.split(" ", 1)[0] == student]
        assert len(rows) == 1, f"{student}: {len(rows)} rows: {rows}"
    flagged = [line for line in lines if line.startswith("Flagged for tampering")]
    assert len(flagged) <= 1, flagged
    assert not any(c in line for line in flagged for c in ("ctl_correct", "ctl_raises")), flagged
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["student_id"] for r in rows) == sorted(results)
    assert not any("\x1b" in value for r in rows for value in r.values() if value)


def test_disk_writes_fail_inside_the_sandbox(
        monitored_run: tuple[Path, dict[str, Any], Monitor]) -> None:
    """360 MiB written to the home folder fails inside the sandbox (a quota), the working
    folders on the host never hold much, and none is left after grading."""
    out, _, monitor = monitored_run
    text = readable_text(out / "feedback" / "t7_disk" / ASSIGNMENT / f"{ASSIGNMENT}.html")
    wrote = {tag: int(n) for tag, n in re.findall(r"(HOME|TMP)-WROTE-MIB=(\d+)", text)}
    assert set(wrote) == {"HOME", "TMP"}, "the disk attack did not run to its end"
    assert wrote["HOME"] < 360 and wrote["TMP"] < 360, wrote
    assert monitor.peak_disk < 100 << 20, f"{monitor.peak_disk >> 20} MiB on the host disk"
    assert not (out / ".scratch").exists()
    big = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size > 16 << 20]
    assert big == [], big


def test_output_is_capped_per_submission(attack_run: tuple[Path, dict[str, Any]]) -> None:
    """400 cells that print 64 KiB each (each within the per-cell cap): the submission's total
    output is capped, so its autograded notebook and its feedback stay small."""
    out, _ = attack_run
    graded = out / "autograded" / "t7_output_cells" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    feedback = out / "feedback" / "t7_output_cells" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert graded.stat().st_size < 2 << 20, f"autograded: {graded.stat().st_size >> 10} KiB"
    assert feedback.stat().st_size < 2 << 20, f"feedback: {feedback.stat().st_size >> 10} KiB"


def test_grading_workers_stay_small(monitored_run: tuple[Path, dict[str, Any], Monitor]
                                    ) -> None:
    """A reply of one 8 MiB blob referenced 300 times (and every other attack) leaves the
    trusted workers small: their peak resident memory stays under 1.5 GiB."""
    _, results, monitor = monitored_run
    assert "t7_blob" in results
    assert 0 < monitor.peak_rss < 3 << 29, f"a worker peaked at {monitor.peak_rss >> 20} MiB"
