"""Checks for Exercise 4 (misconceptions in practice): parameter counts per dropout rate, the
test-time factor, an evaluation loop that really evaluates, switching on only the dropout
layers for Monte Carlo sampling, and a paired verdict over seeds.

p is the DROP probability throughout. The functions under test (the exercise's contract):

* ``count_parameters_by_rate(build_model, rates) -> dict[float, int]``
* ``inference_scale(p, inverted) -> float``
* ``evaluate_accuracy(model, x, y, batch_size=256) -> (accuracy, predictions)``
* ``enable_mc_dropout(model) -> list[str]``
* ``paired_verdict(with_dropout, without_dropout, alpha=0.05) -> (mean_diff, std_err, verdict)``
  (a two-sided paired t-test)

Almost every check here is exact. The only randomness is dropout itself in
:func:`check_enable_mc_dropout` and :func:`check_evaluate_accuracy`; each docstring states how
small the chance is that it fails a correct answer. Tensor checks run on every available device,
in float32 and float64.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from .boundary import GraderSide
from .core import (
    describe_call,
    expect,
    expect_equal,
    expect_raises,
    expect_raises_many,
    fail,
    run_student,
    run_student_many,
    short_repr,
)
from .devices import available_devices
from .modules import (
    DROPOUT_FAMILY_HINT,
    ForwardRecorder,
    ModelSnapshot,
    changed_modes,
    check_modes_restored_on_error,
    module_modes,
    seeded,
    wrong_modes,
)
from .stats import t_critical
from .tensors import device_dtype_cases

__all__ = [
    "VERDICTS",
    "build_cnn",
    "build_conditional",
    "build_frozen",
    "build_mlp",
    "build_tied",
    "build_widening",
    "check_counts_by_rate",
    "check_counts_invalid",
    "check_enable_mc_dropout",
    "check_enable_mc_family",
    "check_enable_mc_invalid",
    "check_evaluate_accuracy",
    "check_evaluate_batches",
    "check_evaluate_invalid",
    "check_evaluate_restores_on_error",
    "check_inference_scale",
    "check_inference_scale_invalid",
    "check_paired_verdict",
    "check_paired_verdict_invalid",
    "check_paired_verdict_random",
]

_FLOATS = (torch.float32, torch.float64)
VERDICTS = ("helps", "hurts", "inconclusive")


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or short_repr(fn)


# --------------------------------------------------------------------------- task 1: counts
# Model builders for the tests: each takes the dropout rate p and returns a fresh model.


def build_mlp(p: float) -> torch.nn.Module:
    """64 -> 128 -> 10 MLP with ``nn.Dropout(p)`` after the hidden layer."""
    nn = torch.nn
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(p), nn.Linear(128, 10))


def build_widening(p: float) -> torch.nn.Module:
    """The rule of thumb of Srivastava et al. (2014): widen a layer of n units to n / (1 - p)
    when it gets dropout. Here the count really depends on p: 32 -> round(64 / (1 - p)) -> 4."""
    nn = torch.nn
    width = round(64 / (1.0 - p))
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Dropout(p), nn.Linear(width, 4))


def build_conditional(p: float) -> torch.nn.Module:
    """A dropout layer only when p > 0, a BatchNorm layer (whose running statistics are buffers,
    not parameters) and the course's ``GaussianDropout`` on the input."""
    from dropout_course.layers import GaussianDropout

    nn = torch.nn
    layers: list[nn.Module] = [GaussianDropout(p / 2), nn.Linear(20, 30), nn.BatchNorm1d(30),
                               nn.ReLU()]
    if p > 0:
        layers.append(nn.Dropout(p))
    layers.append(nn.Linear(30, 3))
    return nn.Sequential(*layers)


def build_frozen(p: float) -> torch.nn.Module:
    """A frozen embedding (pretrained, requires_grad=False) under a trainable head."""
    nn = torch.nn
    embedding = nn.Embedding(100, 16)
    embedding.weight.requires_grad_(False)
    return nn.Sequential(embedding, nn.Dropout(p), nn.Flatten(), nn.Linear(16 * 5, 2))


def build_tied(p: float) -> torch.nn.Module:
    """An autoencoder whose decoder reuses the encoder's weight matrix (one parameter, two
    layers) and its own bias; dropout in between."""
    nn = torch.nn
    encoder, decoder = nn.Linear(24, 24), nn.Linear(24, 24)
    decoder.weight = encoder.weight
    return nn.Sequential(encoder, nn.Tanh(), nn.Dropout(p), decoder)


def build_cnn(p: float) -> torch.nn.Module:
    """A small CNN with spatial dropout after the convolution and dropout after the first dense
    layer (the classic Keras CIFAR-10 layout, shrunk to 8x8 digits)."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(p),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Dropout(p),
                         nn.Linear(32, 10))


class _Builder(GraderSide):
    """Wraps a builder: records each call and a snapshot of each model it returned. Grader-side:
    when grading, the records are made in the trusted process, whatever the student's code does
    to its stand-in."""

    def __init__(self, build: Callable[[float], torch.nn.Module]) -> None:
        self.build = build
        self.__name__ = build.__name__
        self.calls: list[Any] = []
        self.models: list[tuple[torch.nn.Module, ModelSnapshot]] = []

    def __call__(self, p: Any) -> torch.nn.Module:
        self.calls.append(p)
        model = self.build(p)
        self.models.append((model, ModelSnapshot(model)))
        return model


def check_counts_by_rate(count_parameters_by_rate: Callable[..., Any],
                         build_model: Callable[[float], torch.nn.Module],
                         rates: Sequence[float], expected: dict[float, int]) -> None:
    """``count_parameters_by_rate(build_model, rates) == expected`` exactly: a dict with one
    Python int per rate; ``build_model`` called once per rate, in the given order; the models it
    returned left unchanged (values, requires_grad, buffers, modes). Exact."""
    builder = _Builder(build_model)
    call = f"{_name(count_parameters_by_rate)}({build_model.__name__}, {list(rates)})"
    result = run_student(count_parameters_by_rate, builder, list(rates))
    expect(isinstance(result, dict), f"{call} returned a {type(result).__name__}, not a dict",
           "return a dict {rate: count}, e.g. built with a dict comprehension.")
    expect(builder.calls == list(rates),
           f"{call} called {build_model.__name__} with {short_repr(builder.calls)}; expected "
           f"one call per rate, in order: {list(rates)}",
           "build a fresh model for every rate (the architecture may depend on the rate) and "
           "count that model; do not reuse one model for all rates.")
    expect(sorted(result) == sorted(expected),
           f"{call} has keys {short_repr(sorted(result))}; expected the rates "
           f"{sorted(expected)}", "use each rate as a key: {float(rate): count, ...}.")
    for rate, count in expected.items():
        got = result[rate]
        expect(isinstance(got, int) and not isinstance(got, bool),
               f"{call}[{rate}] is a {type(got).__name__} ({short_repr(got)}), not an int",
               "store plain Python ints, e.g. int(total).")
        expect_equal(got, count, f"{call}[{rate}]",
                     "count the elements of every parameter with requires_grad=True, a shared "
                     "parameter once (model.parameters() yields it once), and no buffers. "
                     "Dropout has no parameters: it never changes the count.")
    for model, snapshot in builder.models:
        changes = snapshot.changes(model)
        expect(not changes, f"{call} changed the models it counted: {', '.join(changes)}",
               "counting must only read the model: no training, no requires_grad_(), no "
               "train()/eval().")


def check_counts_invalid(count_parameters_by_rate: Callable[..., Any]) -> None:
    """No rates, a repeated rate, a rate outside [0, 1) or NaN raise ValueError; a rate that is
    not a real number (a string, a bool) raises TypeError; a builder that returns something other
    than a ``torch.nn.Module`` raises TypeError. Exact."""
    fn = count_parameters_by_rate
    for rates, why in (([], "no rates"), ([0.2, 0.5, 0.2], "a repeated rate"),
                       ([0.0, 1.0], "p = 1 drops every unit"), ([-0.1], "a negative rate"),
                       ([1.5], "a rate above 1"), ([float("nan")], "a NaN rate")):
        expect_raises(fn, (build_mlp, rates), ValueError, why)
    for rates, why in ((["0.5"], "a rate given as a string"), ([True], "a bool rate")):
        expect_raises(fn, (build_mlp, rates), TypeError, why)
    expect_raises(fn, (build_nothing, [0.5]), TypeError,
                  "the builder returned a string, not a torch.nn.Module")


def build_nothing(p: float) -> Any:
    """A broken builder: returns a string instead of a model (module level, so that it can be
    sent into the grading sandbox)."""
    return f"a model with dropout {p}"


# --------------------------------------------------------------------------- task 2: scale


#: (p, the factor of original dropout, the factor of inverted dropout), worked out by hand.
_SCALE_CASES = ((0.0, 1.0, 1.0), (0.1, 0.9, 1.0), (0.25, 0.75, 1.0), (0.5, 0.5, 1.0),
                (0.8, 0.2, 1.0), (0.95, 0.05, 1.0))


def check_inference_scale(inference_scale: Callable[..., Any]) -> None:
    """For p in {0, 0.1, 0.25, 0.5, 0.8, 0.95}: ``inference_scale(p, inverted=False)`` is the keep
    probability 1 - p, and ``inference_scale(p, inverted=True)`` is 1, as Python floats (the
    factors are fixed for these p, worked out by hand). Exact (1e-12)."""
    for p, original, inverted_factor in _SCALE_CASES:
        for inverted, wanted in ((False, original), (True, inverted_factor)):
            call = describe_call(inference_scale, (p,), {"inverted": inverted})
            got = run_student(inference_scale, p, inverted=inverted)
            expect(isinstance(got, numbers.Real) and not isinstance(got, bool)
                   and not isinstance(got, torch.Tensor),
                   f"{call} returned {short_repr(got)} (a {type(got).__name__}), not a float",
                   "return a plain Python float.")
            if math.isclose(float(got), wanted, rel_tol=0.0, abs_tol=1e-12):
                continue
            if not inverted and math.isclose(float(got), p, abs_tol=1e-12) and p != 0.5:
                what = f"{call} returned p = {p}: scaling by the DROP probability"
            elif inverted and math.isclose(float(got), 1.0 - p, abs_tol=1e-12):
                what = f"{call} returned 1 - p = {1.0 - p:g}: inverted dropout already divided " \
                       "by 1 - p during training"
            elif inverted and math.isclose(float(got), 1.0 / (1.0 - p), abs_tol=1e-12):
                what = f"{call} returned 1 / (1 - p) = {1.0 / (1.0 - p):g}: inverted dropout " \
                       "already divided by 1 - p during training, not again at test time"
            else:
                what = f"{call} returned {float(got):g}; expected {wanted:g}"
            fail(what, "in training a unit passes x with probability 1 - p and 0 otherwise, so "
                       "its mean is (1 - p) * x. Original dropout multiplies by 1 - p at test "
                       "time to match that mean; inverted dropout divides by 1 - p during "
                       "training, so at test time the factor is 1.")


def check_inference_scale_invalid(inference_scale: Callable[..., Any]) -> None:
    """p outside [0, 1) or NaN raises ValueError (p = 1 drops every unit: nothing is learned);
    p that is not a real number, or ``inverted`` that is not a bool, raises TypeError. Exact."""
    for p, why in ((1.0, "p = 1 drops every unit"), (-0.2, "a negative p"), (1.3, "p above 1"),
                   (float("nan"), "p is NaN")):
        expect_raises(inference_scale, (p, True), ValueError, why)
        expect_raises(inference_scale, (p, False), ValueError, why)
    expect_raises(inference_scale, ("0.5", False), TypeError, "p is a string")
    expect_raises(inference_scale, (True, False), TypeError, "p is a bool")
    for inverted in ("inverted", 1, None):
        expect_raises(inference_scale, (0.5, inverted), TypeError,
                      f"inverted={inverted!r} is not a bool")


# --------------------------------------------------------------------------- task 3: evaluate


def _eval_model(device: torch.device, dtype: torch.dtype) -> torch.nn.Sequential:
    """20 -> 64 -> 64 -> 5 with BatchNorm, nn.Dropout(0.5) and the course's GaussianDropout(0.3);
    the BatchNorm running statistics are set away from their defaults, so using batch statistics
    instead gives different predictions."""
    from dropout_course.layers import GaussianDropout

    nn = torch.nn
    with seeded(41):
        model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5),
                              nn.Linear(64, 64), nn.ReLU(), GaussianDropout(0.3),
                              nn.Linear(64, 5))
        with torch.no_grad():
            model[1].running_mean.uniform_(-0.5, 0.5)
            model[1].running_var.uniform_(0.3, 3.0)
            model[1].weight.uniform_(0.5, 1.5)
            model[1].bias.uniform_(-0.3, 0.3)
    return model.to(device, dtype)


def _eval_data(model: torch.nn.Module, n: int, device: torch.device, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels (the eval-mode prediction for about 70% of rows, another class for the
    rest), the rows whose eval-mode prediction is clear-cut (top two outputs further apart than
    rounding in ``dtype`` could move them) and the eval-mode predictions."""
    gen = torch.Generator().manual_seed(43)
    x = torch.randn(n, 20, generator=gen, dtype=torch.float64).to(device, dtype)
    modes = module_modes(model)
    model.eval()
    with torch.no_grad():
        out = model(x).double()
    for name, module in model.named_modules():
        module.training = modes[name]
    top2 = out.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > (1e-3 if dtype != torch.float64 else 1e-9)
    reference = out.argmax(dim=1)
    shift = torch.randint(1, 5, (n,), generator=gen).to(device)
    wrong = torch.rand(n, generator=gen).to(device) < 0.3
    y = torch.where(wrong, (reference + shift) % 5, reference)
    return x, y, clear, reference


def _evaluate(fn: Callable[..., Any], model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, where: str) -> tuple[float, torch.Tensor]:
    result = run_student(fn, model, x, y, batch_size=batch_size)
    # Each message is built only on failure: the repr of a tensor costs more than the call.
    if not (isinstance(result, tuple) and len(result) == 2):
        fail(f"{where} returned {short_repr(result)}; expected a tuple (accuracy, predictions)",
             "end with `return accuracy, predictions`.")
    accuracy, predictions = result
    expect(isinstance(accuracy, float) and not isinstance(accuracy, bool),
           f"{where}: accuracy is {short_repr(accuracy)} (a {type(accuracy).__name__}), not a "
           "Python float", "convert with .item() or float(...).")
    if not (isinstance(predictions, torch.Tensor) and predictions.dtype == torch.int64
            and predictions.shape == (len(x),)):
        fail(f"{where}: predictions are {short_repr(predictions)}; expected an int64 tensor of "
             f"shape ({len(x)},)", "predictions = model(batch).argmax(dim=1), concatenated "
             "over the batches with torch.cat.")
    expect(predictions.device == x.device,
           f"{where}: predictions are on {predictions.device}, the inputs on {x.device}",
           "keep the predictions on the inputs' device (no .cpu()).")
    expect(not predictions.requires_grad, f"{where}: predictions are part of an autograd graph",
           "evaluate under torch.no_grad().")
    return accuracy, predictions


_EVAL_HINT = ("call model.eval() before predicting (dropout off, BatchNorm uses its running "
              "statistics), predict under torch.no_grad(), and afterwards restore every "
              "module's original mode in a `finally:` block.")


def check_evaluate_accuracy(evaluate_accuracy: Callable[..., Any], n: int = 203,
                            batch_size: int = 64) -> None:
    """On a model with BatchNorm and two kinds of dropout, started in train, eval and a mixed
    mode, on every device in float32 and float64:

    * predictions equal the eval-mode argmax on every clear-cut row (top two outputs apart by
      more than rounding), accuracy is the fraction of predictions equal to the labels;
    * a second call gives the same predictions (deterministic);
    * no autograd graph during the forward passes; model (weights, BatchNorm statistics, every
      module's mode), inputs and labels unchanged afterwards.

    Exact for a correct answer. (A train-mode answer fails the BatchNorm-statistics and mode
    checks exactly; its predictions also differ, which is random.)"""
    for device, dtype in device_dtype_cases(_FLOATS):
        model = _eval_model(device, dtype)
        x, y, clear, reference = _eval_data(model, n, device, dtype)
        for start in ("train", "eval", "mixed"):
            model.train(start != "eval")
            if start == "mixed":
                model[1].eval()
                model[3].eval()
            snapshot = ModelSnapshot(model)
            x0, y0 = x.clone(), y.clone()
            where = (f"{_name(evaluate_accuracy)}(model, x, y, batch_size={batch_size}) "
                     f"({dtype} on {device.type}, model in {start} mode)")
            with ForwardRecorder(model) as recorder:
                accuracy, predictions = _evaluate(evaluate_accuracy, model, x, y, batch_size,
                                                  where)
            changes = snapshot.changes(model)
            if "buffers (e.g. BatchNorm's running statistics)" in changes:
                fail(f"{where} changed BatchNorm's running statistics: the model ran in "
                     "training mode", _EVAL_HINT)
            # An empty record would let every record-based check below pass vacuously.
            expect(recorder.calls != [], f"{where}: the model itself never ran",
                   "predict by calling the model, model(batch) (not model.forward(batch), "
                   "which skips the module's hooks), on every batch.")
            ran_training = sorted({name for name, training, _, _ in recorder.calls if training})
            expect(not ran_training, f"{where}: {ran_training} ran in training mode, so dropout "
                   "was on and the predictions are random", _EVAL_HINT)
            expect(not any(grad for _, _, grad, _ in recorder.calls),
                   f"{where}: the model ran with autograd on (it stores every activation for "
                   "a backward pass that never comes)", "predict under torch.no_grad().")
            expect(not changes, f"{where} changed the model: {', '.join(changes)}", _EVAL_HINT)
            expect(torch.equal(x, x0) and torch.equal(y, y0), f"{where} changed x or y",
                   "only read the inputs and labels.")
            mismatched = int(((predictions != reference) & clear).sum())
            expect(mismatched == 0,
                   f"{where}: {mismatched} of {int(clear.sum())} clear-cut predictions differ "
                   "from the eval-mode argmax over dim 1", "predict with model(batch)."
                   "argmax(dim=1) in evaluation mode.")
            wanted = (predictions == y).double().mean().item()
            expect(math.isclose(accuracy, wanted, abs_tol=1e-9),
                   f"{where}: accuracy is {accuracy:.6f}, but {wanted:.6f} of your predictions "
                   "equal the labels", "accuracy = (predictions == y).float().mean().item(), "
                   "a fraction between 0 and 1 (not a percentage, not a count).")
            _again, second = _evaluate(evaluate_accuracy, model, x, y, batch_size, where)
            expect(torch.equal(second, predictions),
                   f"{where}: a second call gave different predictions", _EVAL_HINT)


def check_evaluate_batches(evaluate_accuracy: Callable[..., Any]) -> None:
    """The model sees each row exactly once, in batches of at most ``batch_size`` rows (the last
    one smaller), for batch sizes that divide N, do not divide it, equal it and exceed it; and
    the predictions do not depend on the batch size (every device, float64). Exact."""
    for device in available_devices():
        model = _eval_model(device, torch.float64).eval()
        x, y, clear, _reference = _eval_data(model, 50, device, torch.float64)
        first: torch.Tensor | None = None
        for batch_size in (1, 7, 10, 50, 64):
            where = f"{_name(evaluate_accuracy)}(model, x of 50 rows, y, batch_size={batch_size})"
            with ForwardRecorder(model) as recorder:
                _accuracy, predictions = _evaluate(evaluate_accuracy, model, x, y, batch_size,
                                                   where)
            rows = [r for name, _, _, r in recorder.calls if name == "0"]
            expect(sum(rows) == len(x) and all(r <= batch_size for r in rows),
                   f"{where}: the model saw batches of {rows} rows",
                   "loop over the rows in steps of batch_size: "
                   "for start in range(0, len(x), batch_size): batch = x[start:start + "
                   "batch_size]. A large test set does not fit in memory in one batch.")
            if first is None:
                first = predictions
            expect(torch.equal(predictions[clear], first[clear]),
                   f"{where}: the predictions depend on the batch size", _EVAL_HINT)


def _evaluate_two_batches(fn: Callable[..., Any], model: torch.nn.Module,
                          device: torch.device) -> Any:
    x = torch.ones(6, 4, device=device)
    return fn(model, x, torch.zeros(6, dtype=torch.long, device=device), batch_size=3)


def check_evaluate_restores_on_error(evaluate_accuracy: Callable[..., Any]) -> None:
    """When the model raises on its second batch, the error reaches the caller and every module's
    mode is restored (train-mode and eval-mode starts, every device). Exact."""
    check_modes_restored_on_error(evaluate_accuracy, _evaluate_two_batches, failing_call=2,
                                  what=_name(evaluate_accuracy))


def check_evaluate_invalid(evaluate_accuracy: Callable[..., Any]) -> None:
    """x and y of different lengths, no rows, or a batch_size that is not an int >= 1 raise
    ValueError. Exact."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    x, y = torch.ones(5, 3), torch.zeros(5, dtype=torch.long)
    expect_raises(evaluate_accuracy, (model, x, y[:4]), ValueError, "x has 5 rows, y has 4")
    expect_raises(evaluate_accuracy, (model, x[:0], y[:0]), ValueError, "there are no rows")
    for bad in (0, -4, 2.5, True, "8"):
        expect_raises(evaluate_accuracy, (model, x, y), ValueError,
                      f"batch_size={bad!r} is not an int >= 1", kwargs={"batch_size": bad})


# --------------------------------------------------------------------------- task 4: MC


class _SubclassedDropout(torch.nn.Dropout):
    """A user's own dropout layer, subclassing torch.nn.Dropout: multiplicative Gaussian noise
    like the course's GaussianDropout (so that, although a torch.nn.Dropout, it is no answer to
    Exercise 2's Dropout module, which must output zeros)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from dropout_course.layers import GaussianDropout

        return GaussianDropout.forward(self, x)  # reads only self.training and self.p


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout2d(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.norm(self.conv(x))))


def _mc_model(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Nested model: a block (Conv2d, BatchNorm2d, Dropout2d), then a head with BatchNorm1d, the
    course's GaussianDropout and a subclass of nn.Dropout. Its dropout modules are
    :data:`_MC_MODEL_DROPOUT`."""
    from dropout_course.layers import GaussianDropout

    nn = torch.nn
    with seeded(45):
        head = nn.Sequential(nn.Linear(4 * 6 * 6, 32), nn.BatchNorm1d(32), nn.ReLU(),
                             GaussianDropout(0.5), nn.Linear(32, 32), nn.ReLU(),
                             _SubclassedDropout(0.2), nn.Linear(32, 3))
        model = nn.Sequential(_Block(), nn.Flatten(), head)
        with torch.no_grad():
            for norm in (model[0].norm, head[1]):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
    return model.to(device, dtype)


#: The dropout modules of :func:`_mc_model` in ``named_modules()`` order: the Dropout2d of the
#: block, the course's GaussianDropout and the nn.Dropout subclass of the head.
_MC_MODEL_DROPOUT = ("0.drop", "2.3", "2.6")

_MC_HINT = ("call model.eval() first, then .train() on every module that is a dropout layer; "
            + DROPOUT_FAMILY_HINT + ". Never model.train(): BatchNorm would use batch "
            "statistics and update its running ones.")


def _enabled_names(fn: Callable[..., Any], model: torch.nn.Module, where: str) -> list[str]:
    result = run_student(fn, model)
    expect(isinstance(result, list) and all(isinstance(n, str) for n in result),
           f"{where} returned {short_repr(result)}; expected a list of module names (str)",
           "collect the names from model.named_modules() of the modules you switched on.")
    return result


def check_enable_mc_dropout(enable_mc_dropout: Callable[..., Any]) -> None:
    """A nested model with BatchNorm1d/2d, Dropout2d, the course's GaussianDropout and a subclass
    of nn.Dropout, started in train, eval and a mixed mode, on every device in float32 and
    float64: afterwards exactly the dropout modules (fixed for this model:
    :data:`_MC_MODEL_DROPOUT`) are in training mode; the result lists their names in
    ``named_modules()`` order; weights, BatchNorm statistics and requires_grad flags are
    unchanged. Then two forward passes differ (dropout is on) and leave BatchNorm's statistics
    alone. Exact for the modes and names; the two passes of a correct answer draw fresh
    continuous Gaussian noise for the 3 x 32 units of each of the head's two noise layers, so
    they are identical only if that noise repeats bit for bit: probability 0 up to float
    rounding (never seen in 3000 seeded trials per dtype)."""
    expected = list(_MC_MODEL_DROPOUT)
    for device, dtype in device_dtype_cases(_FLOATS):
        model = _mc_model(device, dtype)
        x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(46),
                        dtype=torch.float64).to(device, dtype)
        for start in ("train", "eval", "mixed"):
            model.train(start != "eval")
            if start == "mixed":
                model[0].norm.eval()
                model[2][3].eval()
            snapshot = ModelSnapshot(model)
            where = (f"{_name(enable_mc_dropout)}(model) ({dtype} on {device.type}, model in "
                     f"{start} mode)")
            names = _enabled_names(enable_mc_dropout, model, where)
            wrong = [name for name, m in model.named_modules() if m.training != (name in expected)]
            expect(not wrong, f"{where}: afterwards {wrong_modes(wrong, set(expected))}",
                   _MC_HINT)
            expect(names == expected, f"{where} returned {names}; expected {expected}",
                   "return the names of the modules you switched to training mode, in the "
                   "order of model.named_modules().")
            changes = [c for c in snapshot.changes(model) if not c.startswith("the train/eval")]
            expect(not changes, f"{where} changed the model: {', '.join(changes)}", _MC_HINT)
            enabled = ModelSnapshot(model)
            with torch.no_grad(), seeded(47):
                first, second = model(x), model(x)
            expect(not torch.equal(first, second),
                   f"{where}: two forward passes afterwards gave the same output: dropout is "
                   "not on", _MC_HINT)
            expect(not enabled.changes(model),
                   f"{where}: forward passes afterwards changed {enabled.changes(model)}: "
                   "BatchNorm was left in training mode", _MC_HINT)


def check_enable_mc_family(enable_mc_dropout: Callable[..., Any],
                           layer_classes: Sequence[type[torch.nn.Module]]) -> None:
    """Every member of the dropout family is recognised: each of ``layer_classes`` (the test
    cell's list: torch.nn's Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout and the
    course's ``GaussianDropout``) and a subclass of nn.Dropout, each built with p = 0.5 alone next
    to a Linear layer in an eval-mode model (every device). Exact."""
    for device in available_devices():
        for layer_class in (*layer_classes, _SubclassedDropout):
            label = layer_class.__name__
            if layer_class.__module__.startswith("dropout_course.layers"):
                label = f"the course's {label}"
            elif layer_class is _SubclassedDropout:
                label = "a subclass of nn.Dropout"
            model = torch.nn.Sequential(torch.nn.Linear(4, 4), layer_class(0.5)).to(device)
            model.eval()
            where = f"{_name(enable_mc_dropout)} on a model with {label} ({device.type})"
            names = _enabled_names(enable_mc_dropout, model, where)
            expect(model[1].training and not model[0].training and not model.training,
                   f"{where}: {label} was not switched on (or the Linear layer was)", _MC_HINT)
            expect(names == ["1"], f"{where} returned {names}; expected ['1']",
                   "return the names of the modules you switched to training mode.")


def check_enable_mc_invalid(enable_mc_dropout: Callable[..., Any]) -> None:
    """A model without any dropout layer raises ValueError (Monte Carlo sampling would return
    zero spread: a silent mistake) and is left exactly as it was; something that is not a
    ``torch.nn.Module`` raises TypeError. Exact."""
    nn = torch.nn
    for start in (True, False):
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        model.train(start)
        model[1].train(not start)
        before = module_modes(model)
        expect_raises(enable_mc_dropout, (model,), ValueError,
                      "the model has no dropout layer, so Monte Carlo samples would all agree")
        changed = changed_modes(before, module_modes(model))
        expect(not changed, f"{_name(enable_mc_dropout)} raised for a model without dropout but "
               f"first changed the mode of {changed}",
               "look for dropout layers first and raise before changing any mode.")
    expect_raises(enable_mc_dropout, ("model",), TypeError, "a string is not a torch.nn.Module")


# --------------------------------------------------------------------------- task 5: verdict


def _verdict_results(fn: Callable[..., Any], cases: Sequence[tuple[Any, Any, float]]
                     ) -> list[tuple[float, float, str, str]]:
    """``fn(a, b, alpha=alpha)`` for each case, in one batch: (mean_diff, std_err, verdict,
    the call as text) each, after checking the result's types."""
    results = run_student_many(fn, [((a, b), {"alpha": alpha}) for a, b, alpha in cases])
    return [_verdict_parts(describe_call(fn, (a, b), {"alpha": alpha}), result)
            for (a, b, alpha), result in zip(cases, results, strict=True)]


def _verdict_parts(call: str, result: Any) -> tuple[float, float, str, str]:
    expect(isinstance(result, tuple) and len(result) == 3,
           f"{call} returned {short_repr(result)}; expected (mean_diff, std_err, verdict)",
           "return the three values as one tuple, in the order (mean_diff, std_err, verdict).")
    mean, err, verdict = result
    for name, value in (("mean_diff", mean), ("std_err", err)):
        expect(isinstance(value, numbers.Real) and not isinstance(value, bool)
               and not isinstance(value, torch.Tensor | np.ndarray),
               f"{call}: {name} is {short_repr(value)} (a {type(value).__name__}), not a float",
               "return plain Python floats, e.g. float(...).")
    expect(isinstance(verdict, str) and verdict in VERDICTS,
           f"{call}: verdict is {short_repr(verdict)}; expected one of {VERDICTS}",
           "return exactly 'helps', 'hurts' or 'inconclusive' (lower case).")
    return float(mean), float(err), verdict, call


def _expected_case(expected: Any) -> tuple[float, float, str]:
    """The test cell's (mean_diff, std_err, verdict): two real numbers and one of
    :data:`VERDICTS`. (That the three agree with each other is the course staff's business: the
    instructor's tests run every test cell against the reference solution.)"""
    ok = (isinstance(expected, tuple | list) and len(expected) == 3
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in expected[:2])
          and isinstance(expected[2], str) and expected[2] in VERDICTS)
    expect(ok, f"this test case is malformed: expected is {short_repr(expected)}",
           "tell the course staff: a case states (mean_diff, std_err, verdict).")
    return float(expected[0]), float(expected[1]), expected[2]


def _sign_verdict(mean: float, bar: float) -> str:
    return "helps" if mean > bar else "hurts" if mean < -bar else "inconclusive"


def _verdict_hint(n: int, alpha: float, mean: float, err: float, verdict: str) -> str:
    """What to check when the verdict is wrong; names the normal-approximation mistake (1.96 or
    2 standard errors), which a t-test with few seeds must not make."""
    t_star = t_critical(alpha, n - 1)
    hint = (f"a paired t-test at level alpha: with n = {n} seeds the critical value is "
            f"t_(1 - alpha/2, n - 1) = {t_star:.4g}; 'helps' if mean_diff > t* * std_err, "
            "'hurts' if mean_diff < -t* * std_err, 'inconclusive' otherwise (both strict).")
    normal = (NormalDist().inv_cdf(1.0 - alpha / 2.0), 2.0)
    if any(z < t_star and _sign_verdict(mean, z * err) == verdict for z in normal):
        return (f"you seem to have used a normal-distribution critical value ({normal[0]:.3g}, "
                f"or 2 standard errors); with n - 1 = {n - 1} degrees of freedom use Student's "
                "t, " + hint)
    return hint


def _judge(fn: Callable[..., Any], cases: Sequence[tuple[Any, Any, float]],
           expected: Sequence[tuple[float, float, str]]) -> None:
    """Each case's answer against its expected (mean_diff, std_err, verdict)."""
    for (a, _b, alpha), got, want in zip(cases, _verdict_results(fn, cases), expected,
                                         strict=True):
        _judge_one(got, len(list(a)), alpha, want)


def _judge_one(got: tuple[float, float, str, str], n: int, alpha: float,
               expected: tuple[float, float, str]) -> None:
    mean, err, verdict, call = got
    want_mean, want_err, want_verdict = expected
    tol = 1e-9 * max(1.0, abs(want_mean), want_err)
    expect(math.isclose(mean, want_mean, rel_tol=1e-9, abs_tol=tol),
           f"{call}: mean_diff is {mean!r}; expected {want_mean!r}",
           "pair the runs by seed: d_i = with_dropout[i] - without_dropout[i], and mean_diff is "
           "the mean of the d_i.")
    if not math.isclose(err, want_err, rel_tol=1e-9, abs_tol=tol):
        hints = {
            "the population standard deviation (divisor n)":
                want_err * math.sqrt((n - 1) / n),
            "the standard deviation, not divided by sqrt(n)": want_err * math.sqrt(n),
        }
        named = [label for label, value in hints.items()
                 if math.isclose(err, value, rel_tol=1e-9, abs_tol=tol)]
        fail(f"{call}: std_err is {err!r}; expected {want_err!r}"
             + (f" (you computed {named[0]})" if named else ""),
             "std_err = stdev(d) / sqrt(n), with the sample standard deviation (divisor n - 1) "
             "of the paired differences d_i: pairing by seed removes the seed-to-seed "
             "variation that both settings share.")
    t_star = t_critical(alpha, n - 1)
    expect(verdict == want_verdict,
           f"{call}: verdict is {verdict!r}; expected {want_verdict!r} (mean_diff "
           f"{want_mean:.4g}, t* * std_err {t_star * want_err:.4g})",
           _verdict_hint(n, alpha, mean, err, verdict))


def check_paired_verdict(paired_verdict: Callable[..., Any], with_dropout: Sequence[float],
                         without_dropout: Sequence[float], alpha: float,
                         expected: tuple[float, float, str]) -> None:
    """One worked case: mean_diff, std_err (to 1e-9) and the verdict of a two-sided paired
    t-test at level ``alpha``, all three stated by the test cell as ``expected`` (worked out
    once by the course staff, so a wrong formula in this library could not agree with a wrong
    answer); the inputs are not modified. Exact."""
    a, b = list(with_dropout), list(without_dropout)
    _judge(paired_verdict, [(a, b, alpha)], [_expected_case(expected)])
    expect(a == list(with_dropout) and b == list(without_dropout),
           f"{_name(paired_verdict)} modified its inputs", "only read the two lists.")


def check_paired_verdict_random(paired_verdict: Callable[..., Any],
                                reference: Callable[..., tuple[float, float, str]], seed: int,
                                n_cases: int = 200) -> None:
    """Seeded random cases (2 to 12 seeds; lists, tuples and NumPy arrays; alpha in {0.01,
    0.05, 0.1}): mean_diff and std_err to 1e-9 and the verdict, against
    ``reference(a, b, alpha)``, the test cell's reference answer (the course staff's). Cases
    whose |mean_diff| is within 1e-6 (relative) of t* * std_err are skipped, so rounding, or a
    p-value computed instead of a critical value, cannot decide them. Exact."""
    rng = np.random.default_rng(seed)
    cases, answers = [], []
    for _ in range(n_cases):
        n = int(rng.integers(2, 13))
        base = rng.uniform(0.6, 0.95, n)
        effect = rng.choice([-0.03, 0.0, 0.02]) + rng.normal(0.0, 0.01, n)
        a, b = np.round(base + effect, 4), np.round(base, 4)
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        kind = int(rng.integers(3))
        args = (a.tolist(), b.tolist()) if kind == 0 else \
            (tuple(a.tolist()), tuple(b.tolist())) if kind == 1 else (a.copy(), b.copy())
        expected = _expected_case(tuple(reference(a.tolist(), b.tolist(), alpha)))
        bar = t_critical(alpha, n - 1) * expected[1]
        if abs(abs(expected[0]) - bar) <= 1e-6 * max(bar, 1e-12):
            continue
        cases.append((*args, alpha))
        answers.append(expected)
    _judge(paired_verdict, cases, answers)


def check_paired_verdict_invalid(paired_verdict: Callable[..., Any]) -> None:
    """Lists of different lengths, fewer than two seeds, a NaN or infinite value, and alpha
    that is not a number strictly between 0 and 1 raise ValueError. Exact."""
    fn = paired_verdict
    cases = [(([0.9, 0.8], [0.7]), {}, "the lists differ in length"),
             (([0.9], [0.8]), {}, "one seed gives no standard error"),
             (([], []), {}, "no seeds"),
             (([0.9, float("nan")], [0.8, 0.7]), {}, "a NaN accuracy"),
             (([0.9, 0.8], [0.8, float("inf")]), {}, "an infinite accuracy"),
             (([0.9, 0.8], [0.8, 0.7]), {"alpha": 0.0}, "alpha = 0"),
             (([0.9, 0.8], [0.8, 0.7]), {"alpha": 1.0}, "alpha = 1"),
             (([0.9, 0.8], [0.8, 0.7]), {"alpha": -0.05}, "a negative alpha"),
             (([0.9, 0.8], [0.8, 0.7]), {"alpha": 5.0}, "alpha = 5 (a percentage?)"),
             (([0.9, 0.8], [0.8, 0.7]), {"alpha": float("nan")}, "alpha is NaN")]
    expect_raises_many(fn, [(args, kwargs, ValueError, why) for args, kwargs, why in cases])
