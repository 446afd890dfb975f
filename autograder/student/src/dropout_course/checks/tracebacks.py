"""Short failure reports in notebooks: a failed check shows the test cell's line and the message.

Without this, IPython prints every frame of the checks library between the test cell and the
message (dozens of lines of our source), so a student has to scroll past code they did not write
to reach *what is wrong* and *what to check*. Frames of the checks library are dropped from an
``AssertionError``'s traceback; frames of the notebook and of the student's own code stay, and so
does a chained exception (a student's function that raised is shown in full). The cell still ends
with an error, so nbgrader scores it exactly as before.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

CHECKS_DIR = Path(__file__).resolve().parent


def _in_checks_library(frame: types.FrameType) -> bool:
    try:
        return Path(frame.f_code.co_filename).resolve().is_relative_to(CHECKS_DIR)
    except (OSError, ValueError):
        return False


def without_library_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The same traceback with every frame of the checks library left out."""
    kept: list[types.TracebackType] = []
    while tb is not None:
        if not _in_checks_library(tb.tb_frame):
            kept.append(tb)
        tb = tb.tb_next
    trimmed = None
    for entry in reversed(kept):
        trimmed = types.TracebackType(trimmed, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return trimmed


def _show_short(shell: Any, etype: type, value: BaseException, tb: types.TracebackType,
                tb_offset: int | None = None) -> list[str]:
    """IPython's custom exception handler: show the trimmed traceback the usual way (in a kernel
    this sends the error output, so the cell still counts as failed)."""
    seen: set[int] = set()
    linked = value.__cause__ or value.__context__
    while linked is not None and id(linked) not in seen:  # a student's error that a check caught
        seen.add(id(linked))
        linked.with_traceback(without_library_frames(linked.__traceback__))
        linked = linked.__cause__ or linked.__context__
    stb = shell.InteractiveTB.structured_traceback(
        etype, value, without_library_frames(tb), tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)
    return stb


def install() -> bool:
    """Show failed checks briefly in the running IPython kernel, if there is one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    shell.set_custom_exc((AssertionError,), _show_short)
    return True
