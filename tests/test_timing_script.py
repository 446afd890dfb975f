"""Chapter 4's timing script runs on its own (Python, torch, numpy) and prints usable ratios."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import pytest
import torch
from course import ROOT

SCRIPT = ROOT / "chapters" / "_scripts" / "time_dropout.py"
RATIO = re.compile(r"^ratio (with/without dropout|naive/builtin) \(median [a-z]+\): (\S+)$",
                   re.MULTILINE)


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The script as a user runs it: a fresh interpreter, from the course root."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_quick_run_on_cpu_prints_finite_positive_ratios() -> None:
    """`--quick --device cpu` exits 0 within 30 s and prints both ratios as positive numbers."""
    start = time.perf_counter()
    proc = run_script("--quick", "--device", "cpu")
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert seconds < 30, f"the quick run took {seconds:.1f} s"
    ratios = dict(RATIO.findall(proc.stdout))
    assert set(ratios) == {"with/without dropout", "naive/builtin"}, proc.stdout
    for name, text in ratios.items():
        value = float(text)
        assert math.isfinite(value) and value > 0, f"ratio {name} = {text}"
    assert "device: CPU" in proc.stdout
    variants = ["step without dropout", "step with dropout", "naive mask-multiply", "F.dropout"]
    for variant in variants:
        assert variant in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_fails_with_a_clear_message() -> None:
    """Asking for CUDA where there is none is an error that says so, not a silent CPU run."""
    proc = run_script("--device", "cuda", "--quick")
    assert proc.returncode != 0
    assert "CUDA is not available" in proc.stderr
    assert "ratio" not in proc.stdout
