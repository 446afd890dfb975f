"""Time what dropout costs: a training step with and without dropout, and two ways to drop.

Usage (from the course root)::

    python chapters/_scripts/time_dropout.py [--device cpu|cuda|auto] [--quick] [--seed N]

or ``make time-dropout ARGS="--device cuda"``. Needs only Python, torch and numpy, so it runs on a
GPU machine without the rest of the course's environment.

Two measurements, each repeated after warm-up, with the variants taking turns so that a busy
moment of the machine affects all of them alike:

* **training step**: forward, backward and optimiser step of the same MLP (same weights, same
  batch) without dropout and with ``nn.Dropout(p)`` after every hidden layer;
* **dropout operation**: a naive mask-multiply, ``x * (torch.rand_like(x) >= p) / (1 - p)``,
  against PyTorch's built-in ``F.dropout(x, p, training=True)`` on one large tensor.

It prints the median time with its spread (min-max and interquartile range) and the ratios
*with / without dropout* and *naive / built-in*. On CUDA every timed region starts and ends with
``torch.cuda.synchronize()``, since kernels run asynchronously. Chapter 4 of the course imports
:func:`measure_training` and :func:`measure_dropout_ops` so that the book and this script measure
the same thing.
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TRAINING_WITHOUT = "step without dropout"
TRAINING_WITH = "step with dropout"
OP_NAIVE = "naive mask-multiply"
OP_BUILTIN = "F.dropout (built-in)"


@dataclass(frozen=True)
class Preset:
    """Sizes and repetitions of one run of the script."""

    sizes: tuple[int, ...]  # MLP layer widths: input, hidden..., output
    batch_size: int
    op_shape: tuple[int, int]  # tensor for the dropout-operation timing
    repeats: int  # timed repetitions of each variant
    warmup: int  # untimed repetitions first
    inner: int  # calls per timed repetition (the time reported is per call)


PRESETS = {
    "quick": Preset(sizes=(64, 256, 256, 10), batch_size=256, op_shape=(512, 1024),
                    repeats=7, warmup=2, inner=5),
    "cpu": Preset(sizes=(784, 1024, 1024, 10), batch_size=256, op_shape=(4096, 4096),
                  repeats=25, warmup=3, inner=2),
    "cuda": Preset(sizes=(1024, 4096, 4096, 10), batch_size=1024, op_shape=(8192, 8192),
                   repeats=50, warmup=10, inner=20),
}


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated timings, in milliseconds per call."""

    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    n: int


def summarise(times_ms: Sequence[float]) -> Summary:
    """Median, quartiles, minimum and maximum of a list of timings (milliseconds)."""
    values = np.asarray(times_ms, dtype=float)
    if values.size == 0:
        raise ValueError("no timings to summarise")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return Summary(float(median), float(q1), float(q3), float(values.min()), float(values.max()),
                   int(values.size))


def resolve_device(name: str) -> torch.device:
    """Turn ``cpu``, ``cuda`` or ``auto`` into a device; ``auto`` is CUDA when available.

    Raises:
        RuntimeError: if CUDA is requested but not available.
        ValueError: for any other name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "--device cuda was requested, but CUDA is not available to this PyTorch "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                "use --device cpu or --device auto"
            )
        return torch.device("cuda")
    raise ValueError(f"unknown device {name!r}: use cpu, cuda or auto")


def device_name(device: torch.device) -> str:
    """A readable name of the device: the GPU's name, or the CPU's architecture and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on a CUDA device (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_mlp(sizes: Sequence[int], p: float, seed: int = 0,
             device: torch.device | str = "cpu") -> nn.Sequential:
    """ReLU MLP with the given layer widths; ``nn.Dropout(p)`` after every hidden ReLU if p > 0.

    The same seed gives the same weights for every p (dropout has no parameters).
    """
    if len(sizes) < 2:
        raise ValueError("sizes needs at least an input and an output width")
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes[:-1]):  # the hidden layers
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        if p > 0:
            layers.append(nn.Dropout(p))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers).to(device)


def time_training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                       y: torch.Tensor, inner: int = 1) -> float:
    """Milliseconds per training step (forward, cross-entropy, backward, optimiser step).

    Runs ``inner`` steps back to back and returns the mean time of one; on CUDA the timed region
    starts and ends with ``torch.cuda.synchronize()``.
    """
    model.train()
    synchronize(x.device)
    start = time.perf_counter()
    for _ in range(inner):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    synchronize(x.device)
    return 1000 * (time.perf_counter() - start) / inner


def time_dropout_op(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    inner: int = 1) -> float:
    """Milliseconds per call of ``op(x)``, the mean over ``inner`` calls back to back."""
    synchronize(x.device)
    start = time.perf_counter()
    for _ in range(inner):
        op(x)
    synchronize(x.device)
    return 1000 * (time.perf_counter() - start) / inner


def naive_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout written out: uniform numbers, a comparison, a multiply and a divide."""
    return x * (torch.rand_like(x) >= p) / (1 - p)


def builtin_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """PyTorch's own inverted dropout (training mode)."""
    return F.dropout(x, p, training=True)


def _interleaved(timers: dict[str, Callable[[], float]], repeats: int,
                 warmup: int) -> dict[str, list[float]]:
    """Call every timer once per round, ``warmup`` untimed rounds then ``repeats`` timed ones."""
    times: dict[str, list[float]] = {name: [] for name in timers}
    for round_ in range(warmup + repeats):
        for name, timer in timers.items():
            elapsed = timer()
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def measure_training(sizes: Sequence[int], batch_size: int, p: float = 0.5, *, repeats: int = 20,
                     warmup: int = 3, inner: int = 1, device: torch.device | str = "cpu",
                     seed: int = 0) -> dict[str, list[float]]:
    """Time training steps of one MLP without and with dropout, taking turns.

    Both models start from the same weights (same seed) and see the same random batch; each has
    its own Adam optimiser. Returns ``{TRAINING_WITHOUT: [...], TRAINING_WITH: [...]}``, one time
    in milliseconds per step for each of the ``repeats`` timed rounds.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, sizes[0], generator=gen).to(device)
    y = torch.randint(0, sizes[-1], (batch_size,), generator=gen).to(device)
    timers = {}
    for name, rate in [(TRAINING_WITHOUT, 0.0), (TRAINING_WITH, p)]:
        model = make_mlp(sizes, rate, seed=seed, device=device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        timers[name] = (lambda m=model, o=optimizer: time_training_step(m, o, x, y, inner))
    return _interleaved(timers, repeats, warmup)


def measure_dropout_ops(shape: Sequence[int], p: float = 0.5, *, repeats: int = 20,
                        warmup: int = 3, inner: int = 1, device: torch.device | str = "cpu",
                        seed: int = 0) -> dict[str, list[float]]:
    """Time the naive mask-multiply and ``F.dropout`` on one tensor of ``shape``, taking turns.

    Returns ``{OP_NAIVE: [...], OP_BUILTIN: [...]}`` in milliseconds per call.
    """
    device = torch.device(device)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)
    timers = {OP_NAIVE: lambda: time_dropout_op(lambda t: naive_dropout(t, p), x, inner),
              OP_BUILTIN: lambda: time_dropout_op(lambda t: builtin_dropout(t, p), x, inner)}
    return _interleaved(timers, repeats, warmup)


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Ratio of the median times."""
    return statistics.median(numerator) / statistics.median(denominator)


def _table(title: str, times: dict[str, list[float]]) -> list[str]:
    """A small aligned text table: median, interquartile range and range of each variant."""
    rows = [("variant", "median ms", "IQR ms", "min-max ms")]
    for name, values in times.items():
        s = summarise(values)
        rows.append((name, f"{s.median:.4f}", f"{s.q1:.4f}-{s.q3:.4f}",
                     f"{s.minimum:.4f}-{s.maximum:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title]
    for row in rows:
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "   ".join(cells))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                        help="where to run (auto: cuda if available, else cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats (a few seconds on a CPU)")
    parser.add_argument("--p", type=float, default=0.5, help="drop probability (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    args = parser.parse_args(argv)
    if not 0 <= args.p < 1 or math.isnan(args.p):
        parser.error(f"--p must be in [0, 1), got {args.p}")
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    preset = PRESETS["quick" if args.quick else device.type]
    common = {"repeats": preset.repeats, "warmup": preset.warmup, "inner": preset.inner,
              "device": device, "seed": args.seed}
    training = measure_training(preset.sizes, preset.batch_size, args.p, **common)
    ops = measure_dropout_ops(preset.op_shape, args.p, **common)

    mlp = " -> ".join(map(str, preset.sizes))
    print(f"device: {device_name(device)} [{device.type}]; torch {torch.__version__}; "
          f"p = {args.p}; preset {'quick' if args.quick else device.type}")
    print(f"{preset.repeats} timed repetitions after {preset.warmup} warm-up, "
          f"{preset.inner} calls each; variants take turns")
    print()
    for line in _table(f"training step: MLP {mlp}, batch {preset.batch_size}, Adam", training):
        print(line)
    print()
    shape = " x ".join(map(str, preset.op_shape))
    for line in _table(f"dropout operation on a {shape} float32 tensor", ops):
        print(line)
    print()
    print(f"ratio with/without dropout (median step): "
          f"{ratio(training[TRAINING_WITH], training[TRAINING_WITHOUT]):.3f}")
    print(f"ratio naive/builtin (median call): {ratio(ops[OP_NAIVE], ops[OP_BUILTIN]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
