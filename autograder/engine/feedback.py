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

import json
import re
from typing import Any

from jinja2 import pass_context
from nbconvert import HTMLExporter
from nbconvert.exporters.exporter import ResourcesDict
from nbconvert.exporters.templateexporter import TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from nbconvert.preprocessors import Preprocessor
from nbformat.notebooknode import NotebookNode

# from their modules: the package's __init__ imports every preprocessor, and with them the
# gradebook's ORM (grade.lazy_nbgrader_preprocessors)
from nbgrader.preprocessors.base import NbGraderPreprocessor
from nbgrader.preprocessors.clearhiddentests import ClearHiddenTests

from autograder.engine.untrusted import Memo, safe_html, sanitize_markdown, scrub_surrogates

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


#: nbconvert's words for an image that has no alt text of its own.
NO_ALT = "No description has been provided for this image"
_IMG = re.compile(r"<img\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""\s([^\s"'>/=]+)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?""")


def with_alt_text(page: str) -> str:
    """``page`` with ``alt`` added to every ``<img>`` tag that lacks one (:data:`NO_ALT`).
    Every ``<`` of the page that opens a tag is one the template or the sanitiser wrote (a
    student's ``<`` is escaped text), so a tag is found by its name and quoted values."""
    def add(match: re.Match[str]) -> str:
        names = {name.lower() for name in _ATTRIBUTE.findall(match.group(1))}
        return match.group(0) if "alt" in names else f'<img alt="{NO_ALT}"{match.group(1)}>'

    return _IMG.sub(add, page)


class FeedbackHTMLExporter(HTMLExporter):
    """nbconvert's HTML exporter without its last pass over the page, which parses the whole
    page with BeautifulSoup and writes it again (about 40% of a feedback page's time) to add
    alt text to images that lack it and ``tabindex`` to JupyterLab's cell wrappers. The
    feedback template (``classic``) has no such wrappers; :func:`with_alt_text` adds the alt
    text. The rest is ``HTMLExporter.from_notebook_node`` as nbconvert 7 writes it (a test
    compares the two pages, element by element).

    Code highlighting and markdown rendering are functions of a cell's text (and the
    notebook's language, the cell's metadata): every submission's page repeats the exercise's
    own cells, which this exporter renders once, not once per student."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._rendered = Memo()

    @pass_context
    def markdown2html(self, context: Any, source: str) -> str:
        cell = context.get("cell", {})
        if cell.get("attachments"):  # SanitizeStudentContent drops them: never the case here
            return super().markdown2html(context, source)
        path = context.get("resources", {}).get("metadata", {}).get("path", "")
        return self._rendered.get(("markdown", source, path),
                                  lambda: super(FeedbackHTMLExporter, self).markdown2html(
                                      context, source), len(source))

    def _highlighter(self, lexer: str | None) -> Any:
        highlight = Highlight2HTML(pygments_lexer=lexer, parent=self)

        def highlight_code(source: str, language: str | None = None,
                           metadata: Any = None) -> str:
            about = json.dumps(metadata, sort_keys=True, default=repr)
            return self._rendered.get(("code", lexer, source, language, about),
                                      lambda: highlight(source, language, metadata),
                                      len(source) + len(about))

        return highlight_code

    def from_notebook_node(self, nb: NotebookNode, resources: dict[str, Any] | None = None,
                           **kw: Any) -> tuple[str, dict[str, Any]]:
        langinfo = nb.metadata.get("language_info", {})
        lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
        highlight_code = self.filters.get("highlight_code", self._highlighter(lexer))
        resources = self._init_resources(resources)
        filter_data_type = WidgetsDataTypeFilter(
            notebook_metadata=self._nb_metadata, parent=self, resources=resources)
        self.register_filter("highlight_code", highlight_code)
        self.register_filter("filter_data_type", filter_data_type)
        page, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        return with_alt_text(page), resources
