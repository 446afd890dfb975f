"""Sphinx extension: keep every page free of remote assets.

jupyter-book always loads sphinx-thebe, which writes the address of a CDN copy of thebe into
every page (used only by launch buttons, which this book does not have). Drop that script.
"""

from __future__ import annotations

from typing import Any


def _is_remote_config(script: Any) -> bool:
    body = getattr(script, "attributes", {}).get("body", "") or ""
    return "THEBE_JS_URL" in body


def drop_remote_scripts(app, pagename, templatename, context, doctree) -> None:
    """Remove the thebe CDN configuration script from the page's script list."""
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [s for s in scripts if not _is_remote_config(s)]


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", drop_remote_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
