"""Show text a student controls without letting it act: on a terminal, in a CSV, in HTML.

Everything a submission can influence is untrusted here: folder and file names (any bytes on
Linux, which Python shows with surrogate escapes), kernel names, what the student's code
printed or raised, and every problem or flag reason that quotes one of these. Four contracts:

* :func:`terminal_text`: one line of plain text for the report and the terminal. Every control
  character (C0, DEL, C1, ESC), line or paragraph separator, bidirectional override or other
  format character and lone surrogate is shown escaped, as Python writes it (``\\x1b``, ``\\n``,
  ``\\u202e``, ``\\udcff``), so it can neither start a new row nor drive the terminal. The result
  always encodes as UTF-8.
* :func:`csv_cell`: the same for a CSV cell, and a spreadsheet never reads it as a formula (a
  text cell that starts with ``= + - @`` gets a leading apostrophe); numbers stay numbers.
* :func:`safe_html`: an HTML fragment with nothing active left: no script, style, iframe,
  object, form or other embedding element, no event handler or ``style`` attribute, no URL
  other than http(s)/mailto/relative links and inline (``data:image/...``) images. Built on
  ``nh3`` (the Rust ``ammonia`` sanitiser), not on hand-written rules.
* :func:`sanitize_markdown` and :func:`markdown_text`: a markdown cell's source kept as it is
  when it renders to nothing that :func:`safe_html` would remove, else shown as text; and any
  string made into markdown that renders as exactly that string (for a summary cell).
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from html.parser import HTMLParser
from typing import Any

# Cc: C0 controls, DEL, C1 controls; Cf: format characters (bidi overrides and isolates,
# zero-width characters, soft hyphen); Cs: lone surrogates; Zl/Zp: U+2028/U+2029, which
# editors and Python's splitlines() treat as line breaks.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What starts a formula in Excel, LibreOffice or Google Sheets (OWASP's "CSV injection" list,
# plus the full-width forms that some of them also accept).
_FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return os.fsdecode(value)  # a raw file name: undecodable bytes become surrogates
    return str(value)


def terminal_text(value: object) -> str:
    """``value`` as one line that is safe to print or write into a report.

    Strings are taken as they are, bytes as a file name (``os.fsdecode``), anything else as
    ``str(value)``. Printable characters (any script) are kept; every character of the
    categories Cc, Cf, Cs, Zl and Zp is replaced by its Python escape. The result contains no
    line break, no control character and no surrogate. Backslashes are kept as they are: the
    escapes are for reading, not for decoding back.
    """
    text = _as_text(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape_char(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch
                   for ch in text)


def csv_cell(value: object) -> object:
    """``value`` ready for ``csv.writer``: ints and floats unchanged (numeric columns stay
    numeric), ``None`` as an empty cell, anything else as :func:`terminal_text` with a leading
    apostrophe when its first non-blank character would start a spreadsheet formula."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = terminal_text(value)
    if text.lstrip(" ")[:1] in _FORMULA_START:
        return "'" + text
    return text


def scrub_surrogates(text: str) -> str:
    """``text`` with every lone surrogate replaced by its escape (``\\udcff``): what a UTF-8
    file can hold. Nothing else changes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ------------------------------------------------------------------------------------- HTML

# Removed with their content (not kept as text): they hold code, styles or other documents.
_DROP_WITH_CONTENT = frozenset({
    "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "template",
    "noscript", "noembed", "noframes", "xmp", "svg", "math", "form", "textarea", "select",
    "button", "title", "head", "link", "meta", "base",
})
# nbconvert's markdown renderer and code highlighting use class and id (heading anchors,
# Pygments' token classes); nbconvert's own clean_html allows the same two everywhere.
_ANY_TAG_ATTRIBUTES = frozenset({"class", "id", "title", "lang"})
# Prefixed to every id a fragment sets, so that no element of the student's can stand for a
# global the page's own scripts use (DOM clobbering: an element with id="MathJax").
ID_PREFIX = "user-content-"
_IMAGE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*\Z",
                         re.IGNORECASE)
_LINK = re.compile(r"(https?:|mailto:|#|/|\./|\.\./|[^:/?#]*([/?#]|\Z))", re.IGNORECASE)


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # No address a student chose is ever fetched by the page (a remote image would tell them
    # when and from where the instructor opened it): images only inline, links only followed
    # on a click, and only to http(s), mailto or a relative address.
    if attribute == "src":
        return value if _IMAGE_DATA.match(value.strip()) else None
    if attribute in ("href", "cite"):
        return value if _LINK.match(value.strip()) else None
    if attribute == "class":
        # Only the classes nbconvert's renderer writes (code highlighting, heading anchors): a
        # student's own could borrow the page's CSS (e.g. Bootstrap's fixed navbar drawn over
        # the real feedback).
        kept = [c for c in value.split()
                if _RENDERER_CLASS.fullmatch(c) and c not in _PAGE_CLASSES]
        return " ".join(kept) or None
    return value


_RENDERER_CLASS = re.compile(r"highlight|hll|anchor-link|hl-[\w-]+|language-[\w+-]+|"
                             r"[a-z]{1,2}[a-z0-9]?")
_PAGE_CLASSES = frozenset({"in", "nav", "btn", "row", "col", "img", "tab", "top", "fa"})


@cache
def _cleaner() -> Any:
    # Imported here: only the feedback pages need it, and the report and CSV functions above
    # then work (and the engine imports) on a machine without it.
    import nh3

    attributes = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes["*"] = set(_ANY_TAG_ATTRIBUTES)
    return nh3.Cleaner(tags=set(nh3.ALLOWED_TAGS), clean_content_tags=set(_DROP_WITH_CONTENT),
                       attributes=attributes, attribute_filter=_attribute_filter,
                       url_schemes={"http", "https", "mailto", "data"}, strip_comments=True,
                       link_rel="noopener noreferrer nofollow", id_prefix=ID_PREFIX)


def safe_html(fragment: object) -> str:
    """An HTML fragment with everything active removed (see the module's docstring); text
    and harmless markup (headings, lists, tables, emphasis, code, links, inline images) are
    kept. Lone surrogates are escaped first, so the result always encodes as UTF-8."""
    return _cleaner().clean(scrub_surrogates(_as_text(fragment)))


class _Shape(HTMLParser):
    """The elements, attributes and text of an HTML fragment, independent of how it was
    serialised (quoting, entity forms, ``<br />`` or ``<br>``) and of what the sanitiser adds
    to harmless attributes (``rel`` of links, the prefix of ids)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[Any, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", tag, tuple(sorted(
            (k, (v or "").removeprefix(ID_PREFIX) if k == "id" else v or "")
            for k, v in attrs if k != "rel"))))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.events.append(("text", " ".join(data.split())))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", data))


def _shape(fragment: str) -> list[tuple[Any, ...]]:
    parser = _Shape()
    parser.feed(fragment)
    parser.close()
    return parser.events


def _render_markdown(source: str) -> str:
    from nbconvert.filters import markdown2html

    return str(markdown2html(source))


# Characters that reorder the text around them when it is displayed (Unicode's bidirectional
# embeddings, overrides and isolates, and the marks): a written answer could make the page show
# other text than it holds. Other format characters (joiners, soft hyphens) are ordinary text.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def _escape_controls(text: str) -> str:
    """``text`` with every control character (but line breaks and tabs), line or paragraph
    separator and bidirectional control replaced by its Python escape."""
    return "".join(
        _escape_char(ch) if ch in _BIDI_CONTROLS or (
            unicodedata.category(ch) in {"Cc", "Zl", "Zp"} and ch not in "\n\r\t") else ch
        for ch in text)


def sanitize_markdown(source: str) -> str:
    """A student's markdown cell, safe to keep in a notebook and to render.

    Returned unchanged (apart from escaped lone surrogates, control characters and
    bidirectional controls, which a written answer could use to make the page or a terminal
    show other text than it holds) when nbconvert's renderer turns it into HTML that
    :func:`safe_html` leaves as it is; otherwise the whole source is shown as text (a fenced
    block after a one-line note), so that nothing in it renders as HTML in any viewer, whatever
    its markdown renderer.
    """
    # A function of the text alone, and every submission's feedback page holds the exercise's
    # own markdown cells: each is checked once per worker, not once per student.
    return _SANITIZED.get(source, lambda: _sanitize(source), len(source))


class Memo:
    """The results of a pure function by key, the least recently used dropped first once they
    weigh more than ``budget`` (characters, as the caller weighs them); a result that weighs
    more than ``largest`` is made and not kept. Bounded by weight, not by count: a student
    controls what is kept, and one cell may be megabytes."""

    def __init__(self, budget: int = 32_000_000, largest: int = 1_000_000) -> None:
        self.budget, self.largest, self.weight = budget, largest, 0
        self.found: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def get(self, key: Any, make: Callable[[], Any], weight: int) -> Any:
        if key in self.found:
            self.found.move_to_end(key)
            return self.found[key][0]
        value = make()
        weight += len(value) if isinstance(value, str) else 0
        if weight <= self.largest:
            self.found[key] = (value, weight)
            self.weight += weight
            while self.weight > self.budget:
                self.weight -= self.found.popitem(last=False)[1][1]
        return value


_SANITIZED = Memo()


def _sanitize(source: str) -> str:
    text = _escape_controls(scrub_surrogates(source))
    try:
        rendered = _render_markdown(text)
        unchanged = _shape(safe_html(rendered)) == _shape(rendered)
    except Exception:
        unchanged = False
    if unchanged:
        return text
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return ("*(This cell contained HTML or links that are not shown as such; its text:)*\n\n"
            f"{fence}text\n{text}\n{fence}")


# Every ASCII punctuation character may be backslash-escaped in CommonMark (and mistune);
# & < > become entities instead, so no HTML can start and MathJax's $ is left as text too.
_MARKDOWN_PUNCTUATION = re.compile(r"([!\"#$%'()*+,\-./:;=?@\[\\\]^_`{|}~])")


def markdown_text(value: object) -> str:
    """``value`` as markdown that renders as the literal, one-line :func:`terminal_text` of it:
    no emphasis, link, heading, HTML or math can come out of it."""
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", terminal_text(value))
    return html.escape(text, quote=False)
