"""The student kit: what students download from the book, and nothing else of the course.

    python -m autograder.engine.kit --out _build/student-kit.zip

One zip, one folder inside (``KIT_FOLDER``): the four exercise notebooks from ``exercises/`` (byte
for byte), the student package ``dropout_course`` as a wheel built by pip from
``autograder/student`` (standard tooling, no build isolation: it needs ``setuptools`` installed),
a ``requirements.txt`` with only what students need, a README on installing, validating and
handing in, and the ``nbgrader_config.py`` that makes Validate judge as grading does
(``autograder/student/kit/``). Nothing from ``solutions/``, ``tests/``, ``autograder/demo/`` or
``autograder/engine/``.

The zip is deterministic (sorted entries, fixed timestamps and modes, ``SOURCE_DATE_EPOCH`` for the
wheel): building it twice gives the same bytes, and an unchanged kit is not rewritten, so the book
does not re-read the pages that link it.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXERCISES = ROOT / "exercises"
STUDENT = ROOT / "autograder" / "student"
DEFAULT_OUT = ROOT / "_build" / "student-kit.zip"
KIT_FOLDER = "dropout-course-kit"
# 1980-01-01, the earliest time a zip can hold: the wheel's and the kit's entries all carry it.
EPOCH = 315532800
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def notebooks() -> list[Path]:
    """The student notebooks, ``exercises/<assignment>/<assignment>.ipynb``, in order."""
    found = sorted(p for p in EXERCISES.glob("*/*.ipynb") if p.stem == p.parent.name)
    if not found:
        raise SystemExit(f"no exercise notebooks under {EXERCISES}")
    return found


def build_wheel(out_dir: Path) -> Path:
    """Build the student package's wheel with pip into ``out_dir``; returns the wheel's path.

    pip builds in the source tree (``build/``, ``*.egg-info``), so it builds a clean copy.
    """
    with tempfile.TemporaryDirectory(prefix="kit-wheel-") as tmp:
        source = Path(tmp) / "student"
        shutil.copytree(STUDENT, source, ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "*.egg-info", "build", "dist"))
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH), "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "--quiet", "-w", str(out_dir), str(source)],
            env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"building the wheel failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = sorted(out_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {out_dir}, found {[w.name for w in wheels]}")
    return wheels[0]


def requirements(wheel_name: str) -> str:
    """The students' requirements.txt: lean, PyTorch pinned exactly, the wheel by relative path."""
    return "\n".join([
        "# The Dropout course's student environment. From this folder:",
        "#   python -m venv .venv && .venv/bin/pip install -r requirements.txt",
        "# PyTorch is pinned exactly. On Linux, PyPI's torch pulls several GB of CUDA packages;",
        f"# without an NVIDIA GPU install the CPU build first (see README.md): {CPU_INDEX}",
        TORCH,
        "numpy",
        "matplotlib",
        "# Exercise 4 uses scikit-learn's bundled digits data (load_digits), and its paired",
        "# t-test SciPy's Student t distribution (scipy.stats.t).",
        "scikit-learn",
        "scipy",
        "jupyterlab>=4,<5",
        "# The Validate button in JupyterLab's notebook toolbar, and `nbgrader validate`.",
        "nbgrader==0.9.6",
        "# The course's package: the checks library the test cells call, and its layers.",
        f"./{wheel_name}",
        "",
    ])


def readme(wheel_name: str, names: list[str]) -> str:
    """The kit's README: install, work, validate, hand in; JupyterHub/Colab; the CPU build."""
    listing = "\n".join(f"* `{name}`" for name in names)
    first = names[0]
    return f"""# Dropout in Deep Learning: student kit

This folder holds everything you need for the course's graded exercises:

{listing}
* `{wheel_name}`: the course's package `dropout_course` (the checks library
  that the test cells call, and the course's layers);
* `requirements.txt`: the Python packages the notebooks need, with PyTorch pinned;
* `nbgrader_config.py`: Validate's settings, the same as when your notebook is graded (start
  JupyterLab or `nbgrader validate` in this folder, so that it is found).

## Install (once)

You need Python 3.10 or newer. In a terminal, from this folder:

```bash
python -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/jupyter lab
```

On Windows (PowerShell or cmd):

```
py -m venv .venv
.venv\\Scripts\\pip install -r requirements.txt
.venv\\Scripts\\jupyter lab
```

Later, start JupyterLab again with `.venv/bin/jupyter lab` (Windows: `.venv\\Scripts\\jupyter lab`)
from this folder.

**PyTorch on Linux.** A plain `pip install torch` from PyPI on Linux pulls several GB of CUDA
packages. Without an NVIDIA GPU, the CPU build from PyTorch's CPU wheel index is much lighter:
install it first, then the rest:

```bash
.venv/bin/pip install {TORCH} --index-url {CPU_INDEX}
.venv/bin/pip install -r requirements.txt
```

## Work on an exercise

Open a notebook in JupyterLab and run its setup cell first. Replace each
`raise NotImplementedError()` with your code and run the test cell below it: `Passed: ...` means
the visible tests pass; an `AssertionError` says what is wrong and what to check. Hidden tests run
only when your notebook is graded, so test the edge cases the docstrings mention yourself.

## Validate

Before you hand in, press **Validate** in the notebook's toolbar: it runs every test cell from a
fresh kernel and reports any that fail. The same from a terminal:

```bash
.venv/bin/nbgrader validate {first}
```

(Windows: `.venv\\Scripts\\nbgrader validate {first}`.) `Success! Your notebook passes all the
tests.` means every test cell passes; otherwise it shows each failing cell and its message.

## Hand in

Hand in the notebook file itself (for example `{first}`), with its name unchanged: through
nbgrader's **Assignment List** if your course uses it, otherwise by uploading it to the assignment
in your course's learning platform that your instructor names. Do not rename the notebook's
functions, and do not edit or delete its test cells: they are restored before grading.

## JupyterHub or Colab

Upload `{wheel_name}` next to the notebook, run

```
%pip install {wheel_name}
```

in a cell, then restart the kernel. PyTorch, NumPy, matplotlib and scikit-learn are usually
installed there already: `%pip install` only one that is missing (installing the whole
`requirements.txt` there would replace the platform's own PyTorch).
"""


def _entry(name: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(f"{KIT_FOLDER}/{name}", date_time=ZIP_TIME)
    info.compress_type = compress
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    info.create_system = 3  # Unix, so the mode above is honoured; the same on every machine
    return info


def kit_bytes(wheel: Path) -> bytes:
    """The kit as zip bytes: entries sorted by name, fixed timestamps and modes."""
    files: dict[str, bytes] = {nb.name: nb.read_bytes() for nb in notebooks()}
    files[wheel.name] = wheel.read_bytes()
    files["requirements.txt"] = requirements(wheel.name).encode()
    files["README.md"] = readme(wheel.name, [nb.name for nb in notebooks()]).encode()
    # Validate's settings, the same as grading's (time limit, warnings): found in the kit's folder.
    files["nbgrader_config.py"] = (STUDENT / "kit" / "nbgrader_config.py").read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as kit:
        for name in sorted(files):
            # The wheel is a zip already: store it as it is.
            compress = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            kit.writestr(_entry(name, compress), files[name])
    return buffer.getvalue()


def build(out: Path = DEFAULT_OUT) -> Path:
    """Write the kit to ``out`` (left untouched when its bytes are already the same)."""
    with tempfile.TemporaryDirectory(prefix="kit-") as tmp:
        data = kit_bytes(build_wheel(Path(tmp)))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not (out.is_file() and out.read_bytes() == data):
        partial = out.with_name(out.name + ".partial")
        partial.write_bytes(data)
        partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the zip to write")
    args = parser.parse_args(argv)
    out = build(args.out)
    print(f"student kit: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
