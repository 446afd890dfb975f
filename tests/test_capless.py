"""Grading where the sandbox cannot be built as usual: root without CAP_SYS_ADMIN, the default
of a Docker container (simulated with ``setpriv``, which drops the capability from the bounding
set of the command it starts).

Either the class gets its correct grades (the sandbox is built through a user namespace), or the
command refuses with a non-zero exit and records no score. Never a zero for a correct notebook.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from course import ROOT

from autograder.demo.__main__ import write_submissions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                       reason="needs root and setpriv to drop a capability"),
]
ASSIGNMENT = "ex01_overfitting"
KEEP = ("ada_correct", "cy_raises")  # a full-marks notebook and a partly wrong one
WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]


def _grade_without_sys_admin(base: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str],
                                                                 Path, dict[str, float]]:
    expected = write_submissions(ASSIGNMENT, base / "submissions")
    for folder in (base / "submissions").iterdir():
        if folder.name not in KEEP:
            shutil.rmtree(folder)
    out = base / "course"
    cmd = [*WITHOUT_SYS_ADMIN, sys.executable, "-m", "autograder.engine.grade", ASSIGNMENT,
           str(base / "submissions"), "--out", str(out), "--jobs", "2", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "autograder" / "student" / "src")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    return proc, out, {k: expected[k] for k in KEEP}


def _capability_dropped() -> bool:
    probe = subprocess.run([*WITHOUT_SYS_ADMIN, "grep", "CapEff", "/proc/self/status"],
                           capture_output=True, text=True, check=True)
    return not int(probe.stdout.split()[1], 16) & (1 << 21)  # CAP_SYS_ADMIN is bit 21


def test_correct_grades_or_a_refusal_without_cap_sys_admin(tmp_path: Path) -> None:
    """The exact demo scores, or a non-zero exit that names the lost protection and leaves no
    score anywhere (no grades file with scores, no submission in the gradebook)."""
    assert _capability_dropped(), "setpriv did not drop CAP_SYS_ADMIN: the test proves nothing"
    proc, out, expected = _grade_without_sys_admin(tmp_path)
    explain = (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
               f"stderr:\n{proc.stderr[-3000:]}")
    if proc.returncode == 0:
        with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
            rows = {row["student_id"]: row for row in csv.DictReader(fh)}
        assert {k: float(rows[k]["score"]) for k in KEEP} == expected, explain
        assert "NOT ENFORCED" not in proc.stdout, explain
    else:
        assert "sandbox" in proc.stderr.lower(), explain
        assert not (out / "grades.csv").exists(), explain
        assert not list(out.glob("results/*/*.json")), explain


def test_refusal_where_no_namespace_can_be_made(tmp_path: Path) -> None:
    """A host where the jail can build nothing (no CAP_SYS_ADMIN and no user namespaces, as
    in a container whose seccomp profile forbids them): exit 3, the lost protections named,
    and nothing recorded — not even the course folder."""
    from test_sandbox import NO_NAMESPACES

    write_submissions(ASSIGNMENT, tmp_path / "submissions")
    out = tmp_path / "course"
    argv = ["grade", ASSIGNMENT, str(tmp_path / "submissions"), "--out", str(out), "--jobs", "1"]
    code = ("import runpy, sys\n"
            f"sys.path[:0] = {[str(ROOT), str(ROOT / 'autograder' / 'student' / 'src')]!r}\n"
            f"sys.argv = {argv!r}\n"
            "runpy.run_module('autograder.engine.grade', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", NO_NAMESPACES, code], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    explain = (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\n"
               f"stderr:\n{proc.stderr[-2000:]}")
    assert proc.returncode == 3, explain
    assert "refusing to grade" in proc.stderr and "network" in proc.stderr, explain
    assert not out.exists(), explain
