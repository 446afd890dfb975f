"""Autograde a folder of submissions: sandboxed, verified outside the student's process, parallel.

Usage::

    python -m autograder.engine.grade ASSIGNMENT[,ASSIGNMENT...]|all SUBMISSIONS [--course DIR]
        [--student ID[,ID]] [--due ISO8601] [--shard K/N] [--jobs N] [--db-url URL]
        [--allow-weaker-sandbox NAME[,NAME]|all] [--recheck-sandbox]

``SUBMISSIONS`` is nbgrader's layout (``<student>/<ASSIGNMENT>/*.ipynb``, with nbgrader's
``timestamp.txt`` and ``submission_secret.txt`` when ``nbgrader collect`` made it), or, for one
assignment, a folder or ``.zip`` of files downloaded from an LMS, named per nbgrader's
zip-collect conventions (``--lms-regex``). A folder that is one student's own
(``alice/ex01_overfitting/...``) is refused: pass the class folder and ``--student alice``.
Several assignments (or ``all``) are graded in one run by one pool of workers: a student's full
submission is graded at once, and one gradebook holds every assignment. Each submission's code
runs in an operating-system sandbox (``autograder/engine/sandbox.py``); its tests, hidden ones
included, run in a trusted worker process that calls the student's functions in the sandbox and
judges the plain data that comes back (``autograder/engine/verify.py``).

The course folder ``DIR`` (``--course``; default ``$DROPOUT_COURSE_DIR``, else ``course/`` at
the repository root, ignored by git and never deleted by ``make clean``) is the instructor's,
persistent, standard nbgrader course directory: ``nbgrader_config.py`` (generated: it loads the
course's ``autograder/nbgrader_config.py``; settings below its marked line are kept), the
gradebook (sqlite ``gradebook.db``, or ``--db-url``), ``submitted/``, ``autograded/``,
``feedback/<student>/<ASSIGNMENT>/`` (HTML and ``timestamp.txt``), so that ``nbgrader
formgrader``, ``export``, ``generate_feedback``, ``release_feedback`` and ``db`` run there with
nothing else to set up. The class outputs, ``grades.csv`` (one row per assignment and student:
automatic and manual points, late penalty, submission time, total, one column per graded cell,
flags and problems), ``scores_by_test.csv`` and ``report.txt``, always cover every submission in
the gradebook (:func:`write_class_outputs`), so a run on a subset, one ``--student`` or one
``--shard`` merges into them. Running it again resumes: a submission already graded (same file)
is not graded twice; ``--force`` regrades all; scores a hand grader set are always kept.

A grader failure is never a student's score. Before anything else the sandbox's self-test
measures each protection; if one it promises is lost, the command refuses (exit status
``EXIT_REFUSED``, nothing written) unless ``--allow-weaker-sandbox`` names it, and then the
report says so on every student's line. Its measurement of the host is kept in the course
folder for a few minutes and reused while nothing it depends on has changed
(``autograder/engine/selftest_cache.py``; ``--recheck-sandbox`` measures again). A submission
the grader failed on (its sandbox could not start, or its worker raised) is "not graded": no
gradebook score, no cached result (a rerun retries it), shown so in grades.csv and
report.txt; the command then ends with ``EXIT_NOT_GRADED``. Every string a submission
controls (names, messages) is written escaped (``autograder/engine/untrusted.py``) and the
feedback HTML is sanitised.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import ctypes
import fcntl
import gc
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from autograder.engine.untrusted import (
    csv_cell,
    safe_html,
    scrub_surrogates,
    terminal_text,
)

COURSE_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = COURSE_ROOT / "autograder"
STUDENT_SRC = COURSE_ROOT / "autograder" / "student" / "src"  # the student package's import root
MARKER = ".dropout-course-grading"
EXIT_REFUSED = 3  # the sandbox self-test found a protection lost: nothing was graded
EXIT_NOT_GRADED = 4  # the run completed, but the grader failed on some submissions
EXIT_USAGE = 2  # a command line or SUBMISSIONS folder the command refuses (nothing written)
NOT_ENFORCED = "NOT ENFORCED"
COURSE_ENV = "DROPOUT_COURSE_DIR"
SHARD_ENV = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
"""Where ``--shard auto/N`` reads its 0-based index: a Slurm job array's, else a Kubernetes
Indexed Job's."""
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"  # nbgrader's Exchange.timestamp_format
# The files nbgrader's exchange keeps with a submission, carried into submitted/, autograded/ and
# feedback/ (release_feedback reads both from feedback/<student>/<assignment>/).
SUBMISSION_FILES = ("timestamp.txt", "submission_secret.txt")
SUBMISSION_FILE_MAX_BYTES = 4096


class UsageError(Exception):
    """A command line or SUBMISSIONS folder the command refuses before writing anything; the
    message says what to do instead (exit status ``EXIT_USAGE``)."""


@dataclass
class StudentResult:
    """What grading one student's submission produced."""

    student: str
    assignment: str = ""
    score: float = 0.0
    max_score: float = 0.0
    manual_pending: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    flags: dict[str, list[str]] = field(default_factory=dict)
    per_test: dict[str, float | None] = field(default_factory=dict)
    digest: str = ""
    grader_error: str | None = None
    """Set when the grader failed on this submission: then it has no score (it is "not
    graded"), is neither recorded in the gradebook nor cached, and a rerun retries it."""
    auto_score: float = 0.0
    """Automatic points (cells not overridden by a hand grader), from the gradebook."""
    manual_score: float = 0.0
    """Points a hand grader set (formgrader), from the gradebook; ``score`` includes them."""
    penalty: float = 0.0
    """nbgrader's late penalty (``LateSubmissionPlugin``), from the gradebook."""
    late_seconds: float = 0.0
    timestamp: str = ""
    """The submission time (ISO 8601, UTC) the gradebook holds, or empty."""
    total: float | None = None
    """``score - penalty`` (never below 0); None while a cell waits for a hand grader
    ("pending" in grades.csv and the report) or when there is no submission."""
    weaker: list[str] = field(default_factory=list)
    """The sandbox protections not enforced when this submission was graded."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds by phase: the worker's (:data:`autograder.engine.verify.PHASES`, ``feedback``:
    writing the autograded notebook and feedback page) and, where measured, ``gradebook``
    (this submission's share of the gradebook writes). Empty in results saved before."""
    memory: dict[str, int] = field(default_factory=dict)
    """Peak memory in bytes: ``sandbox_peak`` (its sandbox's memory cgroup, when there is one),
    ``worker_peak`` (the grading worker's maximum resident set so far) and ``zygote_peak`` (its
    warm-start zygote's, where it has one)."""


# --------------------------------------------------------------------------- nbgrader plumbing

def nbgrader_env() -> dict[str, str]:
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = str(CONFIG_DIR)
    # nbgrader creates the gradebook through the `alembic` executable: the venv's bin must be
    # on PATH even when this runs as `.venv/bin/python -m autograder.engine.grade`.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(COURSE_ROOT), str(STUDENT_SRC),
                                         env.get("PYTHONPATH", "")])
    return env


def run_nbgrader(args: list[str], course: Path) -> subprocess.CompletedProcess[str]:
    """Run one nbgrader command against the course directory ``course``."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]
    return subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                          check=False)


def require_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def default_db_url(out: Path) -> str:
    return f"sqlite:///{out / 'gradebook.db'}"


def default_course() -> Path:
    """The course folder when ``--course`` is not given: ``$DROPOUT_COURSE_DIR``, else
    ``course/`` at the repository root (ignored by git; ``make clean`` never deletes it)."""
    return Path(os.environ.get(COURSE_ENV) or COURSE_ROOT / "course")


def claim_folder(out: Path) -> None:
    """Create ``out`` (or reuse one this command made, so an interrupted run resumes and a term
    accumulates); a folder this command did not make is never touched."""
    if out.exists() and not (out / MARKER).exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and was not made by this command: not touching it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by python -m autograder.engine.grade: this course folder "
                              "holds the gradebook and every grade; do not delete it\n")


CONFIG_MARKER = ("# ---- Your own settings go below this line: the grading command rewrites "
                 "what is above it and keeps the rest ----")
_CONFIG_HEADER = "# nbgrader configuration of this course folder, generated by"


def course_config_text(course: Path, db_url: str | None, own: str = "") -> str:
    """The text of ``course/nbgrader_config.py``: the course's configuration
    (``autograder/nbgrader_config.py``, by absolute path), this folder as the course root, the
    gradebook URL when it is not the default sqlite file, then ``own`` (the instructor's lines,
    below :data:`CONFIG_MARKER`)."""
    lines = [
        f"{_CONFIG_HEADER} `python -m autograder.engine.grade`.",
        "# nbgrader's commands run in this folder (formgrader, export, generate_feedback,",
        "# release_feedback, db) find it and see the grading command's gradebook.",
        "import os",
        "",
        "c = get_config()  # noqa: F821",
        f"load_subconfig('nbgrader_config.py', path={str(CONFIG_DIR)!r})  # noqa: F821",
        "c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))",
    ]
    if db_url:
        lines += [f"c.CourseDirectory.db_url = {db_url!r}",
                  "# nbgrader's default course id '' breaks PostgreSQL's foreign keys.",
                  "c.CourseDirectory.course_id = 'default_course'"]
    return "\n".join([*lines, "", CONFIG_MARKER, own.strip("\n"), ""]).rstrip("\n") + "\n"


def write_course_config(course: Path, db_url: str | None) -> Path:
    """Write ``course/nbgrader_config.py`` (:func:`course_config_text`), keeping whatever is
    below the marker line of the one there (or all of a hand-written one without it)."""
    path = course / "nbgrader_config.py"
    own = ""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if CONFIG_MARKER in text:
            own = text.split(CONFIG_MARKER, 1)[1]
        elif not text.startswith(_CONFIG_HEADER):
            own = text
    text = course_config_text(course, db_url, own)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def _source(assignment: str) -> Path:
    source = COURSE_ROOT / "solutions" / assignment / f"{assignment}.ipynb"
    if not source.is_file():
        raise SystemExit(f"no source notebook solutions/{assignment}/{assignment}.ipynb")
    return source


_IMPORT_LINE = r"^[ \t]*(?:import|from)[ \t]+{}\b"


def optional_libraries(assignments: Iterable[str]) -> tuple[str, ...]:
    """Which of the libraries that only some exercises use (``zygote.OPTIONAL``, e.g.
    ``scipy.stats``) the zygotes should import for grading ``assignments``: those whose top
    package a code cell of an assignment's source notebook imports (its reference solution
    shows what students are told to use). Only these public names reach the zygote; a
    submission that imports another library still can, at its own cost."""
    from autograder.engine.zygote import OPTIONAL

    code = []
    for name in assignments:
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            cells = json.loads(_source(name).read_text("utf-8")).get("cells", [])
            code += ["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"]
    text = "\n".join(code)
    return tuple(lib for lib in OPTIONAL
                 if re.search(_IMPORT_LINE.format(re.escape(lib.split(".")[0])), text, re.M))


def load_course_config(out: Path, db_url: str | None = None) -> Any:
    """The traitlets config nbgrader's commands see in the course folder ``out`` (its
    ``nbgrader_config.py`` when there is one, else the course's), with ``out`` as the root
    and ``db_url`` (when given) as the gradebook."""
    from traitlets.config.loader import PyFileConfigLoader

    folder = out if (out / "nbgrader_config.py").is_file() else CONFIG_DIR
    config = PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()
    config.CourseDirectory.root = str(out)
    if db_url:
        config.CourseDirectory.db_url = db_url
        # nbgrader's default course id '' breaks PostgreSQL's foreign keys (its assignments
        # belong to "default_course"); sqlite does not check them.
        config.CourseDirectory.course_id = "default_course"
    return config


def nbgrader_api(out: Path, db_url: str | None = None) -> Any:
    """nbgrader's own API on the course directory ``out``, with the course's configuration."""
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    install_alembic_head()
    config = load_course_config(out, db_url)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


# A constant key of PostgreSQL's advisory locks: shards preparing one shared gradebook.
_PG_LOCK_KEY = int(hashlib.sha256(b"dropout-course prepare_course").hexdigest()[:15], 16)


@contextlib.contextmanager
def _prepare_lock(out: Path, db_url: str | None) -> Any:
    """Serialise preparing the course: one process at a time per course folder (a file lock)
    and, on a PostgreSQL gradebook, per gradebook (``pg_advisory_lock``), so that shards that
    start together never race in nbgrader's ``generate_assignment``."""
    with (out / ".prepare.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if db_url and db_url.startswith("postgresql"):
                from sqlalchemy import create_engine, text

                engine = create_engine(db_url)
                try:
                    with engine.connect() as conn:
                        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
                        conn.commit()
                        try:
                            yield
                        finally:
                            conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                         {"k": _PG_LOCK_KEY})
                            conn.commit()
                finally:
                    engine.dispose()
            else:
                yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_course(out: Path, assignments: str | list[str], db_url: str | None = None) -> None:
    """Make ``out`` a course directory with every one of ``assignments`` released into its
    gradebook: ``nbgrader generate_assignment --force`` each, through nbgrader's API in this
    process (one import of nbgrader for all of them, not one command each), one process at a
    time (:func:`_prepare_lock`).

    A folder this command did not create is never touched; one it created is reused, so that an
    interrupted run resumes.

    An assignment released before from the same source, with the same configuration, whose
    copies in ``solutions/`` and ``exercises/`` and whose rows in the gradebook are still the
    ones that release made (digests recorded in :data:`PREPARED`: :func:`_release_inputs`,
    :func:`_release_outputs`, :func:`_gradebook_rows`), is not generated again:
    ``generate_assignment --force`` would write the same files and rows. Anything else (a new
    source or configuration, a file or row changed or removed since) is generated as before.
    """
    names = [assignments] if isinstance(assignments, str) else list(assignments)
    sources = {a: _source(a) for a in names}
    claim_folder(out)
    if not (out / "nbgrader_config.py").is_file():
        write_course_config(out, db_url)
    with _prepare_lock(out, db_url):
        prepared = _read_prepared(out)
        inputs = {a: _release_inputs(out, sources[a], db_url) for a in names}
        stale = [a for a in names if prepared.get(a, {}).get("inputs") != inputs[a]
                 or prepared[a].get("outputs") != _release_outputs(out, a)]
        fresh = [a for a in names if a not in stale]
        if fresh:  # their files are as released: are their gradebook rows too?
            rows = _gradebook_rows(out, db_url, fresh)
            stale += [a for a in fresh if prepared[a].get("gradebook") != rows[a]]
        if not stale:
            return
        stale = [a for a in names if a in stale]
        for assignment in stale:
            prepared.pop(assignment, None)
            target = out / "solutions" / assignment
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(sources[assignment].parent, target)
        _write_prepared(out, prepared)  # what is being regenerated is not prepared meanwhile
        api = nbgrader_api(out, db_url)
        for assignment in stale:
            outcome = api.generate_assignment(assignment, force=True)
            if not outcome["success"]:
                raise RuntimeError(f"generate_assignment {assignment} failed:\n"
                                   f"{(outcome.get('error') or outcome.get('log') or '')[-4000:]}")
        rows = _gradebook_rows(out, db_url, stale)
        for assignment in stale:
            prepared[assignment] = {"inputs": inputs[assignment], "gradebook": rows[assignment],
                                    "outputs": _release_outputs(out, assignment)}
        _write_prepared(out, prepared)


PREPARED = ".prepared.json"
"""The course folder's record of each assignment's release (:func:`prepare_course`): digests of
what it was made from, of the files it wrote and of its rows in the gradebook."""
_PREPARED_FORMAT = 1


def _tree_digest(folder: Path) -> str:
    """SHA-256 over every file under ``folder`` (relative names, link targets and bytes);
    the digest of nothing when it does not exist."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogatepass") + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode("utf-8", "surrogatepass"))
            elif path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(b"\0")
    return digest.hexdigest()


def _release_inputs(out: Path, source: Path, db_url: str | None) -> str:
    """What a release of ``source`` into ``out`` is made from: the source folder, nbgrader's
    configuration (the course's, the student kit's it loads, the course folder's), the
    gradebook URL, the course folder and nbgrader's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        nbgrader_version = version("nbgrader")
    except PackageNotFoundError:
        nbgrader_version = ""
    parts = [str(_PREPARED_FORMAT), nbgrader_version, str(out), db_url or "",
             _tree_digest(source.parent)]
    for config in (CONFIG_DIR / "nbgrader_config.py",
                   CONFIG_DIR / "student" / "kit" / "nbgrader_config.py",
                   out / "nbgrader_config.py"):
        parts.append(_digest(config) if config.is_file() else "-")
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _release_outputs(out: Path, assignment: str) -> str:
    """The files a release wrote: ``solutions/<A>/`` and ``exercises/<A>/`` of ``out``."""
    return hashlib.sha256((_tree_digest(out / "solutions" / assignment) + ":" + _tree_digest(
        out / "exercises" / assignment)).encode()).hexdigest()


def _gradebook_rows(out: Path, db_url: str | None, assignments: list[str]) -> dict[str, str]:
    """Per assignment, a digest of the rows a release writes into the gradebook (the
    assignment, its notebooks, grade, solution, task and source cells, with their points, types,
    lock and checksums); "" for an assignment the gradebook does not hold."""
    from nbgrader.api import Gradebook, MissingEntry

    found = dict.fromkeys(assignments, "")
    if not db_url and not (out / "gradebook.db").is_file():
        return found
    with Gradebook(db_url or default_db_url(out)) as gb:
        for name in assignments:
            try:
                assignment = gb.find_assignment(name)
            except MissingEntry:
                continue
            rows = [[nb.name,
                     sorted([c.name, c.max_score, c.cell_type] for c in nb.grade_cells),
                     sorted(c.name for c in nb.solution_cells),
                     sorted([c.name, c.max_score, c.cell_type] for c in nb.task_cells),
                     sorted([c.name, c.cell_type, c.locked, c.checksum, c.source]
                            for c in nb.source_cells)]
                    for nb in sorted(assignment.notebooks, key=lambda nb: nb.name)]
            found[name] = hashlib.sha256(json.dumps([name, rows], default=str).encode(
                "utf-8", "surrogatepass")).hexdigest()
    return found


def _read_prepared(out: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads((out / PREPARED).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _PREPARED_FORMAT:
        return {}
    found = data.get("assignments")
    return {k: v for k, v in found.items() if isinstance(v, dict)} \
        if isinstance(found, dict) else {}


def _write_prepared(out: Path, prepared: dict[str, dict[str, str]]) -> None:
    path = out / PREPARED
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"format": _PREPARED_FORMAT, "assignments": prepared},
                              indent=1, sort_keys=True), "utf-8")
    tmp.replace(path)


def lazy_nbgrader_package() -> None:
    """Import the ``nbgrader`` package without running its ``__init__`` until one of the names
    it defines is used (:func:`lazy_package`).

    nbgrader's ``__init__`` loads its Jupyter server extensions (formgrader, the assignment list:
    jupyter_server, the exchange, every nbgrader app), about 0.5 s of CPU in the grading process
    that grading never uses, while the workers start on the same cores. Its submodules
    (``nbgrader.api``, ``nbgrader.preprocessors``, ...) import as always; the first use of
    anything else of the package (``nbgrader.__version__``, the extension hooks) runs the real
    ``__init__`` then, in the same module object, so every caller sees the same package. Without
    effect once nbgrader is imported.
    """
    lazy_package("nbgrader")


def lazy_nbgrader_preprocessors() -> None:
    """Import ``nbgrader.preprocessors`` without running its ``__init__`` (:func:`lazy_package`),
    which imports every preprocessor, and with ``SaveAutoGrades`` the gradebook's ORM
    (``nbgrader.api``, SQLAlchemy: about 0.35 s of CPU in each worker, which renders feedback
    with two of them and never opens a gradebook). Its ``NbGraderPreprocessor``, which the
    preprocessors' modules import from the package, is set at once."""
    lazy_nbgrader_package()
    lazy_package("nbgrader.preprocessors", {"NbGraderPreprocessor": "base"})


def lazy_package(name: str, preset: Mapping[str, str] | None = None) -> None:
    """Put the package ``name`` in ``sys.modules`` without running its ``__init__``: that runs,
    in the same module object, when a name the package defines is first used; its submodules
    import as always. ``preset`` (attribute -> submodule) sets those attributes now, from the
    package's submodules of those names. Without effect once the package is imported."""
    import importlib.util

    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attribute: str) -> Any:  # PEP 562: only for names the module lacks
        if attribute.startswith("__") and attribute != "__version__":
            raise AttributeError(attribute)
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:
            raise AttributeError(attribute)  # a submodule: the import system loads it
        package.__dict__.pop("__getattr__", None)
        spec.loader.exec_module(package)  # the real __init__, now
        return getattr(package, attribute)

    package.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = package
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, package)
    for attribute, module in (preset or {}).items():
        setattr(package, attribute,
                getattr(importlib.import_module(f"{name}.{module}"), attribute))


def _gradebook_class() -> Any:
    """nbgrader's ``Gradebook``, imported without its package's server extensions
    (:func:`lazy_nbgrader_package`), with :func:`alembic_head` installed."""
    lazy_nbgrader_package()
    from nbgrader.api import Gradebook

    install_alembic_head()
    return Gradebook


_NBGRADER: dict[str, Any] = {}


def install_alembic_head() -> None:
    """Let nbgrader read its gradebook migrations' head in this process (:func:`alembic_head`)
    instead of running the ``alembic heads`` command each time it creates a gradebook."""
    import nbgrader.api

    if nbgrader.api.get_alembic_version is not alembic_head:
        _NBGRADER["get_alembic_version"] = nbgrader.api.get_alembic_version
        nbgrader.api.get_alembic_version = alembic_head


def alembic_head() -> str:
    """The newest of nbgrader's gradebook migrations, what nbgrader's ``get_alembic_version``
    returns, read with alembic's API in this process. nbgrader gets it from the ``alembic
    heads`` command, a new Python process that imports alembic and SQLAlchemy (about a second),
    each time it creates a gradebook: every new course folder, each benchmark run, many tests.
    Several heads (never, in nbgrader's linear history) are left to nbgrader's own way."""
    if "head" not in _NBGRADER:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from nbgrader.dbutil import _temp_alembic_ini

        with _temp_alembic_ini("sqlite:////tmp/gradebook.db") as ini:
            heads = ScriptDirectory.from_config(Config(ini)).get_heads()
        if len(heads) != 1:
            return _NBGRADER["get_alembic_version"]()
        _NBGRADER["head"] = heads[0]
    return _NBGRADER["head"]


def skip_iri_grammar() -> None:
    """Make jsonschema (imported by nbformat) skip its optional ``iri`` format checker.

    When ``rfc3987_syntax`` is installed, importing jsonschema compiles its IRI grammar: about
    0.9 s of CPU in every grading process. No schema used here checks that string format
    (nbformat's and nbgrader's have none), and jsonschema leaves the checker out when the
    module cannot be imported, which ``None`` in ``sys.modules`` makes it. Without effect once
    jsonschema is loaded.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sandbox self-test

class SandboxRefusedError(RuntimeError):
    """The sandbox self-test found protections lost that the instructor did not accept: the
    command grades and records nothing. ``str()`` is the message for the instructor."""


@dataclass(frozen=True)
class SandboxCheck:
    """What the sandbox's self-test measured on this machine, and what grading accepts."""

    measured: dict[str, str]
    """Protection -> how it is enforced here, or "NOT ENFORCED: why" (measured, not claimed,
    when ``self_tested``)."""
    weaker: tuple[str, ...] = ()
    """The protections not enforced here that ``--allow-weaker-sandbox`` accepted."""
    self_tested: bool = True
    """False on an engine whose sandbox has no self-test yet: ``measured`` holds its claims."""
    key: str = ""
    """The host's key (:func:`autograder.engine.selftest_cache.host_key`) under which a fresh
    measurement may be stored for the next run; empty: nothing to store."""
    cached: bool = False
    """True when ``measured`` is a stored measurement of this same host, not run now."""
    mode: str = ""
    """How the jail isolates here (``sandbox.host_mode``), as the self-test saw it."""


def _protection_names() -> tuple[str, ...]:
    from autograder.engine import sandbox

    names = getattr(sandbox, "PROTECTIONS", None)
    return tuple(names) if names else tuple(sandbox.protections())


def allowed_weaker(spec: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The protection names that ``--allow-weaker-sandbox`` accepts: comma-separated names
    (or a sequence of them), ``all`` for every protection, None or empty for none. Raises
    ValueError for a name the sandbox does not know."""
    if not spec:
        return ()
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    known = _protection_names()
    if "all" in names:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown sandbox protection(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known)} (or all)")
    return tuple(dict.fromkeys(names))


def _limits(limits: dict[str, Any] | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The sandbox limits as keyword arguments of ``Limits``, with the accepted weaker
    protections when this sandbox's ``Limits`` takes them."""
    from autograder.engine.sandbox import Limits

    out = dict(limits or {})
    if "allow_weaker" in getattr(Limits, "__dataclass_fields__", {}):
        out["allow_weaker"] = tuple(allowed)
    return out


def check_sandbox(limits: dict[str, Any], allowed: tuple[str, ...], course: Path | None = None,
                  recheck: bool = False) -> SandboxCheck:
    """Run the sandbox's self-test with ``limits`` (``Limits`` keyword arguments); raise
    :class:`SandboxRefusedError` if a protection is lost that ``allowed`` does not name.

    With ``course`` (the course folder), a measurement stored there by an earlier run
    (:func:`remember_sandbox`) stands in for the self-test when it was made on this same host
    (:mod:`autograder.engine.selftest_cache`: same key, a few minutes old at most) and every
    protection it holds is accepted; ``recheck`` always runs the self-test. A refusal is never
    taken from a stored measurement: the self-test runs, and judges, again."""
    from autograder.engine import sandbox

    messages: list[str] = []
    key, cached, mode = "", False, ""
    if hasattr(sandbox, "self_test"):
        stored = None
        if course is not None:
            from autograder.engine import selftest_cache

            resolved = asdict(sandbox.Limits(**limits))  # every limit, defaults included
            key = selftest_cache.host_key(resolved, sandbox.self_test)
            stored = None if recheck else selftest_cache.load(course, key)
        if stored is not None and not _lost(stored["measured"], allowed):
            measured, lost, mode, cached = stored["measured"], [], stored["mode"], True
        else:
            test = sandbox.self_test(sandbox.Limits(**limits))
            measured = {str(k): str(v) for k, v in test.measured.items()}
            lost = [str(name) for name in test.lost(allowed)]
            messages = [str(m) for m in getattr(test, "messages", [])][:5]
            mode = str(getattr(test, "mode", ""))
            if key and key != selftest_cache.host_key(resolved, sandbox.self_test):
                key = ""  # the host changed while it was measured: nothing to remember
        self_tested = True
    else:  # an engine without the self-test: judge its claims the same way
        measured = dict(sandbox.protections())
        lost = [k for k, v in measured.items() if v.startswith(NOT_ENFORCED) and k not in allowed]
        self_tested = False
    if lost:
        shown = "\n".join([*(f"  {terminal_text(name)}: {terminal_text(measured[name])}"
                             if name in measured else f"  {terminal_text(name)}"
                             for name in lost),
                           *(f"  (sandbox: {terminal_text(m)})" for m in messages)])
        names = ",".join(name for name in lost if name in measured) or "all"
        raise SandboxRefusedError(
            "refusing to grade: the sandbox self-test found protection(s) lost on this "
            f"machine:\n{shown}\n"
            "Nothing was graded or recorded. Fix the machine (README: \"How a submission is "
            "graded, and what the sandbox enforces\"; e.g. run as root on Linux with cgroups), "
            f"or accept grading without them: --allow-weaker-sandbox {names}")
    weaker = tuple(k for k, v in measured.items() if v.startswith(NOT_ENFORCED))
    return SandboxCheck(measured, weaker, self_tested, key if self_tested else "", cached, mode)


def _lost(measured: Mapping[str, str], allowed: tuple[str, ...]) -> list[str]:
    """The protections of the sandbox (each one it promises) that ``measured`` does not show
    enforced, less those ``allowed``: what ``SelfTest.lost`` says of a fresh measurement."""
    return [name for name in _protection_names() if name not in allowed and
            measured.get(name, f"{NOT_ENFORCED}: not measured").startswith(NOT_ENFORCED)]


def remember_sandbox(course: Path, check: SandboxCheck) -> None:
    """Store a fresh self-test's measurement in the course folder for the next run
    (:func:`check_sandbox`); a stored one that was reused is left as it was measured."""
    if check.key and not check.cached:
        from autograder.engine import selftest_cache

        selftest_cache.save(course, check.key, check.measured, check.mode)


# --------------------------------------------------------------------------- workers

_WORKER: dict[Any, Any] = {}


def _init_worker(slots: Any, optional: tuple[str, ...] | None = None) -> None:
    """Take a sandbox slot and load everything grading needs, so that the first submission
    does not wait for imports (this runs while the parent prepares the course). The zygote
    imports the optional libraries ``optional`` (default: all; :func:`optional_libraries`)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Dies with the process that started it (a grading command, a warm service), killed or not.
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # it died before the signal was set
    _WORKER["slot"] = slots.get()
    atexit.register(_exit_now)
    from autograder.engine.sandbox import warm_zygote

    # the zygote imports while this process does (used by default)
    warm_zygote(wait=False, optional=optional)
    skip_iri_grammar()
    lazy_nbgrader_preprocessors()  # a worker uses two preprocessors, never the extensions
    import torch

    # what torch.autograd.grad imports on its first call (SymPy: about 0.3 s), used by the
    # grader's half of a gradient that crosses the boundary
    importlib.import_module("torch.fx.experimental.symbolic_shapes")
    importlib.import_module("autograder.engine.remote")  # imported now, used by _grade_one
    importlib.import_module("autograder.engine.verify")
    torch.set_num_threads(1)
    _html({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    # What is loaded now lives as long as the worker: kept out of the collector's full passes
    # over the heap (torch, nbconvert, ...), which cost about 0.04 s per submission.
    gc.freeze()


def worker_ready() -> int:
    """Worker: wait until this process's zygote has loaded; its pid (the warm service's
    warm-up, :meth:`autograder.engine.warm.Service.warm_up`)."""
    from autograder.engine.sandbox import warm_zygote

    warm_zygote()
    return os.getpid()


def _exit_now() -> None:
    """A worker's last act once the pool shuts it down: every result has been sent and every
    file written and closed, so skip the interpreter's teardown of torch (about a second)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def worker_plan(course: Path, assignment: str) -> Any:
    """Worker: the :class:`~autograder.engine.verify.Plan` (hidden tests, answers) of
    ``assignment`` in ``course``, read once per content of its solution and release: a worker
    of the warm service outlives the commands that re-release an edited solution."""
    from autograder.engine.verify import Plan

    sources = (course / "solutions" / assignment / f"{assignment}.ipynb",
               course / "exercises" / assignment / f"{assignment}.ipynb")
    key = tuple(_digest(path) for path in sources)
    cached = _WORKER.get(("plan", str(course), assignment))
    if cached is None or cached[0] != key:
        cached = _WORKER[("plan", str(course), assignment)] = (key, Plan.load(*sources))
    return cached[1]


def _grade_one(student: str, notebook: str, assignment: str, out: str,
               limits: dict[str, Any]) -> dict[str, Any]:
    """Worker: grade one submission, write its autograded notebook and feedback HTML."""
    from autograder.engine.sandbox import Limits
    from autograder.engine.verify import feedback_notebook, grade_submission

    course = Path(out)
    plan = worker_plan(course, assignment)
    scratch = course / ".scratch"
    scratch.mkdir(exist_ok=True)
    outcome = grade_submission(student, Path(notebook), plan, Limits(**limits),
                               _WORKER.get("slot", 0), scratch)
    began = time.perf_counter()
    if outcome.autograded is not None:
        name = f"{assignment}.ipynb"
        graded = course / "autograded" / student / assignment
        graded.mkdir(parents=True, exist_ok=True)
        (graded / name).write_text(json.dumps(outcome.autograded, indent=1), "utf-8")
        feedback = course / "feedback" / student / assignment
        feedback.mkdir(parents=True, exist_ok=True)
        (feedback / f"{assignment}.html").write_text(
            _html(feedback_notebook(outcome.autograded)), "utf-8")
        outcome.phases["feedback"] = time.perf_counter() - began
    # ru_maxrss is in KiB on Linux: this worker's peak so far (its sandboxes are not counted)
    outcome.memory["worker_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    from autograder.engine.sandbox import warm_zygote_peak

    zygote_peak = warm_zygote_peak()
    if zygote_peak is not None:
        outcome.memory["zygote_peak"] = zygote_peak
    result = asdict(outcome)
    result.pop("autograded")
    return result


def feedback_exporter(kind: type | None = None) -> Any:
    """The exporter of the feedback pages: ``kind`` (default
    :class:`~autograder.engine.feedback.FeedbackHTMLExporter`; any nbconvert ``HTMLExporter``)
    with the feedback template, sanitised HTML through
    :func:`~autograder.engine.untrusted.safe_html` and ``SanitizeStudentContent``."""
    from autograder.engine.feedback import FeedbackHTMLExporter, SanitizeStudentContent

    exporter = (kind or FeedbackHTMLExporter)(
        template_name="feedback", extra_template_basedirs=[
            str(Path(__file__).resolve().parent / "templates")], sanitize_html=True,
        filters={"clean_html": safe_html})
    exporter.register_preprocessor(SanitizeStudentContent(), enabled=True)
    return exporter


def _html(nb_json: dict[str, Any]) -> str:
    """The feedback page of a notebook whose cells and outputs a student controls.

    Two layers, because the student writes markdown and nbconvert renders it: the
    ``SanitizeStudentContent`` preprocessor shows a markdown cell that holds HTML as text and
    keeps only inert outputs; nbconvert's ``sanitize_html`` mode then passes every rendered
    markdown cell and HTML output through ``clean_html``, which is replaced by
    :func:`~autograder.engine.untrusted.safe_html` (nbconvert's own allows too little markup
    to show ordinary markdown, and nothing of the page template's own scripts is touched).
    Lone surrogates are escaped, so the page always encodes as UTF-8.
    """
    import nbformat

    exporter = _WORKER.get("exporter")
    if exporter is None:
        exporter = _WORKER["exporter"] = feedback_exporter()
    body, _ = exporter.from_notebook_node(nbformat.from_dict(nb_json))
    return scrub_surrogates(body)


GRADING_LOCK = ".grading.lock"


def hold_course(out: Path, quiet: bool = False) -> int:
    """Take the course folder ``out`` for one grading command (an exclusive lock on
    ``out/.grading.lock``, released when the returned descriptor is closed or the process ends),
    waiting for another command that holds it: two commands on one folder would stage, clean up
    and write each other's files (the intake, scratch, feedback)."""
    fd = os.open(out / GRADING_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        if not quiet:
            print(f"waiting for another grading command on {terminal_text(str(out))}",
                  file=sys.stderr)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def warm_pool(out: Path, jobs: int, keep_warm: float | None, weaker: tuple[str, ...],
              quiet: bool = False, optional: tuple[str, ...] | None = None) -> Any:
    """A session with the warm service of the course folder ``out``
    (:func:`autograder.engine.warm.connect`), started first when none runs and ``keep_warm``
    (its idle timeout, seconds) is given; or None: none runs, it is stale, or the sandbox is
    weaker than full (then nothing the instructor left running is offered to a submission).
    ``optional``: the libraries this command's zygotes would preload (default: all); the
    service's must be the same. Without a service, it returns once any service of ``out`` has
    finished what it grades (an interrupted command's submissions)."""
    from autograder.engine import warm

    pool = None
    try:
        if weaker:
            if keep_warm is not None:
                print("NOTE: no warm service under a weaker sandbox (--keep-warm ignored)",
                      file=sys.stderr)
        else:
            pool = warm.connect(out, jobs, optional)
            if pool is None and keep_warm is not None:
                warm.stop(out)  # a stale one (or one of another --jobs) makes way
                warm.start(out, jobs, keep_warm, optional=optional)
                pool = warm.connect(out, jobs, optional)
        if pool is None:
            warm.wait_idle(out)
    except warm.WarmError as err:
        print(f"WARNING: {terminal_text(str(err))}: grading without it", file=sys.stderr)
        return None
    if pool is not None and not quiet:
        print(f"grading in the warm service of {terminal_text(str(out))} ({pool.jobs} "
              "processes; python -m autograder.engine.warm stop COURSE ends it)", file=sys.stderr)
    return pool


def start_workers(jobs: int, optional: tuple[str, ...] | None = None) -> ProcessPoolExecutor:
    """``jobs`` grading processes (spawned, not forked: the parent holds a gradebook
    connection and threads), each with its own sandbox slot. They start loading at once; their
    zygotes import the optional libraries ``optional`` (default: all)."""
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                               initializer=_init_worker, initargs=(slots, optional))
    pool.submit(int)  # the executor spawns its processes on the first task
    return pool


# --------------------------------------------------------------------------- gradebook

def record(gb: Any, result: StudentResult, timestamp: datetime | str | None = None,
           answers: Mapping[str, str] | None = None) -> None:
    """Write one student's scores for ``result.assignment`` into the nbgrader gradebook
    (idempotent; a hand grader's scores are kept): :func:`autograder.engine.gradebook.record`."""
    from autograder.engine import gradebook

    gradebook.record(gb, result, timestamp, answers)


def submission_totals(gb: Any, assignment: str, student: str) -> Any:
    """The gradebook's totals of one submission (automatic and manual points, pending cells,
    lateness, penalty, total, timestamp): :func:`autograder.engine.gradebook.totals`; raises
    nbgrader's ``MissingEntry`` when there is none."""
    from autograder.engine import gradebook

    return gradebook.totals(gb, assignment, student)


def _fill_totals(gb: Any, result: StudentResult) -> None:
    """Set ``result``'s points from the gradebook: ``score`` = automatic + manual points,
    ``total`` = score - late penalty (None while a cell waits for a hand grader)."""
    t = submission_totals(gb, result.assignment, result.student)
    result.max_score = float(t.max_score)
    result.auto_score = float(t.auto)
    result.manual_score = float(t.manual)
    result.score = float(t.score)
    result.manual_pending = int(t.pending)
    result.penalty = float(t.penalty)
    result.late_seconds = float(t.late_seconds)
    stamp = t.timestamp
    if isinstance(stamp, datetime):
        stamp = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
        result.timestamp = stamp.isoformat()
    else:
        result.timestamp = str(stamp or "")
    result.total = None if result.manual_pending else float(t.total)


def _class_cells(gb: Any) -> dict[tuple[str, str], tuple[dict[str, float | None], bool]]:
    """For every submission in the gradebook, by (assignment, student): its
    :func:`_gradebook_per_test` and whether a notebook of it is flagged, read at once (the
    submissions with their notebooks, grades and cells: a few queries, not several per cell)."""
    from nbgrader.api import Grade, SubmittedAssignment, SubmittedNotebook
    from sqlalchemy.orm import joinedload, selectinload

    query = gb.db.query(SubmittedAssignment).options(
        joinedload(SubmittedAssignment.assignment), joinedload(SubmittedAssignment.student),
        selectinload(SubmittedAssignment.notebooks).selectinload(
            SubmittedNotebook.grades).joinedload(Grade.cell))
    return {(sub.assignment.name, sub.student.id): (
        _gradebook_per_test(sub), any(nb.flagged for nb in sub.notebooks)) for sub in query}


def _may_be_penalised(submission: Any) -> bool:
    """Whether nbgrader's late penalty can give ``submission`` another value than it has:
    it is late, or a notebook of it carries a penalty (:func:`~autograder.engine.gradebook.
    apply_late_penalty` sets every other submission's penalties to none, which they are)."""
    return submission.total_seconds_late > 0 or any(
        nb.late_submission_penalty is not None for nb in submission.notebooks)


def _gradebook_per_test(submission: Any) -> dict[str, float | None]:
    """Each graded cell's points as the gradebook holds them: a hand grader's score, else the
    automatic one; None for a cell that waits for a hand grader and has no score yet."""
    per_test: dict[str, float | None] = {}
    for notebook in submission.notebooks:
        for g in notebook.grades:
            if g.manual_score is not None:
                per_test[g.name] = float(g.manual_score) + float(g.extra_credit or 0.0)
            elif g.auto_score is None:
                per_test[g.name] = None
            else:
                per_test[g.name] = float(g.auto_score)
    return per_test


# --------------------------------------------------------------------------- the command

@dataclass(frozen=True)
class Task:
    """One submission to grade: a student's notebook for one assignment."""

    assignment: str
    student: str
    notebook: Path
    digest: str
    notes: tuple[str, ...] = ()
    flags: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (flag word, reasons) from the intake
    timestamp: datetime | None = None  # when it was submitted (naive UTC), when known


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result_path(out: Path, assignment: str, student: str) -> Path:
    return out / "results" / assignment / f"{student}.json"


# How earlier versions recorded a grader failure as a 0 (a worker that raised; an exception
# inside grade_submission): such cached results are regraded, not kept.
_LEGACY_GRADER_ERRORS = ("grading failed: ", "grading stopped: ")


def _cached(out: Path, task: Task) -> StudentResult | None:
    try:
        data = json.loads(_result_path(out, task.assignment, task.student).read_text("utf-8"))
        result = StudentResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    if result.grader_error is not None or any(p.startswith(_LEGACY_GRADER_ERRORS)
                                              for p in result.problems):
        return None  # a grader failure must not stand as a grade: grade it again
    return result if result.digest == task.digest else None


def _save(out: Path, result: StudentResult) -> None:
    path = _result_path(out, result.assignment, result.student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # ASCII JSON: a lone surrogate a submission smuggled into a message is written as \udcxx.
    tmp.write_text(json.dumps(asdict(result), ensure_ascii=True), "utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a file


def _merge_flags(result: StudentResult, flags: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    for word, reasons in flags:
        have = result.flags.setdefault(word, [])
        have += [r for r in reasons if r not in have]


def _not_graded(task: Task, error: str, seconds: float = 0.0,
                problems: list[str] | None = None) -> StudentResult:
    """The result of a submission the grader failed on: no score, the error said."""
    result = StudentResult(task.student, assignment=task.assignment, seconds=seconds,
                           digest=task.digest, grader_error=error)
    said = [p for p in problems or [] if p.startswith("not graded (grader error")]
    result.problems = [*task.notes, *(problems or [])]
    if not said:
        result.problems.append(f"not graded (grader error: {error})")
    _merge_flags(result, task.flags)
    return result


def _from_outcome(task: Task, data: dict[str, Any]) -> StudentResult:
    if data.get("grader_error"):
        return _measured(_not_graded(task, str(data["grader_error"]),
                                     float(data.get("seconds", 0.0)),
                                     list(data.get("problems", []))), data)
    result = StudentResult(task.student, assignment=task.assignment,
                           seconds=float(data["seconds"]), digest=task.digest)
    result.problems = [*task.notes, *data["problems"]]
    result.flags = data["flags"]
    result.per_test = dict(data["scores"])
    _merge_flags(result, task.flags)
    return _measured(result, data)


def _measured(result: StudentResult, data: dict[str, Any]) -> StudentResult:
    """``result`` with the worker's phases and peak memory (absent from an older worker's)."""
    result.phases = {k: float(v) for k, v in (data.get("phases") or {}).items()}
    result.memory = {k: int(v) for k, v in (data.get("memory") or {}).items()}
    return result


def _order(tasks: list[Task]) -> list[Task]:
    """Bigger assignments first (their source notebook's size stands for their grading time),
    so that the last submissions to finish are short ones and no worker idles long."""
    size = {a: _source(a).stat().st_size for a in {t.assignment for t in tasks}}
    return sorted(tasks, key=lambda t: (-size[t.assignment], t.assignment, t.student))


def _not_submitted(folder: Path, assignment: str, others: list[str]) -> bool:
    """Whether a student's folder holds other assignments of this run but not ``assignment``:
    nothing was handed in for it (not a broken submission)."""
    return (folder.is_dir() and not (folder / assignment).exists()
            and any((folder / other).is_dir() for other in others))


def shard_of(student: str, n: int) -> int:
    """The shard (0-based, of ``n``) that grades ``student``: a stable hash of the id alone, so
    adding or removing a student never moves another one."""
    return int(hashlib.sha256(student.encode("utf-8", "surrogatepass")).hexdigest()[:16], 16) % n


def parse_shard(spec: str, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``--shard``'s ``K/N`` as (K, N), 0 <= K < N. K is a number, ``auto`` (the index of a
    Slurm job array, ``SLURM_ARRAY_TASK_ID``, else of a Kubernetes Indexed Job,
    ``JOB_COMPLETION_INDEX``) or the name of the environment variable that holds it. Raises
    ValueError saying what is wrong."""
    env = os.environ if env is None else env
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*|\d+)\s*/\s*(\d+)\s*", spec or "")
    if not match:
        raise ValueError(f"--shard must be K/N (0 <= K < N), auto/N or VARIABLE/N, not {spec!r}")
    index, count = match.group(1), int(match.group(2))
    if count < 1:
        raise ValueError(f"--shard {spec}: N must be at least 1")
    if not index.isdigit():
        names = SHARD_ENV if index == "auto" else (index,)
        found = next((name for name in names if (env.get(name) or "").strip()), None)
        if found is None:
            raise ValueError(f"--shard {spec}: {' and '.join(names)} not set in the "
                             "environment")
        value = env[found].strip()
        if not value.isdigit():
            raise ValueError(f"--shard {spec}: {found}={value!r} is not a 0-based index")
        index = value
    k = int(index)
    if not 0 <= k < count:
        raise ValueError(f"--shard {spec}: K is 0-based, 0 <= K <= {count - 1} "
                         f"(got {k}; Slurm's SLURM_ARRAY_TASK_ID and Kubernetes' "
                         "JOB_COMPLETION_INDEX count from 0 too)")
    return k, count


def refuse_student_folder(submissions: Path, lms_regex: str | None = None) -> None:
    """Raise :class:`UsageError` when ``submissions`` looks like ONE student's folder rather
    than a class folder ``<student>/<assignment>/``: it has a sub-folder named like one of the
    course's assignments, or notebooks at its top that no LMS file name pattern claims."""
    from autograder.engine.intake import DEFAULT_LMS_REGEX, STUDENT_ID, download_pattern

    if not submissions.is_dir():
        return
    entries = [p for p in submissions.iterdir() if not p.name.startswith(".")]
    known = set(assignment_names("all"))
    named = sorted(p.name for p in entries
                   if p.is_dir() and not p.is_symlink() and p.name in known)
    notebooks = [p.name for p in entries if p.is_file() and p.suffix.lower() == ".ipynb"]
    if notebooks and not named:
        pattern = re.compile(lms_regex) if lms_regex else download_pattern(
            p.name for p in entries if p.is_file())
        strict = re.compile(DEFAULT_LMS_REGEX)
        if any(pattern.match(p.name) or strict.match(p.name) for p in entries if p.is_file()):
            return  # an LMS download (flat files)
    elif not named:
        return
    what = (f"a folder named like the assignment {named[0]}" if named
            else f"notebooks at its top ({', '.join(sorted(notebooks)[:3])})")
    who = submissions.name if STUDENT_ID.fullmatch(submissions.name) else "ID"
    raise UsageError(
        f"{submissions} looks like one student's folder ({what}), not a class folder "
        "<student>/<assignment>/*.ipynb: it would be read as a student named like the "
        f"assignment. To grade or regrade one student, pass the class folder and --student, "
        f"e.g.: {submissions.parent} --student {who}. Nothing was graded or written.")


def _submission_files(source: Path, staged: Path) -> None:
    """Copy nbgrader's files kept with a submission (:data:`SUBMISSION_FILES`: the time it was
    submitted, the secret ``release_feedback`` names the feedback with) from the student's
    folder ``source`` next to the staged notebook; a stale copy from an earlier run is
    removed. Small plain files only; never a link."""
    for name in SUBMISSION_FILES:
        target = staged / name
        origin = source / name
        if (origin.is_file() and not origin.is_symlink()
                and origin.stat().st_size <= SUBMISSION_FILE_MAX_BYTES):
            staged.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, target)
        elif name == "timestamp.txt" or not target.is_file():
            target.unlink(missing_ok=True)


def _read_timestamp(folder: Path) -> datetime | None:
    """The time in ``folder/timestamp.txt`` (nbgrader's format) as naive UTC, or None; read as
    the intake reads it (:func:`~autograder.engine.intake.parse_time`, same size limit)."""
    from autograder.engine.intake import TIMESTAMP_MAX_BYTES, parse_time

    path = folder / "timestamp.txt"
    try:
        if path.is_symlink() or path.stat().st_size > TIMESTAMP_MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8").strip()
        return parse_time(text).replace(tzinfo=None) if text else None
    except (OSError, ValueError):
        return None


def _stage_timestamp(staged: Path, when: datetime | None) -> None:
    """Write ``staged/timestamp.txt`` in nbgrader's format when the intake knows the time but no
    nbgrader ``timestamp.txt`` came with the submission (an LMS download's attempt time)."""
    if when is not None and not (staged / "timestamp.txt").is_file():
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        (staged / "timestamp.txt").write_text(when.astimezone(UTC).strftime(TIMESTAMP_FORMAT),
                                              encoding="utf-8")


def collect(assignments: list[str], submissions: Path, out: Path, lms_regex: str | None,
            shard: tuple[int, int] = (0, 1), students: Iterable[str] | None = None
            ) -> tuple[list[Task], dict[tuple[str, str], StudentResult]]:
    """Stage every assignment's submissions; return the submissions to grade (this shard's, and
    only ``students`` when given) and a result for each one of them that cannot be graded."""
    from autograder.engine.intake import gather, is_lms_download

    if len(assignments) > 1 and is_lms_download(submissions, lms_regex):
        raise SystemExit("an LMS download holds one assignment's files: grade it with one "
                         "assignment name")
    lms = is_lms_download(submissions, lms_regex)
    wanted = None if students is None else set(students)
    index, count = shard

    def mine(student: str) -> bool:
        return (wanted is None or student in wanted) and shard_of(student, count) == index

    tasks: list[Task] = []
    failed: dict[tuple[str, str], StudentResult] = {}
    staging = _staging(submissions, out)
    for assignment in assignments:
        intake = gather(submissions, assignment, staging, lms_regex)
        stamps = dict(getattr(intake, "timestamps", None) or {})
        others = [a for a in assignments if a != assignment]
        for raw, problems in intake.problems.items():
            if not mine(raw):
                continue
            if _not_submitted(submissions / raw, assignment, others):
                failed[(assignment, raw)] = StudentResult(raw, assignment=assignment,
                                                          problems=["not submitted"])
                continue
            failed[(assignment, raw)] = StudentResult(
                raw, assignment=assignment,
                problems=[*intake.notes.get(raw, []), *(f"{p}: not graded" for p in problems)],
                flags={"malformed": list(problems)})
            _merge_flags(failed[(assignment, raw)], _flag_items(intake.flags.get(raw, {})))
        for student in sorted(intake.notebooks):
            if not mine(student):
                continue
            path = intake.notebooks[student]
            if not lms:
                folder = submissions / student / assignment
                _submission_files(folder if folder.is_dir() else submissions / student,
                                  path.parent)
            when = stamps.get(student)
            _stage_timestamp(path.parent, when)
            if when is None:
                when = _read_timestamp(path.parent)
            tasks.append(Task(assignment, student, path, _digest(path),
                              tuple(intake.notes.get(student, [])),
                              _flag_items(intake.flags.get(student, {})), when))
    return tasks, failed


INTAKE_DIR = ".intake"  # staging when the class folder is the course's own submitted/


def _staging(submissions: Path, out: Path) -> Path:
    """Where the intake stages the notebooks: the course's ``submitted/`` (nbgrader's layout),
    except when ``submissions`` is that very folder (what ``nbgrader collect`` fills, graded
    in place), which is then read as it is and staged into a scratch folder beside it."""
    submitted = out / "submitted"
    if submissions.resolve() == submitted.resolve():
        return out / INTAKE_DIR
    return submitted


def _flag_items(flags: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((word, tuple(reasons)) for word, reasons in sorted(flags.items()))


def grade(assignments: str | list[str], submissions: Path, out: Path | None = None,
          quiet: bool = False, jobs: int | None = None, db_url: str | None = None,
          limits: dict[str, Any] | None = None, lms_regex: str | None = None,
          force: bool = False, shard: tuple[int, int] = (0, 1),
          allow_weaker: str | tuple[str, ...] | list[str] | None = None,
          students: Iterable[str] | None = None, due: datetime | str | None = None,
          recheck_sandbox: bool = False, keep_warm: float | None = None) -> list[StudentResult]:
    """Autograde every submission of each of ``assignments`` (one name or a list) in the course
    folder ``out`` (default :func:`default_course`): its gradebook, autograded notebooks and
    feedback; then rebuild the class outputs (:func:`write_class_outputs`). Returns one result
    per (assignment, student) of this run, in the order of ``assignments``, then by student.

    ``students`` (ids) grades, always anew, only those students' submissions; ``shard`` = (K, N)
    only the students with :func:`shard_of` == K. Everyone else's results stay as they are.
    ``due`` sets the assignments' due date in the gradebook (naive = UTC), for nbgrader's late
    penalty. First the sandbox's self-test runs (or its measurement of this same host, stored
    in ``out`` a few minutes ago, stands in: :func:`check_sandbox`; ``recheck_sandbox``
    measures again): a protection lost that ``allow_weaker``
    (names, a comma-separated string, or ``all``) does not accept raises
    :class:`SandboxRefusedError` before anything is written; so does a ``submissions`` folder
    that is one student's own (:class:`UsageError`, :func:`refuse_student_folder`). A result
    whose ``grader_error`` is set was not graded: it is neither in the gradebook nor cached,
    and the next run grades it again.

    The submissions are graded by the course folder's warm service when one runs and is
    current (:mod:`autograder.engine.warm`; ``keep_warm``: start one first when none does, which
    stops after that many idle seconds), else by processes started for this run.
    """
    from autograder.engine import gradebook as book

    started = time.perf_counter()
    skip_iri_grammar()
    out = (default_course() if out is None else out).resolve()
    names = [assignments] if isinstance(assignments, str) else list(dict.fromkeys(assignments))
    for name in names:
        _source(name)
    if not 0 <= shard[0] < shard[1]:
        raise UsageError(f"shard {shard[0]}/{shard[1]}: K is 0-based, 0 <= K <= {shard[1] - 1}")
    chosen = None if students is None else sorted({s.strip() for s in students if s.strip()})
    refuse_student_folder(submissions, lms_regex)
    allowed = allowed_weaker(allow_weaker)
    sandbox_limits = _limits(limits, allowed)
    sandbox = check_sandbox(sandbox_limits, allowed, out, recheck_sandbox)
    os.environ["PATH"] = nbgrader_env()["PATH"]  # nbgrader's gradebook runs `alembic`
    jobs = jobs or os.cpu_count() or 1
    claim_folder(out)
    held = hold_course(out, quiet)
    try:
        remember_sandbox(out, sandbox)
        write_course_config(out, db_url)
        tasks, results = collect(names, submissions, out, lms_regex, shard, chosen)
        _add_missing(results, tasks, names, chosen, shard, submissions)
        done, fresh = _split_cached(out, tasks, force or chosen is not None)
        pool = None
        if fresh:
            pool = warm_pool(out, jobs, keep_warm, sandbox.weaker, quiet,
                             optional_libraries(names)) \
                or start_workers(min(jobs, len(fresh)), optional_libraries(names))
        by_key = {(t.assignment, t.student): t for t in tasks}
        try:
            Gradebook = _gradebook_class()  # imported while the workers load, like the rest

            prepare_course(out, names, db_url)
            for name in sandbox.weaker:
                print(f"WARNING: sandbox protection {terminal_text(name)}: "
                      f"{terminal_text(sandbox.measured[name])} (accepted with "
                      "--allow-weaker-sandbox)", file=sys.stderr)
            config = load_course_config(out, db_url)
            with Gradebook(db_url or default_db_url(out)) as gb:
                if due is not None:
                    for name in names:
                        book.set_due_date(gb, name, due)

                writer = GradebookWriter(gb, config, out, by_key)
                for result in done.values():  # recorded again (idempotent), not saved again
                    _say_not_recorded(writer.add(result, save=False), quiet)
                _say_not_recorded(writer.flush(), quiet)
                results |= done
                if pool is not None:
                    _run_pool(pool, fresh, out, results, writer, sandbox_limits, quiet, names,
                              list(sandbox.weaker))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        for key in results.keys() - done.keys():
            results[key].weaker = results[key].weaker or list(sandbox.weaker)
        return _finish(out, db_url, names, results, set(by_key), chosen, shard,
                       time.perf_counter() - started, jobs, sandbox, quiet)
    finally:
        os.close(held)


def _split_cached(out: Path, tasks: list[Task], regrade: bool
                  ) -> tuple[dict[tuple[str, str], StudentResult], list[Task]]:
    """The results kept from earlier runs (none when ``regrade``), and the tasks to grade, in
    grading order."""
    done = {}
    for task in tasks:
        cached = None if regrade else _cached(out, task)
        if cached is not None:
            done[(task.assignment, task.student)] = cached
    return done, _order([t for t in tasks if (t.assignment, t.student) not in done])


def prepare_term(assignments: list[str], out: Path, db_url: str | None = None,
                 due: datetime | str | None = None) -> None:
    """Make the course folder ``out`` ready before any submission: ``nbgrader_config.py``,
    every one of ``assignments`` generated into ``exercises/`` and the gradebook (so that
    ``nbgrader release_assignment`` and ``nbgrader db student import`` work there), and the due
    date when ``due`` is given. Nothing is graded; grading later reuses the folder."""
    from nbgrader.api import Gradebook

    from autograder.engine import gradebook as book

    for name in assignments:
        _source(name)
    os.environ["PATH"] = nbgrader_env()["PATH"]  # nbgrader's gradebook runs `alembic`
    claim_folder(out)
    write_course_config(out, db_url)
    prepare_course(out, assignments, db_url)
    if due is not None:
        with Gradebook(db_url or default_db_url(out)) as gb:
            for name in assignments:
                book.set_due_date(gb, name, due)
    print(f"course folder ready: {terminal_text(str(out))} "
          f"({', '.join(map(terminal_text, assignments))})")


def _finish(out: Path, db_url: str | None, names: list[str],
            results: dict[tuple[str, str], StudentResult], graded: set[tuple[str, str]],
            chosen: list[str] | None, shard: tuple[int, int], seconds: float, jobs: int,
            sandbox: SandboxCheck, quiet: bool) -> list[StudentResult]:
    """The end of a run: the class outputs rebuilt (this run's rows that are not in the
    gradebook added), the not-graded message; this run's results, in order."""
    index, count = shard
    rank = {a: i for i, a in enumerate(names)}
    ordered = [results[k] for k in sorted(results, key=lambda k: (rank[k[0]], k[1]))]
    what = (f"{len(ordered)} submission(s) of {', '.join(names)}"
            + (f" (--student {','.join(chosen)})" if chosen is not None else "")
            + (f" (shard {index}/{count})" if count > 1 else ""))
    title = (f"Autograded {what} in {seconds:.1f} s ({jobs} at a time); "
             "the class results below come from the gradebook")
    class_rows = write_class_outputs(
        out, db_url, extra=[r for r in ordered if (r.assignment, r.student) not in graded
                            or r.grader_error is not None],
        order=names, title=title, sandbox=sandbox, quiet=quiet)
    from autograder.engine.export import write_default_exports

    # The LMS import files and Gradescope results follow every run, like grades.csv; after
    # hand grading in formgrader, `python -m autograder.engine.export merge` rebuilds them.
    write_default_exports(out, db_url, warn=None if quiet else sys.stderr)
    merged = {(r.assignment, r.student): r for r in class_rows}
    ordered = [merged.get((r.assignment, r.student), r) for r in ordered]
    failures = [r for r in ordered if r.grader_error is not None]
    if failures:
        print(not_graded_message(failures), file=sys.stderr)
    shutil.rmtree(out / ".scratch", ignore_errors=True)
    shutil.rmtree(out / INTAKE_DIR, ignore_errors=True)
    return ordered


def _add_missing(results: dict[tuple[str, str], StudentResult], tasks: list[Task],
                 names: list[str], chosen: list[str] | None, shard: tuple[int, int],
                 submissions: Path) -> None:
    """A row for each ``--student`` of this shard that ``submissions`` has nothing of."""
    if chosen is None:
        return
    found = {t.student for t in tasks} | {k[1] for k in results}
    for student in chosen:
        if student not in found and shard_of(student, shard[1]) == shard[0]:
            for name in names:
                results[(name, student)] = StudentResult(
                    student, assignment=name,
                    problems=[f"--student {student}: nothing found in {submissions}"])


def _feedback_files(out: Path, assignment: str, student: str) -> None:
    """Put nbgrader's submission files next to the autograded notebook and the feedback HTML:
    ``timestamp.txt`` (the submission's, else the time of grading) and, where the submission
    has one, ``submission_secret.txt``, so that ``nbgrader release_feedback`` works (it reads
    both from ``feedback/<student>/<assignment>/``; a submission placed by hand, with no
    secret, gets a fresh random one)."""
    submitted = out / "submitted" / student / assignment
    graded = out / "autograded" / student / assignment
    if not graded.is_dir():
        return
    for name in SUBMISSION_FILES:
        origin = submitted / name
        if (origin.is_file() and not origin.is_symlink()
                and origin.stat().st_size <= SUBMISSION_FILE_MAX_BYTES):
            shutil.copyfile(origin, graded / name)
    # nbgrader's generate_feedback copies these from autograded/ into feedback/ too.
    if not (graded / "timestamp.txt").is_file():
        (graded / "timestamp.txt").write_text(datetime.now(UTC).strftime(TIMESTAMP_FORMAT),
                                              encoding="utf-8")
    if not (graded / "submission_secret.txt").is_file():
        (graded / "submission_secret.txt").write_text(secrets.token_hex(64), encoding="utf-8")
    feedback = out / "feedback" / student / assignment
    if feedback.is_dir():
        for name in SUBMISSION_FILES:
            shutil.copyfile(graded / name, feedback / name)


def not_graded_message(failures: list[StudentResult]) -> str:
    """What the command says at the end when the grader failed on ``failures``."""
    shown = ", ".join(terminal_text(f"{r.assignment}/{r.student}") for r in failures[:10])
    more = f" and {len(failures) - 10} more" if len(failures) > 10 else ""
    return (f"ERROR: {len(failures)} submission(s) not graded because of a grader error "
            f"({shown}{more}): no score was recorded for them. Rerun the same command to "
            "retry only those (the others are kept); see report.txt for each error.")


GRADEBOOK_BATCH = 50
"""The most graded submissions the grading command writes into the gradebook at once (one
transaction): at most this many are graded again after a crash."""
GRADEBOOK_BATCH_SECONDS = 10.0
"""A batch is also written once its first submission has waited this long (checked as each
result arrives), so that a slow class reaches the gradebook and its cache steadily."""


class GradebookWriter:
    """Records graded submissions in the gradebook in batches: :meth:`add` each, :meth:`flush`
    at the end. A batch is one transaction (:func:`autograder.engine.gradebook.record_many`:
    the scores, the answers' digests and the late penalty of each submission, one commit),
    written when it holds ``size`` results or its first waited ``seconds`` (default
    :data:`GRADEBOOK_BATCH` and :data:`GRADEBOOK_BATCH_SECONDS`); then each written
    result gets its feedback files (:func:`_feedback_files`), ``phases["gradebook"]`` (the
    batch's seconds shared evenly) and, when added with ``save``, its cached result file.

    Why batches: one transaction per submission (what this replaced) cost several commits and
    re-reads of the assignment's cells each, in the process that collects the workers' results,
    on a machine whose every core grades: measured on 2 cores, about 20 ms per submission with
    SQLite and 29 ms with a local PostgreSQL server, against about 4 ms in batches of 50.
    Written in the collecting thread between two results: the pool's own thread keeps feeding
    its workers the submissions queued up front while this one writes, so a worker never waits
    for a write; a thread of its own (with its own Gradebook, nbgrader's session being one per
    thread) would write no faster, and crash safety would be harder to see.

    Crash safety: a result's file is saved only after its batch is committed, so the cache never
    claims a result the gradebook lacks; a crash loses at most one unwritten batch, which the
    rerun grades again (a cached result is recorded again on every run anyway). A batch the
    gradebook refuses is written again one submission at a time
    (:func:`~autograder.engine.gradebook.record_batch`); a submission refused alone is marked
    not graded (``grader_error``), like a grader failure: not recorded, not saved, reported,
    retried by the rerun.
    """

    def __init__(self, gb: Any, config: Any, out: Path, tasks: Mapping[tuple[str, str], Task],
                 size: int | None = None, seconds: float | None = None) -> None:
        self.gb, self.config, self.out, self.tasks = gb, config, out, tasks
        self.size = max(1, GRADEBOOK_BATCH if size is None else size)
        self.seconds = GRADEBOOK_BATCH_SECONDS if seconds is None else seconds
        self.pending: list[tuple[StudentResult, bool]] = []
        self.since = 0.0

    def add(self, result: StudentResult, save: bool = True) -> list[StudentResult]:
        """Queue ``result`` (graded, not failed); write the batch when it is due. Returns the
        results the gradebook refused (now not graded), as :meth:`flush`."""
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append((result, save))
        if len(self.pending) >= self.size or time.monotonic() - self.since >= self.seconds:
            return self.flush()
        return []

    def flush(self) -> list[StudentResult]:
        """Write the queued results now, in one transaction; returns those the gradebook
        refused, each marked not graded. Raises when the gradebook refuses the whole batch
        (then none of it is saved, and the rerun grades them again)."""
        from autograder.engine import gradebook as book

        batch, self.pending = self.pending, []
        if not batch:
            return []
        began = time.perf_counter()
        entries = []
        for result, _ in batch:
            task = self.tasks[(result.assignment, result.student)]
            entries.append(book.Entry(result, task.timestamp,
                                      book.answer_digests(task.notebook)))
        errors = book.record_batch(self.gb, entries, self.config)
        for (result, _), error in zip(batch, errors, strict=True):
            if error is None:
                _feedback_files(self.out, result.assignment, result.student)
        share = (time.perf_counter() - began) / len(batch)
        refused = []
        for (result, save), error in zip(batch, errors, strict=True):
            result.phases["gradebook"] = share
            if error is None:
                if save:
                    _save(self.out, result)
                continue
            result.grader_error = (f"gradebook write failed: {type(error).__name__}: "
                                   f"{error}")[:300]
            result.problems.append(f"not graded (grader error: {result.grader_error})")
            refused.append(result)
        return refused


def _say_not_recorded(refused: list[StudentResult], quiet: bool, bar: Any = None) -> None:
    """Say on stderr (through the progress bar when there is one) which results the gradebook
    refused; the end of the run says it again (:func:`not_graded_message`)."""
    for result in refused:
        said = (f"NOT GRADED {terminal_text(f'{result.assignment}/{result.student}')}: "
                f"{terminal_text(result.grader_error or '')}")
        if bar is not None:
            bar.write(said, file=sys.stderr)
        elif not quiet:
            print(said, file=sys.stderr)


def _run_pool(pool: ProcessPoolExecutor, fresh: list[Task], out: Path,
              results: dict[tuple[str, str], StudentResult], writer: GradebookWriter,
              limits: dict[str, Any], quiet: bool, names: list[str], weaker: list[str]) -> None:
    what = names[0] if len(names) == 1 else f"{len(names)} assignments"
    bar = tqdm(total=len(fresh), desc=f"grading {what}", unit="submission",
               disable=quiet, file=sys.stderr, dynamic_ncols=True)
    futures = {pool.submit(_grade_one, t.student, str(t.notebook), t.assignment, str(out),
                           limits): t for t in fresh}
    for future in as_completed(futures):
        task = futures[future]
        try:
            result = _from_outcome(task, future.result())
        except Exception as err:
            result = _not_graded(task, f"{type(err).__name__}: {err}"[:300])
        result.weaker = list(weaker)
        results[(task.assignment, task.student)] = result
        label = terminal_text(task.student if len(names) == 1
                              else f"{task.assignment}/{task.student}")
        bar.update(1)
        bar.set_postfix_str(label)
        refused = []
        if result.grader_error is None:
            refused = writer.add(result)  # saved once its batch is written
            said = f"graded {label} in {result.seconds:.1f} s"
        else:
            said = f"NOT GRADED {label}: grader error: {terminal_text(result.grader_error)}"
        if not quiet:
            bar.write(said, file=sys.stdout)
        _say_not_recorded(refused, quiet, None if quiet else bar)
    _say_not_recorded(writer.flush(), quiet, None if quiet else bar)
    bar.close()


def _status(r: StudentResult) -> str:
    if r.grader_error is not None:
        return "not graded"
    return "not submitted" if r.problems == ["not submitted"] else "graded"


def _cell(r: StudentResult, test: str) -> float | str:
    return "" if r.per_test.get(test) is None else float(r.per_test[test])


def _score(r: StudentResult) -> float | str:
    return "" if r.grader_error is not None else r.score


def _total(r: StudentResult) -> float | str:
    if r.grader_error is not None or _status(r) != "graded" or r.flags.get("malformed"):
        return ""
    return "pending" if r.total is None and r.manual_pending else (
        r.total if r.total is not None else r.score)


def _late(r: StudentResult) -> str:
    if r.late_seconds <= 0:
        return ""
    seconds = r.late_seconds
    how = (f"{seconds / 86400:.1f} days" if seconds >= 2 * 86400 else
           f"{seconds / 3600:.1f} h" if seconds >= 3600 else
           f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s")
    return f"late by {how}" + (f" (penalty {r.penalty:g})" if r.penalty else "")


def write_class_outputs(course: Path, db_url: str | None = None,
                        extra: Iterable[StudentResult] = (), order: Iterable[str] = (),
                        title: str | None = None, sandbox: SandboxCheck | None = None,
                        quiet: bool = True) -> list[StudentResult]:
    """Rebuild ``grades.csv``, ``scores_by_test.csv`` and ``report.txt`` in ``course`` for the
    whole class: every submission in the gradebook (``db_url``, default the folder's sqlite
    file), with points from the gradebook (hand graders' scores and late penalties included,
    :func:`submission_totals`) and flags, problems and seconds from ``results/<A>/<student>.json``
    when there; a gradebook student without a submission of an assignment is "not submitted";
    ``extra`` (this run's not-graded, malformed, not-submitted results) replaces the row of the
    same (assignment, student). Assignments are listed in ``order``, then by name. Returns the
    rows written."""
    from nbgrader.api import Gradebook

    from autograder.engine import gradebook as book

    extras = {(r.assignment, r.student): r for r in extra}
    rows: dict[tuple[str, str], StudentResult] = {}
    config = load_course_config(course, db_url)
    with Gradebook(db_url or default_db_url(course)) as gb:
        gb.db.expire_all()
        cells = _class_cells(gb)
        maxima: dict[str, float] = {}
        for assignment in gb.assignments:
            maxima[assignment.name] = float(assignment.max_score)
            for submission in assignment.submissions:
                student = submission.student.id
                result = _cached_any(course, assignment.name, student) or StudentResult(
                    student, assignment=assignment.name)
                result.per_test, flagged = cells[(assignment.name, student)]
                result.grader_error = None
                if flagged:
                    result.flags.setdefault("tampering", ["flagged in the gradebook"])
                # Hand grades given since the last run change what the late rule takes (with
                # "zero", all of it): the penalty is applied anew before every total, to every
                # submission it can change (a late one, or one that still carries a penalty).
                if _may_be_penalised(submission):
                    book.apply_late_penalty(gb, config, assignment.name, student)
                _fill_totals(gb, result)
                rows[(assignment.name, student)] = result
        present = {a for a, _ in rows} | {a for a, _ in extras}
        students = sorted(s.id for s in gb.students)
        for assignment in present:
            for student in students:
                if (assignment, student) not in rows and (assignment, student) not in extras:
                    rows[(assignment, student)] = StudentResult(
                        student, assignment=assignment, problems=["not submitted"])
        for key, result in extras.items():
            if key in rows and _only_a_note(result):
                # `--student X` found nothing of X this time: X's graded submission stands.
                rows[key].problems += [p for p in result.problems
                                       if p not in rows[key].problems]
                continue
            if key[0] in maxima:
                result.max_score = maxima[key[0]]
            rows[key] = result
    first = list(dict.fromkeys(order))
    rank = {a: i for i, a in enumerate([*first, *sorted({a for a, _ in rows} - set(first))])}
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (rank[k[0]], k[1]))]
    write_csvs(course, ordered)
    names = sorted(rank, key=rank.__getitem__)
    report = format_report(names, ordered, 0.0, sandbox=sandbox, title=title or (
        f"Class results of {', '.join(names)} from the gradebook: {len(ordered)} rows"))
    (course / "report.txt").write_text(report, encoding="utf-8")
    if not quiet:
        print(report)
    return ordered


def _only_a_note(result: StudentResult) -> bool:
    """Whether a row of this run says only that nothing was found (no grader error, no
    malformed or other flag): then it never hides a submission the gradebook holds."""
    return result.grader_error is None and not result.flags and all(
        p.startswith("--student ") for p in result.problems)


def _cached_any(out: Path, assignment: str, student: str) -> StudentResult | None:
    """The saved result of a submission, whatever its file (for its flags, problems, seconds)."""
    try:
        data = json.loads(_result_path(out, assignment, student).read_text("utf-8"))
        return StudentResult(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_csvs(out: Path, results: list[StudentResult]) -> None:
    """grades.csv (points, status, automatic and manual points, late penalty, total, submission
    time, per-test scores, flags, problems) and scores_by_test.csv, one row per (assignment,
    student); a test column is blank in another assignment's rows. ``score`` is automatic plus
    manual points; ``total`` is score minus the late penalty, or "pending" while an answer waits
    for a hand grader.

    Every text cell goes through :func:`~autograder.engine.untrusted.csv_cell` (escaped, never
    a formula); numbers stay numbers. A submission not graded has a blank score and the
    status "not graded"."""
    tests = sorted({name for r in results for name in r.per_test})
    with (out / "grades.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(h) for h in (
            "assignment", "student_id", "score", "max_score", "status", "needs_manual_grade",
            "auto_score", "manual_score", "late_penalty", "total", "timestamp",
            *tests, "flags", "problems")])
        for r in results:
            graded = _status(r) == "graded" and r.grader_error is None
            writer.writerow([csv_cell(v) for v in (
                r.assignment, r.student, _score(r), r.max_score, _status(r), r.manual_pending,
                r.auto_score if graded else "", r.manual_score if graded else "",
                r.penalty if graded else "", _total(r), r.timestamp,
                *(_cell(r, t) for t in tests), ";".join(sorted(r.flags)),
                " | ".join(r.problems))])
    with (out / "scores_by_test.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([csv_cell(h) for h in ("assignment", "student", "score", "max_score",
                                               *tests)])
        for r in results:
            writer.writerow([csv_cell(v) for v in (r.assignment, r.student, _score(r),
                                                   r.max_score, *(_cell(r, t) for t in tests))])


def format_report(assignments: list[str], results: list[StudentResult], seconds: float,
                  jobs: int = 1, sandbox: SandboxCheck | None = None,
                  title: str | None = None) -> str:
    """A plain-text table per assignment: student, score, total, time, flags, what needs a
    human, lateness, problems; then everyone flagged for tampering and everyone not graded.

    The header (``title``, else a count) gives the sandbox's protections as ``sandbox``
    measured them; a row graded with protections not enforced (accepted with
    ``--allow-weaker-sandbox``) says so. Every string a submission controls is shown with
    :func:`~autograder.engine.untrusted.terminal_text`: one line per student, no control
    character reaches the file or the terminal."""
    t = terminal_text
    lines = [t(title) if title else (f"Autograded {t(', '.join(assignments))}: "
                                     f"{len(results)} submissions in {seconds:.1f} s "
                                     f"({jobs} at a time)")]
    if sandbox is not None:
        how = "measured by its self-test" if sandbox.self_tested else "claimed (no self-test)"
        lines += [f"Sandbox ({how}):",
                  *(f"  {t(k)}: {t(v)}" for k, v in sandbox.measured.items())]
        if sandbox.weaker:
            weak = ", ".join(t(k) for k in sandbox.weaker)
            lines.append(f"WARNING: graded with a weaker sandbox: {weak} NOT ENFORCED "
                         "(accepted with --allow-weaker-sandbox)")
    for assignment in assignments:
        lines += ["", *([f"{t(assignment)}:"] if len(assignments) > 1 else []),
                  f"{'student':<24} {'score':>11} {'total':>8} {'time':>7}  flags / notes"]
        for r in (r for r in results if r.assignment == assignment):
            notes = [f"[sandbox: {', '.join(t(k) for k in r.weaker)} not enforced]"
                     ] if r.weaker else []
            notes += [f"[{t(word)}] {t('; '.join(reasons)[:300])}"
                      for word, reasons in sorted(r.flags.items()) if word != "malformed"]
            notes += [t(p) for p in r.problems]
            if r.manual_pending:
                notes.append(f"{r.manual_pending} answer(s) to grade by hand")
            if r.manual_score:
                notes.append(f"{r.manual_score:g} point(s) graded by hand")
            if _late(r):
                notes.append(_late(r))
            score = "not graded" if r.grader_error is not None else \
                f"{r.score:g} / {r.max_score:g}"
            total = _total(r)
            total = f"{total:g}" if isinstance(total, float) else total
            lines.append(f"{t(r.student):<24} {score:>11} {total:>8} {r.seconds:>6.1f}s  "
                         f"{' | '.join(notes)}")
    flagged = sorted({t(r.student) if len(assignments) == 1 else f"{t(r.student)} "
                      f"({t(r.assignment)})" for r in results if r.flags.get("tampering")})
    if flagged:
        lines += ["", f"Flagged for tampering (check by hand): {', '.join(flagged)}"]
    late = [f"{t(r.student)} ({t(r.assignment)}, {_late(r)})" for r in results if _late(r)]
    if late:
        lines += ["", f"Late submissions: {', '.join(late)}"]
    failures = [r for r in results if r.grader_error is not None]
    if failures:
        lines += ["", f"Not graded because of a grader error ({len(failures)}; no score "
                  "recorded, a rerun retries only these): " + ", ".join(
                      t(r.student) if len(assignments) == 1 else f"{t(r.student)} "
                      f"({t(r.assignment)})" for r in failures)]
    return "\n".join(lines) + "\n"


def assignment_names(spec: str) -> list[str]:
    """The assignments a command-line argument names: comma-separated, or 'all' for every
    source notebook in solutions/ (in name order)."""
    if spec == "all":
        return sorted(p.parent.name for p in (COURSE_ROOT / "solutions").glob("*/*.ipynb")
                      if p.stem == p.parent.name)
    return [name for name in spec.split(",") if name]


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", help="an assignment (e.g. ex01_overfitting), several "
                        "separated by commas, or 'all': every assignment in solutions/")
    parser.add_argument("submissions", type=Path, nargs="?",
                        help="folder <student>/<assignment>/*.ipynb, or an LMS folder or .zip "
                        "(omitted with --prepare)")
    parser.add_argument("--prepare", action="store_true",
                        help="only make the course folder ready for a term: its "
                        "nbgrader_config.py, the assignments released into exercises/ and the "
                        "gradebook (for nbgrader release_assignment, db student import, ...)")
    parser.add_argument("--course", "--out", dest="course", type=Path, default=None,
                        help=f"the course folder (nbgrader's course directory; default "
                        f"${COURSE_ENV}, else course/ in the repository); --out is an alias")
    parser.add_argument("--student", default=None, metavar="ID[,ID]",
                        help="(re)grade only these students of SUBMISSIONS; everyone else's "
                        "results are kept and the class outputs cover the whole class")
    parser.add_argument("--due", default=None, metavar="ISO8601",
                        help="set the assignments' due date in the gradebook (naive = UTC); "
                        "default: the gradebook's (nbgrader db assignment add A --duedate ...)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="submissions graded at once (default: the number of cores)")
    parser.add_argument("--db-url", help="gradebook URL, e.g. postgresql://user@host/db "
                        "(default: sqlite in OUT)")
    parser.add_argument("--lms-regex", help="file-name pattern of an LMS download, with groups "
                        "student_id and file_id, optionally timestamp (nbgrader's zip-collect "
                        "convention; default: Blackboard's <assignment>_<id>_attempt_"
                        "<YYYY-MM-DD-HH-MM-SS>_<file>). Only file_id is the student's: anchor "
                        "the rest to what the LMS writes (no greedy .*), or one student's file "
                        "name can claim another's submission")
    parser.add_argument("--force", action="store_true", help="regrade already graded submissions")
    parser.add_argument("--shard", default="0/1", help="K/N: grade only the students whose "
                        "stable hash falls in shard K of N (0-based); K may be 'auto' "
                        "(SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX) or the name of the "
                        "environment variable holding it, e.g. SLURM_ARRAY_TASK_ID/4")
    parser.add_argument("--allow-weaker-sandbox", default="", metavar="NAME[,NAME]|all",
                        help="grade even though the sandbox self-test finds these protections "
                        "lost (the report then says so on every line); default: refuse")
    parser.add_argument("--recheck-sandbox", action="store_true",
                        help="run the sandbox self-test even when the course folder holds its "
                        "measurement of this same, unchanged host from the last few minutes")
    parser.add_argument("--keep-warm", action="store_true",
                        help="leave a warm service for this course folder, so that later "
                        "commands on it start grading at once (python -m "
                        "autograder.engine.warm stop COURSE stops it). A running, current "
                        "service with the same --jobs is used whether or not this is given")
    parser.add_argument("--warm-idle", type=float, default=None, metavar="SECONDS",
                        help="with --keep-warm: the service stops after SECONDS without a "
                        "command (default 900)")
    parser.add_argument("--cell-timeout", type=float, default=60.0)
    parser.add_argument("--call-timeout", type=float, default=60.0)
    parser.add_argument("--submission-timeout", type=float, default=600.0)
    parser.add_argument("--memory-mb", type=int, default=3072)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line. Exit status: 0 when every submission was graded; ``EXIT_REFUSED``
    when the sandbox self-test refused (nothing graded or written); ``EXIT_NOT_GRADED`` when
    the run completed but the grader failed on some submissions (a rerun retries them)."""
    for stream in (sys.stdout, sys.stderr):
        # A terminal or pipe that cannot show some character must never stop the run.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prepare:
        if args.submissions is not None:
            parser.error("--prepare takes no SUBMISSIONS")
        due = datetime.fromisoformat(args.due) if args.due else None
        try:
            prepare_term(assignment_names(args.assignments),
                         (args.course or default_course()).resolve(), args.db_url, due)
        except UsageError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return EXIT_USAGE
        return 0
    if args.submissions is None:
        parser.error("SUBMISSIONS is required (or --prepare)")
    if not args.submissions.exists():
        parser.error(f"{args.submissions} does not exist")
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        parser.error(str(err))
    due = None
    if args.due:
        try:
            due = datetime.fromisoformat(args.due)
        except ValueError:
            parser.error(f"--due {args.due!r} is not an ISO 8601 date and time")
    try:
        allowed_weaker(args.allow_weaker_sandbox)
    except ValueError as err:
        parser.error(f"--allow-weaker-sandbox: {err}")
    limits = {"cell_seconds": args.cell_timeout, "call_seconds": args.call_timeout,
              "submission_seconds": args.submission_timeout,
              "memory_bytes": args.memory_mb << 20}
    students = None if args.student is None else [s for s in args.student.split(",") if s]
    keep_warm = None
    if args.warm_idle is not None and not (args.keep_warm and args.warm_idle > 0):
        parser.error("--warm-idle takes a positive number of seconds, with --keep-warm")
    if args.keep_warm:
        from autograder.engine.warm import DEFAULT_IDLE_S

        keep_warm = args.warm_idle or DEFAULT_IDLE_S
    try:
        results = grade(assignment_names(args.assignments), args.submissions.resolve(),
                        (args.course or default_course()).resolve(), jobs=max(1, args.jobs),
                        db_url=args.db_url, limits=limits, lms_regex=args.lms_regex,
                        force=args.force, shard=shard, allow_weaker=args.allow_weaker_sandbox,
                        students=students, due=due, recheck_sandbox=args.recheck_sandbox,
                        keep_warm=keep_warm)
    except SandboxRefusedError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except UsageError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_NOT_GRADED if any(r.grader_error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
