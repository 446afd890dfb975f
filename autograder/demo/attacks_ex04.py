"""Attacks on Exercise 4 that rewrite the records the checks make inside the sandbox.

A check hands the student's function objects of its own that record what the function did: the
builder of ``check_counts_by_rate`` (``checks.ex04._Builder``: one call per rate) and the forward
hooks of ``ForwardRecorder`` (``checks.modules._RecordingHook``: each module's mode and batch
size). In the sandbox they are unpickled copies whose lists are synced back to the grader, so a
submission can rewrite them. Each attack below is a wrong implementation plus the rewrite; its
honest twin is the same wrong implementation without it, and the attack must score exactly the
twin's score (of 15 automatic points; the 6 written points wait for a human). No flag is
required: where the records never enter the sandbox (``checks.boundary``), there is nothing
for the grader to notice.

The cells below run only inside the grading sandbox; nothing here is imported by the grader.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from autograder.demo.attacks import Attack, build
from autograder.demo.ex04_misconceptions import _VALID_RATES, STUDENTS
from autograder.engine.grade import COURSE_ROOT

ASSIGNMENT = "ex04_misconceptions"
RELEASE = COURSE_ROOT / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
CORRECT = dict(STUDENTS["gus_correct"])

# 1a. One model built for the first rate and counted for every rate (a wrong answer: the
# architecture may depend on the rate, and the check wants one builder call per rate).
_REUSE = _VALID_RATES + '''

def count_parameters_by_rate(build_model, rates):
    rates = _valid_rates(rates)
    model = build_model(rates[0])  # wrong: one model reused for every rate
    if not isinstance(model, torch.nn.Module):
        raise TypeError("build_model must return a torch.nn.Module")
    count = int(sum(t.numel() for t in model.parameters() if t.requires_grad))
    return {float(rate): count for rate in rates}
'''

_REUSE_REWRITE = _REUSE.replace(
    "    return {float(rate): count for rate in rates}\n",
    "    calls = getattr(build_model, 'calls', None)\n"
    "    if isinstance(calls, list):\n"
    "        calls[:] = list(rates)  # the grader's record of the builder: one call per rate\n"
    "    return {float(rate): count for rate in rates}\n")
assert _REUSE_REWRITE != _REUSE

# 1b. evaluate_accuracy forgets torch.no_grad() (it calls model.eval()): the forwards build an
# autograd graph that nothing uses. Only the forward recorder sees that.
_FORGETS_NO_GRAD = '''
def evaluate_accuracy(model, x, y, batch_size=256):
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must hold the same, non-zero number of rows")
    saved = {name: m.training for name, m in model.named_modules()}
    _prepare(model)
    model.eval()
    try:  # wrong: no torch.no_grad()
        predictions = torch.cat([model(x[i:i + batch_size]).argmax(1)
                                 for i in range(0, len(x), batch_size)])
    finally:
        for name, m in model.named_modules():
            m.training = saved[name]
    return float((predictions == y).sum()) / len(y), predictions
'''
_NO_PREPARE = '''
def _prepare(model):
    pass
'''
# The recorder's hook class, reached through the model's hooks (no course module named): it now
# records every forward as run in eval mode without autograd.
_PATCH_HOOKS = '''
def _prepare(model):
    def record_as_eval(self, module, inputs, output):
        first = inputs[0] if inputs else None
        rows = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else 0
        self.calls.append((self.name, False, False, rows))

    for m in model.modules():
        for hook in list(m._forward_hooks.values()):
            if hasattr(hook, "calls"):
                type(hook).__call__ = record_as_eval
'''

# 1b. evaluate_accuracy's batches are one row too big, then it rewrites the recorder's list so
# that it shows batches of batch_size rows.
_BIG_BATCHES = '''
def evaluate_accuracy(model, x, y, batch_size=256):
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must hold the same, non-zero number of rows")
    saved = {name: m.training for name, m in model.named_modules()}
    hooks = [h for m in model.modules() for h in m._forward_hooks.values()
             if isinstance(getattr(h, "calls", None), list)]
    start = len(hooks[0].calls) if hooks else 0
    step = batch_size + 1  # wrong: one row more than batch_size
    model.eval()
    try:
        with torch.no_grad():
            predictions = torch.cat([model(x[i:i + step]).argmax(1)
                                     for i in range(0, len(x), step)])
    finally:
        for name, m in model.named_modules():
            m.training = saved[name]
    _rewrite(hooks, start, len(x), batch_size, len(range(0, len(x), step)))
    return float((predictions == y).sum()) / len(y), predictions
'''
_NO_REWRITE = '''
def _rewrite(hooks, start, n, batch_size, forwards):
    pass
'''
_REWRITE = '''
def _rewrite(hooks, start, n, batch_size, forwards):
    if not hooks:
        return
    calls = hooks[0].calls
    mine = calls[start:]
    del calls[start:]
    pattern = mine[:len(mine) // forwards]  # the records of one forward pass
    for first in range(0, n, batch_size):
        rows = min(batch_size, n - first)
        calls.extend((name, training, grad, rows) for name, training, grad, _ in pattern)
'''

ATTACKS: dict[str, Attack] = {
    "c4_correct": Attack(0, "gus_correct's answers", 15.0, None, CORRECT),
    "c4_twin_reuse": Attack(0, "one model reused for every rate", 12.0, None,
                            {**CORRECT, "count_parameters_by_rate": _REUSE}),
    "c4_twin_no_grad": Attack(0, "evaluate_accuracy without torch.no_grad()", 11.0, None,
                              {**CORRECT, "evaluate_accuracy": _NO_PREPARE + _FORGETS_NO_GRAD}),
    "c4_twin_big_batches": Attack(0, "evaluate_accuracy's batches are one row too big", 12.0,
                                  None, {**CORRECT, "evaluate_accuracy":
                                         _NO_REWRITE + _BIG_BATCHES}),
    "t1_builder_record": Attack(1, "reuses one model, rewrites the builder's call record", 12.0,
                                None, {**CORRECT, "count_parameters_by_rate":
                                              _REUSE_REWRITE}, twin="c4_twin_reuse"),
    "t1_hook_no_grad": Attack(1, "forgets torch.no_grad(), patches the recorder's hook class "
                              "so that every forward is recorded as eval without autograd",
                              11.0, None, {**CORRECT, "evaluate_accuracy":
                                           _PATCH_HOOKS + _FORGETS_NO_GRAD},
                              twin="c4_twin_no_grad"),
    "t1_hook_batches": Attack(1, "batches one row too big, rewrites the recorder's list of "
                              "batches", 12.0, None,
                              {**CORRECT, "evaluate_accuracy": _REWRITE + _BIG_BATCHES},
                              twin="c4_twin_big_batches"),
}


def write_attacks(folder: Path) -> dict[str, Attack]:
    """Write every Exercise 4 attack as ``folder/<student>/ex04_misconceptions/...``."""
    for student, attack in ATTACKS.items():
        target = folder / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(build(attack, RELEASE), target)
    return dict(ATTACKS)
