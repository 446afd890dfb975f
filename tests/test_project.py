"""The project's promises: two README commands, CI calls the test command, code is ruff clean."""

from __future__ import annotations

from course import ROOT, run


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` calls `make test`, which is the README's test command; `make book` builds."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme and "make book" in readme
    assert "make test" in ci


def test_requirements_pin_what_matters() -> None:
    """torch is pinned exactly (a range would pull CUDA wheels); the book stays on version 1."""
    reqs = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert "torch==2.13.0" in reqs
    assert "nbgrader==0.9.6" in reqs
    assert "jupyter-book>=1.0.4,<2" in reqs
    assert "jupyterlab>=4,<5" in reqs


def test_code_is_ruff_clean() -> None:
    """The checks library, the grading code, the book extension and the tests pass `ruff check`."""
    proc = run(["make", "--no-print-directory", "lint"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
