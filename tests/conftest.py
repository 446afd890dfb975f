"""Shared pytest set-up: helper modules importable from the tests, the ``slow`` marker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# `from course import ...` and `from notebook_code import ...` need tests/ on the path, the
# engine (`autograder.engine`) the course root, and the notebooks' `from dropout_course import
# checks` the student package's source, however pytest is started (also with a bare python3 and
# no venv, as `make test-cuda PY=python3` on a GPU machine).
for folder in (TESTS, ROOT, ROOT / "autograder" / "student" / "src"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


try:
    import scipy.stats  # noqa: F401
except ImportError:  # the GPU machine: torch, NumPy and pytest only
    import scipy_stand_in

    scipy_stand_in.install()


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used in tests/ so pytest does not warn about them."""
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds; `make test-quick` skips it"
    )


def _device_names() -> list[str]:
    from dropout_course.checks.devices import available_devices

    return [d.type for d in available_devices()]


@pytest.fixture(params=_device_names())
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test once per available device, with the checks narrowed to that device."""
    monkeypatch.setenv("COURSE_DEVICES", request.param)
    yield request.param


@pytest.fixture(scope="session")
def book() -> Path:
    """The book built with the README's command (execution is cached, so a rebuild is quick);
    shared by the book's file-level tests and its browser tests."""
    from course import BUILD_HTML, run

    proc = run(["make", "--no-print-directory", "book"], timeout=1800)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return BUILD_HTML
