"""Helpers for checks that run a student's code on a whole ``torch.nn.Module``: how to name the
dropout family in a hint, every submodule's train/eval flag, forward hooks that record how each
module ran, and seeding for modules that draw from the global random generator.

Shared by the Monte Carlo checks of Exercise 3 and the evaluation/MC checks of Exercise 4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .boundary import release, run_on_grader
from .core import expect, not_written_error
from .devices import available_devices

__all__ = [
    "DROPOUT_FAMILY_HINT",
    "FailsOnCall",
    "ForwardRecorder",
    "ModelSnapshot",
    "changed_modes",
    "check_modes_restored_on_error",
    "module_modes",
    "seeded",
    "wrong_modes",
]


# Names the family without spelling out an isinstance tuple a solution may contain verbatim:
# feedback must not show a solution line. (The tuple itself is no part of this package: the hidden
# tests get the layers to try from the instructor's side, so nothing here hands out the answer.)
DROPOUT_FAMILY_HINT = ("the dropout layers are nn.Dropout, Dropout1d, Dropout2d, Dropout3d, "
                       "AlphaDropout and FeatureAlphaDropout from torch.nn, and the course's "
                       "GaussianDropout (which is not a torch.nn.Dropout subclass); test each "
                       "module with isinstance against all seven, which also covers their "
                       "subclasses")


def module_modes(model: torch.nn.Module) -> dict[str, bool]:
    """{submodule name: training flag} for the model and every submodule ('' is the model)."""
    return {name: module.training for name, module in model.named_modules()}


def changed_modes(before: dict[str, bool], after: dict[str, bool]) -> list[str]:
    """Names of the modules whose flag differs between two :func:`module_modes` snapshots."""
    return sorted(name or "(the model)" for name in before if before[name] != after.get(name))


def wrong_modes(wrong: set[str] | list[str], dropout: set[str] | frozenset[str]) -> str:
    """Say which way each of the modules ``wrong`` was wrong, given the names of the model's
    dropout layers (which must be in training mode; every other module in eval mode)."""
    off = sorted(n for n in wrong if n in dropout)
    on = sorted(n or "(the model)" for n in wrong if n not in dropout)
    parts = ([f"dropout layers {off} were in eval mode"] if off else []) + (
        [f"{on} were in training mode, which only dropout layers may be"] if on else [])
    return " and ".join(parts) or "no module was recorded"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global RNG (CPU and CUDA) for a module without a generator argument, and restore
    the caller's random state afterwards."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


class _RecordingHook:
    """A forward hook that appends (name, training, grad enabled, rows) to ``calls``. A class,
    not a closure, so that a model carrying it can be sent into the grading sandbox."""

    def __init__(self, calls: list[tuple[str, bool, bool, int]], name: str) -> None:
        self.calls = calls
        self.name = name

    def __call__(self, module: torch.nn.Module, inputs: Any, _output: Any) -> None:
        first = inputs[0] if inputs else None
        rows = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else 0
        self.calls.append((self.name, module.training, torch.is_grad_enabled(), rows))


class ForwardRecorder:
    """Forward hooks on every leaf module. ``calls`` records, per forward call, (module name,
    training flag, autograd enabled, number of rows of the first input).

    While the recorder is on, the model runs its forward passes on the checks' side when grading
    (:func:`boundary.run_on_grader`), so the hooks record what really ran and nothing the student's
    code does can rewrite ``calls``; in a notebook kernel it is an ordinary set of hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[str, bool, bool, int]] = []
        self.model: torch.nn.Module | None = model
        self.handles = [module.register_forward_hook(_RecordingHook(self.calls, name))
                        for name, module in model.named_modules() if not list(module.children())]
        run_on_grader(model)

    def remove(self) -> None:
        """Remove the hooks (a second call does nothing)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.model is not None:
            release(self.model)
            self.model = None

    def __enter__(self) -> ForwardRecorder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()


class ModelSnapshot:
    """A copy of everything about a model that reading it must not change: parameter values and
    ``requires_grad`` flags, buffers (e.g. BatchNorm's running statistics) and every module's
    train/eval flag. :meth:`changes` says what differs now."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.parameters = {n: (p.detach().clone(), p.requires_grad)
                           for n, p in model.named_parameters(remove_duplicate=False)}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.modes = module_modes(model)

    def changes(self, model: torch.nn.Module) -> list[str]:
        """What differs between the model now and the snapshot, in words (empty: nothing)."""
        found = []
        now = dict(model.named_parameters(remove_duplicate=False))
        if now.keys() != self.parameters.keys():
            found.append("the set of parameters")
        elif any(not torch.equal(now[n].detach(), v) for n, (v, _) in self.parameters.items()):
            found.append("parameter values")
        elif any(now[n].requires_grad != g for n, (_, g) in self.parameters.items()):
            found.append("requires_grad flags")
        buffers = dict(model.named_buffers())
        if buffers.keys() != self.buffers.keys() or any(
                not torch.equal(buffers[n], b) for n, b in self.buffers.items()):
            found.append("buffers (e.g. BatchNorm's running statistics)")
        modes = changed_modes(self.modes, module_modes(model))
        if modes:
            found.append(f"the train/eval mode of {modes}")
        return found


class FailsOnCall(torch.nn.Module):
    """The identity, except that forward call number ``failing_call`` raises RuntimeError (a
    model that breaks in the middle of a loop)."""

    def __init__(self, failing_call: int = 1) -> None:
        super().__init__()
        self.failing_call = failing_call
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.failing_call:
            raise RuntimeError(f"this model fails on forward call {self.failing_call}")
        return x


def check_modes_restored_on_error(fn: Callable[..., Any], call: Callable[..., Any],
                                  failing_call: int, what: str) -> None:
    """``call(fn, model, device)`` runs the student's ``fn`` on a model with BatchNorm and dropout
    whose forward call ``failing_call`` raises. The error must reach the caller and every module's
    mode must be restored (train-mode and eval-mode starts, every device). ``what`` names the
    call in messages, e.g. "mc_dropout_predict". Exact."""
    nn = torch.nn
    for device in available_devices():
        for start in (True, False):
            model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5),
                                  FailsOnCall(failing_call)).to(device).train(start)
            before = module_modes(model)
            where = (f"{what} on a model that raises on forward call {failing_call} "
                     f"({device.type}, model in {'train' if start else 'eval'} mode)")
            try:
                call(fn, model, device)
            except NotImplementedError:
                raise not_written_error(what) from None
            except Exception:
                raised = True
            else:
                raised = False
            expect(raised, f"{where}: the model's error was swallowed",
                   "let the model's exception propagate (use try/finally, not try/except).")
            changed = changed_modes(before, module_modes(model))
            expect(not changed, f"{where}: afterwards {changed} had a different mode",
                   "restore the original modes in a `finally:` block so they come back even "
                   "when the model raises.")
