"""The student kit (`make student-kit`, linked from the book): exactly the notebooks, the package as
a valid wheel, a lean requirements.txt and a README; no answer of any kind in it, in the book or in
the package; and it works on its own: a fresh venv with only the kit's requirements runs every
exercise (the stub fails with the stub's message, the reference answers pass, Validate agrees)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import Parser
from functools import cache
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from course import (
    ASSIGNMENTS,
    DISTINCTIVE_LENGTH,
    EXERCISES,
    MARKERS,
    ROOT,
    SOLUTIONS,
    STUDENT_PACKAGE,
    answer_source_lines,
    answer_values,
    find_leaks,
    readable_text,
    release_notebook,
    secret_lines,
    wheel_name,
)
from packaging.requirements import Requirement

from autograder.engine import kit

WHEEL = wheel_name()
NOTEBOOKS = [f"{a}.ipynb" for a in ASSIGNMENTS]
KIT_FILES = {"README.md", "requirements.txt", "nbgrader_config.py", WHEEL, *NOTEBOOKS}
STUDENT_SRC = STUDENT_PACKAGE.parent
# Plain lines that the checks library or a chapter shares with a solution or a demo answer:
# validating p, a split's size, a seeded generator, softmax attention weights (Chapter 3 teaches
# scaled dot-product attention with this very line). They give nothing away; any other shared
# line fails the leak tests.
GENERIC_LINES = frozenset({
    "if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:",
    "n_val = round(val_fraction * n_samples)",
    "weights = torch.softmax(scores, dim=-1)",
    "rng = np.random.default_rng(seed)",
    "weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)",
})


@pytest.fixture(scope="module")
def kit_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kit built by the same code as `make student-kit`, into a temporary folder."""
    return kit.build(tmp_path_factory.mktemp("kit") / "student-kit.zip")


def kit_members(kit_zip: Path) -> dict[str, bytes]:
    """{name inside the kit's folder: bytes}."""
    with zipfile.ZipFile(kit_zip) as archive:
        names = archive.namelist()
        assert all(n.startswith(f"{kit.KIT_FOLDER}/") for n in names), names
        return {n.removeprefix(f"{kit.KIT_FOLDER}/"): archive.read(n) for n in names}


def unpack(kit_zip: Path, folder: Path) -> Path:
    """The kit unzipped into ``folder``, its wheel unpacked beside it (``wheel/``)."""
    with zipfile.ZipFile(kit_zip) as archive:
        archive.extractall(folder)
    with zipfile.ZipFile(folder / kit.KIT_FOLDER / WHEEL) as wheel:
        wheel.extractall(folder / "wheel")
    return folder


# --- a. what the kit holds -------------------------------------------------------------------


def test_kit_holds_exactly_the_expected_files(kit_zip: Path) -> None:
    """One folder with the four notebooks, the wheel, requirements.txt and README.md; nothing
    from solutions/, tests/, autograder/demo/ or autograder/engine/."""
    assert set(kit_members(kit_zip)) == KIT_FILES


def test_kit_is_rebuilt_byte_for_byte(kit_zip: Path, tmp_path: Path) -> None:
    """Sorted entries, fixed timestamps and modes: a rebuild gives the same bytes."""
    with zipfile.ZipFile(kit_zip) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {kit.ZIP_TIME}
    again = kit.build(tmp_path / "again.zip")
    assert again.read_bytes() == kit_zip.read_bytes()


def test_notebooks_are_the_exercises_byte_for_byte(kit_zip: Path) -> None:
    members = kit_members(kit_zip)
    for assignment in ASSIGNMENTS:
        expected = (EXERCISES / assignment / f"{assignment}.ipynb").read_bytes()
        assert members[f"{assignment}.ipynb"] == expected, assignment


def test_wheel_is_a_valid_wheel_of_the_package(kit_zip: Path) -> None:
    """dist-info with METADATA (name, version), WHEEL (pure, py3-none-any) and a RECORD whose
    hashes match; the only top-level package is dropout_course, holding the package's sources."""
    with zipfile.ZipFile(io.BytesIO(kit_members(kit_zip)[WHEEL])) as wheel:
        files = {n: wheel.read(n) for n in wheel.namelist()}
    info = "dropout_course-1.0.0.dist-info"
    assert {n.split("/")[0] for n in files} == {"dropout_course", info}
    metadata = Parser().parsestr(files[f"{info}/METADATA"].decode())
    assert (metadata["Name"], metadata["Version"]) == ("dropout-course", "1.0.0")
    wheel_meta = Parser().parsestr(files[f"{info}/WHEEL"].decode())
    assert wheel_meta["Root-Is-Purelib"] == "true" and wheel_meta["Tag"] == "py3-none-any"
    record = list(csv.reader(files[f"{info}/RECORD"].decode().splitlines()))
    assert {row[0] for row in record} == set(files)
    for name, digest, size in record:
        if name == f"{info}/RECORD":
            continue
        algo, _, value = digest.partition("=")
        actual = base64.urlsafe_b64encode(hashlib.new(algo, files[name]).digest()).rstrip(b"=")
        assert (actual.decode(), int(size)) == (value, len(files[name])), name
    sources = {str(p.relative_to(STUDENT_SRC)): p.read_bytes()
               for p in (STUDENT_SRC / "dropout_course").rglob("*.py")}
    assert {n: b for n, b in files.items() if n.startswith("dropout_course/")} == sources


def test_requirements_are_lean_and_pin_torch(kit_zip: Path) -> None:
    """torch==2.13.0 exactly (a looser range pulls GBs of CUDA), only what the notebooks need,
    and the wheel by relative path."""
    lines = [line.strip() for line in kit_members(kit_zip)["requirements.txt"].decode().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert f"./{WHEEL}" in lines
    reqs = {r.name: r for r in (Requirement(line) for line in lines if line != f"./{WHEEL}")}
    assert set(reqs) == {"torch", "numpy", "matplotlib", "scikit-learn", "scipy", "jupyterlab",
                         "nbgrader"}
    assert str(reqs["torch"].specifier) == "==2.13.0"
    assert str(reqs["nbgrader"].specifier) == "==0.9.6"
    lab = reqs["jupyterlab"].specifier
    assert lab.contains("4.9") and not lab.contains("5.0") and not lab.contains("3.6")


def test_setup_cells_name_the_wheel_that_is_built(kit_zip: Path) -> None:
    """The message a notebook gives when dropout_course is missing names the kit's wheel file."""
    members = kit_members(kit_zip)
    wheels = [n for n in members if n.endswith(".whl")]
    assert wheels == [WHEEL]
    for name in NOTEBOOKS:
        cells = json.loads(members[name])["cells"]
        setup = next(c for c in cells
                     if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup")
        source = "".join(setup["source"])
        assert "from dropout_course import checks" in source, name
        assert f"%pip install {wheels[0]}" in source, name


def test_validate_in_the_kit_judges_as_grading_does(kit_zip: Path, tmp_path: Path) -> None:
    """The kit's nbgrader_config.py is the file the course's own configuration loads for what
    makes a test cell pass (time limit, warnings on stderr), so the two cannot drift apart."""
    from traitlets.config.loader import PyFileConfigLoader

    folder = unpack(kit_zip, tmp_path) / kit.KIT_FOLDER
    student = PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()
    course = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT / "autograder")).load_config()
    assert student.Execute.timeout == course.Execute.timeout == 120
    assert student.IgnorePattern == course.IgnorePattern
    assert student.IgnorePattern.enabled is True
    assert "CourseDirectory" not in student, "the kit must not point nbgrader at any folder"


def test_readme_says_how_to_install_validate_and_hand_in(kit_zip: Path) -> None:
    text = kit_members(kit_zip)["README.md"].decode()
    for phrase in ("python -m venv .venv && .venv/bin/pip install -r requirements.txt"
                   " && .venv/bin/jupyter lab",
                   ".venv\\Scripts\\pip install -r requirements.txt", "nbgrader validate",
                   "Validate", "Assignment List", "name unchanged", f"%pip install {WHEEL}",
                   "https://download.pytorch.org/whl/cpu", "CUDA"):
        assert phrase in text, phrase


# --- b. no answer leaks: kit, book, package --------------------------------------------------


@cache
def answer_lines() -> frozenset[str]:
    """Every distinctive line of an answer: solution and hidden-test lines of solutions/ and the
    demo submissions' lines (autograder/demo/ex0*.py), stripped, at least DISTINCTIVE_LENGTH
    long, that no student notebook shows. Unlike ``secret_lines`` the package's own lines are
    not taken as public: this set is what the package must not contain either."""
    public = {line.strip() for a in ASSIGNMENTS for cell in release_notebook(a).cells
              for line in cell.source.splitlines()}
    found = answer_source_lines()
    demos = sorted((ROOT / "autograder" / "demo").glob("ex0*.py"))
    assert len(demos) == len(ASSIGNMENTS)
    for demo in demos:
        found.update(demo.read_text(encoding="utf-8").splitlines())
    stripped = {line.strip() for line in found}
    return frozenset(s for s in stripped if len(s) >= DISTINCTIVE_LENGTH and s not in public)


def answers_in(folder: Path, allowed: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """{relative path: answer lines or nbgrader markers found in it} for every file under
    ``folder`` (as a person could read it: ``readable_text``), plus ``find_leaks``' findings."""
    found: dict[str, set[str]] = {k: set(v) for k, v in find_leaks(folder).items()}
    lines = answer_lines() - allowed
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix in {".png", ".woff", ".woff2", ".ttf", ".ico"}:
            continue
        text = readable_text(path)
        hits = {s for s in lines if s in text} | {m for m in MARKERS if m in text}
        if hits:
            found.setdefault(str(path.relative_to(folder)), set()).update(hits)
    return {k: sorted(v) for k, v in found.items()}


def test_the_kit_holds_no_answer(kit_zip: Path, tmp_path: Path) -> None:
    assert len(answer_lines()) > 100, "the answer-line finder found suspiciously little"
    assert answers_in(unpack(kit_zip, tmp_path), GENERIC_LINES) == {}


def test_the_package_source_holds_no_answer() -> None:
    """The package ships to students whole: no solution, hidden-test or demo line in it."""
    assert answers_in(STUDENT_SRC.parent, GENERIC_LINES) == {}


def test_the_answer_search_finds_planted_lines(kit_zip: Path, tmp_path: Path) -> None:
    """Not vacuous: a solution line in a kit notebook, a demo line in the wheel's package, a
    hidden-test line on an HTML page and a marker are each reported."""
    folder = unpack(kit_zip, tmp_path / "kit")
    solution = min(s for s in secret_lines() if len(s) >= DISTINCTIVE_LENGTH)
    demo = min(answer_lines() - secret_lines() - GENERIC_LINES)
    notebook = folder / kit.KIT_FOLDER / NOTEBOOKS[0]
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    nb["cells"][-1]["source"] = f"    {solution}\n"
    notebook.write_text(json.dumps(nb), encoding="utf-8")
    module = folder / "wheel" / "dropout_course" / "layers.py"
    module.write_text(module.read_text(encoding="utf-8") + f"\n{demo}\n", encoding="utf-8")
    hidden = next(s for s in sorted(secret_lines()) if s.startswith("checks."))
    (folder / "page.html").write_text(f"<pre><span>{hidden}</span></pre>", encoding="utf-8")
    (folder / "notes.txt").write_text("### BEGIN HIDDEN TESTS\n", encoding="utf-8")
    # a numeric question's reference value, as a notebook's output would print it
    value = f"{answer_values()['answer_penalty']:.6f}"
    (folder / "output.txt").write_text(f"R(w) = {value}\n", encoding="utf-8")
    found = answers_in(folder, GENERIC_LINES)
    assert f"reference value of answer_penalty: {value}" in found.pop("output.txt")
    assert solution in found[f"{kit.KIT_FOLDER}/{NOTEBOOKS[0]}"]
    assert demo in found["wheel/dropout_course/layers.py"]
    assert hidden in found["page.html"]
    assert found["notes.txt"] == ["BEGIN HIDDEN TESTS"]
    assert set(found) == {f"{kit.KIT_FOLDER}/{NOTEBOOKS[0]}", "wheel/dropout_course/layers.py",
                          "page.html", "notes.txt"}


@pytest.mark.slow
def test_the_book_holds_no_answer(book: Path) -> None:
    """No solution, hidden-test or demo line and no nbgrader marker on the site (kit included:
    it is a zip there, unpacked by the kit test)."""
    assert answers_in(book, GENERIC_LINES) == {}


# --- the book links the kit -------------------------------------------------------------------


def kit_links(page: Path) -> list[Path]:
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    return [(page.parent / a["href"]).resolve() for a in soup.find_all("a", href=True)
            if "_downloads/" in a["href"] and a["href"].endswith("/student-kit.zip")]


@pytest.mark.slow
def test_the_book_links_the_kit_on_every_exercise_page(book: Path) -> None:
    """The exercises page and each exercise page link the kit that `make book` built, byte for
    byte; the notebooks themselves carry no such link."""
    built = (ROOT / "_build" / "student-kit.zip").read_bytes()
    pages = [book / "chapters" / "exercises.html"]
    pages += [book / "exercises" / a / f"{a}.html" for a in ASSIGNMENTS]
    for page in pages:
        links = kit_links(page)
        assert links, f"{page.relative_to(book)} does not link the student kit"
        assert all(link.read_bytes() == built for link in links), page
    for assignment in ASSIGNMENTS:
        assert b"student-kit" not in (EXERCISES / assignment / f"{assignment}.ipynb").read_bytes()


def _course_layout():
    sys.path.insert(0, str(ROOT / "chapters" / "_ext"))
    try:
        import course_layout
    finally:
        sys.path.remove(str(ROOT / "chapters" / "_ext"))
    return course_layout


def test_course_links_show_only_what_is_set() -> None:
    """The {course-links} directive: nothing for empty values, a link per set one; a value that
    is not an http(s) URL is a configuration error (never a dead link)."""
    from sphinx.errors import ConfigError

    layout = _course_layout()
    assert layout.link_nodes({"book": "", "repository": ""}) == []
    (para,) = layout.link_nodes({"book": "https://example.org/dropout/", "repository": ""})
    assert [r["refuri"] for r in para.findall(layout.nodes.reference)] == [
        "https://example.org/dropout/"]
    (para,) = layout.link_nodes({"book": "https://b.example", "repository": "https://r.example"})
    assert len(list(para.findall(layout.nodes.reference))) == 2
    for bad in ({"book": "course.example.org"}, {"website": "https://x.example"}, "https://x"):
        with pytest.raises(ConfigError):
            layout.link_nodes(bad)


# --- c. a fresh environment with only the kit -------------------------------------------------


@dataclass
class StudentEnv:
    python: Path
    kit: Path  # the unzipped kit's folder (the students' working folder)
    env: dict[str, str]
    install_seconds: float

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args], cwd=self.kit, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def tool(self, name: str) -> str:
        return str(self.python.parent / name)


def outside_repo(path: Path) -> Path:
    resolved = path.resolve()
    assert not resolved.is_relative_to(ROOT.resolve()), f"{resolved} is inside the repository"
    return resolved


@pytest.fixture(scope="module")
def student_env(kit_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> StudentEnv:
    """A new venv outside the repository with only the kit's requirements.txt installed, and the
    unzipped kit as working folder; no variable points back into the course."""
    base = outside_repo(tmp_path_factory.mktemp("student"))
    with zipfile.ZipFile(kit_zip) as archive:
        archive.extractall(base)
    folder = base / kit.KIT_FOLDER
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_CONFIG_PATH", "JUPYTER_PATH",
                        "PYTHONHOME", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR"}}
    venv = base / "venv"
    course_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and not Path(p).resolve().is_relative_to(ROOT.resolve()) and p != course_bin]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    # Jupyter's and IPython's per-user folders are new and empty (a kernelspec there would win
    # over the venv's); pip keeps the machine's settings and cache, as on a student's machine.
    for var, sub in (("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                     ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")):
        env[var] = str(base / "user" / sub)
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                           "--disable-pip-version-check", "-q", "-r", "requirements.txt"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=1200,
                          check=False)
    assert proc.returncode == 0, f"pip install -r requirements.txt failed:\n{proc.stderr[-4000:]}"
    return StudentEnv(venv / "bin" / "python", folder, env, time.perf_counter() - start)


PROBE = """import importlib.util, json, sys
import dropout_course, dropout_course.checks
print("PROBE " + json.dumps({"executable": sys.executable, "prefix": sys.prefix,
      "package": list(dropout_course.__path__), "checks": dropout_course.checks.__file__,
      "autograder": importlib.util.find_spec("autograder") is not None, "path": sys.path}))
"""


def check_probe(output: str, env: StudentEnv) -> None:
    """The kernel (or interpreter) is the new venv's, dropout_course comes from the venv, the
    course's own packages cannot be imported and the repository is not on sys.path."""
    line = next(li for li in output.splitlines() if li.startswith("PROBE "))
    probe = json.loads(line.removeprefix("PROBE "))
    venv = env.python.parent.parent
    assert Path(probe["prefix"]).resolve() == venv.resolve(), probe
    for where in [*probe["package"], probe["checks"]]:
        assert Path(where).resolve().is_relative_to(venv.resolve()), probe
    assert probe["autograder"] is False, probe
    root = ROOT.resolve()
    assert not any(p and Path(p).resolve().is_relative_to(root) for p in probe["path"]), probe


@pytest.mark.slow
def test_the_venv_holds_the_package_and_not_the_course(student_env: StudentEnv) -> None:
    proc = student_env.run(str(student_env.python), "-c", PROBE)
    assert proc.returncode == 0, proc.stderr
    check_probe(proc.stdout, student_env)
    print(f"fresh venv: pip install -r requirements.txt took {student_env.install_seconds:.0f} s")


def completed(assignment: str, stub: dict) -> dict:
    """The shipped notebook with each answer cell replaced by the reference answer from
    solutions/ (marker lines left out), as a student who solved everything would hand it in."""
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c for c in json.loads(
        (SOLUTIONS / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8"))["cells"]
        if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    done = json.loads(json.dumps(stub))
    filled = 0
    for cell in done["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            source = "".join(answers[meta["grade_id"]]["source"])
            cell["source"] = "".join(line for line in source.splitlines(keepends=True)
                                     if not any(m in line for m in MARKERS))
            filled += 1
    assert filled == len(answers)
    return done


def with_probe(notebook: dict) -> dict:
    probed = json.loads(json.dumps(notebook))
    probed["cells"].insert(0, {"cell_type": "code", "execution_count": None, "metadata": {},
                               "outputs": [], "source": PROBE})
    return probed


def visible_tests(notebook: dict) -> list[dict]:
    """The graded code cells that hold code (a hidden-test placeholder is only a comment)."""
    cells = []
    for cell in notebook["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        code = [li for li in "".join(cell["source"]).splitlines()
                if li.strip() and not li.lstrip().startswith("#")]
        if cell["cell_type"] == "code" and meta.get("grade") and code:
            cells.append(cell)
    return cells


def text_of(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append("".join(out["text"]))
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


# Two notebooks at a time: each step is one process (a kernel), mostly single-threaded.
WORKERS = 2


@dataclass
class Runs:
    """What the steps of one exercise gave: the executed stub's cells, `nbgrader validate`'s
    report on the completed notebook and on the stub, and each step's seconds."""

    tests: set[str]
    stub: list[dict]
    validate_stub: str
    validate_done: str
    seconds: dict[str, float]


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _execute(env: StudentEnv, name: str) -> list[dict]:
    """Run every cell of the kit folder's ``name`` (errors allowed) with the venv's nbconvert;
    the executed cells."""
    proc = env.run(env.tool("jupyter"), "nbconvert", "--to", "notebook", "--execute",
                   "--allow-errors", "--ExecutePreprocessor.timeout=600", "--output",
                   f"ran_{name}", name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((env.kit / f"ran_{name}").read_text(encoding="utf-8"))["cells"]


def _validate(env: StudentEnv, name: str) -> str:
    proc = env.run(env.tool("nbgrader"), "validate", name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # In the kit's folder, Validate runs with the kit's nbgrader_config.py (grading's settings).
    assert "No nbgrader_config.py file found" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def runs(student_env: StudentEnv) -> dict[str, Runs]:
    """Every exercise, in the kit's folder with only the kit installed: the stub as shipped, run
    cell by cell (a probe cell first) and validated, and the completed notebook validated.

    `nbgrader validate` runs every cell of the completed notebook and passes it only when every
    graded test cell ends without an error and without stderr, i.e. every visible test passes;
    running it a second time cell by cell would double the slowest step (Exercise 4's
    experiments) for nothing."""
    env = student_env
    jobs = {}
    tests = {}
    for assignment in ASSIGNMENTS:
        name = f"{assignment}.ipynb"
        stub = json.loads((env.kit / name).read_text(encoding="utf-8"))
        tests[assignment] = {c["metadata"]["nbgrader"]["grade_id"] for c in visible_tests(stub)}
        done = completed(assignment, stub)
        files = {f"probe_stub_{name}": with_probe(stub), f"done_{name}": done}
        for file, notebook in files.items():
            (env.kit / file).write_text(json.dumps(notebook), encoding="utf-8")
        # The longest step first, so the pool does not end on it with one worker idle.
        jobs[assignment] = {"validate_done": (_validate, f"done_{name}"),
                            "stub": (_execute, f"probe_stub_{name}"),
                            "validate_stub": (_validate, name)}
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        order = [(a, step) for step in jobs[ASSIGNMENTS[0]] for a in reversed(ASSIGNMENTS)]
        futures = {(a, step): pool.submit(_timed, jobs[a][step][0], env, jobs[a][step][1])
                   for a, step in order}
        results = {key: future.result() for key, future in futures.items()}
    wall = time.perf_counter() - start
    found = {}
    for assignment in ASSIGNMENTS:
        got = {step: results[(assignment, step)][0] for step in jobs[assignment]}
        found[assignment] = Runs(tests[assignment], seconds={
            step: results[(assignment, step)][1] for step in jobs[assignment]}, **got)
    steps = "; ".join(f"{a} " + ", ".join(f"{s} {v:.0f}" for s, v in r.seconds.items())
                      for a, r in found.items())
    print(f"\nfresh venv: install {env.install_seconds:.0f} s; the exercises' {len(order)} steps "
          f"{wall:.0f} s on {WORKERS} workers ({steps})")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercise_works_with_only_the_kit(assignment: str, student_env: StudentEnv,
                                          runs: dict[str, Runs]) -> None:
    """With only the kit installed, in the kit's folder: the shipped stub's visible tests fail
    with the stub's message, and `nbgrader validate` passes the notebook completed with the
    reference answers (every visible test passes) and reports the stub's failure."""
    run = runs[assignment]
    assert run.tests, assignment
    check_probe(text_of(run.stub[0]), student_env)

    for cell in visible_tests({"cells": run.stub}):
        out = text_of(cell)
        assert "not written yet" in out or "NotImplementedError" in out, (
            cell["metadata"]["nbgrader"]["grade_id"], out[-800:])
        assert "Passed:" not in out

    assert "Success! Your notebook passes all the tests." in run.validate_done, (
        run.validate_done[-3000:])
    failed = re.search(r"VALIDATION FAILED ON (\d+) CELL", run.validate_stub)
    assert failed and int(failed.group(1)) >= len(run.tests), run.validate_stub[-3000:]
    assert "replace `raise NotImplementedError()` with your code" in run.validate_stub
