"""Progress bars for the chapters' long cells.

Plain-text tqdm written to stdout: a notebook widget bar (tqdm.auto / tqdm.notebook) would make the
built pages load widget JavaScript from a CDN. A reader who runs a chapter in Jupyter sees the bar
move. During the book build (``COURSE_BOOK_BUILD`` set by `make book`) the moving bar is not
drawn, because the book would keep every redrawn line; the finished bar is printed once instead:
how many runs the cell made and how long they took at build time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
NEVER = 1e9  # seconds: a bar delayed this long is never drawn while it runs


def progress(items: Iterable[T], what: str, total: int | None = None) -> Iterator[T]:
    """``items`` unchanged, shown with a text progress bar labelled ``what``."""
    in_book = bool(os.environ.get("COURSE_BOOK_BUILD"))
    bar = tqdm(items, desc=what, total=total, file=sys.stdout, mininterval=2.0, ncols=90,
               delay=NEVER if in_book else 0.0)
    yield from bar
    if in_book:
        print(bar)
