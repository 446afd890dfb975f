"""The student's JupyterLab: `make lab` serves the exercises with nbgrader's Validate working.

The browser-level walk-through is a separate test; this one checks the server side of the
Validate button: the stub fails validation and a completed notebook passes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from course import ROOT, run, venv_env

from autograder.demo.__main__ import write_submissions

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"
TOKEN = "course-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, data: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Authorization", f"token {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """`make lab` on a folder holding the student notebook and a completed copy."""
    folder = tmp_path_factory.mktemp("lab")
    stub = ROOT / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    (folder / "stub.ipynb").write_bytes(stub.read_bytes())
    write_submissions(ASSIGNMENT, folder / "demo")
    done = folder / "demo" / "ada_correct" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    (folder / "done.ipynb").write_bytes(done.read_bytes())
    port = free_port()
    args = (f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={TOKEN} "
            "--ServerApp.port_retries=0")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_DIR={folder}", f"LAB_ARGS={args}"],
        cwd=ROOT, env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if request(f"{base}/api/status")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, "JupyterLab exited during start-up"
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 120 s")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def validate(base: str, path: str) -> dict:
    status, body = request(f"{base}/assignments/validate",
                           urllib.parse.urlencode({"path": path}).encode())
    assert status == 200, body[:2000]
    reply = json.loads(body)
    assert reply.get("success"), reply
    return json.loads(reply["value"]) if isinstance(reply["value"], str) else reply["value"]


def test_lab_page_is_served(lab: str) -> None:
    """The JupyterLab page loads with the token."""
    status, body = request(f"{lab}/lab")
    assert status == 200 and "JupyterLab" in body


def test_nbgrader_lab_extension_is_installed() -> None:
    """The Validate button comes from nbgrader's lab extension, which must be enabled."""
    proc = run([str(Path(sys.executable).parent / "jupyter"), "labextension", "list"])
    listing = proc.stdout + proc.stderr
    assert "@jupyter/nbgrader" in listing and "enabled" in listing


def test_validate_fails_the_stub(lab: str) -> None:
    """Validate on the untouched exercise reports failed test cells."""
    result = validate(lab, "stub.ipynb")
    assert result.get("failed"), result


def test_validate_passes_a_completed_notebook(lab: str) -> None:
    """Validate on a correctly completed exercise reports no failure."""
    result = validate(lab, "done.ipynb")
    assert not result.get("failed") and not result.get("error"), result
