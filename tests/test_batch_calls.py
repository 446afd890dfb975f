"""Batched calls into the sandbox (``Session.call_many``, used by ``checks.run_student_many``):
one round trip does what a loop of single calls did, with the same results, the same state
carried from call to call, the same first failure, and nothing believed from a reply that does
not answer the batch it was sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from course import sandbox_session

pytestmark = pytest.mark.slow

SESSION_CODE = '''
import torch
made = []
def draw(n):
    made.append(n)
    return torch.rand(n)
def picky(n):
    made.append(n)
    if n == 3:
        raise ValueError(f"n must not be {n}")
    return n * 10
def stub(n):
    raise NotImplementedError()
def append_to(items, value):
    items.append(value)
    return len(items)
def bump(x):
    x.add_(1)
def sample(x, gen):
    return torch.rand(x.shape, generator=gen) * x
def calls_made():
    return list(made)
def double(x):
    return x * 2
def strict(n):
    if isinstance(n, str):
        raise TypeError("n must be a number")
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    return n
def forge(kind):
    import autograder.engine.runner as runner
    real = runner._invoke
    forged = {"type": "ValueError", "bases": ["ValueError"], "message": "forged"}
    def invoke(fn, payload, batch, stop=True):
        result, error = real(fn, payload, batch, stop)
        if batch is None:
            return result, error
        if kind == "extra":
            result = result + result
        if kind == "short":
            result = result[:-1]
        if kind == "error":
            error = forged
        if kind == "gap":
            result = [[False, forged], *result[1:]]
        return result, error
    runner._invoke = invoke
    return kind
'''


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Any]:
    with sandbox_session(tmp_path, SESSION_CODE) as session:
        yield session


def _calls(*values: Any) -> list[tuple[tuple, dict]]:
    return [((v,), {}) for v in values]


def _values(outcomes: list[tuple[Any, BaseException | None]]) -> list[Any]:
    """The results of a batch in which no call raised."""
    assert all(err is None for _, err in outcomes), outcomes
    return [value for value, _ in outcomes]


def test_a_batch_gives_what_a_loop_gives(session: Any) -> None:
    """The global random state flows from call to call and comes back: seeded here, three
    draws in one batch are the three draws this process would make, and a draw afterwards
    (here) continues the same stream."""
    torch.manual_seed(7)
    results = _values(session.call_many(["name", "draw"], _calls(2, 3, 4)))
    after = torch.rand(1)
    torch.manual_seed(7)
    expected = [torch.rand(n) for n in (2, 3, 4)]
    assert [r.shape[0] for r in results] == [2, 3, 4]
    for got, want in zip(results, expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(after, torch.rand(1))
    assert session.fn("calls_made")() == [2, 3, 4]


def test_a_batch_stops_at_the_first_error(session: Any) -> None:
    """The call that raises ends the batch: its exception comes back (the student's type and
    message) with the results before it, and the calls after it are never made."""
    outcomes = session.call_many(["name", "picky"], _calls(1, 2, 3, 4, 5))
    assert outcomes[:2] == [(10, None), (20, None)] and len(outcomes) == 3
    value, error = outcomes[2]
    assert value is None and type(error) is ValueError and "n must not be 3" in str(error)
    assert session.fn("calls_made")() == [1, 2, 3]


def test_a_batch_that_goes_on_makes_every_call(session: Any) -> None:
    """Without ``stop`` (expect_raises_many) every call is made and each has its outcome."""
    outcomes = session.call_many(["name", "picky"], _calls(1, 3, 5), stop=False)
    assert [value for value, _ in outcomes] == [10, None, 50]
    assert [type(err) for _, err in outcomes] == [type(None), ValueError, type(None)]
    assert session.fn("calls_made")() == [1, 3, 5]


def test_changes_to_each_calls_arguments_come_back(session: Any) -> None:
    """Each call's arguments are the grader's own objects: a list one call appends to, and a
    tensor shared by all calls and changed in place by each, end as they would here."""
    lists: list[list[int]] = [[], [0], [0, 0]]
    results = _values(session.call_many(
        ["name", "append_to"], [((items, i), {}) for i, items in enumerate(lists)]))
    assert results == [1, 2, 3]
    assert lists == [[0], [0, 1], [0, 0, 2]]
    x = torch.zeros(3)
    _values(session.call_many(["name", "bump"], _calls(x, x, x)))
    assert torch.equal(x, torch.full((3,), 3.0))


def test_a_shared_generator_flows_through_the_batch(session: Any) -> None:
    x = torch.ones(5)
    gen = torch.Generator().manual_seed(3)
    results = _values(session.call_many(["name", "sample"], [((x, gen), {})] * 3))
    here = torch.Generator().manual_seed(3)
    for got in results:
        assert torch.equal(got, torch.rand(x.shape, generator=here) * x)
    assert torch.equal(gen.get_state(), here.get_state())


def test_arguments_that_need_autograd_are_called_one_by_one(session: Any) -> None:
    """With a tensor that requires grad, each call carries its graph back (as single calls
    do), and the random state both sides agree on is still right afterwards."""
    x = torch.ones(3, requires_grad=True)
    results = _values(session.call_many(["name", "double"], _calls(x, x)))
    sum(r.sum() for r in results).backward()
    assert torch.equal(x.grad, torch.full((3,), 4.0))
    torch.manual_seed(11)
    (drawn,) = _values(session.call_many(["name", "draw"], _calls(2)))
    torch.manual_seed(11)
    assert torch.equal(drawn, torch.rand(2))


def test_run_student_many_fails_as_run_student_would(session: Any) -> None:
    """The checks' helper names the call that raised, in the words run_student uses; a stub
    still gets the "not written yet" message."""
    from dropout_course import checks

    with pytest.raises(AssertionError) as batch:
        checks.run_student_many(session.fn("picky"), _calls(1, 3, 5))
    with pytest.raises(AssertionError) as single:
        checks.run_student(session.fn("picky"), 3)
    assert str(batch.value) == str(single.value)
    assert "picky(3) raised ValueError: n must not be 3" in str(batch.value)
    with pytest.raises(AssertionError, match="not written yet"):
        checks.run_student_many(session.fn("stub"), _calls(1))
    assert checks.run_student_many(session.fn("picky"), _calls(1, 2)) == [10, 20]
    assert checks.run_student_many(session.fn("picky"), []) == []


def test_expect_raises_many_judges_as_expect_raises(session: Any) -> None:
    """Every case is judged in order with expect_raises' own words: the expected errors come
    back, and the first case that fails (returned, or raised the wrong type) is the failure."""
    from dropout_course import checks

    strict = session.fn("strict")
    found = checks.expect_raises_many(strict, [((-1,), None, ValueError, "negative"),
                                               (("a",), None, (ValueError, TypeError), "text")])
    assert [type(e) for e in found] == [ValueError, TypeError]
    assert "got -1" in str(found[0])
    for bad in [(5,), ("a",)]:
        cases = [((-2,), None, ValueError, "negative"), (bad, None, ValueError, "bad"),
                 ((7,), None, ValueError, "never judged")]
        with pytest.raises(AssertionError) as batch:
            checks.expect_raises_many(strict, cases)
        with pytest.raises(AssertionError) as single:
            checks.expect_raises(strict, bad, ValueError, "bad")
        assert str(batch.value) == str(single.value)
    assert session.fn("calls_made")() == []  # strict keeps no record; picky was never called


@pytest.mark.parametrize("kind", ["extra", "short", "error", "gap"])
def test_a_reply_that_does_not_answer_the_batch_is_malformed(session: Any, kind: str) -> None:
    """A patched runner that reports more outcomes than calls, fewer without a failure, an
    error for the batch as a whole, or a failure before the last outcome of a batch that
    stops: a protocol violation (the sandbox is gone), never results or the student's
    exception."""
    from autograder.engine.remote import ProtocolViolation

    assert session.fn("forge")(kind) == kind
    with pytest.raises(ProtocolViolation, match="batch"):
        session.call_many(["name", "picky"], _calls(1, 2))
    assert session.sandbox.gone is not None and session.sandbox.gone.reason == "protocol"


def test_in_one_process_the_helper_is_a_loop() -> None:
    """Without a grader (a student's kernel), run_student_many calls the function itself, in
    order, and stops at the first failure with run_student's message."""
    from dropout_course import checks

    seen: list[int] = []

    def f(n: int) -> int:
        seen.append(n)
        if n == 2:
            raise KeyError("two")
        return -n

    assert checks.run_student_many(f, _calls(0, 1)) == [0, -1]
    with pytest.raises(AssertionError, match=r"f\(2\) raised KeyError"):
        checks.run_student_many(f, _calls(1, 2, 3))
    assert seen == [0, 1, 1, 2]


def test_each_call_of_a_batch_has_the_call_limit(tmp_path: Path) -> None:
    """A batch may take as long as its calls would one by one: three calls of 0.6 s pass under a
    1 s call limit, while one call of 1.5 s still ends the sandbox (timeout)."""
    from autograder.engine.remote import Session
    from autograder.engine.sandbox import Limits, Sandbox, SandboxGone, prepare_workdir

    sandbox = Sandbox(prepare_workdir(tmp_path), Limits(call_seconds=1.0, cell_seconds=10,
                                                         submission_seconds=60), 0)
    sandbox.start()
    try:
        reply, _ = sandbox.request({"op": "cell", "name": "<cell 1>", "source": (
            "import time\ndef nap(s):\n    time.sleep(s)\n    return s\n")})
        assert reply["error"] is None, reply
        session = Session(sandbox)
        assert _values(session.call_many(["name", "nap"], _calls(0.6, 0.6, 0.6))) == [0.6] * 3
        with pytest.raises(SandboxGone, match="time limit"):
            session.call(["name", "nap"], (1.5,), {})
    finally:
        sandbox.stop()


def test_a_warning_during_a_batch_names_the_function_not_the_calls(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A warning caught while a batch runs is noted with the function's name and the number of
    calls: the calls themselves (here 200 tensors) are never rendered for it, which took
    seconds when a stray ResourceWarning arrived during Exercise 2's batch of 200 calls."""
    import time
    import warnings

    from dropout_course import checks

    class Batched:
        __name__ = "dropout"

        def __dropout_call_many__(self, calls: list, stop: bool = True) -> list:
            warnings.warn("unclosed file", ResourceWarning, stacklevel=1)
            return [(len(args), None) for args, _ in calls]

    x = torch.rand(1000)
    began = time.perf_counter()
    assert checks.run_student_many(Batched(), [((x, 0.5), {})] * 200) == [2] * 200
    seconds = time.perf_counter() - began
    said = capsys.readouterr().out
    assert said == "Note: dropout(...), called 200 times, warned: ResourceWarning: unclosed file\n"
    assert seconds < 1.0, seconds  # a rendering of 200 tensors takes seconds
