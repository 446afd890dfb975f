"""Untrusted text is shown, never obeyed; a grader failure is never a student's score.

Unit tests of ``autograder/engine/untrusted.py``, then hostile Exercise 1 submissions graded
end to end in ONE run (names with newlines, escape sequences and undecodable bytes, markdown
with scripts and event handlers, lone surrogates in messages, a submission the grader fails
on), then the sandbox self-test's refusal.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from course import SHORT_LIMITS

from autograder.engine import feedback
from autograder.engine import grade as grading
from autograder.engine.untrusted import (
    csv_cell,
    markdown_text,
    safe_html,
    sanitize_markdown,
    terminal_text,
)

ASSIGNMENT = "ex01_overfitting"
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
# The attack suites' short limits, but room for a loaded machine: these submissions are
# honest about time, and a timeout would only hide what is tested here.
LIMITS = {**SHORT_LIMITS, "cell_seconds": 60, "call_seconds": 60, "submission_seconds": 300}


def raw_controls(text: str) -> list[str]:
    """The characters of ``text`` that a terminal or an editor could obey (newlines aside)."""
    return [ch for ch in text if ch != "\n" and unicodedata.category(ch) in UNSAFE]


# --------------------------------------------------------------------------- unit: text

@pytest.mark.parametrize(("raw", "shown"), [
    ("alice", "alice"),
    ("José 漢字", "José 漢字"),
    ("a\nb\r\tc", "a\\nb\\r\\tc"),
    ("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07"),
    ("\x85\x9b\x7f\x00", "\\x85\\x9b\\x7f\\x00"),
    ("abc\u202edcba\u2066\u200b", "abc\\u202edcba\\u2066\\u200b"),
    ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
    (os.fsdecode(b"caf\xe9\xff"), "caf\\udce9\\udcff"),
    ("\ud800 alone", "\\ud800 alone"),
    ("tag\U000e0041", "tag\\U000e0041"),
    (b"raw\xffname", "raw\\udcffname"),
    (42, "42"),
])
def test_terminal_text_shows_controls_escaped(raw: object, shown: str) -> None:
    out = terminal_text(raw)
    assert out == shown
    assert not raw_controls(out) and "\n" not in out
    out.encode("utf-8")  # always writable


@pytest.mark.parametrize(("raw", "cell"), [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("+1", "'+1"), ("-rf", "'-rf"), ("@SUM(A1)", "'@SUM(A1)"), ("  =1+1", "'  =1+1"),
    ("\uff1d1", "'\uff1d1"), ("\t=1", "\\t=1"), ("ok=1", "ok=1"),
    ("a\nb", "a\\nb"), (os.fsdecode(b"\xff"), "\\udcff"),
    (12.0, 12.0), (3, 3), (None, ""), ("", ""),
])
def test_csv_cell_is_never_a_formula(raw: object, cell: object) -> None:
    assert csv_cell(raw) == cell
    assert type(csv_cell(raw)) is type(cell)


def test_csv_cells_survive_a_round_trip(tmp_path: Path) -> None:
    values = ["a\nb", "=1+1", os.fsdecode(b"x\xff"), 1.5]
    path = tmp_path / "x.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow([csv_cell(v) for v in values])
    with path.open(newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["a\\nb", "'=1+1", "x\\udcff", "1.5"]]


# --------------------------------------------------------------------------- unit: HTML

class Active(HTMLParser):
    """What in a page can act: script elements, event handlers, javascript: or remote URLs in
    attributes that load or navigate, embedding and form elements, style elements."""

    LOADS = frozenset({"src", "href", "action", "formaction", "data", "poster", "srcset",
                       "background"})
    EMBEDS = frozenset({"script", "iframe", "frame", "object", "embed", "form", "style", "link",
                        "meta", "base", "svg", "math", "input", "button", "textarea"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, ...]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.EMBEDS:
            self.found.append(("element", tag, *sorted(f"{k}={v}" for k, v in attrs)))
        self._in_script = tag in ("script", "style")
        for key, raw in attrs:
            value = (raw or "").strip().lower()
            if key.startswith("on"):
                self.found.append(("handler", tag, key, value))
            elif key == "style" and "url(" in value:
                self.found.append(("style", tag, value))
            elif key in self.LOADS and value.startswith(("javascript:", "vbscript:",
                                                         "data:text")):
                self.found.append(("url", tag, key, value))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append(("code", data.strip()[:200]))


def active(page: str) -> list[tuple[str, ...]]:
    parser = Active()
    parser.feed(page)
    parser.close()
    return parser.found


HOSTILE_HTML = [
    '<script>alert(1)</script>',
    '<img src=x onerror="alert(1)">',
    '<img src="http://tracker.example/p.png">',
    '<a href="javascript:alert(1)">click</a>',
    '<a href=" JaVaScRiPt:alert(1)">click</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<iframe src="https://example.org"></iframe>',
    '<form action="https://example.org"><input name="p"><button>go</button></form>',
    '<div style="background-image: url(https://example.org/x.png)">x</div>',
    '<style>body { background: url(https://example.org/x) }</style>',
    '<svg onload="alert(1)"><circle r="1"/></svg>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '<body onload="alert(1)">', '<details open ontoggle="alert(1)">x</details>',
    '<meta http-equiv="refresh" content="0;url=https://example.org">',
    '<<script>script>alert(1)<</script>/script>',
]


@pytest.mark.parametrize("fragment", HOSTILE_HTML)
def test_safe_html_leaves_nothing_active(fragment: str) -> None:
    cleaned = safe_html(fragment)
    assert active(cleaned) == [], cleaned
    assert "tracker.example" not in cleaned and "example.org/x" not in cleaned


def test_safe_html_keeps_ordinary_markup() -> None:
    page = ('<h2 id="t">Title</h2><p>Some <em>text</em>, <code>a&lt;b</code> and a '
            '<a href="https://example.org/doc">link</a>.</p><ul><li>one</li></ul>'
            '<table><tr><td>1</td></tr></table><img src="data:image/png;base64,iVBORw0K" alt="p">')
    cleaned = safe_html(page)
    for kept in ('<h2 id="user-content-t">Title</h2>', "<em>text</em>", "<code>a&lt;b</code>",
                 'href="https://example.org/doc"', "<li>one</li>", "<td>1</td>",
                 'src="data:image/png;base64,iVBORw0K"'):
        assert kept in cleaned, cleaned


def test_markdown_with_html_is_shown_as_text() -> None:
    honest = "# Results\n\nThe gap is *small*: `a < b`, see [docs](https://example.org).\n\n> ok"
    assert sanitize_markdown(honest) == honest
    hostile = "Nice!\n<script>alert(1)</script>\n<img src=x onerror=alert(2)>"
    shown = sanitize_markdown(hostile)
    assert hostile in shown and shown.startswith("*(This cell contained HTML")
    from nbconvert.filters import markdown2html
    assert active(markdown2html(shown)) == []
    assert sanitize_markdown("[x](javascript:alert(1))") != "[x](javascript:alert(1))"
    fenced = sanitize_markdown("````\n<script>x</script>\n````")
    assert active(markdown2html(fenced)) == []


def test_markdown_shows_control_characters_escaped() -> None:
    """A written answer's terminal escapes, bell and bidirectional overrides are shown as their
    escapes; line breaks, tabs, joiners and any script stay as they are."""
    assert sanitize_markdown("a\x1b[2Jb\x07 \u202eexe.txt\u2066 c\u2028d") == \
        "a\\x1b[2Jb\\x07 \\u202eexe.txt\\u2066 c\\u2028d"
    honest = "José 漢字 हिन्दी 👩\u200d💻 co\u00adop\n\tline\r\n"
    assert sanitize_markdown(honest) == honest


def test_markdown_text_renders_literally() -> None:
    from nbconvert.filters import markdown2html

    text = "file <b>x</b>.ipynb *not* [a](javascript:b) $x$ \n# h"
    rendered = markdown2html(markdown_text(text))
    assert active(rendered) == []
    assert "<b>" not in rendered and "<em>" not in rendered and "<a" not in rendered
    assert "<h1" not in rendered


# --------------------------------------------------------------------------- end to end

MARKUP = ("My notes <script>document.title='owned'</script>\n\n"
          "<img src=x onerror=\"alert('owned')\"> and [click](javascript:alert(1))")
# A written answer (graded by hand) is the student's own markdown: shown as text, never obeyed,
# in the feedback page and in what the hand grading produces (grades, exports, report).
WRITTEN_HOSTILE = ("Written answer <script>document.title='owned'</script>\x1b]0;owned\x07"
                   "\x1b[2J =HYPERLINK(\"http://evil.example\",\"x\") abc\u202eexe.txt "
                   "<img src=x onerror=\"alert('owned')\"> [click](javascript:alert(1))")
SURROGATE_PRINT = 'print("lone \\udcff surrogate \\x1b[2J cleared")'
JAIL_FORGERY = ('import os\nos.write(2, b"JAIL-WARNING \\x1b]0;owned\\x07\\x1b[31mforged\\n")')
# Folder names a student (or an LMS export) can produce; none is a valid student id.
BAD_FOLDERS = {
    "newline": "evil\nctl_honest             12 \u2215 14    1.0s  forged",  # no "/" in a name
    "escape": "\x1b[2J\x1b[31mred\x1b[0m",
    "bytes": os.fsdecode(b"bad\xff\xfename"),
    "formula": "=HYPERLINK(\"evil.example\",\"x\")",
    "bidi": "abc\u202eexe.txt",
}


def _notebook(markdown: str | None = None, extra: tuple[tuple[str, str], ...] = ()
              ) -> nbformat.NotebookNode:
    from autograder.demo.attacks import CORRECT, Attack, build

    nb = build(Attack(0, "", 12.0, None, CORRECT, extra))
    if markdown is not None:
        nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    return nb


def write_hostile(folder: Path) -> dict[str, str]:
    """The hostile class: student -> what it is. File names at the byte level."""
    def place(student: str, name: str = f"{ASSIGNMENT}.ipynb") -> Path:
        target = folder / student / ASSIGNMENT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    nbformat.write(_notebook(), place("ctl_honest"))
    hostile = _notebook(MARKUP, (("setup", SURROGATE_PRINT), ("setup", JAIL_FORGERY)))
    written = [c for c in hostile.cells
               if c.metadata.get("nbgrader", {}).get("grade_id") == "written_answer"]
    assert len(written) == 1
    written[0].source = WRITTEN_HOSTILE
    # Saved under a name that is not UTF-8 and holds an escape sequence: graded anyway.
    nbformat.write(hostile, place("mal_markup", os.fsdecode(b"\xff\x1b[31mwork.ipynb")))
    nbformat.write(_notebook(), place("gus_grader"))
    for name in BAD_FOLDERS.values():
        place(name, "x.txt").write_text("nothing", "utf-8")
    return {"ctl_honest": "control", "mal_markup": "hostile markup and messages",
            "gus_grader": "grader fails on it", **{v: k for k, v in BAD_FOLDERS.items()}}


@dataclass
class Runs:
    out: Path
    exit_status: int
    stderr: str
    first: dict[str, Any]  # grades.csv rows of the first run by student id (as written)
    report: str
    gradebook_had_gus: bool
    cached_gus: bool
    control_cache: tuple[str, str]  # ctl_honest's cached result after the first and second run
    second: dict[str, grading.StudentResult]
    report_again: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Grade the hostile class with the command (the grader made to fail on gus_grader: its
    output folder is a file), then again with that fixed: the rerun grades only gus_grader."""
    from nbgrader.api import Gradebook, MissingEntry

    base = tmp_path_factory.mktemp("escaping").resolve()
    write_hostile(base / "submissions")
    out = base / "course"
    out.mkdir()
    (out / grading.MARKER).write_text("test\n")
    (out / "autograded").mkdir()
    blocker = out / "autograded" / "gus_grader"
    blocker.write_text("not a folder: writing the autograded notebook fails")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = grading.main([ASSIGNMENT, str(base / "submissions"), "--out", str(out),
                               "--jobs", "2", "--cell-timeout", str(LIMITS["cell_seconds"]),
                               "--call-timeout", str(LIMITS["call_seconds"]),
                               "--submission-timeout", str(LIMITS["submission_seconds"]),
                               "--memory-mb", str(LIMITS["memory_bytes"] >> 20)])
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        first = {row["student_id"]: row for row in csv.DictReader(fh)}
    report = (out / "report.txt").read_text("utf-8")
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        try:
            gb.find_submission(ASSIGNMENT, "gus_grader")
            had_gus = True
        except MissingEntry:
            had_gus = False
    cached_gus = (out / "results" / ASSIGNMENT / "gus_grader.json").exists()
    control = out / "results" / ASSIGNMENT / "ctl_honest.json"
    control_first = control.read_text("utf-8")
    blocker.unlink()
    second = grading.grade(ASSIGNMENT, base / "submissions", out, quiet=True, jobs=2,
                           limits=LIMITS)
    return Runs(out, status, err.getvalue(), first, report, had_gus, cached_gus,
                (control_first, control.read_text("utf-8")),
                {r.student: r for r in second}, (out / "report.txt").read_text("utf-8"))


@pytest.mark.slow
def test_the_run_completes_with_every_row(runs: Runs) -> None:
    """Nothing a submission's names or messages hold stops the run: every student has a row in
    grades.csv and in the report, written escaped, and the rerun completes too."""
    students = set(runs.second)
    assert students == {"ctl_honest", "mal_markup", "gus_grader", *BAD_FOLDERS.values()}
    assert set(runs.first) == {csv_cell(s) for s in students}
    for report in (runs.report, runs.report_again):
        starts = [line.split(" ")[0] for line in report.splitlines()]
        for student in students:
            assert sum(s == terminal_text(student).split(" ")[0] for s in starts) == 1, student
        assert not raw_controls(report), raw_controls(report)
    assert runs.second["ctl_honest"].score == 12.0
    assert runs.second["mal_markup"].score == 12.0, runs.second["mal_markup"].problems


@pytest.mark.slow
def test_names_and_messages_are_shown_escaped(runs: Runs) -> None:
    """The forged row is part of its own line; escape sequences, undecodable bytes and bidi
    overrides appear as their escapes; a formula-looking name is not a formula."""
    forged_line = next(line for line in runs.report.splitlines() if "forged" in line
                       and line.startswith("evil"))
    assert forged_line.startswith("evil\\nctl_honest")
    assert "\\x1b[2J\\x1b[31mred" in runs.report
    assert "bad\\udcff\\udcfename" in runs.report
    assert "abc\\u202eexe.txt" in runs.report
    assert "notebook was named \\udcff\\x1b[31mwork.ipynb; graded anyway" in runs.report
    assert runs.first["'" + BAD_FOLDERS["formula"]]["status"] == "graded"
    for row in runs.first.values():
        for value in row.values():
            assert not raw_controls(value) and "\n" not in value
            assert not value.lstrip(" ").startswith(("=", "+", "-", "@")), value


@pytest.mark.slow
def test_feedback_runs_no_student_code(runs: Runs) -> None:
    """The hostile student's feedback page has exactly the honest control's active parts (the
    page template's own scripts): no script, handler or javascript: URL of the student's."""
    def page(student: str) -> str:
        return (runs.out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
                ).read_text("utf-8")

    honest, hostile = page("ctl_honest"), page("mal_markup")
    assert "owned" not in "".join(map(str, active(honest)))
    assert sorted(active(hostile)) == sorted(active(honest))
    assert "My notes" in hostile  # shown, as text
    # The sandbox may already replace the surrogate (U+FFFD); either way the page was written.
    assert "lone \\udcff surrogate" in hostile or "lone \ufffd surrogate" in hostile
    autograded = runs.out / "autograded" / "mal_markup" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert autograded.is_file()


@pytest.mark.slow
def test_a_grader_error_is_not_a_score(runs: Runs) -> None:
    """The submission the grader failed on is "not graded": no gradebook entry, no cached
    result, "not graded" in grades.csv and the report, a non-zero exit that says a rerun
    retries it; the rerun grades it (and only it)."""
    assert runs.exit_status == grading.EXIT_NOT_GRADED
    assert "1 submission(s) not graded because of a grader error" in runs.stderr
    assert "Rerun the same command to retry only those" in runs.stderr
    row = runs.first["gus_grader"]
    assert (row["status"], row["score"]) == ("not graded", "")
    assert "not graded (grader error: " in row["problems"]
    line = next(line for line in runs.report.splitlines() if line.startswith("gus_grader"))
    assert "not graded" in line and "grader error" in line
    assert "Not graded because of a grader error (1;" in runs.report
    assert not runs.gradebook_had_gus and not runs.cached_gus
    assert runs.first["ctl_honest"]["status"] == "graded"
    gus = runs.second["gus_grader"]
    assert gus.grader_error is None and gus.score == 12.0, gus.problems
    assert runs.control_cache[0] == runs.control_cache[1], "the rerun regraded a graded one"
    assert "grader error" not in runs.report_again


@pytest.mark.slow
def test_a_hostile_written_answer_is_shown_and_graded_as_text(runs: Runs,
                                                              tmp_path: Path) -> None:
    """The hostile written answer waits for its hand grader like any other; its feedback page
    shows it as text (no script, handler or javascript: URL of the student's, no raw control
    character); once graded through nbgrader's Gradebook, grades.csv, the report and every
    export stay free of raw controls and formulas."""
    import json
    import shutil

    from nbgrader.api import Gradebook

    from autograder.engine import export

    row = runs.first["mal_markup"]
    assert (row["needs_manual_grade"], row["total"], row["written_answer"]) == ("1", "pending", "")
    page = (runs.out / "feedback" / "mal_markup" / ASSIGNMENT / f"{ASSIGNMENT}.html"
            ).read_text("utf-8")
    assert "Written answer" in page
    assert not any("owned" in str(part) or "javascript" in str(part) for part in active(page))
    assert not [ch for ch in page if unicodedata.category(ch) in UNSAFE - {"Cc"}
                or (unicodedata.category(ch) == "Cc" and ch not in "\n\t\r")]
    course = tmp_path / "course"
    shutil.copytree(runs.out, course)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grade = gb.find_grade("written_answer", ASSIGNMENT, ASSIGNMENT, "mal_markup")
        grade.manual_score, grade.needs_manual_grade = 1.0, False
        gb.db.commit()
    export.merge(course)
    with (course / "grades.csv").open(newline="", encoding="utf-8") as fh:
        graded = {r["student_id"]: r for r in csv.DictReader(fh)}
    assert (graded["mal_markup"]["manual_score"], graded["mal_markup"]["total"]) == ("1.0",
                                                                                   "13.0")
    texts = [(course / "report.txt").read_text("utf-8")]
    texts += [(course / "exports" / f"{fmt}.csv").read_text("utf-8") for fmt in export.FORMATS]
    results = course / "exports" / "gradescope" / ASSIGNMENT / "mal_markup" / "results.json"
    texts.append(results.read_text("utf-8"))
    assert "Graded by hand." in json.dumps(json.loads(texts[-1]))
    for text in texts:
        assert not raw_controls(text.replace("\r", "")), raw_controls(text)
        assert "owned" not in text and "HYPERLINK(\"http://evil" not in text
    for row in graded.values():
        assert all(not str(v).lstrip(" ").startswith(("=", "+", "-", "@")) for v in row.values())


# --------------------------------------------------------------------------- the refusal

@dataclass
class FakeSelfTest:
    measured: dict[str, str]

    def lost(self, allowed: tuple[str, ...]) -> list[str]:
        return [k for k, v in self.measured.items()
                if v.startswith("NOT ENFORCED") and k not in allowed]


@pytest.fixture
def memory_lost(monkeypatch: pytest.MonkeyPatch) -> FakeSelfTest:
    """The sandbox's self-test reports the memory limit lost."""
    from autograder.engine import sandbox

    fake = FakeSelfTest({"namespaces": "network, mount and PID namespaces (measured)",
                         "memory": "NOT ENFORCED: no writable memory cgroup (test)"})
    monkeypatch.setattr(sandbox, "self_test", lambda limits: fake, raising=False)
    monkeypatch.setattr(sandbox, "PROTECTIONS", tuple(fake.measured), raising=False)
    return fake


def _class_without_notebooks(folder: Path) -> Path:
    """Two students whose submissions need no sandbox (no notebook): a run without workers."""
    for student in ("ann", "ben"):
        (folder / student / ASSIGNMENT).mkdir(parents=True)
        (folder / student / ASSIGNMENT / "notes.txt").write_text("no notebook", "utf-8")
    return folder


def test_a_lost_protection_refuses_and_records_nothing(
        tmp_path: Path, memory_lost: FakeSelfTest, capsys: pytest.CaptureFixture[str]) -> None:
    subs = _class_without_notebooks(tmp_path / "subs")
    out = tmp_path / "course"

    status = grading.main([ASSIGNMENT, str(subs), "--out", str(out)])

    err = capsys.readouterr().err
    assert status == grading.EXIT_REFUSED
    assert "refusing to grade" in err and "memory: NOT ENFORCED: no writable memory cgroup" in err
    assert "--allow-weaker-sandbox memory" in err and "Nothing was graded or recorded" in err
    assert not out.exists()
    with pytest.raises(grading.SandboxRefusedError, match="memory"):
        grading.grade(ASSIGNMENT, subs, out, quiet=True, allow_weaker="namespaces")
    assert not out.exists()


def test_an_accepted_weaker_sandbox_is_said_on_every_line(
        tmp_path: Path, memory_lost: FakeSelfTest, capsys: pytest.CaptureFixture[str]) -> None:
    subs = _class_without_notebooks(tmp_path / "subs")
    out = tmp_path / "course"

    status = grading.main([ASSIGNMENT, str(subs), "--out", str(out),
                           "--allow-weaker-sandbox", "memory"])

    assert status == 0
    assert "WARNING: sandbox protection memory" in capsys.readouterr().err
    report = (out / "report.txt").read_text("utf-8")
    lines = report.splitlines()
    assert lines[1:4] == ["Sandbox (measured by its self-test):",
                          "  namespaces: network, mount and PID namespaces (measured)",
                          "  memory: NOT ENFORCED: no writable memory cgroup (test)"]
    assert lines[4].startswith("WARNING: graded with a weaker sandbox: memory NOT ENFORCED")
    rows = [line for line in lines if line.startswith(("ann", "ben"))]
    assert len(rows) == 2
    assert all("[sandbox: memory not enforced]" in row for row in rows)
    results = grading.grade(ASSIGNMENT, subs, out, quiet=True, allow_weaker="all")
    assert [r.student for r in results] == ["ann", "ben"]


def test_an_unknown_protection_is_a_usage_error(tmp_path: Path, memory_lost: FakeSelfTest
                                                ) -> None:
    subs = _class_without_notebooks(tmp_path / "subs")
    with pytest.raises(SystemExit) as exit_info:
        grading.main([ASSIGNMENT, str(subs), "--out", str(tmp_path / "c"),
                      "--allow-weaker-sandbox", "memroy"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "c").exists()


def test_a_cached_grader_failure_is_graded_again(tmp_path: Path) -> None:
    """A result an earlier version cached for a worker that raised (a 0 with a crash flag) is
    not kept on a rerun; an ordinary cached result is."""
    import json
    from dataclasses import asdict

    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}", "utf-8")
    task = grading.Task(ASSIGNMENT, "ann", notebook, grading._digest(notebook))
    path = grading._result_path(tmp_path, ASSIGNMENT, "ann")
    path.parent.mkdir(parents=True)
    for problems, kept in ((["grading failed: BrokenProcessPool"], False), ([], True)):
        result = grading.StudentResult("ann", ASSIGNMENT, problems=problems, digest=task.digest)
        path.write_text(json.dumps(asdict(result)), "utf-8")
        assert (grading._cached(tmp_path, task) is not None) == kept


def test_student_classes_cannot_borrow_the_pages_css() -> None:
    """Only the classes nbconvert's renderer writes survive: a student's own could draw, with
    the page's CSS, a fixed banner over the real feedback."""
    from autograder.engine.untrusted import safe_html

    cleaned = safe_html('<div class="navbar-fixed-top modal">FAKE: 100/100</div>'
                        '<span class="k">def</span>')
    assert "navbar" not in cleaned and "modal" not in cleaned
    assert '<span class="k">' in cleaned


def test_feedback_pages_load_no_script_and_nothing_remote() -> None:
    """The feedback page has no script (MathJax's TeX extensions could restyle a student's
    inert text) and no remote address: formulas show as TeX."""
    from autograder.engine.grade import _html

    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "id": "a",
         "source": "$\\style{cursor:url(https://example.invalid/c.png),auto}{x}$"}]}
    page = _html(nb)
    assert "<script" not in page.lower()
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page, re.IGNORECASE)


PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
       "RU5ErkJggg==")


def _rich_notebook() -> dict[str, Any]:
    """Markdown (an image, a table, code, a link), code with text, error, image, HTML and
    markdown outputs: what a feedback page shows."""
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "language_info": {"name": "python", "pygments_lexer": "ipython3"}}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "id": "m",
         "source": f"# Title\n\n*a* **b** `c` [l](#x)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
                   f"![a plot](data:image/png;base64,{PNG})\n"},
        {"cell_type": "code", "metadata": {}, "id": "c", "execution_count": 1,
         "source": "def f(x):\n    return x < 2 and 'a' or \"b\"  # <tag> & more\nf(1)",
         "outputs": [
             {"output_type": "stream", "name": "stdout", "text": "1 < 2 & 3 > 2\n"},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "image/png": PNG, "text/plain": "<Figure>"}},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "text/html": f'<p title="a>b alt=">x</p><img src="data:image/png;base64,{PNG}">'
                              f'<img ALT=\'kept\' src="data:image/png;base64,{PNG}">'}},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "text/markdown": "**bold** and <i>i</i>"}},
             {"output_type": "error", "ename": "ValueError", "evalue": "bad <p>",
              "traceback": ["\x1b[0;31mValueError\x1b[0m: bad <p>"]}]}]}


def _written_alike(page: str) -> list[tuple[Any, ...]]:
    """The page's elements, attributes and text (``_shape``), with class lists spaced alike
    (BeautifulSoup writes a class list out again with single spaces)."""
    from autograder.engine.untrusted import _shape

    return [(e[0], e[1], tuple((k, " ".join(v.split()) if k == "class" else v) for k, v in e[2]))
            if e[0] == "start" else e for e in _shape(page)]


def test_feedback_pages_are_nbconverts_pages_with_alt_text() -> None:
    """The feedback exporter (no BeautifulSoup pass over the page) gives the same elements,
    attributes and text as nbconvert's HTMLExporter with the same template and filters, and the
    same alt text on every image: it differs only in how the page is written out."""
    from nbconvert import HTMLExporter

    from autograder.engine.untrusted import _shape

    theirs, ours = (grading.feedback_exporter(kind).from_notebook_node(
        nbformat.from_dict(_rich_notebook()))[0] for kind in (HTMLExporter, None))
    assert _written_alike(ours) == _written_alike(theirs)
    images = [e for e in _shape(ours) if e[:2] == ("start", "img")]
    assert len(images) == 4 and all(any(k == "alt" for k, _ in e[2]) for e in images)
    assert "kept" in {v for e in images for k, v in e[2] if k == "alt"}
    assert grading._html(_rich_notebook()) == ours


@pytest.mark.parametrize(("page", "expected"), [
    ('<img src="a.png">', f'<img alt="{feedback.NO_ALT}" src="a.png">'),
    ("<IMG src='a.png' >", f"<img alt=\"{feedback.NO_ALT}\" src='a.png' >"),
    ('<img src="a.png" alt="">', '<img src="a.png" alt="">'),
    ("<img ALT='x' src=a.png>", "<img ALT='x' src=a.png>"),
    ('<img title="alt=no > yes" src="a.png">',
     f'<img alt="{feedback.NO_ALT}" title="alt=no > yes" src="a.png">'),
    ("&lt;img src=x&gt; <image> <imgx>", "&lt;img src=x&gt; <image> <imgx>"),
])
def test_alt_text_is_added_only_where_missing(page: str, expected: str) -> None:
    assert feedback.with_alt_text(page) == expected


def test_a_memo_is_bounded_by_weight_and_keeps_the_recent() -> None:
    from autograder.engine.untrusted import Memo

    made: list[str] = []
    memo = Memo(budget=10, largest=6)

    def make(value: str) -> Any:
        return lambda: made.append(value) or value

    assert memo.get("a", make("aaaa"), 0) == "aaaa"
    assert memo.get("a", make("other"), 0) == "aaaa" and made == ["aaaa"]  # kept
    assert memo.get("b", make("bbbb"), 0) == "bbbb"
    memo.get("a", make("x"), 0)  # a is now the most recent
    memo.get("c", make("cccc"), 0)  # 12 > 10: the least recent (b) goes
    assert set(memo.found) == {"a", "c"} and memo.weight == 8
    assert memo.get("big", make("1234567"), 0) == "1234567" and "big" not in memo.found
    assert memo.get("heavy", make("1"), 6) == "1" and "heavy" not in memo.found


def test_feedback_pages_rendered_again_or_after_others_are_the_same() -> None:
    """The exporter renders each cell's text once per worker: a page rendered after other
    pages (the same cells, other cells, the same text in other metadata) is the page a fresh
    exporter renders, and sanitising a markdown cell again gives what it gave."""
    from autograder.engine import untrusted

    exporter = grading.feedback_exporter

    def page(made: Any, nb: dict[str, Any]) -> str:
        return made.from_notebook_node(nbformat.from_dict(nb))[0]

    first = _rich_notebook()
    other = _rich_notebook()
    other["cells"][0]["source"] = "# Other\n\n<b>raw</b> and *text*"
    other["cells"][1]["metadata"] = {"magics_language": "bash"}  # the same code, as bash
    other["cells"].append({**first["cells"][1], "id": "d", "source": "def g(y):\n    return y"})
    other["metadata"]["language_info"] = {"name": "python", "pygments_lexer": "python3"}
    shared = exporter()
    for nb in (first, other, first, other):
        assert page(shared, nb) == page(exporter(), nb)
    assert page(shared, first) != page(shared, other)
    for text in ("*a*", "<b>raw</b> and *text*", "x\u202ey"):
        assert untrusted.sanitize_markdown(text) == untrusted._sanitize(text)
        assert untrusted.sanitize_markdown(text) == untrusted._sanitize(text)
