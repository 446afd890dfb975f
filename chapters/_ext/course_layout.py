"""Sphinx extension: the course's own stylesheet (chapters/_ext/static/course.css), served from
the site like every other asset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"


def _add_static_path(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def setup(app) -> dict[str, Any]:
    app.connect("builder-inited", _add_static_path)
    app.add_css_file("course.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
