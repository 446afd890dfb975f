"""Sphinx extension: the course's own page furniture.

* The course's stylesheet (chapters/_ext/static/course.css), served from the site like every
  other asset.
* The student kit's download link on every exercise page (pages under ``exercises/``): a box
  under the page title, so the notebooks themselves carry no link (it would be dead inside the
  kit). The kit (``course_student_kit``, built by ``make student-kit`` before the book) is copied
  into the site by Sphinx's own download machinery, like a ``{download}`` role; a missing kit is
  Sphinx's "download file not readable" warning, fatal in the strict build.
* The course's public addresses, set once in ``_config.yml`` (``sphinx: config: course_links``:
  ``book``, the published book's URL, and ``repository``, the repository's link). The
  ``{course-links}`` directive shows those that are set; an empty value shows nothing, never a
  dead link. A value that is not an http(s) URL fails the build.
* Accessibility fixes where the theme or docutils write markup that axe-core rejects (checked by
  tests/test_browser_book.py): the sidebar's expand/collapse toggles get a name, bibliography
  entries are list items of their list, and a figure that scrolls sideways on a phone gets a
  tab stop (chapters/_ext/static/course.js).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup
from docutils import nodes
from sphinx import addnodes
from sphinx.errors import ConfigError
from sphinx.transforms import SphinxTransform
from sphinx.util.docutils import SphinxDirective

EXT = Path(__file__).resolve().parent
STATIC = EXT / "static"
#: The kit, from the book's source folder (the repository root); built by `make student-kit`.
DEFAULT_KIT = "/_build/student-kit.zip"
EXERCISE_PAGES = "exercises/"
#: What each course link is called on a page, in the order shown.
LINK_NAMES = {"book": "the course book online", "repository": "the course's repository"}


def _add_static_path(app) -> None:
    app.config.html_static_path.append(str(STATIC))


def checked_links(links: Any) -> dict[str, str]:
    """``course_links`` with the set values only; a ConfigError for anything else."""
    if not isinstance(links, dict) or not set(links) <= set(LINK_NAMES):
        raise ConfigError(f"course_links must be a mapping with the keys {sorted(LINK_NAMES)}; "
                          f"got {links!r}")
    found = {}
    for key in LINK_NAMES:
        value = links.get(key) or ""
        if not isinstance(value, str):
            raise ConfigError(f"course_links.{key} must be a string, got {value!r}")
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ConfigError(f"course_links.{key} must be an http(s) URL or empty; got {value!r}")
        if value:
            found[key] = value
    return found


def _check_config(app, config) -> None:
    checked_links(config.course_links)


def link_nodes(links: Any) -> list[nodes.Node]:
    """The paragraph the ``{course-links}`` directive shows: one link per set value; nothing
    when none is set."""
    found = checked_links(links)
    if not found:
        return []
    para = nodes.paragraph(classes=["course-links"])
    para += nodes.Text("See also ")
    for i, (key, url) in enumerate(found.items()):
        if i:
            para += nodes.Text(" and ")
        para += nodes.reference("", LINK_NAMES[key], refuri=url, internal=False)
    para += nodes.Text(".")
    return [para]


class CourseLinks(SphinxDirective):
    """``{course-links}``: the course's public addresses that ``_config.yml`` sets, or nothing."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        return link_nodes(self.config.course_links)


def kit_box(kit: str, docname: str) -> nodes.admonition:
    """The exercise page's box: the kit's download link and where the set-up is explained."""
    name = kit.rsplit("/", 1)[-1]
    link = addnodes.download_reference(
        "", "", nodes.literal("", name, classes=["xref", "download"]),
        refdoc=docname, refdomain="", reftype="download", refexplicit=True, refwarn=False,
        reftarget=kit)
    setup = addnodes.pending_xref(
        "", nodes.inline("", "Working on an exercise"),
        refdoc=docname, refdomain="std", reftype="ref", refexplicit=True, refwarn=True,
        reftarget="exercises:setup")
    para = nodes.paragraph()
    para += [nodes.Text("Download "), link,
             nodes.Text(": this notebook and the other exercises, the course's package "),
             nodes.literal("", "dropout_course"),
             nodes.Text(" and a README on installing them, validating and handing in (see "),
             setup, nodes.Text("). The page's download button gives this notebook alone.")]
    box = nodes.admonition("", nodes.title("", "Student kit"), para,
                           classes=["tip", "course-student-kit"])
    return box


class StudentKitLink(SphinxTransform):
    """Put the kit's box under the title of every page under ``exercises/``."""

    default_priority = 210

    def apply(self, **kwargs: Any) -> None:
        kit = self.config.course_student_kit
        if not kit or not self.env.docname.startswith(EXERCISE_PAGES):
            return
        box = kit_box(kit, self.env.docname)
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is None:
            self.document.insert(0, box)
            return
        titles = [i for i, child in enumerate(section.children) if isinstance(child, nodes.title)]
        section.insert(titles[0] + 1 if titles else 0, box)


def _name_sidebar_toggles(soup: Any) -> Any:
    """Give each of the sidebar's expand/collapse toggles (a ``<summary>`` holding only an icon)
    an accessible name: "Show or hide the pages under <the entry's title>"."""
    if not isinstance(soup, BeautifulSoup):
        return soup
    for summary in soup.find_all("summary"):
        if summary.get_text(strip=True) or summary.get("aria-label"):
            continue
        item = summary.find_parent("li")
        link = item.find("a") if item is not None else None
        title = link.get_text(" ", strip=True) if link is not None else ""
        summary["aria-label"] = f"Show or hide the pages under {title}" if title else (
            "Show or hide the pages in this section")
    return soup


def label_sidebar_toggles(app, pagename, templatename, context, doctree) -> None:
    """pydata-sphinx-theme writes the sidebar's collapsible entries as ``<details>`` whose
    ``<summary>`` holds only a chevron icon marked ``role="presentation"``: a screen reader
    announces a nameless control (axe-core: summary-name, serious). Wrap the theme's
    ``generate_toctree_html`` so every such toggle is named after the entry it opens."""
    generate = context.get("generate_toctree_html")
    if generate is None or getattr(generate, "course_labelled", False):
        return

    def generate_labelled(kind: str, *args: Any, **kwargs: Any) -> Any:
        soup = generate(kind, *args, **kwargs)
        return _name_sidebar_toggles(soup) if kind == "sidebar" else soup

    generate_labelled.course_labelled = True  # type: ignore[attr-defined]
    context["generate_toctree_html"] = generate_labelled


def visit_citation(self, node: nodes.citation) -> None:
    """docutils' own citation markup with one change: each entry is a ``listitem`` of the
    ``role="list"`` that holds the bibliography. docutils gives entries ``doc-biblioentry``, which
    DPUB-ARIA 1.1 deprecates in favour of ``listitem``; browsers and axe-core no longer count it
    as a list item, so the list has no items (axe-core: aria-required-children, critical)."""
    if not isinstance(node.previous_sibling(), type(node)):
        self.body.append('<div role="list" class="citation-list">\n')
    self.body.append(self.starttag(node, "div", classes=[node.tagname], role="listitem"))


def depart_citation(self, node: nodes.citation) -> None:
    self.body.append("</div>\n")
    if not isinstance(node.next_node(descend=False, siblings=True), type(node)):
        self.body.append("</div>\n")


def extension_digest(folder: Path = EXT) -> str:
    """A digest of the book's own extensions and their static files (chapters/_ext)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def setup(app) -> dict[str, Any]:
    # Sphinx rewrites nothing, and so copies no static file, when no page changed: a changed
    # course.css, course.js or extension would not reach an already built book. As a config value
    # that invalidates the environment, its digest makes such a change rebuild every page (the
    # notebooks come from the execution cache; nothing is executed again).
    app.add_config_value("course_extension_digest", extension_digest(), "env", [str])
    app.add_config_value("course_links", {"book": "", "repository": ""}, "env", [dict])
    app.add_config_value("course_student_kit", DEFAULT_KIT, "env", [str])
    app.connect("config-inited", _check_config)
    app.connect("builder-inited", _add_static_path)
    app.add_css_file("course.css")
    app.add_js_file("course.js")
    # After pydata-sphinx-theme's own handler (priority 500) has put its functions in the context.
    app.connect("html-page-context", label_sidebar_toggles, priority=600)
    app.add_node(nodes.citation, override=True, html=(visit_citation, depart_citation))
    app.add_directive("course-links", CourseLinks)
    app.add_transform(StudentKitLink)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
