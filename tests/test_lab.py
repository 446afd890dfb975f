"""The student's JupyterLab: `make lab` serves the exercises with nbgrader's Validate working.

The browser-level walk-through is a separate test; this one checks the server side of the
Validate button: the stub fails validation and a completed notebook passes.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from course import ROOT, run
from lab_server import Lab, running_lab

from autograder.demo.__main__ import write_submissions

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """`make lab` on a folder holding the student notebook and a completed copy."""
    folder = tmp_path_factory.mktemp("lab")
    stub = ROOT / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    (folder / "stub.ipynb").write_bytes(stub.read_bytes())
    write_submissions(ASSIGNMENT, folder / "demo")
    done = folder / "demo" / "ada_correct" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    (folder / "done.ipynb").write_bytes(done.read_bytes())
    with running_lab(folder) as server:
        yield server


def validate(lab: Lab, path: str) -> dict:
    status, body = lab.request("/assignments/validate",
                               urllib.parse.urlencode({"path": path}).encode())
    assert status == 200, body[:2000]
    reply = json.loads(body)
    assert reply.get("success"), reply
    return json.loads(reply["value"]) if isinstance(reply["value"], str) else reply["value"]


def test_lab_page_is_served(lab: Lab) -> None:
    """The JupyterLab page loads with the token."""
    status, body = lab.request("/lab")
    assert status == 200 and "JupyterLab" in body


def test_nbgrader_lab_extension_is_installed() -> None:
    """The Validate button comes from nbgrader's lab extension, which must be enabled."""
    proc = run([str(Path(sys.executable).parent / "jupyter"), "labextension", "list"])
    listing = proc.stdout + proc.stderr
    assert "@jupyter/nbgrader" in listing and "enabled" in listing


def test_validate_fails_the_stub(lab: Lab) -> None:
    """Validate on the untouched exercise reports failed test cells."""
    result = validate(lab, "stub.ipynb")
    assert result.get("failed"), result


def test_validate_passes_a_completed_notebook(lab: Lab) -> None:
    """Validate on a correctly completed exercise reports no failure."""
    result = validate(lab, "done.ipynb")
    assert not result.get("failed") and not result.get("error"), result
