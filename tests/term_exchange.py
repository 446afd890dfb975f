"""A term as an instructor and students live it, for the end-to-end term test: a course folder,
a local nbgrader exchange, one HOME and working folder per student, a real `jupyter server` with
nbgrader's formgrader, and every command's output kept for the failure messages.

Nothing here sets up nbgrader for the instructor beyond what the course folder holds: instructor
commands run with cwd = the course folder, a HOME of their own and no ``JUPYTER_CONFIG_PATH``, so
they see only ``<course>/nbgrader_config.py``. Students see only their own
``~/.jupyter/nbgrader_config.py`` (the exchange and the course id), as on a shared JupyterHub.
"""

from __future__ import annotations

import copy
import csv
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from browser import free_port
from course import ROOT
from lab_server import alive, descendants

BIN = Path(sys.executable).parent
COURSE_ID = "dropout"
TOKEN = "term-test-token"
#: Environment variables that would let a command find a configuration other than its own.
FOREIGN_CONFIG = ("JUPYTER_CONFIG_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
                  "JUPYTER_PATH", "JUPYTER_RUNTIME_DIR")


def tool(name: str) -> Path:
    """The venv's executable ``name``; missing, the test is skipped, except in CI (``CI=true``),
    where a missing tool is a failure."""
    path = BIN / name
    if not path.is_file():
        message = f"{path} is missing (make venv installs it)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return path


def tail(text: str, n: int = 3000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def shown(cmd: list[str | Path]) -> str:
    return shlex.join(str(c) for c in cmd)


@dataclass
class Term:
    """The folders of one term and the log of what ran."""

    base: Path
    log: list[str] = field(default_factory=list)
    done: set[int] = field(default_factory=set)

    @property
    def course(self) -> Path:
        return self.base / "course"

    @property
    def exchange(self) -> Path:
        return self.base / "exchange"

    @property
    def instructor_home(self) -> Path:
        return self.base / "instructor"

    def student_home(self, student: str) -> Path:
        return self.base / "students" / student

    def student_work(self, student: str) -> Path:
        """The student's working folder (where they fetch, edit and submit)."""
        return self.student_home(student) / "work"

    # ------------------------------------------------------------------ environments

    def _env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_CONFIG}
        home.mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        return env

    def instructor_env(self) -> dict[str, str]:
        return self._env(self.instructor_home)

    def student_env(self, student: str) -> dict[str, str]:
        home = self.student_home(student)
        config = home / ".jupyter" / "nbgrader_config.py"
        if not config.is_file():
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text("c = get_config()  # noqa: F821\n"
                              f"c.Exchange.root = {str(self.exchange)!r}\n"
                              f"c.CourseDirectory.course_id = {COURSE_ID!r}\n", encoding="utf-8")
        self.student_work(student).mkdir(parents=True, exist_ok=True)
        return self._env(home)

    # ------------------------------------------------------------------ commands

    def sh(self, step: str, cmd: list[str | Path], cwd: Path, env: dict[str, str],
           timeout: float = 300, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``cmd``; with ``ok`` a non-zero exit fails the test with the step's name, the
        command and what it printed."""
        started = time.perf_counter()
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        self.log.append(f"[{step}] {shown(cmd)} (cwd {cwd}): exit {proc.returncode} in "
                        f"{time.perf_counter() - started:.1f} s")
        if ok and proc.returncode != 0:
            pytest.fail(self.explain(step, proc, f"exited {proc.returncode}"), pytrace=False)
        return proc

    def explain(self, step: str, proc: subprocess.CompletedProcess[str], what: str) -> str:
        return (f"{step}: `{shown(proc.args)}` {what}\n--- stdout:\n{tail(proc.stdout)}\n"
                f"--- stderr:\n{tail(proc.stderr)}")

    def nbgrader(self, step: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """A stock nbgrader command, as the instructor, in the course folder."""
        return self.sh(step, [tool("nbgrader"), *args], self.course, self.instructor_env(),
                       ok=ok)

    def as_student(self, step: str, student: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A stock nbgrader command, as ``student``, in their working folder (the OS user is the
        same for everyone here, so the student id is given, as JupyterHub's user name would)."""
        return self.sh(step, [tool("nbgrader"), *args, f"--student={student}"],
                       self.student_work(student), self.student_env(student))

    def grade(self, step: str, assignment: str, submissions: Path, *flags: str
              ) -> subprocess.CompletedProcess[str]:
        """The course's grading command, from the repository root, on the course folder."""
        return self.sh(step, [sys.executable, "-m", "autograder.engine.grade", assignment,
                              submissions, "--course", self.course, "--jobs", "1", *flags],
                       ROOT, self.instructor_env(), timeout=900)

    def require(self, *steps: int) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.fail(f"not run: step(s) {missing} before this one failed (see above)",
                        pytrace=False)


# ---------------------------------------------------------------------- student answers

def answer(notebook: Path, assignment: str, student: str) -> None:
    """Write the demo student's answers into the notebook they fetched, as
    ``autograder/demo/__main__.py`` ``write_submissions`` does with the released notebook."""
    answers = importlib.import_module(f"autograder.demo.{assignment}").STUDENTS[student]
    nb = nbformat.read(notebook, as_version=4)
    cells = []
    for cell in copy.deepcopy(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            if answers[grade_id] is None:
                continue
            cell.source = answers[grade_id].strip("\n")
        cells.append(cell)
    nb.cells = cells
    nbformat.write(nb, notebook)


def read_rows(path: Path, key: str) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row[key]: row for row in csv.DictReader(fh)}


# ---------------------------------------------------------------------- jupyter server

@dataclass
class Server:
    base: str
    token: str = TOKEN
    leftovers: list[int] = field(default_factory=list)

    def call(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        """One REST call with the server's token; the JSON reply (or its text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, text = resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text


@contextmanager
def jupyter_server(term: Term, startup_s: float = 90) -> Iterator[Server]:
    """`jupyter server` (nbgrader's formgrader is one of its extensions) started by the
    instructor in the course folder; shut down through its API afterwards, and every process
    it started checked gone (``server.leftovers`` lists those that were not; they are killed)."""
    port = free_port()
    log = term.base / "jupyter-server.log"
    cmd = [str(tool("jupyter-server")), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={TOKEN}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={term.course}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=term.course, env=term.instructor_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(base=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            with suppress(OSError):
                if server.call("GET", "/api/status")[0] == 200:
                    break
            if proc.poll() is not None:
                pytest.fail(f"step 5: `{shown(cmd)}` exited {proc.returncode} while starting:\n"
                            f"{tail(log.read_text(errors='replace'))}", pytrace=False)
            time.sleep(0.3)
        else:
            pytest.fail(f"step 5: `{shown(cmd)}` did not answer within {startup_s:.0f} s:\n"
                        f"{tail(log.read_text(errors='replace'))}", pytrace=False)
        yield server
    finally:
        started = descendants(proc.pid)
        with suppress(OSError):
            server.call("POST", "/api/shutdown")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        server.leftovers = alive(started)
        for pid in server.leftovers:
            os.kill(pid, signal.SIGKILL)


def server_log(term: Term) -> str:
    path = term.base / "jupyter-server.log"
    return tail(path.read_text(errors="replace")) if path.is_file() else "(no log)"
