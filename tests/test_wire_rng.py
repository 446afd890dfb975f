"""The random state crosses the wire as deltas (``wire.RngSync``), with the effect of sending
the whole state with every message: a seed set on one side governs the code on the other, a
draw on one side advances the other, and a draw between messages (a cell) is undone."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from course import SHORT_LIMITS

from autograder.engine import wire


def test_first_message_is_whole_then_only_what_changed() -> None:
    sync = wire.RngSync()
    assert set(sync.outgoing()) >= {"torch", "numpy", "python"}
    assert sync.outgoing() == {}
    torch.rand(1)
    assert set(sync.outgoing()) == {"torch"}
    np.random.rand()
    random.random()
    assert set(sync.outgoing()) == {"numpy", "python"}


def test_incoming_restores_the_parts_not_sent_where_they_drifted() -> None:
    sender, receiver = wire.RngSync(), wire.RngSync()
    torch.manual_seed(1)
    random.seed(2)
    receiver.incoming(sender.outgoing())  # whole: both agree on this state
    expected_python = random.random()
    random.seed(2)
    sender.outgoing()  # nothing changed since: an empty delta
    torch.manual_seed(7)
    random.random()  # drift, as a cell between two messages does
    receiver.incoming({})  # the agreed state comes back, part by part
    assert random.random() == expected_python
    torch.manual_seed(1)
    reference = torch.rand(3)
    receiver.incoming({})
    assert torch.equal(torch.rand(3), reference)


@pytest.mark.parametrize("delta", [[], {"bogus": 1}, {"python": "not a state"}])
def test_a_malformed_delta_is_refused(delta: Any) -> None:
    with pytest.raises((wire.WireError, TypeError, ValueError)):
        wire.RngSync().incoming(delta)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Any]:
    from autograder.engine.remote import RemoteFunction, Session
    from autograder.engine.sandbox import Limits, Sandbox, prepare_workdir

    sandbox = Sandbox(prepare_workdir(tmp_path), Limits(**SHORT_LIMITS), 0)
    sandbox.start()
    try:
        code = '''
import random, numpy, torch
def draw():
    return torch.rand(3), float(numpy.random.rand()), random.random()
'''
        reply, _ = sandbox.request({"op": "cell", "source": code, "name": "<cell 1>"})
        assert reply["error"] is None, reply
        session = Session(sandbox)
        session.fn = lambda name: RemoteFunction(session, name)
        yield session
    finally:
        sandbox.stop()


def _local_draws(n: int) -> list[tuple[Any, float, float]]:
    return [(torch.rand(3), float(np.random.rand()), random.random()) for _ in range(n)]


def _seed(value: int) -> None:
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


@pytest.mark.slow
def test_the_sandbox_draws_the_grader_sequence_across_calls_and_cells(session: Any) -> None:
    _seed(11)
    expected = _local_draws(4)
    _seed(11)
    draw = session.fn("draw")
    got = [draw()]
    session.sandbox.request({"op": "cell", "name": "<cell 2>",
                             "source": "import torch, random\ntorch.rand(5); random.random()"})
    got.append(draw())  # the cell's draws are undone: the sequence goes on unchanged
    got.append(_local_draws(1)[0])  # the grader draws: the sandbox must continue after it
    _seed(11)
    _local_draws(3)
    got.append(draw())  # a new seed on the grader's side governs the sandbox again
    for (t, n, p), (te, ne, pe) in zip(got, expected, strict=True):
        assert torch.equal(t, te) and n == ne and p == pe
    after = _local_draws(1)[0]  # and the grader continues after the sandbox's last draw
    _seed(11)
    assert torch.equal(_local_draws(5)[4][0], after[0])
