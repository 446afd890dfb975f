"""What stays on the checks' side when a check hands its objects to a student's code.

In a notebook kernel (one process) nothing here changes anything: these are ordinary objects.
When grading, the checks run in a trusted process and the student's code in a sandbox; there:

* an instance of :class:`GraderSide` passed to a student's function is replaced, in the sandbox,
  by a stand-in; calling the stand-in runs the real object in the trusted process (its records
  are made there, and nothing the sandbox does to the stand-in is copied back);
* a model registered with :func:`run_on_grader` (``ForwardRecorder`` does this) travels as a
  real copy, but calling the copy or any of its submodules runs the trusted process's own model
  (with the copy's train/eval flags, autograd mode and random state), so its forward hooks
  record what really ran.
"""

from __future__ import annotations

import weakref

import torch

__all__ = ["GraderSide", "grader_run_models", "release", "run_on_grader"]


class GraderSide:
    """Marker base class: when grading, instances are called back in the trusted process, never
    copied into the sandbox. Subclasses must be callable."""


# A weak registry, not an attribute on the model: an attribute would travel into the sandbox
# with the model and could be removed there.
_RUN_ON_GRADER: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()


def run_on_grader(model: torch.nn.Module) -> None:
    """Mark ``model`` (and so its submodules) to run its forward passes in the trusted process
    when grading; calls nest (each needs its own :func:`release`)."""
    _RUN_ON_GRADER[model] = _RUN_ON_GRADER.get(model, 0) + 1


def release(model: torch.nn.Module) -> None:
    """Undo one :func:`run_on_grader` of ``model``."""
    left = _RUN_ON_GRADER.get(model, 0) - 1
    if left > 0:
        _RUN_ON_GRADER[model] = left
    else:
        _RUN_ON_GRADER.pop(model, None)


def grader_run_models() -> list[torch.nn.Module]:
    """The models currently marked by :func:`run_on_grader`."""
    return list(_RUN_ON_GRADER.keys())
