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
def forge(kind):
    import autograder.engine.runner as runner
    real = runner._invoke
    def invoke(fn, payload, batch):
        result, error = real(fn, payload, batch)
        if batch is not None and kind == "extra":
            result = result + result
        if batch is not None and kind == "short":
            result = result[:-1]
        if batch is not None and kind == "error":
            error = {"type": "ValueError", "bases": ["ValueError"], "message": "forged"}
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


def test_a_batch_gives_what_a_loop_gives(session: Any) -> None:
    """The global random state flows from call to call and comes back: seeded here, three
    draws in one batch are the three draws this process would make, and a draw afterwards
    (here) continues the same stream."""
    torch.manual_seed(7)
    results, error = session.call_many(["name", "draw"], _calls(2, 3, 4))
    after = torch.rand(1)
    torch.manual_seed(7)
    expected = [torch.rand(n) for n in (2, 3, 4)]
    assert error is None
    assert [r.shape[0] for r in results] == [2, 3, 4]
    for got, want in zip(results, expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(after, torch.rand(1))
    assert session.fn("calls_made")() == [2, 3, 4]


def test_a_batch_stops_at_the_first_error(session: Any) -> None:
    """The call that raises ends the batch: its exception comes back (the student's type and
    message) with the results before it, and the calls after it are never made."""
    results, error = session.call_many(["name", "picky"], _calls(1, 2, 3, 4, 5))
    assert results == [10, 20]
    assert type(error) is ValueError and "n must not be 3" in str(error)
    assert session.fn("calls_made")() == [1, 2, 3]


def test_changes_to_each_calls_arguments_come_back(session: Any) -> None:
    """Each call's arguments are the grader's own objects: a list one call appends to, and a
    tensor shared by all calls and changed in place by each, end as they would here."""
    lists: list[list[int]] = [[], [0], [0, 0]]
    results, error = session.call_many(
        ["name", "append_to"], [((items, i), {}) for i, items in enumerate(lists)])
    assert error is None and results == [1, 2, 3]
    assert lists == [[0], [0, 1], [0, 0, 2]]
    x = torch.zeros(3)
    _, error = session.call_many(["name", "bump"], _calls(x, x, x))
    assert error is None and torch.equal(x, torch.full((3,), 3.0))


def test_a_shared_generator_flows_through_the_batch(session: Any) -> None:
    x = torch.ones(5)
    gen = torch.Generator().manual_seed(3)
    results, _ = session.call_many(["name", "sample"], [((x, gen), {})] * 3)
    here = torch.Generator().manual_seed(3)
    for got in results:
        assert torch.equal(got, torch.rand(x.shape, generator=here) * x)
    assert torch.equal(gen.get_state(), here.get_state())


def test_arguments_that_need_autograd_are_called_one_by_one(session: Any) -> None:
    """With a tensor that requires grad, each call carries its graph back (as single calls
    do), and the random state both sides agree on is still right afterwards."""
    x = torch.ones(3, requires_grad=True)
    results, error = session.call_many(["name", "double"], _calls(x, x))
    assert error is None
    sum(r.sum() for r in results).backward()
    assert torch.equal(x.grad, torch.full((3,), 4.0))
    torch.manual_seed(11)
    (drawn,), _ = session.call_many(["name", "draw"], _calls(2))
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


@pytest.mark.parametrize("kind", ["extra", "short", "error"])
def test_a_reply_that_does_not_answer_the_batch_is_malformed(session: Any, kind: str) -> None:
    """A patched runner that reports more results than calls, fewer without an error, or an
    error after every call returned: a protocol violation (the sandbox is gone), never
    results or the student's exception."""
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
        results, error = session.call_many(["name", "nap"], _calls(0.6, 0.6, 0.6))
        assert error is None and results == [0.6, 0.6, 0.6]
        with pytest.raises(SandboxGone, match="time limit"):
            session.call(["name", "nap"], (1.5,), {})
    finally:
        sandbox.stop()
