"""Hand graders see what the student's notebook printed (issue 17, item 5), and nothing in it acts.

Exercise 4's written answers quote the numbers the experiment cells printed. Those cells are the
course's own, unchanged, so grading does not run them; the autograded notebook (which formgrader
shows the hand grader) and the feedback keep the outputs the student's notebook saved, after a
marker saying they were not re-run, reduced to plain text and PNG images. One Exercise 4 demo
submission is graded once (module fixture), with saved outputs that hold the numbers its
written answer quotes, and hostile ones: a script in HTML, JavaScript, SVG and markdown
outputs, terminal escapes, a 10 MB stream, a fake image, and markdown and raw cells that carry
scripts. Unit tests of ``verify.saved_outputs`` follow.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import nbformat
import pytest
from course import EXERCISES, find_leaks, grade_written, readable_text

from autograder.demo.ex04_misconceptions import STUDENTS
from autograder.engine import export, verify

ASSIGNMENT = "ex04_misconceptions"
STUDENT = "gus_correct"
QUOTED = "0.91372"  # printed by the student's notebook and quoted in written answer B
PRINTED_ONLY = "0.95827"  # printed by the notebook, quoted nowhere
PAYLOADS = ("pwned-html", "pwned-js", "pwned-svg", "pwned-md-output", "pwned-widget")
SCRIPT = "<script>alert("
BIG = 10 << 20


def _png() -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode("ascii")


PNG = _png()


def _stream(text: str | list[str], name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def _display(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": metadata or {}}


EVALUATION_OUTPUTS = [
    _stream([f"buggy loop:  {QUOTED} 0.90114 0.92003\n",
             f"fixed loop:  {PRINTED_ONLY} {PRINTED_ONLY} {PRINTED_ONLY}\n"]),
]
HOSTILE_OUTPUTS = [
    _stream("sweep: \x1b[31mred\x1b[0m \x1b]0;window-title\x07 \x1b[2J"
            "<script>alert('pwned-stream')</script>\n"),
    _display({"text/html": "<script>alert('pwned-html')</script><b>bold</b>",
              "text/plain": "<IPython.core.display.HTML object>"}),
    {"output_type": "execute_result", "execution_count": 7, "metadata": {},
     "data": {"application/javascript": "alert('pwned-js')"}},
    _display({"image/svg+xml": "<svg onload=\"alert('pwned-svg')\"></svg>"}),
    _display({"text/markdown": "<img src=x onerror=\"alert('pwned-md-output')\">"}),
    _display({"application/vnd.jupyter.widget-view+json": {"model_id": "pwned-widget"}}),
    _display({"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"},
             {"width": "\"><script>alert('pwned-meta')</script>"}),
    _display({"image/png": "AAAA\"><script>alert('pwned-png')</script>"}),
    _stream("x" * BIG),
]
WRITTEN_B = (f"{STUDENTS[STUDENT]['written_answer_b']} My buggy loop printed {QUOTED}. "
             "<script>alert('pwned-answer')</script>")


def write_submission(folder: Path) -> None:
    """gus_correct's Exercise 4 with saved outputs in two experiment cells, a hostile answer
    and a hostile raw cell."""
    nb = nbformat.read(EXERCISES / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    answers = {**STUDENTS[STUDENT], "written_answer_b": WRITTEN_B}
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid].strip("\n")
        elif cell.source.startswith("# Experiment: the same trained model"):
            cell.outputs = copy.deepcopy(EVALUATION_OUTPUTS)
        elif cell.source.startswith("# Experiment: a rate sweep"):
            cell.outputs = copy.deepcopy(HOSTILE_OUTPUTS)
    nb.cells.append(nbformat.v4.new_raw_cell("<script>alert('pwned-raw')</script>"))
    target = folder / STUDENT / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    target.parent.mkdir(parents=True)
    # Written as JSON (nbformat.write would validate the fake image and the odd outputs away).
    target.write_text(json.dumps(nb), "utf-8")


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The course folder after grading the submission once, and its result."""
    course, results = grade_written(tmp_path_factory.mktemp("outputs"), ASSIGNMENT,
                                    write_submission)
    return course, results[STUDENT]


@pytest.fixture(scope="module")
def autograded(graded: tuple[Path, Any]) -> dict[str, Any]:
    path = graded[0] / "autograded" / STUDENT / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    return json.loads(path.read_text("utf-8"))


@pytest.fixture(scope="module")
def feedback_html(graded: tuple[Path, Any]) -> str:
    path = graded[0] / "feedback" / STUDENT / ASSIGNMENT / f"{ASSIGNMENT}.html"
    return path.read_text("utf-8")


def _cell(nb: dict[str, Any], start: str) -> dict[str, Any]:
    found = [c for c in nb["cells"] if "".join(c["source"]).startswith(start)]
    assert len(found) == 1, start
    return found[0]


def _text(cell: dict[str, Any]) -> str:
    return "".join("".join(o["text"]) if isinstance(o.get("text"), list) else o.get("text", "")
                   for o in cell["outputs"])


def test_grading_is_unchanged_by_saved_outputs(graded: tuple[Path, Any]) -> None:
    """The saved outputs change no score: all automatic points, the written answers pending."""
    _course, result = graded
    assert result.grader_error is None
    assert result.score == 15.0
    assert result.manual_pending == 3


def test_autograded_notebook_keeps_the_printed_numbers(autograded: dict[str, Any]) -> None:
    """The experiment cell shows what the student's notebook printed, after the marker, as a
    stream; the written answer that quotes it is there too."""
    cell = _cell(autograded, "# Experiment: the same trained model")
    outputs = cell["outputs"]
    assert outputs[0] == {"output_type": "stream", "name": "stdout", "text": verify.NOT_RERUN}
    assert "not re-run when grading" in verify.NOT_RERUN
    assert QUOTED in _text(cell) and PRINTED_ONLY in _text(cell)
    assert all(o["output_type"] == "stream" for o in outputs)
    answer = [c for c in autograded["cells"]
              if c["metadata"].get("nbgrader", {}).get("grade_id") == "written_answer_b"]
    assert QUOTED in "".join(answer[0]["source"])
    # an experiment cell without saved outputs says so
    empty = _cell(autograded, "# Experiment: the experiments' MLP")
    assert empty["outputs"] == [{"output_type": "stream", "name": "stdout",
                                 "text": verify.NOT_RERUN_EMPTY}]


def test_hostile_saved_outputs_are_inert(autograded: dict[str, Any]) -> None:
    """Only stream text and one valid, re-encoded PNG are left of the hostile outputs: no HTML,
    script, SVG, markdown or widget data, no output metadata, no terminal escape, and the
    10 MB stream cut to the per-cell limit (said so)."""
    cell = _cell(autograded, "# Experiment: a rate sweep")
    outputs = cell["outputs"]
    assert outputs[0]["text"] == verify.NOT_RERUN
    kinds = {(o["output_type"], tuple(o.get("data", {}))) for o in outputs}
    assert kinds <= {("stream", ()), ("display_data", ("image/png",))}
    images = [o for o in outputs if o["output_type"] == "display_data"]
    assert [o["data"]["image/png"] for o in images] == [PNG]
    assert all(o["metadata"] == {} for o in images)
    text = _text(cell)
    dumped = json.dumps(cell["outputs"])
    for payload in (*PAYLOADS, "pwned-meta", "pwned-png", "window-title"):
        assert payload not in dumped, payload
    assert "\x1b" not in text and "\\x1b" not in text
    assert "sweep: red" in text and "text/html" in text  # shown as text; dropped types named
    assert len(text) < verify.SAVED_CELL_LIMIT + 2048
    assert "cut: saved outputs are shown up to 64 KiB per cell" in text
    assert len(json.dumps(autograded)) < 1 << 20
    nbformat.validate(nbformat.from_dict(autograded))  # formgrader and nbconvert read it


def test_feedback_shows_the_numbers_and_no_script(feedback_html: str) -> None:
    """The student's feedback page shows the saved numbers after the marker, the hostile text
    only escaped, and nothing of the dropped outputs."""
    assert "not re-run when grading" in feedback_html
    assert PRINTED_ONLY in feedback_html
    assert feedback_html.count(QUOTED) >= 2  # the answer and the printed output
    assert SCRIPT not in feedback_html
    for payload in PAYLOADS:
        assert payload not in feedback_html, payload
    assert "&lt;script&gt;alert(&#39;pwned-stream&#39;)" in feedback_html or \
        "&lt;script&gt;alert('pwned-stream')" in feedback_html


def test_formgrader_page_has_no_student_script(graded: tuple[Path, Any]) -> None:
    """formgrader renders the autograded notebook with its own template, which renders markdown
    without any cleaning; rendered so, with no course configuration at all, the page shows the
    numbers and runs nothing the student wrote (markdown answer, raw cell or saved output)."""
    from nbconvert import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers

    course, _ = graded
    path = course / "autograded" / STUDENT / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    exporter = HTMLExporter(template_name="formgrade",
                            extra_template_basedirs=[handlers.template_path])
    resources = {"assignment_id": ASSIGNMENT, "notebook_id": ASSIGNMENT, "submission_id": "x",
                 "index": 0, "total": 1, "base_url": "", "student": STUDENT,
                 "last_name": None, "first_name": None, "notebook_path": str(path)}
    page, _ = exporter.from_filename(str(path), resources=resources)
    assert PRINTED_ONLY in page and "not re-run when grading" in page
    for payload in ("pwned-stream", "pwned-answer", "pwned-raw"):
        assert f"{SCRIPT}'{payload}')" not in page, payload
    for payload in PAYLOADS:
        assert payload not in page, payload


def test_exports_of_a_real_graded_course(graded: tuple[Path, Any], tmp_path: Path) -> None:
    """The exports read the course this run graded: Gradescope's results hold one test per
    graded cell, the hidden ones after_due_date, and no solution or hidden-test line; the
    Canvas row leaves the pending written answers' assignment blank."""
    course, _ = graded
    out = tmp_path / "gradescope"
    (path,) = export.write_gradescope(course, out, warn=None)
    results = json.loads(path.read_text("utf-8"))
    names = [t["name"] for t in results["tests"]]
    assert len(names) == 13 and names[0] == "test_counts_visible"
    for test in results["tests"]:
        hidden = test["name"].split()[0].endswith("_hidden")
        assert test["visibility"] == ("after_due_date" if hidden else "visible"), test["name"]
    assert results["score"] == 15.0 and results["extra_data"]["pending"] == 3
    own = frozenset(line.strip() for line in readable_text(
        course / "submitted" / STUDENT / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").splitlines()) \
        if (course / "submitted" / STUDENT).is_dir() else frozenset()
    assert find_leaks(out, own_lines=own) == {}
    canvas = tmp_path / "canvas.csv"
    export.write_lms(course, "canvas", "id", canvas, warn=None)
    text = canvas.read_text("utf-8").splitlines()
    assert text[0].startswith("Student,ID,SIS User ID,SIS Login ID,Section,")
    assert text[2].split(",")[2:] == [STUDENT, "", "", ""]  # pending: blank
    # merge: the class outputs rebuilt from the gradebook, then every default export
    for name in ("grades.csv", "report.txt"):
        (course / name).unlink(missing_ok=True)
    export.merge(course)
    assert (course / "grades.csv").is_file() and (course / "report.txt").is_file()
    assert (course / "exports" / "canvas.csv").read_text("utf-8") == canvas.read_text("utf-8")
    assert (course / "exports" / "moodle.csv").is_file()
    assert (course / "exports" / "gradescope" / ASSIGNMENT / STUDENT / "results.json").is_file()


# --------------------------------------------------------------------------- unit

def test_saved_outputs_share_one_budget_per_notebook() -> None:
    """A student cannot multiply the allowance by repeating an experiment cell."""
    budget = verify.SavedBudget()
    cell = {"outputs": [_stream("y" * BIG), _display({"image/png": PNG})]}
    shown = [verify.saved_outputs(cell, budget) for _ in range(40)]
    total = sum(len(o.get("text", "")) for outs in shown for o in outs)
    assert total < verify.SAVED_NOTEBOOK_LIMIT + 40 * 1024
    assert budget.text <= 0


@pytest.mark.parametrize(("raw", "shown"), [
    ("50%\r100%\r\n", "100%\n"),
    ("a\tb\n", "a       b\n"),
    ("\x1b[1;31mred\x1b[0m \x9b2J\u202eend", "red \\u202eend"),
    (["one ", "line\n"], "one line\n"),
])
def test_plain_text(raw: str | list[str], shown: str) -> None:
    assert verify.plain_text(raw, 1000) == shown


def test_malformed_saved_outputs_are_named_not_shown() -> None:
    cell = {"outputs": ["not a dict", {"output_type": "weird"},
                        {"output_type": "display_data", "data": "no dict"}]}
    outs = verify.saved_outputs(cell)
    assert outs[0]["text"] == verify.NOT_RERUN
    assert all(o["output_type"] == "stream" for o in outs)
    assert "not shown" in _text({"outputs": outs})
