"""nbconvert preprocessors for the feedback pages students (and instructors) open.

``HideHiddenTests`` keeps hidden tests out of the feedback: autograding restores every test
cell from the gradebook, hidden tests included, so stock ``nbgrader generate_feedback`` shows
them. For each cell that held hidden tests it removes the hidden region from the source and
cuts every traceback down to its last line (``AssertionError: what is wrong ... What to check:
...``), because traceback frames quote the hidden source lines.

``SanitizeStudentContent`` keeps the student's markup from acting in the page: a markdown cell
that would render HTML or a link the sanitiser removes is shown as text, rich outputs are
reduced to inert ones (HTML cleaned), and lone surrogates are escaped.
"""

from __future__ import annotations

from typing import Any

from nbconvert.exporters.exporter import ResourcesDict
from nbconvert.preprocessors import Preprocessor
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

from autograder.engine.untrusted import safe_html, sanitize_markdown, scrub_surrogates

HIDDEN_NOTE = "# (hidden tests ran here; their code is not shown)"
# Output data a page can show without running anything: text, raster images, LaTeX (escaped
# by the template), and HTML or markdown once cleaned. JavaScript, widgets, SVG (which can
# script) and any other type are dropped.
INERT_OUTPUTS = frozenset({"text/plain", "image/png", "image/jpeg", "image/gif", "text/latex"})
CLEANED_OUTPUTS = frozenset({"text/html", "text/markdown"})


class HideHiddenTests(NbGraderPreprocessor):
    """Strip hidden-test source and the tracebacks that quote it from feedback notebooks."""

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        if cell.cell_type != "code":
            return cell, resources
        remover = ClearHiddenTests(parent=self)
        if remover._remove_hidden_test_region(cell):
            cell.source = (cell.source.rstrip("\n") + "\n" + HIDDEN_NOTE).lstrip("\n")
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
        return cell, resources


def _scrubbed(value: Any) -> Any:
    """``value`` (a notebook's JSON) with every lone surrogate in its strings escaped."""
    if isinstance(value, str):
        return scrub_surrogates(value)
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return type(value)((scrub_surrogates(k), _scrubbed(v)) for k, v in value.items())
    return value


class SanitizeStudentContent(Preprocessor):
    """Make a cell whose source and outputs a student controls safe to render as HTML.

    Markdown cells go through :func:`~autograder.engine.untrusted.sanitize_markdown`; raw
    cells and attachments are dropped from the page (they carry no grade); outputs keep only
    ``INERT_OUTPUTS`` and cleaned ``CLEANED_OUTPUTS`` data, without output metadata (which can
    ask for an iframe). Apply it before rendering; the exporter's own sanitising of rendered
    HTML remains the last line of defence.
    """

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
                        ) -> tuple[NotebookNode, ResourcesDict]:
        cell = _scrubbed(cell)
        cell.pop("attachments", None)
        if cell.cell_type == "markdown":
            cell.source = sanitize_markdown(cell.source)
        elif cell.cell_type == "raw":
            cell.source = ""
        elif cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if "data" not in output:
                    continue
                data = output["data"]
                for key in list(data):
                    if key in CLEANED_OUTPUTS:
                        data[key] = safe_html(data[key]) if key == "text/html" else \
                            sanitize_markdown(data[key])
                    elif key not in INERT_OUTPUTS:
                        del data[key]
                output["metadata"] = {}
        return cell, resources
