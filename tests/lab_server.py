"""JupyterLab started with the README's student command (`make lab`), for the lab tests.

The server runs on a free localhost port with a token. Stopping it asks the server to shut down
(which also shuts down its kernels), then checks that none of the processes it started is left;
anything left is killed and reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from browser import free_port
from course import ROOT, venv_env

TOKEN = "course-test-token"


@dataclass
class Lab:
    base: str
    token: str
    leftovers: list[int] = field(default_factory=list)

    def request(self, path: str, data: bytes | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"{self.base}{path}", data=data,
                                     method="POST" if data is not None else "GET")
        req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.read().decode("utf-8")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", errors="replace")


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, state)} of every process on the machine."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces) start at ") ".
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (kernels run in their own session, so a process group
    would miss them)."""
    table = _processes()
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, (parent, state) in table.items()
                    if parent in frontier and state != "Z"} - found
        found |= children
        frontier = children
    return found


def alive(pids: set[int]) -> list[int]:
    table = _processes()
    return sorted(pid for pid in pids if pid in table and table[pid][1] != "Z")


@contextmanager
def running_lab(folder: Path, startup_s: float = 120) -> Iterator[Lab]:
    """`make lab` serving ``folder``; on exit a clean shutdown through the server's API, after
    which ``lab.leftovers`` lists the processes it had started that were still running (they are
    then killed)."""
    port = free_port()
    args = (f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={TOKEN} "
            "--ServerApp.port_retries=0")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_DIR={folder}", f"LAB_ARGS={args}"],
        cwd=ROOT, env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lab = Lab(base=f"http://127.0.0.1:{port}", token=TOKEN)
    try:
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            try:
                if lab.request("/api/status")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("JupyterLab exited during start-up")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"JupyterLab did not start within {startup_s:.0f} s")
        yield lab
    finally:
        started = descendants(proc.pid)
        with suppress(OSError):  # already gone: nothing to shut down
            lab.request("/api/shutdown", data=b"")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        lab.leftovers = alive(started)
        for pid in lab.leftovers:
            os.kill(pid, signal.SIGKILL)
