"""What crosses the wire as deltas has the effect of sending it whole every time.

* The random state (``wire.RngSync``): a seed set on one side governs the code on the other, a
  draw on one side advances the other, and a draw between messages (a cell) is undone.
* The states of the student's modules (``runner.Runner._module_states``): a reply carries a
  module only when it differs from the grader's mirror (however it was changed: in place, through
  ``.data`` or a NumPy view, its mode, an attribute) or when the reply names it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from course import sandbox_session

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


SESSION_CODE = '''
import random, numpy, torch
def draw():
    return torch.rand(3), float(numpy.random.rand()), random.random()
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.scale = 1.0
    def forward(self, x):
        return self.lin(x) * self.scale
NETS = []
def make():
    NETS.append(Net())
    return NETS[-1]
def noop():
    return 1
def bump_through_numpy():
    NETS[0].lin.weight.detach().numpy()[...] += 1.0
def set_mode(flag):
    NETS[0].train(flag)
def set_scale(value):
    NETS[0].scale = value
'''


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Any]:
    with sandbox_session(tmp_path, SESSION_CODE) as session:
        yield session


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


@pytest.mark.slow
def test_a_module_is_sent_when_it_changed_or_is_named(session: Any) -> None:
    sent: list[set[str]] = []
    update = session._update_mirrors

    def record(modules: dict[str, Any], decoder: Any) -> None:
        sent.append(set(modules))
        update(modules, decoder)

    session._update_mirrors = record
    net = session.fn("make")()
    key = str(net._remote_hid)
    assert sent[-1] == {key}  # named by the reply: the mirror is made from it
    session.fn("noop")()
    assert sent[-1] == set()  # nothing changed: nothing sent
    before = net.lin.weight.detach().clone()
    session.fn("bump_through_numpy")()
    assert sent[-1] == {key} and torch.equal(net.lin.weight.detach(), before + 1)
    session.fn("set_mode")(False)
    assert sent[-1] == {key} and not net.training and not net.lin.training
    session.fn("set_scale")(2.5)
    assert sent[-1] == {key} and net.scale == 2.5
    session.fn("noop")()
    assert sent[-1] == set()
    # The grader's own change reaches the sandbox with the call, and is not sent back.
    with torch.no_grad():
        net.lin.weight.zero_()
        net.lin.bias.fill_(1.0)
    assert torch.equal(net(torch.ones(1, 3)), torch.full((1, 2), 2.5))
    session.fn("noop")()
    assert sent[-1] == set() and torch.equal(net.lin.bias.detach(), torch.ones(2))
