"""Generate the student notebooks in ``exercises/`` from the instructor notebooks in ``solutions/``.

Usage::

    python -m autograder.engine.release          # regenerate every assignment
    python -m autograder.engine.release --check  # report assignments whose exercises/ is stale

Generation is nbgrader's ``generate_assignment`` (solutions replaced by stubs, hidden tests
removed, outputs cleared, cells locked); it is deterministic, so ``--check`` can compare bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from autograder.engine.grade import COURSE_ROOT, require_ok, run_nbgrader

SOLUTIONS = COURSE_ROOT / "solutions"
EXERCISES = COURSE_ROOT / "exercises"


def assignments() -> list[str]:
    """Every folder of solutions/ that holds its <name>/<name>.ipynb source notebook."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").is_file())


def generate(assignment: str, course: Path) -> Path:
    """Generate ``assignment`` inside the course folder ``course``; return its release folder."""
    require_ok(run_nbgrader(["generate_assignment", assignment, "--force", "--no-db"], course),
           f"generate_assignment {assignment}")
    return course / "exercises" / assignment


def stale(assignment: str) -> list[str]:
    """Files of exercises/<assignment> that differ from a fresh generation (empty: up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copytree(SOLUTIONS / assignment, course / "solutions" / assignment)
        fresh = generate(assignment, course)
        committed = EXERCISES / assignment
        names = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        if committed.is_dir():
            names |= {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()}
        return sorted(
            str(name) for name in names
            if not (fresh / name).is_file() or not (committed / name).is_file()
            or not filecmp.cmp(fresh / name, committed / name, shallow=False)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; change nothing")
    args = parser.parse_args(argv)
    status = 0
    for assignment in assignments():
        if args.check:
            differ = stale(assignment)
            print(f"{assignment}: {'stale: ' + ', '.join(differ) if differ else 'up to date'}")
            status |= bool(differ)
        else:
            generate(assignment, COURSE_ROOT)
            print(f"{assignment}: exercises/{assignment}/ regenerated")
    return status


if __name__ == "__main__":
    sys.exit(main())
