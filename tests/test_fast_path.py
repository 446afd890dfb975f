"""What one grading command no longer does again on a prepared course folder (issue 20), and
that nothing of it weakens the sandbox or changes an output:

* the sandbox self-test's measurement is reused only on the same host (same key: kernel,
  process, cgroups, limits, engine source, ...), for a few minutes, never to refuse, and
  ``--recheck-sandbox`` measures again (:mod:`autograder.engine.selftest_cache`);
* an assignment released before is not generated again while its source, configuration, files
  and gradebook rows are unchanged (``grade.prepare_course``);
* the exports read the gradebook once for all three, and give what each export alone gives;
* the class outputs read every submission's cells at once, and still reset a stale penalty;
* the grading process imports nbgrader's package without its Jupyter server extensions, and
  so do its workers;
* the zygotes import SciPy's statistics only when an assignment graded uses them.

Fast, except the release test (nbgrader's generate_assignment on one assignment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_exports import build_gradebook

from autograder.engine import export, selftest_cache
from autograder.engine import grade as grading

PROTECTED = {"network": "network namespace (test)", "memory": "cgroup memory limit (test)"}
LOST = {"network": "network namespace (test)",
        "memory": "NOT ENFORCED: no writable memory cgroup (test)"}


@dataclass
class FakeSelfTest:
    measured: dict[str, str]
    mode: str = "root"

    def lost(self, allowed: tuple[str, ...]) -> list[str]:
        return [k for k, v in self.measured.items()
                if v.startswith("NOT ENFORCED") and k not in allowed]


class Host:
    """A fake self-test that counts its runs, and a host whose /proc/self/status can change."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from autograder.engine import sandbox

        self.runs = 0
        self.measured = dict(PROTECTED)
        self.capabilities = "000001fffeffffff"
        self.during: Any = None  # called inside the self-test (a host changing meanwhile)
        monkeypatch.setattr(sandbox, "self_test", self.self_test)
        monkeypatch.setattr(sandbox, "PROTECTIONS", tuple(PROTECTED))
        real_read = selftest_cache._read

        def read(path: str | Path) -> str:
            text = real_read(path)
            if str(path) == "/proc/self/status":
                text += f"\nCapEff:\t{self.capabilities}\n"  # the last one counts
            return text

        monkeypatch.setattr(selftest_cache, "_read", read)

    def self_test(self, limits: Any) -> FakeSelfTest:
        self.runs += 1
        if self.during is not None:
            self.during()
        return FakeSelfTest(dict(self.measured))


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(monkeypatch)


def check(course: Path, allowed: tuple[str, ...] = (), recheck: bool = False
          ) -> grading.SandboxCheck:
    """The grading command's self-test step on ``course``: check, then remember."""
    limits = grading._limits({"memory_bytes": 1 << 30}, allowed)
    result = grading.check_sandbox(limits, allowed, course, recheck)
    grading.remember_sandbox(course, result)
    return result


# --------------------------------------------------------------------------- the self-test

def test_a_measurement_is_reused_on_the_same_host_only(host: Host, tmp_path: Path) -> None:
    first = check(tmp_path)
    again = check(tmp_path)
    assert host.runs == 1 and not first.cached and again.cached
    assert again.measured == first.measured == PROTECTED
    stored = tmp_path / selftest_cache.CACHE_NAME
    assert stored.stat().st_mode & 0o777 == 0o600

    host.capabilities = "0000000000000000"  # the host changed: measured again
    changed = check(tmp_path)
    assert host.runs == 2 and not changed.cached
    assert check(tmp_path).cached and host.runs == 2  # ... and that measurement reused

    check(tmp_path, recheck=True)  # --recheck-sandbox
    assert host.runs == 3


def test_a_changed_host_that_lost_a_protection_is_refused(host: Host, tmp_path: Path) -> None:
    check(tmp_path)
    host.capabilities = "0000000000000000"
    host.measured = dict(LOST)
    with pytest.raises(grading.SandboxRefusedError, match="memory"):
        check(tmp_path)
    assert host.runs == 2


def test_a_refusal_is_never_taken_from_a_stored_measurement(host: Host, tmp_path: Path) -> None:
    """A stored measurement that shows a protection lost is measured again before a run that
    does not accept it: a host that was fixed grades, one that was not refuses."""
    from dataclasses import asdict

    from autograder.engine import sandbox

    limits = grading._limits({"memory_bytes": 1 << 30}, ())
    key = selftest_cache.host_key(asdict(sandbox.Limits(**limits)), sandbox.self_test)
    selftest_cache.save(tmp_path, key, LOST)
    host.measured = dict(LOST)
    with pytest.raises(grading.SandboxRefusedError, match="memory"):
        grading.check_sandbox(limits, (), tmp_path)
    assert host.runs == 1
    host.measured = dict(PROTECTED)  # fixed
    assert not grading.check_sandbox(limits, (), tmp_path).weaker
    assert host.runs == 2


def test_every_input_of_the_verdict_is_in_the_key(host: Host, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from autograder.engine import sandbox

    limits = {"memory_bytes": 1 << 30, "allow_weaker": ()}
    key = selftest_cache.host_key(limits, sandbox.self_test)
    assert selftest_cache.host_key(dict(limits), sandbox.self_test) == key
    assert selftest_cache.host_key({**limits, "memory_bytes": 2 << 30}, sandbox.self_test) != key
    assert selftest_cache.host_key({**limits, "allow_weaker": ("memory",)},
                                   sandbox.self_test) != key
    assert selftest_cache.host_key(limits, lambda limits: None) != key  # another measurement
    monkeypatch.setenv("LD_PRELOAD", "/tmp/x.so")
    assert selftest_cache.host_key(limits, sandbox.self_test) != key
    monkeypatch.delenv("LD_PRELOAD")
    assert selftest_cache.host_key(limits, sandbox.self_test) == key
    engine = tmp_path / "engine"
    shutil.copytree(selftest_cache.ENGINE, engine,
                    ignore=shutil.ignore_patterns("__pycache__", "templates"))
    monkeypatch.setattr(selftest_cache, "ENGINE", engine)
    assert selftest_cache.host_key(limits, sandbox.self_test) == key
    with (engine / "jail.py").open("a") as fh:
        fh.write("\n# changed\n")
    assert selftest_cache.host_key(limits, sandbox.self_test) != key
    state = selftest_cache.host_state(limits, sandbox.self_test)
    for part in ("uname", "ids", "status", "rlimits", "namespaces", "cgroups", "files", "python",
                 "engine", "limits", "env", "devices"):
        assert part in state
    assert {"/proc/self/mountinfo", "/proc/self/cgroup", "/proc/sys/kernel/random/boot_id",
            "/proc/sys/user/max_user_namespaces"} <= set(state["files"])
    assert {"CapEff", "NoNewPrivs", "Seccomp"} <= set(state["status"])


def test_a_host_that_changes_while_measured_is_not_remembered(host: Host,
                                                               tmp_path: Path) -> None:
    def change() -> None:
        host.capabilities = "0000000000000001"

    host.during = change
    assert check(tmp_path).key == ""
    assert not (tmp_path / selftest_cache.CACHE_NAME).exists()


def test_an_old_foreign_or_odd_record_is_not_used(host: Host, tmp_path: Path) -> None:
    check(tmp_path)
    path = tmp_path / selftest_cache.CACHE_NAME
    data = json.loads(path.read_text())
    key = data["key"]
    assert selftest_cache.load(tmp_path, key) is not None
    assert selftest_cache.load(tmp_path, "another key") is None
    at = data["measured_at"]
    assert selftest_cache.load(tmp_path, key, now=at + selftest_cache.LIFETIME_S + 1) is None
    assert selftest_cache.load(tmp_path, key, now=at - 5) is None  # from the future
    path.chmod(0o620)  # writable by the group
    assert selftest_cache.load(tmp_path, key) is None
    path.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(path, 12345, -1)
        assert selftest_cache.load(tmp_path, key) is None
        os.chown(path, 0, -1)
    moved = tmp_path / "elsewhere.json"
    path.rename(moved)
    path.symlink_to(moved)
    assert selftest_cache.load(tmp_path, key) is None
    path.unlink()
    path.write_text("{not json")
    path.chmod(0o600)
    assert selftest_cache.load(tmp_path, key) is None
    runs = host.runs
    assert not check(tmp_path).cached and host.runs == runs + 1


def test_the_grading_command_stores_and_reuses_it(host: Host, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs into one course folder (no notebook: no worker) measure once; the report says
    the same; --recheck-sandbox measures again; a refused run writes nothing."""
    subs = tmp_path / "subs"
    for student in ("ann", "ben"):
        (subs / student / "ex01_overfitting").mkdir(parents=True)
        (subs / student / "ex01_overfitting" / "notes.txt").write_text("no notebook")
    out = tmp_path / "course"
    argv = ["ex01_overfitting", str(subs), "--out", str(out)]
    assert grading.main(argv) == 0
    first = (out / "report.txt").read_text().splitlines()
    assert grading.main(argv) == 0
    assert host.runs == 1
    again = (out / "report.txt").read_text().splitlines()
    assert again[1:] == first[1:]  # the first line says how long the run took
    assert again[1] == "Sandbox (measured by its self-test):"
    assert grading.main([*argv, "--recheck-sandbox"]) == 0
    assert host.runs == 2
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    host.measured = dict(LOST)
    assert grading.main(["ex01_overfitting", str(subs), "--out", str(fresh)]) == \
        grading.EXIT_REFUSED
    assert not fresh.exists()


# --------------------------------------------------------------------------- the release

@pytest.fixture
def released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A course folder with ex01 released from a copy of its source; counts releases."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    source = tmp_path / "src" / "ex01_overfitting"
    shutil.copytree(grading.COURSE_ROOT / "solutions" / "ex01_overfitting", source)
    monkeypatch.setattr(grading, "_source", lambda a: source / f"{a}.ipynb")
    made: list[str] = []
    real_api = grading.nbgrader_api

    def api(out: Path, db_url: str | None = None) -> Any:
        inner = real_api(out, db_url)

        class Counting:
            def generate_assignment(self, name: str, force: bool = False) -> Any:
                made.append(name)
                return inner.generate_assignment(name, force=force)

        return Counting()

    monkeypatch.setattr(grading, "nbgrader_api", api)
    out = tmp_path / "course"
    grading.prepare_course(out, ["ex01_overfitting"])
    assert made == ["ex01_overfitting"]
    return {"out": out, "made": made, "source": source}


def _release(out: Path) -> tuple[str, str]:
    return (grading._tree_digest(out / "exercises" / "ex01_overfitting"),
            grading._tree_digest(out / "solutions" / "ex01_overfitting"))


def test_a_prepared_assignment_is_not_released_again(released: dict[str, Any]) -> None:
    out, made = released["out"], released["made"]
    before = _release(out)
    grading.prepare_course(out, ["ex01_overfitting"])
    assert made == ["ex01_overfitting"]  # nothing generated
    assert _release(out) == before

    release = out / "exercises" / "ex01_overfitting" / "ex01_overfitting.ipynb"
    release.write_text(release.read_text().replace("YOUR", "MY"))  # a file changed
    grading.prepare_course(out, ["ex01_overfitting"])
    assert len(made) == 2 and _release(out) == before

    (out / "nbgrader_config.py").open("a").write("c.ClearSolutions.text_stub = 'x'\n")
    grading.prepare_course(out, ["ex01_overfitting"])  # the configuration changed
    assert len(made) == 3


@pytest.mark.slow
def test_a_changed_source_or_gradebook_is_released_again(released: dict[str, Any]) -> None:
    from nbgrader.api import Gradebook

    out, made, source = released["out"], released["made"], released["source"]
    notebook = source / "ex01_overfitting.ipynb"
    nb = json.loads(notebook.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "A new note."})
    notebook.write_text(json.dumps(nb))
    grading.prepare_course(out, ["ex01_overfitting"])
    assert len(made) == 2
    assert "A new note." in (out / "exercises" / "ex01_overfitting" /
                             "ex01_overfitting.ipynb").read_text()
    with Gradebook(grading.default_db_url(out)) as gb:  # a grade cell's points changed
        cell = gb.find_assignment("ex01_overfitting").notebooks[0].grade_cells[0]
        cell.max_score = 99.0
        gb.db.commit()
    grading.prepare_course(out, ["ex01_overfitting"])
    assert len(made) == 3
    with Gradebook(grading.default_db_url(out)) as gb:
        assert gb.find_assignment("ex01_overfitting").max_score == 14.0
    (out / grading.PREPARED).unlink()  # no record: released as before
    grading.prepare_course(out, ["ex01_overfitting"])
    assert len(made) == 4


# --------------------------------------------------------------------------- exports

@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fast-export") / "course"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                              os.environ.get("PATH", "")]))
        build_gradebook(folder, f"sqlite:///{folder / 'gradebook.db'}")
    return folder


def test_the_submissions_read_at_once_are_those_read_one_by_one(exported: Path) -> None:
    with export.open_gradebook(exported) as gb:
        every = export.read_submissions(gb)
    with export.open_gradebook(exported) as gb:
        alone = {(a, s): export.read_submission(gb, a, s)
                 for a in ("hw1", "hw2") for s in ("alice", "bob", "carol", "mallory")}
    assert every == {k: v for k, v in alone.items() if v is not None}
    assert len(every) == 5


def test_the_default_exports_are_what_each_export_writes(exported: Path, tmp_path: Path
                                                         ) -> None:
    import io

    warned = io.StringIO()
    export.write_default_exports(exported, warn=warned)
    alone = io.StringIO()
    for fmt in export.FORMATS:
        export.write_lms(exported, fmt, "id", tmp_path / f"{fmt}.csv", warn=alone)
    export.write_gradescope(exported, tmp_path / "gradescope", warn=alone)
    assert warned.getvalue() == alone.getvalue() != ""
    for fmt in export.FORMATS:
        assert (exported / "exports" / f"{fmt}.csv").read_bytes() == \
            (tmp_path / f"{fmt}.csv").read_bytes()
    ours = sorted(p.relative_to(exported / "exports" / "gradescope")
                  for p in (exported / "exports" / "gradescope").rglob("*.json"))
    theirs = sorted(p.relative_to(tmp_path / "gradescope")
                    for p in (tmp_path / "gradescope").rglob("*.json"))
    assert ours == theirs and len(ours) == 5
    for rel in ours:
        assert (exported / "exports" / "gradescope" / rel).read_bytes() == \
            (tmp_path / "gradescope" / rel).read_bytes()


# --------------------------------------------------------------------------- class outputs

def test_class_outputs_reset_a_stale_penalty_and_keep_a_late_one(exported: Path,
                                                                  tmp_path: Path) -> None:
    """A penalty on a submission that is not late (any more) is reset, a late one's is
    nbgrader's (here ``zero``: all of its points)."""
    from datetime import datetime

    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    shutil.copytree(exported, course)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\nc.LateSubmissionPlugin.penalty_method = 'zero'\n")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.update_or_create_assignment("hw2", duedate=datetime(2030, 1, 2))
        gb.find_submission("hw2", "alice").timestamp = datetime(2030, 1, 3)  # late: zero
        gb.find_submission("hw1", "alice").timestamp = datetime(2020, 1, 1)  # no due date
        gb.db.commit()
    rows = {(r.assignment, r.student): r for r in grading.write_class_outputs(course)}
    assert rows[("hw1", "alice")].penalty == 0.0  # had 1.0 and is not late: reset
    assert rows[("hw2", "alice")].penalty == rows[("hw2", "alice")].score == 7.0
    assert rows[("hw2", "alice")].total == 0.0
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission_notebook("hw1", "hw1", "alice").late_submission_penalty \
            is None
        assert gb.find_submission_notebook("hw2", "hw2", "carol").late_submission_penalty \
            is None  # on time with a penalty of 0: none, as nbgrader sets it


# --------------------------------------------------------------------------- imports

def test_nbgrader_without_its_server_extensions_until_needed() -> None:
    code = (
        "import sys\n"
        "from autograder.engine import grade\n"
        "grade.lazy_nbgrader_package()\n"
        "from nbgrader.api import Gradebook\n"
        "from nbgrader.preprocessors import AssignLatePenalties\n"
        "assert 'jupyter_server' not in sys.modules\n"
        "import nbgrader\n"
        "assert nbgrader.__version__ and 'jupyter_server' in sys.modules\n"
        "assert nbgrader._jupyter_server_extension_points() == [{'module': 'nbgrader'}]\n"
        "from nbgrader.apps.api import NbGraderAPI\n"
        "assert not hasattr(nbgrader, 'no_such_name')\n")
    _passes_in_a_fresh_python(code)


def _passes_in_a_fresh_python(code: str) -> None:
    """``code`` runs to its end in a new interpreter (where nothing is imported yet)."""
    proc = subprocess.run([sys.executable, "-c", code + "print('ok')\n"],
                          cwd=grading.COURSE_ROOT, capture_output=True, text=True, timeout=180,
                          check=False)
    assert proc.returncode == 0 and proc.stdout == "ok\n", (
        proc.stdout[-1000:], proc.stderr[-3000:])


def test_the_gradebook_migrations_head_is_read_in_process(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """nbgrader's own ``get_alembic_version`` (the ``alembic heads`` command) and
    ``alembic_head`` (alembic's API, in this process) name the same revision; with it
    installed, a new gradebook is made without running the command and gets that revision."""
    import nbgrader.api
    from sqlalchemy import create_engine, text

    monkeypatch.setenv("PATH", grading.nbgrader_env()["PATH"])  # the `alembic` command
    grading._gradebook_class()
    assert nbgrader.api.get_alembic_version is grading.alembic_head
    by_command = grading._NBGRADER["get_alembic_version"]()
    assert grading.alembic_head() == by_command and len(by_command) >= 8
    calls: list[Any] = []
    real = subprocess.check_output
    try:
        subprocess.check_output = lambda *a, **k: calls.append(a) or real(*a, **k)
        with nbgrader.api.Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}"):
            pass
    finally:
        subprocess.check_output = real
    assert calls == []
    engine = create_engine(f"sqlite:///{tmp_path / 'gradebook.db'}")
    with engine.connect() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar() == by_command


def test_a_worker_loads_without_nbgraders_server_extensions() -> None:
    """A grading worker, once loaded, renders feedback with nbgrader's preprocessors but never
    imported the package's server extensions or the gradebook's ORM (about 0.8 s of CPU per
    worker); its heap is frozen out of the collector's full passes; the preprocessors' package
    is whole again at the first use of a name it defines."""
    code = (
        "import gc, queue, sys\n"
        "from autograder.engine import grade, sandbox\n"
        "sandbox.warm_zygote = lambda **kw: None\n"
        "slots = queue.Queue(); slots.put(0)\n"
        "grade._init_worker(slots, ())\n"
        "assert 'jupyter_server' not in sys.modules and 'nbgrader.apps' not in sys.modules\n"
        "assert 'nbgrader.api' not in sys.modules and 'sqlalchemy' not in sys.modules\n"
        "from nbgrader.preprocessors import AssignLatePenalties, ClearHiddenTests\n"
        "from autograder.engine.feedback import HideHiddenTests\n"
        "assert HideHiddenTests and ClearHiddenTests and AssignLatePenalties\n"
        "assert 'nbgrader.api' in sys.modules  # the real __init__ ran on first use\n"
        "assert 'nbgrader.preprocessors' in sys.modules and gc.get_freeze_count() > 10000\n")
    _passes_in_a_fresh_python(code)


def _notebook(tmp_path: Path, name: str, code: str, markdown: str) -> Path:
    path = tmp_path / "solutions" / name / f"{name}.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": [markdown]},
        {"cell_type": "code", "metadata": {}, "source": [code], "outputs": [],
         "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_optional_libraries_are_those_a_source_imports(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """SciPy's statistics are preloaded for the exercises whose code imports SciPy (Exercise 4
    of this course), not for one that only mentions it in its text or under another name."""
    assert grading.optional_libraries(["ex04_misconceptions"]) == ("scipy.stats",)
    assert grading.optional_libraries(["ex01_overfitting", "ex02_dropout_mechanics",
                                       "ex03_dropout_variants"]) == ()
    assert grading.optional_libraries(["ex01_overfitting", "ex04_misconceptions"]) == (
        "scipy.stats",)
    sources = {
        "uses": _notebook(tmp_path, "uses", "def f():\n    import scipy.stats as st\n", "x"),
        "uses_from": _notebook(tmp_path, "uses_from", "from scipy import stats\n", "x"),
        "mentions": _notebook(tmp_path, "mentions", "x = 'from scipy import stats'\n",
                              "Use `from scipy import stats`.\nimport scipy"),
        "other": _notebook(tmp_path, "other", "import scipyish\nimport my_scipy\n", "x"),
    }
    monkeypatch.setattr(grading, "_source", lambda name: sources[name])
    assert grading.optional_libraries(["uses"]) == ("scipy.stats",)
    assert grading.optional_libraries(["uses_from"]) == ("scipy.stats",)
    assert grading.optional_libraries(["mentions", "other"]) == ()
