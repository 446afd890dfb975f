"""Hostile and broken submissions for Exercise 1, for testing the grader's defences.

``ATTACKS`` covers every class of attack in the course's nbgrader notes (in-kernel tampering,
patched assertion helpers, lying objects, reading solutions or the gradebook, background
processes, denial of grading, edited test cells), each wrapped around a correct implementation
(honest score 12, as ``ada_correct``) and some around a wrong one (the wrong one's score, as
``cy_raises`` or ``ben_partial``). ``write_attacks(folder)`` writes one notebook per attack in
nbgrader's submitted layout, built from the released notebook like ``write_submissions``.

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
LINGER_NAMES = ("atk-linger", "atk-loop")


@dataclass(frozen=True)
class Attack:
    """One submission: what it changes in the released notebook and what it must score."""

    klass: int  # the attack class in the nbgrader notes (0: an honest control)
    about: str
    expected: float  # exact automatic score (of 12)
    flag: str | None  # a flag word that must be raised (None: an honest control)
    answers: dict[str, str | None] = field(default_factory=dict)  # grade_id -> source
    extra: tuple[tuple[str, str], ...] = ()  # (grade_id to insert after, code of a new cell)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # grade_id -> nbgrader
    own_graded_cell: bool = False  # add a code cell with grading metadata of its own


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
}


def _template() -> nbformat.NotebookNode:
    return nbformat.read(RELEASE, as_version=4)


def build(attack: Attack) -> nbformat.NotebookNode:
    """The released notebook with the attack's cells and metadata."""
    nb = copy.deepcopy(_template())
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
    if attack.own_graded_cell:
        bonus = nbformat.v4.new_code_cell('print("Passed")')
        bonus.metadata["nbgrader"] = {"grade": True, "grade_id": "test_bonus", "locked": True,
                                      "points": 50, "schema_version": 3, "solution": False,
                                      "task": False}
        cells.append(bonus)
    nb.cells = cells
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
