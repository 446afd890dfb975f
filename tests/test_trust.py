"""What the trusted grader believes: only what it observed itself, or what it derives from data it
sent and received (see ``autograder/engine/remote.py``).

* Attacks graded through the real flow (``verify.grade_submission`` in a real sandbox): each
  attacker gets at most the exact score of its honest twin (the same code without the forging).
* Unit tests of the wire: malformed replies become a protocol violation (never the student's
  exception), lone surrogates are replaced, shared blob references are never copied.
* Unit tests of grader-side callbacks (nested calls, errors, the depth cap) and of the runner's
  per-cell integrity findings, in a real sandbox.
"""

from __future__ import annotations

import copy
import json
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from course import ROOT, SHORT_LIMITS, sandbox_session

from autograder.demo import ex04_misconceptions as demo
from autograder.engine import wire

EX04 = "ex04_misconceptions"

# --------------------------------------------------------------------------- grading helpers


def _grade(tmp_path: Path, name: str, answers: dict[str, str], extra: list[str] = ()) -> Any:
    """Grade an Exercise 4 notebook: the released one with ``answers`` filled in and the cells
    ``extra`` appended after the last answer; returns the verify Outcome."""
    from autograder.engine.sandbox import Limits
    from autograder.engine.verify import Plan, grade_submission

    release = ROOT / "exercises" / EX04 / f"{EX04}.ipynb"
    nb = nbformat.read(release, as_version=4)
    cells = []
    for original in nb.cells:
        cell = original
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell = copy.deepcopy(original)
            cell.source = answers[gid].strip("\n")
        cells.append(cell)
    cells += [nbformat.v4.new_code_cell(code) for code in extra]
    nb.cells = cells
    path = tmp_path / name / f"{EX04}.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    plan = Plan.load(ROOT / "solutions" / EX04 / f"{EX04}.ipynb", release)
    limits = Limits(**{**SHORT_LIMITS, "submission_seconds": 300})
    return grade_submission(name, path, plan, limits, 0, tmp_path)


def _score(outcome: Any) -> float:
    return float(sum(v for v in outcome.scores.values() if v is not None))


CORRECT = dict(demo.STUDENTS["gus_correct"])

# Reuses one model for every rate: wrong (the check wants one build per rate).
_COUNTS_REUSE = demo._VALID_RATES + '''

def count_parameters_by_rate(build_model, rates):
    rates = _valid_rates(rates)
    model = build_model(rates[0])
    if not isinstance(model, torch.nn.Module):
        raise TypeError("build_model must return a torch.nn.Module")
    count = int(sum(t.numel() for t in model.parameters() if t.requires_grad))
    result = {float(rate): count for rate in rates}
    FORGE
    return result
'''
_FORGE_CALLS = "build_model.calls = list(rates)"

# Evaluates in eval mode but with autograd on (no torch.no_grad): wrong.
_EVALUATE_GRAD = '''
def evaluate_accuracy(model, x, y, batch_size=256):
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must hold the same, non-zero number of rows")
    saved = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        predictions = torch.cat([model(x[i:i + batch_size]).argmax(1)
                                 for i in range(0, len(x), batch_size)])
    finally:
        for name, m in model.named_modules():
            m.training = saved[name]
    return (predictions == y).double().mean().item(), predictions
'''
# Rewrites the sandbox's recording hook: every forward is recorded as eval mode, no autograd.
_FORGE_HOOK = '''
import dropout_course.checks.modules as _m
def _forged(self, module, inputs, _output):
    first = inputs[0] if inputs else None
    rows = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else 0
    self.calls.append((self.name, False, False, rows))
_m._RecordingHook.__call__ = _forged
'''

# No range check: returns a value for an invalid p instead of raising ValueError.
_SCALE_BIGINT = '''
def inference_scale(p, inverted):
    if type(inverted) is not bool or isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError("p must be a number and inverted a bool")
    if not (0 <= p < 1):
        return 10 ** 10000
    return 1.0 if inverted else float(1 - p)
'''
_FORGE_DIGITS = "import sys\nsys.set_int_max_str_digits(0)"


@pytest.mark.slow
def test_forged_builder_calls_earn_nothing(tmp_path: Path) -> None:
    """A count that reuses one model and rewrites the builder's record of its calls scores what
    the same count without the rewrite scores."""
    honest = _grade(tmp_path, "honest", {**CORRECT, "count_parameters_by_rate":
                                         _COUNTS_REUSE.replace("FORGE", "pass")})
    attacker = _grade(tmp_path, "attacker", {**CORRECT, "count_parameters_by_rate":
                                             _COUNTS_REUSE.replace("FORGE", _FORGE_CALLS)})
    assert _score(honest) < demo.EXPECTED["gus_correct"]
    assert _score(attacker) <= _score(honest), (attacker.scores, honest.scores)


@pytest.mark.slow
def test_forged_forward_records_earn_nothing(tmp_path: Path) -> None:
    """An evaluation with autograd on, plus a cell that rewrites the sandbox's recording hook,
    scores what the evaluation without the rewrite scores."""
    answers = {**CORRECT, "evaluate_accuracy": _EVALUATE_GRAD}
    honest = _grade(tmp_path, "honest", answers)
    attacker = _grade(tmp_path, "attacker", answers, [_FORGE_HOOK])
    assert _score(honest) < demo.EXPECTED["gus_correct"]
    assert _score(attacker) <= _score(honest), (attacker.scores, honest.scores)


@pytest.mark.slow
def test_an_undecodable_reply_is_not_the_students_exception(tmp_path: Path) -> None:
    """A reply the grader cannot decode (a 10,000-digit integer) fails the test and is flagged;
    expect_raises never takes it for the ValueError it expects."""
    answers = {**CORRECT, "inference_scale": _SCALE_BIGINT}
    honest = _grade(tmp_path, "honest", answers)
    attacker = _grade(tmp_path, "attacker", answers, [_FORGE_DIGITS])
    assert honest.scores["test_scale_hidden"] == 0.0
    assert attacker.scores["test_scale_hidden"] == 0.0
    assert _score(attacker) <= _score(honest), (attacker.scores, honest.scores)
    assert any("malformed" in r for r in attacker.flags.get("crash", [])), attacker.flags


@pytest.mark.slow
def test_lone_surrogates_reach_the_reports_replaced(tmp_path: Path) -> None:
    """Lone surrogates in a cell's output and in an error message are replaced by U+FFFD, so the
    graded notebook can be written as UTF-8; the score is the honest one."""
    cell = 'print("odd \\ud800 text")\nraise ValueError("bad \\udfff")'
    outcome = _grade(tmp_path, "surrogates", CORRECT, [cell])
    assert _score(outcome) == demo.EXPECTED["gus_correct"]
    text = json.dumps(outcome.autograded, ensure_ascii=False)
    text.encode("utf-8")  # would raise UnicodeEncodeError on a lone surrogate
    assert "odd \ufffd text" in text and "bad \ufffd" in text


# --------------------------------------------------------------------------- the wire


def _frame(header: dict[str, Any] | bytes, blobs: list[bytes] = ()) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(
        {**header, "_blobs": [len(b) for b in blobs]}).encode()
    return struct.pack("<QI", 4 + len(text) + sum(map(len, blobs)), len(text)) + text + b"".join(
        blobs)


def _reader(data: bytes) -> Any:
    view = memoryview(data)
    pos = [0]

    def read(n: int) -> bytes:
        out = bytes(view[pos[0]:pos[0] + n])
        pos[0] += n
        if len(out) != n:
            raise wire.WireError("closed")
        return out
    return read


@pytest.mark.parametrize("text", [
    b'{"result": ["i", ' + b"7" * 10000 + b"]}",  # json.loads: ValueError (int digits limit)
    b"[" * 200000 + b"]" * 200000,  # RecursionError
    b'"not a dict"',
    b"\xff\xfe",
])
def test_an_unreadable_frame_is_a_wire_error(text: bytes) -> None:
    with pytest.raises(wire.WireError, match="frame header"):
        wire.read_frame(_reader(_frame(text)))


@pytest.mark.parametrize("node", [
    ["l", [["l", [["i", 1]]]] * 3], ["d", [[["l", []], ["i", 1]]]],  # an unhashable key
    ["ns", "<f8", ["s", "x"]], ["t", 0, "float32", [10 ** 30], "cpu", False, False],
    ["a", 0, "<f8", [-1]], ["y", 5], ["h", "x", 1, 2], ["sz", [1.5]], 7, [],
    ["fr", 1, 0], ["fr", 1, -3], ["fr", 1.5, 2], ["fr", True, 2], ["fr", 1], ["fr", "1", 2],
])
def test_a_malformed_value_is_a_wire_error(node: Any) -> None:
    decoder = wire.Decoder([b"12345678"], {}, None)
    try:
        decoder.decode(node)
    except wire.WireError:
        return
    except Exception as err:
        pytest.fail(f"{node!r} raised {type(err).__name__}: {err}")


def test_a_fraction_travels_as_plain_data() -> None:
    """A numeric answer written as a fractions.Fraction (Exercise 2, Task 5) comes back as an
    equal Fraction, rebuilt by the grader from two ints (a subclass would stay a handle)."""
    from fractions import Fraction

    class Lying(Fraction):
        pass

    encoder = wire.Encoder(make_handle=lambda obj: 7)
    node = encoder.encode([Fraction(27, 28), Fraction(-3), Lying(1, 3)])
    assert node[1][:2] == [["fr", 27, 28], ["fr", -3, 1]] and node[1][2][0] == "h"
    decoded = wire.Decoder(encoder.blobs, {}, lambda hid, kind, text: kind).decode(node)
    assert decoded == [Fraction(27, 28), Fraction(-3), "Lying"]
    assert type(decoded[0]) is Fraction


def _nest(depth: int) -> Any:
    node: Any = ["n"]
    for _ in range(depth):
        node = ["l", [node]]
    return node


def test_decoding_never_raises_anything_but_wire_error() -> None:
    decoder = wire.Decoder([], {}, None)
    with pytest.raises(wire.WireError):
        decoder.decode(_nest(100000))


def test_lone_surrogates_are_replaced() -> None:
    header = b'{"stdout": "a\\ud800b", "k\\udfff": ["s", "\\ud83d\\ude00 \\udc00"]}'
    found, _ = wire.read_frame(_reader(_frame(header)))
    assert found == {"stdout": "a\ufffdb", "k\ufffd": ["s", "\U0001F600 \ufffd"]}
    assert wire.Decoder([]).decode(["s", "x\ud800"]) == "x\ufffd"


def test_shared_blob_references_are_not_copied() -> None:
    """One 8 MiB blob referenced 300 times as tensors, arrays and bytes: decoding materialises
    it at most twice (a shared buffer and one bytes copy), not 300 times."""
    blob = bytes(8 << 20)
    node = ["l", [["t", 0, "float32", [2 << 20], "cpu", False, False],
                  ["a", 0, "<f8", [1 << 20]], ["y", 0]] * 100]
    tracemalloc.start()
    try:
        values = wire.Decoder([blob], {}, None).decode(node)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(values) == 300 and values[0].shape == (2 << 20,) and values[1].shape == (1 << 20,)
    assert peak < len(blob) * 2 + (2 << 20), f"peak {peak >> 20} MiB for one 8 MiB blob"


def test_frame_over_the_limit_is_refused() -> None:
    with pytest.raises(wire.WireError):
        wire.read_frame(_reader(struct.pack("<QI", 1 << 40, 10)))


# --------------------------------------------------------------------------- callbacks (sandbox)


SESSION_CODE = '''
import sys, torch
def apply(f, *args):
    return f(*args)
def twice(f, x):
    return [f(x), f(x)]
def recurse(f, n):
    return f(n)
def count(model, x):
    return int(sum(p.numel() for p in model.parameters())), model(x).shape[0]
def bigint():
    sys.set_int_max_str_digits(0)
    return 10 ** 10000
def surrogate():
    return "x\\ud800"
def many(f, n):
    return [f(i) for i in range(n)]
def call_with_list(model):
    try:
        model([[1.0, 2.0, 3.0, 4.0]])
    except TypeError as err:
        return str(err)
    return "ran"
def train_and_hide(model):
    import autograder.engine.wire as w
    model.train()
    w.grader_modes = lambda token: []  # a patched runner that drops the copies' flags
    return 1
'''


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Any]:
    """A real sandbox with a few student definitions, and the grader's Session on it."""
    with sandbox_session(tmp_path, SESSION_CODE) as session:
        yield session


class _Probe:
    """A grader-side callable that records what it was called with, here."""

    def __init__(self, inner: Any = None) -> None:
        self.calls: list[Any] = []
        self.inner = inner

    def __call__(self, x: Any) -> Any:
        self.calls.append(x)
        return self.inner(x) if self.inner is not None else x * 2


@pytest.mark.slow
def test_callbacks_run_on_the_grader_and_nest(session: Any) -> None:
    from dropout_course.checks.boundary import GraderSide

    class Probe(_Probe, GraderSide):
        pass

    probe = Probe()
    assert session.fn("apply")(probe, 21) == 42
    assert session.fn("twice")(probe, 5) == [10, 10]
    assert probe.calls == [21, 5, 5]
    # Nested: the grader-side object calls into the sandbox while handling a callback.
    inner = session.fn("apply")
    nested = Probe(lambda x: inner(probe, x) + 1)
    assert session.fn("apply")(nested, 3) == 7
    assert nested.calls == [3] and probe.calls[-1] == 3


@pytest.mark.slow
def test_callback_errors_reach_the_sandbox_as_builtins(session: Any) -> None:
    from dropout_course.checks.boundary import GraderSide
    from dropout_course.checks.modules import FailsOnCall, ForwardRecorder

    class Boom(GraderSide):
        def __call__(self, x: Any) -> Any:
            raise KeyError(f"no {x}")

    with pytest.raises(KeyError, match="no 3"):
        session.fn("apply")(Boom(), 3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), FailsOnCall(1))
    with ForwardRecorder(model) as recorder, pytest.raises(RuntimeError, match="forward call 1"):
        session.fn("count")(model, torch.ones(3, 2))
    assert [name for name, *_ in recorder.calls] == ["0"]  # the Linear layer ran, here
    assert model[1].calls == 1
    assert session.sandbox.gone is None


@pytest.mark.slow
def test_callback_depth_is_capped(session: Any) -> None:
    from dropout_course.checks.boundary import GraderSide

    from autograder.engine import remote

    recurse = session.fn("recurse")

    class Deep(GraderSide):
        def __call__(self, n: int) -> Any:
            return recurse(self, n + 1)

    with pytest.raises(RecursionError):
        recurse(Deep(), 0)
    assert session.sandbox.gone is None
    assert session.fn("apply")(lambda_free_double(), 4) == 8  # still usable
    assert remote.MAX_CALLBACK_DEPTH < 100


def lambda_free_double() -> Any:
    from dropout_course.checks.boundary import GraderSide

    class Double(GraderSide):
        def __call__(self, x: Any) -> Any:
            return 2 * x
    return Double()


@pytest.mark.slow
def test_a_recorded_model_runs_on_the_grader(session: Any) -> None:
    from dropout_course.checks.modules import ForwardRecorder

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                                torch.nn.Dropout(0.5)).train()
    stats = model[1].running_mean.clone()
    with ForwardRecorder(model) as recorder:
        count, rows = session.fn("count")(model, torch.randn(5, 4))
    assert (count, rows) == (4 * 3 + 3 + 2 * 3, 5)
    assert [(n, t, r) for n, t, _, r in recorder.calls] == [("0", True, 5), ("1", True, 5),
                                                           ("2", True, 5)]
    assert not torch.equal(stats, model[1].running_mean)  # BatchNorm ran here, in train mode


@pytest.mark.slow
def test_malformed_replies_are_protocol_violations(session: Any) -> None:
    from dropout_course import checks

    from autograder.engine.remote import ProtocolViolation

    with pytest.raises(AssertionError) as info:
        checks.expect_raises(session.fn("bigint"), (), ValueError, "test")
    assert isinstance(info.value.__cause__, ProtocolViolation)
    assert "the reply was malformed" in str(info.value.__cause__)
    assert session.sandbox.gone is not None and session.sandbox.gone.reason == "protocol"


@pytest.mark.slow
def test_a_surrogate_in_a_result_is_replaced(session: Any) -> None:
    assert session.fn("surrogate")() == "x\ufffd"


@pytest.mark.slow
def test_integrity_findings_per_cell(tmp_path: Path) -> None:
    from autograder.engine.sandbox import Limits, Sandbox, prepare_workdir

    sandbox = Sandbox(prepare_workdir(tmp_path), Limits(**SHORT_LIMITS), 0)
    sandbox.start()
    try:
        setup, _ = sandbox.request({"op": "cell", "name": "<cell setup s>",
                                    "source": "from dropout_course import checks\nimport numpy"})
        clean, _ = sandbox.request({"op": "cell", "name": "<cell 1>", "source": "x = 1"})
        dirty, _ = sandbox.request({"op": "cell", "name": "<cell 2>", "source": (
            "import builtins, numpy.testing, sys\nbuiltins.divmod = print\n"
            "checks.ex04.check_counts_by_rate = print\nnumpy.testing.assert_allclose = print\n"
            "sys.excepthook = print")})
        later, _ = sandbox.request({"op": "cell", "name": "<cell 3>", "source": "y = 2"})
    finally:
        sandbox.stop()
    assert setup["integrity"] == [] and clean["integrity"] == [] and later["integrity"] == []
    found = " ".join(dirty["integrity"])
    for word in ("builtins", "divmod", "excepthook", "ex04.check_counts_by_rate",
                 "numpy.testing.assert_allclose"):
        assert word in found, dirty["integrity"]


@pytest.mark.slow
def test_a_recorded_model_takes_tensors_only(session: Any) -> None:
    """A grader-run model called on anything but tensors refuses in the sandbox (TypeError):
    the grader never runs its model on an object of the sandbox, nor on a huge input."""
    from dropout_course.checks.modules import ForwardRecorder

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with ForwardRecorder(model) as recorder:
        said = session.fn("call_with_list")(model)
    assert "tensors only" in said, said
    assert recorder.calls == []


@pytest.mark.slow
def test_a_reply_must_report_every_recorded_models_modes(session: Any) -> None:
    """A runner patched to leave a grader-run model's flags out of its reply (so that the grader
    would keep the modes it had) gives a malformed reply, never "nothing changed"."""
    from dropout_course.checks.modules import ForwardRecorder

    from autograder.engine.remote import ProtocolViolation

    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5)).eval()
    with ForwardRecorder(model), pytest.raises(ProtocolViolation, match="every module"):
        session.fn("train_and_hide")(model)
    assert session.sandbox.gone is not None and session.sandbox.gone.reason == "protocol"
