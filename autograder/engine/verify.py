"""Grade one submission: its code runs in the sandbox, its tests run here, in a trusted process.

:func:`grade_submission` reads the student's notebook as plain JSON (nothing in it runs here),
compares the locked cells with the released ones (edits are flagged), runs the setup cells and
the student's code cells in a sandbox (``sandbox.py``), then runs every test cell *from the
instructor's source notebook* (hidden tests included) in this process, with the student's names
bound to proxies (``remote.py``). A test cell scores its points when it runs without an error.
Hidden-test source never enters the sandbox; the feedback notebook shows only the released
(visible) part of each test cell and each failure's message. The course's own experiment cells
(unchanged) are not run; the autograded notebook, and so formgrader and the feedback, shows the
outputs the student's notebook saved for them, marked as not re-run and reduced to inert text
and PNG images (:func:`saved_outputs`), so that a hand grader can check the numbers a written
answer quotes.
"""

from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import io
import json
import re
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.engine import untrusted
from autograder.engine.feedback import HIDDEN_NOTE
from autograder.engine.sandbox import Limits, Sandbox, SandboxGone, prepare_workdir

MAX_NOTEBOOK_BYTES = 64 << 20
TEST_OUTPUT_LIMIT = 64 * 1024
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)
FLAG_WORDS = ("malformed", "tampering", "timeout", "memory", "crash", "output", "processes")
#: The phases of :attr:`Outcome.phases`: ``start`` (the work folder, the sandbox's start and the
#: course's setup cells: everything before the first student cell), ``student`` (the student's
#: cells, and the list of their names that follows), ``tests`` (the test cells here, and the
#: integrity checks after them), ``stop`` (stopping the sandbox). A restart adds to each.
PHASES = ("start", "student", "tests", "stop")

SUSPICIOUS = [
    (r"get_ipython|IPython|input_transformers|ast_transformers",
     "reaches into the notebook kernel"),
    (r"sys\s*\.\s*(excepthook|displayhook|settrace|setprofile|modules)|__builtins__|"
     r"\bbuiltins\b|__import__", "changes the interpreter"),
    (r"\bchecks\s*\.[\w.]*\s*=[^=]|setattr\s*\(\s*checks|(np|numpy|torch)\s*\.\s*testing\s*\."
     r"[\w.]*\s*=[^=]|\bautograder\b|\bdropout_course\s*\.\s*checks\b",
     "redefines the course's checks or assertion helpers"),
    (r"solutions|gradebook|autograded|nbgrader|\.ipynb|/root\b|\bsource/",
     "reads course or grading files"),
    (r"os\s*\.\s*(_exit|fork|system|kill|popen|exec\w*|spawn\w*|setsid)|\bsubprocess\b|"
     r"\bmultiprocessing\b|\bctypes\b|\bsignal\s*\.", "starts processes or ends the interpreter"),
    (r"def\s+__(eq|ne|bool|torch_function|array_ufunc|array_function|instancecheck|len|float)__",
     "defines objects that can lie in comparisons"),
    (r"\bsocket\b|urllib|\brequests\b|http\.client", "uses the network"),
]


@dataclass
class Outcome:
    """Everything grading one submission produced (plain data, sent back to the parent)."""

    student: str
    scores: dict[str, float | None] = field(default_factory=dict)
    points: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    flags: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    autograded: dict[str, Any] | None = None
    grader_error: str | None = None  # set: the grader failed, so this is no score ("not graded")
    phases: dict[str, float] = field(default_factory=dict)
    """Where the seconds went (:data:`PHASES`), summed over the sandbox's restarts."""
    memory: dict[str, int] = field(default_factory=dict)
    """Peak memory in bytes: ``sandbox_peak`` (the sandbox's memory cgroup, the highest of its
    restarts; absent without a memory cgroup); the worker adds ``worker_peak``."""

    def flag(self, word: str, reason: str) -> None:
        reasons = self.flags.setdefault(word, [])
        if reason not in reasons:
            reasons.append(reason)


@dataclass
class Plan:
    """The instructor's notebooks for one assignment, classified cell by cell."""

    source: dict[str, Any]
    release: dict[str, Any]
    answers: dict[str, list[str]] = field(default_factory=dict)  # grade_id -> names it defines
    tests: list[tuple[str, float, str]] = field(default_factory=list)  # (grade_id, points, code)
    manual: dict[str, tuple[float, str]] = field(default_factory=dict)  # grade_id -> (points, stub)
    setup: list[tuple[str, str]] = field(default_factory=list)  # (grade_id, code)
    locked: dict[str, str] = field(default_factory=dict)  # grade_id -> released source
    graded_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, source_path: Path, release_path: Path) -> Plan:
        plan = cls(json.loads(source_path.read_text("utf-8")),
                   json.loads(release_path.read_text("utf-8")))
        released = {_gid(c): c for c in plan.release["cells"] if _gid(c)}
        for cell in plan.source["cells"]:
            meta, gid = _meta(cell), _gid(cell)
            text = _text(cell)
            if gid:
                plan.graded_meta[gid] = {k: meta.get(k) for k in ("grade", "solution", "points")}
            if cell["cell_type"] == "code" and meta.get("solution") and not meta.get("grade"):
                plan.answers[gid] = _defined_names(text)
            elif meta.get("grade") and not meta.get("solution"):
                plan.tests.append((gid, float(meta.get("points", 0)), text))
            elif meta.get("grade") and meta.get("solution"):
                plan.manual[gid] = (float(meta.get("points", 0)), _text(released.get(gid, cell)))
            elif cell["cell_type"] == "code" and meta.get("locked"):
                plan.setup.append((gid, _text(released.get(gid, cell))))
            elif cell["cell_type"] == "code" and not gid:
                plan.experiments.add(text.strip())
            if meta.get("locked") and gid in released:
                plan.locked[gid] = _text(released[gid])
        return plan

    def names(self) -> list[str]:
        return sorted({n for names in self.answers.values() for n in names})


def _meta(cell: dict[str, Any]) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
    return meta if isinstance(meta, dict) else {}


def _gid(cell: dict[str, Any]) -> str:
    gid = _meta(cell).get("grade_id", "")
    return gid if isinstance(gid, str) else ""


def _text(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _defined_names(code: str) -> list[str]:
    """The names an answer cell defines at top level: its functions and classes, and the
    variables it assigns (a numeric answer such as ``answer_unit_variance = 1 / 3``, which comes
    back from the sandbox as plain data)."""
    names: list[str] = []
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


# --------------------------------------------------------------------------- reading the notebook

def read_notebook(path: Path, outcome: Outcome) -> list[dict[str, Any]] | None:
    """The submission's cells as plain dicts, or None (with the problem recorded)."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"the file is {size >> 20} MiB (limit {MAX_NOTEBOOK_BYTES >> 20} MiB)")
        text = path.read_bytes().decode("utf-8")
        nb = json.loads(text)
        cells = nb["cells"] if isinstance(nb, dict) else None
        if not isinstance(cells, list) or not all(
                isinstance(c, dict) and c.get("cell_type") in ("code", "markdown", "raw")
                and isinstance(c.get("source", ""), (str, list)) for c in cells):
            raise ValueError("it has no list of notebook cells")
    except UnicodeDecodeError as err:
        return _malformed(outcome, f"the file is not UTF-8 text ({err.reason} at byte {err.start})")
    except json.JSONDecodeError as err:
        return _malformed(outcome, f"the file is not valid notebook JSON ({err.msg}, "
                                   f"line {err.lineno})")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return _malformed(outcome, f"not a notebook: {err}")
    kernel = nb.get("metadata", {}).get("kernelspec", {}) if isinstance(nb.get("metadata"), dict) \
        else {}
    name = kernel.get("name") if isinstance(kernel, dict) else None
    if name not in (None, "python3"):
        outcome.problems.append(f"kernel {str(name)[:40]!r} ignored: graded with Python 3")
    return cells


def _malformed(outcome: Outcome, reason: str) -> None:
    outcome.problems.append(f"malformed notebook: {reason}; not graded")
    outcome.flag("malformed", reason)


def check_cells(cells: list[dict[str, Any]], plan: Plan, outcome: Outcome) -> None:
    """Flag edits to locked cells and to grading metadata; note deleted test cells."""
    seen: dict[str, int] = {}
    for cell in cells:
        gid = _gid(cell)
        if not gid:
            continue
        seen[gid] = seen.get(gid, 0) + 1
        if gid in plan.locked and _text(cell).strip() != plan.locked[gid].strip():
            outcome.flag("tampering", f"edited the read-only cell {gid}")
        if gid in plan.graded_meta:
            meta = _meta(cell)
            if any(meta.get(k) != v for k, v in plan.graded_meta[gid].items()
                   if not (k == "points" and v is None)):
                outcome.flag("tampering", f"changed the grading metadata of {gid}")
        elif _meta(cell).get("grade"):
            outcome.flag("tampering", f"added a graded cell {gid!r} of its own")
    for gid, count in seen.items():
        if count > 1:
            outcome.flag("tampering", f"has {count} cells with the id {gid}")
    missing = [gid for gid, _, _ in plan.tests if gid not in seen]
    if missing:
        outcome.problems.append(f"test cells deleted (restored for grading): {', '.join(missing)}")
    gone = [gid for gid in plan.answers if gid not in seen]
    if gone:
        outcome.problems.append(f"answer cells deleted: {', '.join(gone)}")


def scan_code(code: str, outcome: Outcome) -> None:
    """Flag code that tries to interfere with grading (a hint for the instructor)."""
    for pattern, why in SUSPICIOUS:
        match = re.search(pattern, code)
        if match:
            outcome.flag("tampering", f"suspicious code ({why}): {match.group(0)[:60]!r}")


# --------------------------------------------------------------------------- the sandbox run

@dataclass
class Program:
    """The cells the sandbox runs, in order: (index in the notebook or -1, name, code)."""

    cells: list[tuple[int, str, str]]
    skipped: set[int] = field(default_factory=set)


def sandbox_program(cells: list[dict[str, Any]], plan: Plan) -> Program:
    setup_ids = {gid for gid, _ in plan.setup}
    test_ids = {gid for gid, _, _ in plan.tests}
    program = [(-1, f"<cell setup {gid}>", code) for gid, code in plan.setup]
    for index, cell in enumerate(cells):
        gid, code = _gid(cell), _text(cell)
        if cell.get("cell_type") != "code" or gid in setup_ids or gid in test_ids:
            continue
        if not gid and code.strip() in plan.experiments:
            continue  # the course's own experiment cell, unchanged: not graded, not run
        program.append((index, f"<cell {index + 1}>", code))
    return Program(program)


class Run:
    """One submission's sandbox, restarted (cells re-run) after a fatal failure if time allows."""

    def __init__(self, program: Program, plan: Plan, limits: Limits, slot: int, scratch: Path,
                 outcome: Outcome) -> None:
        self.program, self.plan, self.limits = program, plan, limits
        self.slot, self.scratch, self.outcome = slot, scratch, outcome
        self.outputs: dict[int, dict[str, Any]] = {}
        self.restarts = 0
        self.deadline = time.monotonic() + limits.submission_seconds
        self.session: Any = None
        self.sandbox: Sandbox | None = None
        self.printed = 0  # characters of cell output kept so far, over every (re)start
        self.builtins: tuple[int, int] | None = None  # (address, version) before student code
        self._first_student: float | None = None  # when this start's first student cell began

    def start(self) -> dict[str, Any]:
        """Start the sandbox, run the cells, and return the names to bind (proxies)."""
        began = time.perf_counter()
        self._first_student = None
        try:
            return self._start()
        finally:
            now = time.perf_counter()
            split = now if self._first_student is None else self._first_student
            self.spent("start", split - began)
            self.spent("student", now - split)

    def spent(self, phase: str, seconds: float) -> None:
        """Add ``seconds`` to the outcome's ``phase``."""
        phases = self.outcome.phases
        phases[phase] = phases.get(phase, 0.0) + max(0.0, seconds)

    def _start(self) -> dict[str, Any]:
        from autograder.engine.remote import Session

        workdir = prepare_workdir(self.scratch)
        self.sandbox = Sandbox(workdir, self.limits, self.slot)
        self.sandbox.deadline = self.deadline
        self.sandbox.start()
        self.session = Session(self.sandbox)
        for index, name, code in self.program.cells:
            if index in self.program.skipped:
                continue
            if index >= 0 and self._first_student is None:
                self._first_student = time.perf_counter()
            try:
                reply, _ = self.sandbox.request({"op": "cell", "source": code, "name": name},
                                                timeout=self.limits.cell_seconds)
            except SandboxGone as gone:
                if gone.reason == "grader":
                    raise  # the sandbox could not be built: nothing the cell did
                self.program.skipped.add(index)
                self.outputs[index] = {"gone": gone.detail}
                self.record_gone(gone, name.strip("<>"))
                raise
            reply = self.cap_output(reply, name.strip("<>"))
            if index >= 0:
                self.outputs[index] = reply
            else:
                self.builtins = self.watch_builtins(reply)
            self.note_integrity(reply, name.strip("<>"))
            self.check_builtins(name.strip("<>"))
        return self.bind()

    def watch_builtins(self, reply: dict[str, Any]) -> tuple[int, int] | None:
        """(address, version) of the sandbox's builtins dict, read after a setup cell, before
        any student code ran in this sandbox (so the address the runner gives is its own)."""
        address = reply.get("builtins_at")
        pid = getattr(self.sandbox, "runner_pid", None)
        if type(address) is not int or not isinstance(pid, int):
            return None
        version = builtins_version(pid, address)
        return None if version is None else (address, version)

    def check_builtins(self, where: str) -> None:
        """Flag a change to the sandbox's builtins module, seen from outside the sandbox: CPython
        gives every dict a version number that moves on each change to it (PEP 509), and the
        grader reads the builtins dict's number in the runner's memory itself, where no code in
        the sandbox can forge the answer."""
        pid = getattr(self.sandbox, "runner_pid", None)
        if self.builtins is None or not isinstance(pid, int):
            return
        address, version = self.builtins
        now = builtins_version(pid, address)
        if now is not None and now != version:
            self.outcome.flag("tampering", f"{where}: changed the builtins module (seen from "
                              "outside the sandbox, in its process's memory)")
            self.builtins = (address, now)

    def cap_output(self, reply: dict[str, Any], where: str) -> dict[str, Any]:
        """Keep a cell's output only while the whole submission's output stays within
        ``limits.output_bytes``; the rest is cut and flagged (each cell is also capped inside
        the sandbox, but a notebook of many cells could still print without bound)."""
        if reply.get("cut"):
            self.outcome.flag("output", f"{where} printed too much (cut)")
        kept = dict(reply)
        for stream in ("stdout", "stderr"):
            text = reply.get(stream)
            if not isinstance(text, str) or not text:
                continue
            room = max(0, self.limits.output_bytes - self.printed)
            if len(text) > room:
                kept[stream] = text[:room] + (
                    f"\n[... output cut: the submission printed more than "
                    f"{self.limits.output_bytes >> 10} KiB in all]\n")
                self.outcome.flag("output", "the submission's cells printed more than "
                                  f"{self.limits.output_bytes >> 10} KiB in all (cut)")
            self.printed += min(len(text), room)
        return kept

    def note_integrity(self, reply: dict[str, Any], where: str) -> None:
        """What the runner found changed about the interpreter after a cell: a hint for the
        instructor (it comes from the sandbox, so it never changes a score)."""
        findings = reply.get("integrity")
        if isinstance(findings, list):
            for finding in findings[:10]:
                self.outcome.flag("tampering", f"{where}: {str(finding)[:200]}")

    def bind(self) -> dict[str, Any]:
        from autograder.engine import wire
        from autograder.engine.remote import RemoteFunction, make_class

        reply, blobs = self.sandbox.request({"op": "describe", "names": self.plan.names()})
        names: dict[str, Any] = {}
        decoder = wire.Decoder(blobs, {}, self.session._handle)
        try:
            for name, info in dict(reply["names"]).items():
                if name not in self.plan.names() or not isinstance(info, list) or not info:
                    continue
                if info[0] == "function":
                    names[name] = RemoteFunction(self.session, name)
                elif info[0] == "class":
                    names[name] = make_class(self.session, name, bool(info[1]))
                elif info[0] == "value":
                    names[name] = decoder.decode(info[1])
        except (KeyError, TypeError, ValueError, IndexError, wire.WireError) as err:
            raise self.sandbox._gone("protocol", f"unreadable list of names ({err})") from None
        return names

    def record_gone(self, gone: SandboxGone, where: str) -> None:
        word = {"protocol": "crash"}.get(gone.reason, gone.reason)
        self.outcome.flag(word, f"{where}: {gone.detail}")

    def can_restart(self) -> bool:
        return self.restarts < self.limits.restarts and time.monotonic() < self.deadline - 5

    def integrity(self) -> None:
        """Flag what the grader sees for itself (processes the submission left running, found
        from outside the sandbox), then what the sandbox says about itself (a hint only)."""
        proc = self.sandbox.proc if self.sandbox is not None else None
        if proc is None or proc.poll() is not None:
            return
        self.check_builtins("during the tests")
        live = getattr(self.sandbox, "live_processes", None)
        if live is not None:
            with contextlib.suppress(OSError):
                left = live()
                if left:
                    self.outcome.flag("processes", f"left {len(left)} process(es) running after "
                                      "its cells (seen from outside the sandbox)")
        with contextlib.suppress(SandboxGone):
            reply, _ = self.sandbox.request({"op": "integrity"}, timeout=10)
            findings = reply.get("findings", []) if isinstance(reply, dict) else []
            for finding in findings[:10] if isinstance(findings, list) else []:
                word = "processes" if "running" in str(finding) else "tampering"
                self.outcome.flag(word, f"the sandbox reports: {str(finding)[:200]}")

    def stop(self) -> None:
        if self.sandbox is not None:
            began = time.perf_counter()
            self.sandbox.stop()
            self.spent("stop", time.perf_counter() - began)
            peak = getattr(self.sandbox, "peak_memory", None)
            if isinstance(peak, int):
                memory = self.outcome.memory
                memory["sandbox_peak"] = max(peak, memory.get("sandbox_peak", 0))
            if self.sandbox.output_seen > self.limits.output_bytes:
                self.outcome.flag("output", f"wrote {self.sandbox.output_seen >> 10} KiB of "
                                  "output outside cells (cut)")
            for message in self.sandbox.jail_messages():
                self.outcome.problems.append(f"sandbox: {message}")


# --------------------------------------------------------------------------- trusted tests

# Where CPython 3.11-3.13 keep a dict's version number (PEP 509's ma_version_tag): after the
# object header (refcount, type) and ma_used. The sandbox runs this interpreter's own build.
_DICT_VERSION_OFFSET = 24
_WATCH_BUILTINS = sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (
    3, 13) and struct.calcsize("P") == 8


def builtins_version(pid: int, address: int) -> int | None:
    """The version number of the dict at ``address`` in process ``pid`` (read from
    /proc/PID/mem, which needs root or the same uid), or None where it cannot be read."""
    if not _WATCH_BUILTINS:
        return None
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address + _DICT_VERSION_OFFSET)
            data = mem.read(8)
    except (OSError, OverflowError, ValueError):
        return None
    return struct.unpack("<Q", data)[0] if len(data) == 8 else None


def trusted_namespace(plan: Plan) -> dict[str, Any]:
    """Run the released setup cells here (course code only) and return their namespace."""
    namespace: dict[str, Any] = {"__name__": "__grading__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for gid, code in plan.setup:
            exec(compile(code, f"<setup {gid}>", "exec"), namespace)
    return namespace


def failure_message(exc: BaseException) -> tuple[str, str]:
    """(error name, message) for a failed test cell; never a traceback of test code."""
    if isinstance(exc, NameError):
        return "NameError", (f"{exc}: the cell that defines it is missing, was renamed, or "
                             "failed when it ran (see its output above).")
    if isinstance(exc, SandboxGone):
        return "GradingStopped", f"your code did not finish: {exc.detail}"
    return type(exc).__name__, str(exc)[:4000]


def reset_trusted_state() -> None:
    """Put this process's global state back before each test cell: replies from the sandbox
    carry random states (so that a seed set in a check governs the student's code), and a
    previous submission, or a previous test of this one, must not leave its states behind."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)  # CPU and every CUDA device
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)


def run_tests(run: Run, plan: Plan, outcome: Outcome, names: dict[str, Any] | None
              ) -> dict[str, tuple[bool, str, str]]:
    """Run every test cell here; return grade_id -> (passed, output, error text)."""
    results: dict[str, tuple[bool, str, str]] = {}
    namespace = trusted_namespace(plan)
    alive = names is not None
    namespace.update(names or {})
    for gid, points, code in plan.tests:
        if not alive:
            if run.can_restart():
                run.restarts += 1
                alive = _restart(run, namespace)
            if outcome.grader_error is not None:
                return results
            if not alive:
                results[gid] = (False, "", "GradingStopped: not run: the submission did not finish")
                continue
        buffer = io.StringIO()
        reset_trusted_state()
        error: BaseException | None = None
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(code, f"<test {gid}>", "exec"), namespace)
        except Exception as exc:  # a failed check, or the sandbox gone (SandboxGone)
            error = exc
        # Checks wrap a student's error in their own (run_student, expect_raises): a sandbox
        # that died under a test fails it, even where a check took the error as expected.
        gone = run.sandbox.gone if run.sandbox is not None else None
        if gone is not None:
            run.record_gone(gone, f"test {gid}")
            error, alive = gone, False
        printed = _capped(buffer.getvalue())
        if error is None:
            results[gid] = (True, printed, "")
        else:
            name, message = failure_message(error)
            results[gid] = (False, printed, f"{name}: {message}")
        outcome.scores[gid] = points if results[gid][0] else 0.0
        outcome.points[gid] = points
    if run.session is not None and "memory" in run.session.errors:
        outcome.flag("memory", "the student's code ran out of memory (MemoryError)")
    return results


def _capped(text: str, limit: int = TEST_OUTPUT_LIMIT) -> str:
    """A test cell's printed output, cut at ``limit`` characters (a check may print what the
    student's code returned)."""
    return text if len(text) <= limit else text[:limit] + "\n[... output cut]\n"


def _restart(run: Run, namespace: dict[str, Any]) -> bool:
    run.stop()
    try:
        namespace.update(run.start())
        return True
    except SandboxGone as gone:
        if gone.reason == "grader":
            run.outcome.grader_error = f"the sandbox could not restart: {gone.detail}"
        return False


# --------------------------------------------------------------------------- whole submission

def grade_submission(student: str, notebook: Path, plan: Plan, limits: Limits, slot: int,
                     scratch: Path) -> Outcome:
    """Grade one student's notebook; never raises for anything the submission does."""
    started = time.monotonic()
    outcome = Outcome(student)
    cells = read_notebook(notebook, outcome)
    if cells is None:
        return _finish(outcome, started)
    check_cells(cells, plan, outcome)
    program = sandbox_program(cells, plan)
    for index, _name, code in program.cells:
        if index >= 0:
            scan_code(code, outcome)
    run = Run(program, plan, limits, slot, scratch, outcome)
    results: dict[str, tuple[bool, str, str]] = {}
    try:
        names = _first_start(run)
        if outcome.grader_error is None:
            began, before = time.perf_counter(), sum(outcome.phases.values())
            try:
                results = run_tests(run, plan, outcome, names)
                run.integrity()
            finally:  # a restart during the tests counts as start, student and stop
                run.spent("tests", time.perf_counter() - began
                          - (sum(outcome.phases.values()) - before))
    except Exception as err:  # a grader bug: no score, and it costs only this submission
        outcome.grader_error = f"grading stopped: {type(err).__name__}: {err}"[:300]
    finally:
        run.stop()
    if outcome.grader_error is not None:
        outcome.scores.clear()
        outcome.problems.append(f"not graded (grader error: {outcome.grader_error})")
        return _finish(outcome, started)
    for gid, points, _code in plan.tests:
        outcome.scores.setdefault(gid, 0.0)
        outcome.points[gid] = points
    _manual_scores(cells, plan, outcome)
    outcome.autograded = build_autograded(cells, plan, program, run.outputs, results, outcome)
    return _finish(outcome, started)


def _first_start(run: Run) -> dict[str, Any] | None:
    """Start the sandbox; a cell that kills it is skipped and the sandbox started again."""
    while True:
        try:
            return run.start()
        except SandboxGone as gone:
            run.stop()
            if gone.reason == "grader":  # the sandbox itself could not be built: not theirs
                run.outcome.grader_error = f"the sandbox could not start: {gone.detail}"
                return None
            run.restarts += 1
            if not run.can_restart():
                return None


def _manual_scores(cells: list[dict[str, Any]], plan: Plan, outcome: Outcome) -> None:
    """Written answers wait for a human (None), except an unchanged stub, which scores 0."""
    answered = {_gid(c): _text(c) for c in cells if _gid(c) in plan.manual}
    for gid, (points, stub) in plan.manual.items():
        text = answered.get(gid)
        outcome.scores[gid] = 0.0 if text is None or text.strip() == stub.strip() else None
        outcome.points[gid] = points


def _finish(outcome: Outcome, started: float) -> Outcome:
    outcome.seconds = time.monotonic() - started
    return outcome


# --------------------------------------------------------------------------- notebooks out

def build_autograded(cells: list[dict[str, Any]], plan: Plan, program: Program,
                     outputs: dict[int, dict[str, Any]], results: dict[str, tuple[bool, str, str]],
                     outcome: Outcome) -> dict[str, Any]:
    """The graded notebook for the instructor: the student's cells with the sandbox's outputs,
    each test cell from the source notebook (hidden tests included) with its result, and each
    of the course's experiment cells (not run) with the outputs the student's notebook saved,
    as untrusted text (:func:`saved_outputs`)."""
    run_indices = {index for index, _, _ in program.cells}
    tests = {gid: code for gid, _, code in plan.tests}
    source_cells = {_gid(c): c for c in plan.source["cells"] if _gid(c)}
    out_cells = []
    present = set()
    saved = SavedBudget()
    for index, cell in enumerate(cells):
        gid = _gid(cell)
        present.add(gid)
        new = {"cell_type": cell["cell_type"], "metadata": {}, "source": _text(cell)}
        if cell["cell_type"] != "code":  # rendered by formgrader and the feedback page
            new["source"] = untrusted.sanitize_markdown(new["source"])
        if gid in source_cells:
            new["metadata"] = json.loads(json.dumps(source_cells[gid].get("metadata", {})))
        if cell["cell_type"] == "code":
            new["execution_count"] = None
            new["outputs"] = []
            if gid in tests:
                new["source"] = tests[gid]
                new["outputs"] = _test_outputs(results.get(gid))
            elif index in outputs:
                new["outputs"] = _cell_outputs(outputs[index])
            elif index not in run_indices and cell["cell_type"] == "code":
                new["outputs"] = saved_outputs(cell, saved)
        out_cells.append(new)
    for gid, _points, code in plan.tests:
        if gid not in present:  # a deleted test cell is put back at the end
            meta = json.loads(json.dumps(source_cells[gid].get("metadata", {})))
            out_cells.append({"cell_type": "code", "metadata": meta, "source": code,
                              "execution_count": None, "outputs": _test_outputs(results.get(gid))})
    cells_out = [{"cell_type": "markdown", "metadata": {}, "source": _summary(outcome)},
                 *out_cells]
    for number, cell in enumerate(cells_out):
        cell["id"] = f"graded-{number}"
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": plan.release.get("metadata", {}),
            "cells": cells_out}


def _summary(outcome: Outcome) -> str:
    auto = [v for v in outcome.scores.values() if v is not None]
    lines = [f"**Automatic score: {sum(auto):g} / {sum(outcome.points.values()):g}**"]
    pending = sum(v is None for v in outcome.scores.values())
    if pending:
        lines.append(f"{pending} written answer(s) will be graded by hand.")
    lines += [f"- {untrusted.markdown_text(p)}" for p in outcome.problems]
    for word in ("timeout", "memory", "crash", "output"):
        lines += [f"- {word}: {untrusted.markdown_text(r)}" for r in outcome.flags.get(word, [])]
    return "\n".join(lines)


# ------------------------------------------------------------- the student's saved outputs

#: Shown above the outputs a student's notebook saved for an experiment cell (the cell is the
#: course's, unchanged, so grading does not run it; a written answer quotes what it printed).
NOT_RERUN = ("[not re-run when grading: the outputs saved in the student's notebook, shown as "
             "plain text; nothing checked them]\n")
NOT_RERUN_EMPTY = ("[not re-run when grading: the course's experiment cell, unchanged; the "
                   "student's notebook saved no output for it]\n")
SAVED_CELL_LIMIT = 64 * 1024  # characters of text kept per cell
SAVED_NOTEBOOK_LIMIT = 1 << 20  # characters of text kept over all of one notebook's cells
SAVED_IMAGE_LIMIT = 1 << 20  # bytes of one PNG image
SAVED_IMAGES_LIMIT = 4 << 20  # bytes of PNG images over all of one notebook's cells
SAVED_OUTPUTS_READ = 1000  # outputs of one cell looked at
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Terminal escape sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks), and the
# other two-character escapes. Removed; any other control character is then shown escaped.
_TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|"
                              r"\x1b[@-Z\\-_]?|\x9b[0-?]*[ -/]*[@-~]?")


@dataclass
class SavedBudget:
    """What is left of one notebook's allowance for saved outputs (a student can repeat an
    experiment cell as often as they like)."""

    text: int = SAVED_NOTEBOOK_LIMIT
    images: int = SAVED_IMAGES_LIMIT


def plain_text(value: object, limit: int) -> str:
    """Untrusted output text (a string, or nbformat's list of strings) as plain text of at most
    ``limit`` characters (longer: cut, and the cut said): terminal escapes removed, a carriage
    return keeps only what a terminal would show, tabs as spaces, and every other control or
    format character escaped (:func:`untrusted.terminal_text`)."""
    if isinstance(value, list):
        pieces, size = [], 0
        for piece in value:
            if size > limit * 4:
                break
            pieces.append((piece if isinstance(piece, str) else str(piece))[:limit * 4])
            size += len(pieces[-1])
        text = "".join(pieces)
    else:
        text = value if isinstance(value, str) else str(value)
    long = len(text) > limit * 4
    text = _TERMINAL_ESCAPE.sub("", text[:limit * 4])
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        shown = line.rstrip("\r").rsplit("\r", 1)[-1]
        lines.append(untrusted.terminal_text(shown.expandtabs(8)))
    text = "\n".join(lines)
    if long or len(text) > limit:
        text = text[:limit] + (f"\n[... cut: saved outputs are shown up to "
                               f"{SAVED_CELL_LIMIT >> 10} KiB per cell]\n")
    return text


def _png(value: object, room: int) -> str | None:
    """The base64 of a valid PNG image of at most ``room`` bytes (and ``SAVED_IMAGE_LIMIT``),
    re-encoded so that only base64 characters reach a page; None for anything else."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "".join(value)
    if not isinstance(value, str) or len(value) > SAVED_IMAGE_LIMIT * 4 // 3 + 1024:
        return None
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (ValueError, binascii.Error):
        return None
    if not raw.startswith(_PNG_SIGNATURE) or len(raw) > min(room, SAVED_IMAGE_LIMIT):
        return None
    return base64.b64encode(raw).decode("ascii")


def _type_names(names: list[str]) -> str:
    return ", ".join(untrusted.terminal_text(name)[:60] for name in names[:8])


def _saved_pieces(output: object, budget: SavedBudget) -> list[tuple[str, str]]:
    """One saved output as (kind, content): ("stdout"/"stderr", text) or ("image", base64)."""
    if not isinstance(output, dict):
        return [("stdout", "[an output that is not a notebook output: not shown]\n")]
    kind = output.get("output_type")
    if kind == "stream":
        name = "stderr" if output.get("name") == "stderr" else "stdout"
        return [(name, output.get("text", ""))]
    if kind == "error":
        trace = output.get("traceback")
        if isinstance(trace, list) and trace:
            return [("stderr", "\n".join(str(line) for line in trace[:200]) + "\n")]
        return [("stderr", f"{output.get('ename', '')}: {output.get('evalue', '')}\n")]
    data = output.get("data") if kind in ("execute_result", "display_data") else None
    if not isinstance(data, dict):
        return [("stdout", f"[an output of type {_type_names([str(kind)])}: not shown]\n")]
    pieces: list[tuple[str, str]] = []
    dropped = [str(k) for k in data if k not in ("text/plain", "image/png")]
    image = _png(data["image/png"], budget.images) if "image/png" in data else None
    if image is not None:
        budget.images -= len(image) * 3 // 4
        pieces.append(("image", image))
    elif "image/png" in data:
        dropped.insert(0, "image/png (not a valid PNG image within "
                          f"{SAVED_IMAGE_LIMIT >> 20} MiB)")
    if "text/plain" in data and image is None:
        text = data["text/plain"]
        text = "".join(map(str, text)) if isinstance(text, list) else str(text)
        pieces.append(("stdout", text[:SAVED_CELL_LIMIT * 4] + "\n"))
    if dropped:
        pieces.append(("stdout", f"[output data of type {_type_names(dropped)}: not shown; "
                                 "only text and PNG images are kept]\n"))
    return pieces


def saved_outputs(cell: dict[str, Any], budget: SavedBudget | None = None
                  ) -> list[dict[str, Any]]:
    """The outputs a student's notebook saved for a cell grading did not run, made inert for
    formgrader, the feedback page and any notebook viewer: after the ``NOT_RERUN`` marker,
    only stream text (stdout/stderr) and PNG images; ``text/plain`` is kept as text, every
    other output type (HTML, JavaScript, SVG, markdown, LaTeX, widgets, ...) is named, not
    shown; tracebacks become stderr text. Text is plain (:func:`plain_text`) and at most
    ``SAVED_CELL_LIMIT`` characters per cell (``SAVED_NOTEBOOK_LIMIT`` per notebook); images
    are valid PNG, at most ``SAVED_IMAGE_LIMIT`` bytes each (``SAVED_IMAGES_LIMIT`` per
    notebook). No output metadata or execution count is kept."""
    budget = budget if budget is not None else SavedBudget()
    outputs = cell.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return [_stream(NOT_RERUN_EMPTY)]
    kept: list[dict[str, Any]] = [_stream(NOT_RERUN)]
    room = start = min(SAVED_CELL_LIMIT, budget.text)
    if room <= 0:
        kept.append(_stream(f"[not shown: the notebook's saved outputs are shown up to "
                            f"{SAVED_NOTEBOOK_LIMIT >> 10} KiB in all]\n"))
    for output in outputs[:SAVED_OUTPUTS_READ]:
        for kind, content in _saved_pieces(output, budget):
            if kind == "image":
                kept.append({"output_type": "display_data", "metadata": {},
                             "data": {"image/png": content}})
                continue
            if room <= 0:
                break
            text = plain_text(content, room)
            room -= len(text)
            last = kept[-1]
            if last.get("output_type") == "stream" and last["name"] == kind and len(kept) > 1:
                last["text"] += text
            else:
                kept.append(_stream(text, kind))
    if len(outputs) > SAVED_OUTPUTS_READ:
        kept.append(_stream(f"[... {len(outputs) - SAVED_OUTPUTS_READ} more outputs not "
                            "shown]\n"))
    budget.text -= start - room
    return kept


def _stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def _cell_outputs(reply: dict[str, Any]) -> list[dict[str, Any]]:
    if "gone" in reply:
        return [_stream(f"Grading stopped this cell: {reply['gone']}\n", "stderr")]
    outs = []
    if reply.get("stdout"):
        outs.append(_stream(str(reply["stdout"])))
    if reply.get("stderr"):
        outs.append(_stream(str(reply["stderr"]), "stderr"))
    error = reply.get("error")
    if isinstance(error, dict):
        tb = str(error.get("traceback", "")).splitlines()
        outs.append({"output_type": "error", "ename": str(error.get("type", ""))[:100],
                     "evalue": str(error.get("message", ""))[:4000],
                     "traceback": [*tb, f"{error.get('type')}: {error.get('message')}"]})
    return outs


def _test_outputs(result: tuple[bool, str, str] | None) -> list[dict[str, Any]]:
    if result is None:
        return []
    passed, printed, error = result
    outs = [_stream(printed)] if printed else []
    if not passed:
        name, _, message = error.partition(": ")
        outs.append({"output_type": "error", "ename": name, "evalue": message,
                     "traceback": [error]})
    return outs


def feedback_notebook(autograded: dict[str, Any]) -> dict[str, Any]:
    """The student's copy: hidden-test regions removed from every test cell."""
    nb = json.loads(json.dumps(autograded))
    for cell in nb["cells"]:
        text = _text(cell)
        if "### BEGIN HIDDEN TESTS" in text:
            cell["source"] = (HIDDEN.sub("", text).rstrip("\n") + "\n" + HIDDEN_NOTE).lstrip("\n")
    return nb
