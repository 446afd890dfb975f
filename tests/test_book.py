"""The book: strict, offline, cached, complete, and free of solutions and hidden tests."""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from course import (
    ASSIGNMENTS,
    EXERCISES,
    ROOT,
    find_leaks,
    run,
    secret_lines,
    toc_files,
)

pytestmark = pytest.mark.slow

# Elements and attributes through which a page loads something (not <a href>: a link is not a load).
LOADING = {
    "script": ["src"], "link": ["href"], "img": ["src", "srcset"], "source": ["src", "srcset"],
    "iframe": ["src"], "video": ["src", "poster"], "audio": ["src"], "embed": ["src"],
    "object": ["data"], "track": ["src"], "image": ["href", "xlink:href"], "use": ["href"],
}
REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)", re.IGNORECASE)
CSS_IMPORT = re.compile(r"@import\s+['\"]([^'\"]+)", re.IGNORECASE)


def html_pages(book: Path) -> list[Path]:
    return sorted(book.rglob("*.html"))


def is_remote(url: str) -> bool:
    return bool(REMOTE.match(url.strip())) or url.strip().lower().startswith(("http:", "https:"))


def remote_loads(html: str) -> list[str]:
    """Every URL outside the site that the page would load (scripts, styles, fonts, images...)."""
    soup = BeautifulSoup(html, "html.parser")
    found = []
    for tag, attrs in LOADING.items():
        for element in soup.find_all(tag):
            for attr in attrs:
                for candidate in re.split(r"\s*,\s*", element.get(attr) or ""):
                    url = candidate.split(" ")[0]
                    if url and is_remote(url):
                        found.append(f"<{tag} {attr}={url}>")
    for style in soup.find_all("style"):
        found += [u for u in CSS_URL.findall(style.get_text()) if is_remote(u)]
    for element in soup.find_all(style=True):
        found += [u for u in CSS_URL.findall(element["style"]) if is_remote(u)]
    for script in soup.find_all("script", src=False):
        found += [f"inline script mentions {u}" for u in re.findall(r"https?://[^\s'\"]+",
                                                                    script.get_text())]
    return found


def test_index_and_every_toc_page_are_built(book: Path) -> None:
    """The README's build command produces index.html and one page per table-of-contents entry."""
    assert (book / "index.html").is_file()
    for entry in toc_files():
        assert (book / f"{entry}.html").is_file(), f"{entry} is in _toc.yml but was not built"


def raw_markdown_tables(html: str) -> list[str]:
    """Lines of a page's visible text (code blocks left out) that are Markdown table syntax: a
    table a cell printed with display(Markdown(...)) that was not rendered as a table."""
    soup = BeautifulSoup(html, "html.parser")
    for block in soup.find_all(["pre", "code", "script", "style"]):
        block.decompose()
    return [line.strip() for line in soup.get_text("\n").splitlines()
            if re.search(r"\|\s*:?-{3,}:?\s*\|", line)]


def test_raw_table_detector_catches_an_unrendered_table() -> None:
    page = "<p>| a | b |\n|---|---|\n| 1 | 2 |</p><pre>rows = ['|---|']</pre>"
    assert raw_markdown_tables(page) == ["|---|---|"]
    assert raw_markdown_tables("<table><tr><td>1</td></tr></table><pre>|---|</pre>") == []


def test_tables_printed_by_code_are_rendered(book: Path) -> None:
    """Tables that chapter code prints as Markdown show up as HTML tables, not as |---| text."""
    for page in sorted((book / "chapters").glob("*.html")):
        assert raw_markdown_tables(page.read_text(encoding="utf-8")) == [], page.name


def test_remote_load_detector_catches_remote_assets() -> None:
    """The detector used below finds each kind of remote load (so its silence means something)."""
    page = """<html><head><script src="https://cdn.example/x.js"></script>
    <link rel="stylesheet" href="//cdn.example/s.css"><style>@font-face{src:url(https://f/x.woff)}</style>
    </head><body><img src="http://img.example/a.png"><a href="https://ok.example">a link</a>
    <script>var s = "https://cdn.example/lazy.js";</script></body></html>"""
    assert len(remote_loads(page)) == 5
    assert remote_loads('<img src="_static/a.png"><a href="https://x.org">x</a>') == []


def test_no_page_loads_a_remote_asset(book: Path) -> None:
    """No built page loads a script, stylesheet, font or image from outside the site."""
    offenders = {}
    for page in html_pages(book):
        found = remote_loads(page.read_text(encoding="utf-8"))
        if found:
            offenders[str(page.relative_to(book))] = found
    for css in book.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        found = [u for u in CSS_URL.findall(text) + CSS_IMPORT.findall(text) if is_remote(u)]
        if found:
            offenders[str(css.relative_to(book))] = found
    assert not offenders, f"remote assets: {offenders}"


def test_math_is_rendered_by_a_bundled_mathjax(book: Path) -> None:
    """Pages with math load MathJax from the site itself, and that file exists."""
    page = book / "chapters" / "01_overfitting.html"
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    assert soup.find(class_="math"), "the chapter should contain math"
    mathjax = [s["src"] for s in soup.find_all("script", src=True) if "mathjax" in s["src"].lower()]
    assert mathjax, "no MathJax script on a page with math"
    for src in mathjax:
        assert not is_remote(src)
        assert (page.parent / src.split("?")[0]).resolve().is_file(), f"{src} is missing"


def test_no_solution_or_hidden_test_line_reaches_the_site(book: Path) -> None:
    """Every solution line and hidden-test line of every source notebook is absent from the site."""
    assert len(secret_lines()) > 30, "the secret-line finder found suspiciously little"
    assert find_leaks(book) == {}
    for path in book.rglob("*"):
        rel = path.relative_to(book).parts
        assert "solutions" not in rel and "autograder" not in rel, f"{path} is on the site"


def test_leak_finder_finds_a_planted_solution_line(tmp_path: Path) -> None:
    """The leak search is not vacuous: a page quoting one solution line is reported."""
    line = min(secret_lines())
    (tmp_path / "page.html").write_text(f"<pre><span>{line}</span></pre>", encoding="utf-8")
    assert find_leaks(tmp_path) == {"page.html": [line]}


def test_exercises_are_downloadable_byte_for_byte(book: Path) -> None:
    """The exercises page and each exercise page's download button give the student notebook,
    byte for byte identical to the file in exercises/."""
    page = (book / "chapters" / "exercises.html").read_text(encoding="utf-8")
    links = [a["href"] for a in BeautifulSoup(page, "html.parser").find_all("a", href=True)]
    for assignment in ASSIGNMENTS:
        expected = (EXERCISES / assignment / f"{assignment}.ipynb").read_bytes()
        downloads = [h for h in links if h.startswith("../_downloads/")
                     and h.endswith(f"/{assignment}.ipynb")]
        assert downloads, f"no download link for {assignment}"
        for href in downloads:
            assert (book / "chapters" / href).resolve().read_bytes() == expected
        page = book / "exercises" / assignment / f"{assignment}.html"
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        sources = [a["href"] for a in soup.find_all("a", href=True)
                   if a["href"].endswith(f"_sources/exercises/{assignment}/{assignment}.ipynb")]
        assert sources, "the exercise page has no .ipynb download button"
        assert (page.parent / sources[0]).resolve().read_bytes() == expected


def test_unchanged_rebuild_uses_the_cache(book: Path) -> None:
    """A second build with nothing changed executes no notebook and is quick."""
    start = time.perf_counter()
    proc = run(["make", "--no-print-directory", "book"], timeout=900)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Executing notebook" not in proc.stdout + proc.stderr
    assert seconds < 120, f"cached rebuild took {seconds:.0f} s"


def _mini_book(folder: Path, page: str) -> None:
    """A one-page book with the course's own configuration."""
    shutil.copy(ROOT / "_config.yml", folder / "_config.yml")
    (folder / "chapters").mkdir()
    shutil.copy(ROOT / "chapters" / "references.bib", folder / "chapters" / "references.bib")
    shutil.copytree(ROOT / "chapters" / "_ext", folder / "chapters" / "_ext")
    (folder / "_toc.yml").write_text("format: jb-book\nroot: chapters/page\n")
    (folder / "chapters" / "page.md").write_text(page)


FAILING_PAGE = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
# A page whose code fails

```{code-cell} ipython3
raise RuntimeError("this cell fails on purpose")
```
"""


def _build(folder: Path):
    return run([str(Path(sys.executable).parent / "jupyter-book"), "build", ".",
                "--warningiserror", "--nitpick", "--keep-going"], cwd=folder, timeout=600)


def test_failing_cell_fails_the_build_also_when_rebuilt(tmp_path: Path) -> None:
    """With the course configuration a failing cell fails the build, and so does a rebuild."""
    _mini_book(tmp_path, FAILING_PAGE)
    first = _build(tmp_path)
    assert first.returncode != 0, "a failing cell did not fail the build"
    second = _build(tmp_path)
    assert second.returncode != 0, "the incremental rebuild of a failing page passed"


def test_a_warning_fails_the_build(tmp_path: Path) -> None:
    """Warnings are errors: a reference to a missing label fails the build."""
    _mini_book(tmp_path, "# A page\n\nSee {ref}`no-such-label`.\n")
    assert _build(tmp_path).returncode != 0


def test_long_cells_show_their_finished_progress_bar(book: Path) -> None:
    """Every chapter's long loops show a plain-text progress bar, finished, drawn once: no half
    bars left over from redraws, and no widget (which would need remote JavaScript)."""
    for chapter in sorted((book / "chapters").glob("0*.html")):
        soup = BeautifulSoup(chapter.read_text(encoding="utf-8"), "html.parser")
        outputs = "\n".join(pre.get_text() for pre in soup.select(".cell_output pre"))
        finished = re.findall(r"^.+: 100%\|.+\| (\d+)/\1 \[", outputs, flags=re.MULTILINE)
        assert finished, f"{chapter.name}: no finished progress bar"
        unfinished = re.findall(r"^.+:\s+\d{1,2}%\|", outputs, flags=re.MULTILINE)
        assert unfinished == [], f"{chapter.name}: redrawn progress bars {unfinished[:3]}"
        assert "jupyter-widgets" not in chapter.read_text(encoding="utf-8")


# Alt text that names a file or a kind of thing instead of saying what the picture shows.
GENERIC_ALT = {"image", "img", "figure", "fig", "plot", "graph", "chart", "picture", "png",
               "svg", "jpg", "jpeg", "output", "untitled"}
FILE_NAME = re.compile(r"(^|/)[\w.-]+\.(png|svg|jpe?g|gif|webp)$", re.IGNORECASE)
MIN_ALT_WORDS = 6


def alt_text_problems(html: str) -> list[str]:
    """The images of a page whose alt text is missing, empty, a file name, a generic word or
    shorter than ``MIN_ALT_WORDS`` words: each as ``src: why``."""
    problems = []
    for img in BeautifulSoup(html, "html.parser").find_all("img"):
        alt = " ".join((img.get("alt") or "").split())
        words = re.findall(r"[\w'\u2019-]+", alt)
        if not alt:
            why = "no alt text"
        elif FILE_NAME.search(alt):
            why = f"alt text is a file name ({alt[:60]})"
        elif {w.lower() for w in words} <= GENERIC_ALT:
            why = f"alt text is a generic word ({alt})"
        elif len(words) < MIN_ALT_WORDS:
            why = f"alt text has fewer than {MIN_ALT_WORDS} words ({alt})"
        else:
            continue
        problems.append(f"{img.get('src')}: {why}")
    return problems


def test_alt_text_detector_catches_missing_and_meaningless_alt() -> None:
    """The detector finds a missing, an empty, a file-name (MyST-NB's default), a generic and a
    too-short alt text, and accepts one that says what the figure shows."""
    page = ("<img src='a.png'><img src='b.png' alt=''>"
            "<img src='c.png' alt='../_images/0a5f78c8.png'><img src='d.png' alt='Figure'>"
            "<img src='e.png' alt='loss curve'>"
            "<img src='f.png' alt='Training loss falls steadily while validation loss rises.'>")
    found = alt_text_problems(page)
    assert [p.split(":")[0] for p in found] == ["a.png", "b.png", "c.png", "d.png", "e.png"]


def test_every_image_states_what_it_shows(book: Path) -> None:
    """Every image on every page of the book has alt text that describes it (at least
    ``MIN_ALT_WORDS`` words, not a file name or a generic word); chapters set it per figure with
    the cell option ``mystnb: image: alt:``."""
    images, problems = 0, []
    for entry in toc_files():
        html = (book / f"{entry}.html").read_text(encoding="utf-8")
        images += len(BeautifulSoup(html, "html.parser").find_all("img"))
        problems += [f"{entry}: {p}" for p in alt_text_problems(html)]
    assert images >= 10, f"only {images} images in the book"
    assert problems == [], "\n".join(problems)


def heading_problems(html: str) -> list[str]:
    """Problems with the heading outline of a page's content (the article; the theme's
    print-only copy of the title is outside it): not exactly one h1, a heading before the h1,
    or a heading more than one level below the one before it (an h2 followed by an h4)."""
    article = BeautifulSoup(html, "html.parser").select_one("article.bd-article")
    if article is None:
        return ["no article element"]
    headings = article.find_all(re.compile(r"^h[1-6]$"))
    levels = [int(h.name[1]) for h in headings]
    problems = []
    if levels.count(1) != 1 or (levels and levels[0] != 1):
        problems.append(f"expected one h1 first, found levels {levels}")
    for i in range(1, len(levels)):
        before, level, heading = levels[i - 1], levels[i], headings[i]
        if level > before + 1:
            problems.append(f"h{before} followed by h{level}: "
                            f"{heading.get_text(' ', strip=True)[:60]}")
    return problems


def test_heading_detector_catches_skipped_levels_and_extra_h1() -> None:
    ok = "<article class='bd-article'><h1>T</h1><h2>a</h2><h3>b</h3><h2>c</h2></article>"
    assert heading_problems(ok) == []
    skipped = "<article class='bd-article'><h1>T</h1><h2>a</h2><h4>b</h4></article>"
    assert heading_problems(skipped) == ["h2 followed by h4: b"]
    two = "<article class='bd-article'><h1>T</h1><h1>U</h1></article>"
    assert len(heading_problems(two)) == 1


def test_headings_are_in_order_on_every_page(book: Path) -> None:
    """On every page of the table of contents the content has one h1, first, and no heading
    skips a level, so a screen reader's outline of the page is complete."""
    problems = []
    for entry in toc_files():
        html = (book / f"{entry}.html").read_text(encoding="utf-8")
        problems += [f"{entry}: {p}" for p in heading_problems(html)]
    assert problems == [], "\n".join(problems)
