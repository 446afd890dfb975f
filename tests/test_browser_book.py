"""The built book as a reader sees it: every page in headless Chromium, served from localhost.

One browser session visits every page of the table of contents and records console errors,
failed requests and any request that leaves localhost (such requests are blocked and reported).
Each page is then checked for typeset math, loaded figures and working navigation; the search
page and the exercise downloads are used as a reader would. Screenshots of each chapter's first
screen, on a laptop-sized and a phone-sized window, are saved under ``_build/screenshots/``.

Accessibility: axe-core (bundled by the pinned PyPI package axe-playwright-python, injected into
the page) checks every page, the index and a search with results, on both windows in light and in
dark mode (the reader's ``prefers-color-scheme``, which the theme follows). A serious or critical
violation, or a skipped heading level, fails; lesser ones are written to
``_build/accessibility/axe-report.txt`` and printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from browser import (
    LAPTOP,
    PHONE,
    PageProblems,
    axe_fails,
    axe_report,
    axe_script,
    chromium,
    run_axe,
    serve,
)
from course import ASSIGNMENTS, EXERCISES, ROOT, toc_files

pytestmark = pytest.mark.slow
SCREENSHOTS = ROOT / "_build" / "screenshots"
AXE_REPORT = ROOT / "_build" / "accessibility" / "axe-report.txt"
# What axe-core checks: every table-of-contents page plus the two pages Sphinx adds to the site,
# the index (linked from every page's head) and the search page, with results for a query.
AXE_PAGES = [*toc_files(), "genindex", "search"]
AXE_SEARCH = "dropout"
WINDOWS = {"laptop": LAPTOP, "phone": PHONE}
MODES = ("light", "dark")
# A term each chapter's text uses, and the chapter the search must find it in.
SEARCH_TERM, SEARCH_CHAPTER = "DropBlock", "chapters/03_dropout_variants"

# Every element MathJax was asked to typeset (Sphinx marks them with the `math` class) must hold
# MathJax's output; text nodes outside code must not show TeX delimiters.
MATH_STATE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const math = [...document.querySelectorAll('.math')];
  const untypeset = math.filter(el => !el.querySelector('mjx-container'))
                        .map(el => el.textContent.slice(0, 80));
  const walker = document.createTreeWalker(document.querySelector('main') || document.body,
                                           NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('pre, code, script, style, mjx-container, .math')) continue;
    const text = node.textContent;
    if (/\\\\\\(|\\\\\\)|\\\\\\[|\\\\\\]|\\$\\$|\\\\begin\\{/.test(text)) {
      raw.push(text.slice(0, 80));
    }
  }
  return {count: math.length, rendered: document.querySelectorAll('mjx-container').length,
          untypeset, raw};
}"""

IMAGE_STATE = """async () => {
  const images = [...document.querySelectorAll('main img')];
  for (const img of images) { img.loading = 'eager'; }
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.map(img => ({src: img.getAttribute('src'), width: img.naturalWidth,
                             height: img.naturalHeight, shown: img.getBoundingClientRect().width}));
}"""


# How far the page is wider than the window (a phone reader would have to scroll sideways; the
# window's own width, since a mobile browser widens its layout viewport to fit the page), and
# the code blocks that are cut off instead of scrolling inside their own box.
OVERFLOW = """width => ({
  page: document.documentElement.scrollWidth - width,
  clipped: [...document.querySelectorAll('main pre')]
    .filter(pre => pre.scrollWidth > pre.clientWidth + 1
                   && !['auto', 'scroll'].includes(getComputedStyle(pre).overflowX))
    .map(pre => pre.textContent.slice(0, 60)),
})"""


def screenshots(page, stem: str, window: str) -> None:
    """The first screen of a page, and the screen around its first figure and first code cell."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{stem}-{window}.png"))
    for what, selector in (("figure", "main .cell_output img"), ("code", "main .cell_input")):
        target = page.locator(selector).first
        if target.count():
            target.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / f"{stem}-{window}-{what}.png"))


def page_url(base: str, entry: str) -> str:
    return f"{base}/{entry}.html"


@pytest.fixture(scope="module")
def site(book: Path) -> Iterator[str]:
    with serve(book) as base:
        yield base


@pytest.fixture(scope="module")
def visits(site: str) -> Iterator[dict]:
    """Every table-of-contents page loaded once in Chromium: what each page showed, and what went
    wrong anywhere. Screenshots of the chapters are taken on the way."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems = PageProblems(origin=site)
    pages: dict[str, dict] = {}
    with chromium() as browser:
        for name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
            context = browser.new_context(viewport=viewport, is_mobile=name == "phone")
            problems.watch(context)
            page = context.new_page()
            for entry in toc_files():
                page.goto(page_url(site, entry), wait_until="networkidle")
                seen = pages.setdefault(entry, {})
                seen[name] = {"math": page.evaluate(MATH_STATE),
                              "images": page.evaluate(IMAGE_STATE),
                              "overflow": page.evaluate(OVERFLOW, viewport["width"])}
                if entry.startswith("chapters/0") or entry == toc_files()[0]:
                    screenshots(page, Path(entry).name, name)
            context.close()
    yield {"pages": pages, "problems": problems}


def load_for_axe(page, site: str, entry: str) -> None:
    """Open a page and wait until what a reader sees is final: MathJax has typeset, and on the
    search page the results are listed."""
    query = f"?q={AXE_SEARCH}" if entry == "search" else ""
    page.goto(f"{page_url(site, entry)}{query}", wait_until="networkidle")
    page.evaluate("""async () => {
      if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
      }
    }""")
    if entry == "search":
        page.locator("#search-results a").first.wait_for(timeout=30_000)


def _axe_pass(site: str, script: str, window: str, mode: str) -> dict[tuple[str, str, str], dict]:
    """axe-core's results for every page in ``AXE_PAGES`` in one window and colour mode, in a
    browser of its own, keyed by (page, window, mode); each with the theme the page was shown
    in."""
    runs = {}
    with chromium() as browser:
        context = browser.new_context(viewport=WINDOWS[window], is_mobile=window == "phone",
                                      color_scheme=mode)
        page = context.new_page()
        for entry in AXE_PAGES:
            load_for_axe(page, site, entry)
            runs[(entry, window, mode)] = {
                "theme": page.evaluate("document.documentElement.dataset.theme"),
                "results": run_axe(page, script)}
        context.close()
    return runs


@pytest.fixture(scope="module")
def accessibility(site: str) -> dict[tuple[str, str, str], dict]:
    """axe-core's results for every page in ``AXE_PAGES`` on each window in each colour mode,
    keyed by (page, window, mode); each with the theme the page was actually shown in.

    The passes (window, mode) run at once, one browser each (Playwright's sync API: one
    instance per thread), as many as there are cores: axe-core's contrast rule, which takes
    most of the time (about 20 s on each long chapter), runs on one core of the page's own."""
    script = axe_script()
    passes = [(window, mode) for window in WINDOWS for mode in MODES]
    with ThreadPoolExecutor(max_workers=min(len(passes), os.cpu_count() or 1)) as pool:
        done = list(pool.map(lambda p: _axe_pass(site, script, *p), passes))
    return {key: run for part in done for key, run in part.items()}


def test_axe_checked_every_page_on_both_windows_in_both_modes(
        accessibility: dict[tuple[str, str, str], dict]) -> None:
    """axe-core ran on every page, window and mode, the page was really shown in that mode, and
    the contrast rule was applied (it passed or failed, it was not left out)."""
    assert set(accessibility) == {(entry, window, mode) for entry in AXE_PAGES
                                  for window in WINDOWS for mode in MODES}
    for (entry, window, mode), run in accessibility.items():
        assert run["theme"] == mode, f"{entry} ({window}) shown in {run['theme']}, not {mode}"
        results = run["results"]
        applied = {rule["id"] for rule in results["passes"] + results["violations"]}
        assert "color-contrast" in applied, f"{entry} ({window}, {mode}): contrast not checked"


def test_axe_finds_no_serious_or_critical_violation(
        accessibility: dict[tuple[str, str, str], dict]) -> None:
    """No page, on a laptop or a phone, in light or dark mode, has a serious or critical axe-core
    violation (WCAG 2 A/AA and best practices) or a skipped heading level. Lesser violations are
    reported in ``_build/accessibility/axe-report.txt`` and printed, not failed."""
    failing, reported = [], []
    for (entry, window, mode), run in accessibility.items():
        where = f"{entry} ({window}, {mode} mode)"
        violations = run["results"]["violations"]
        failing += [axe_report(where, [v]) for v in violations if axe_fails(v)]
        reported += [axe_report(where, [v], nodes_shown=1) for v in violations if not axe_fails(v)]
    engine = next(iter(accessibility.values()))["results"]["testEngine"]
    AXE_REPORT.parent.mkdir(parents=True, exist_ok=True)
    AXE_REPORT.write_text(
        f"axe-core {engine['version']}: {len(accessibility)} page checks\n\n"
        f"Failing ({len(failing)}):\n" + "\n".join(failing) +
        f"\n\nReported, not failing ({len(reported)}):\n" + "\n".join(reported) + "\n")
    if reported:
        print(f"axe-core: {len(reported)} moderate or minor violation(s):\n" + "\n".join(reported))
    assert not failing, (f"{len(failing)} serious or critical accessibility violation(s) "
                         f"(axe-core {engine['version']}):\n" + "\n".join(failing))


def test_axe_check_reports_planted_violations() -> None:
    """The check is not vacuous: on a page with an image without alt text, grey text on white,
    a skipped heading level and a scrolling box that the keyboard cannot reach, axe-core (as the
    tests inject it) reports each, and each fails; a page without a landmark is only reported."""
    html = ("<html lang='en'><head><title>t</title></head><body><h1>Title</h1>"
            "<h4>Skipped two levels</h4><img src='data:image/png;base64,AAAA'>"
            "<p style='color:#bbb;background:#fff'>faint text</p>"
            "<div style='width:100px;overflow-x:auto'><img alt='a wide picture of a plot'"
            " style='width:400px;height:50px' src='data:image/gif;base64,R0lGODlhAQABAAAAACw='>"
            "</div>"
            "</body></html>")
    with chromium() as browser:
        page = browser.new_page()
        page.set_content(html)
        results = run_axe(page, axe_script())
    found = {v["id"]: v for v in results["violations"]}
    for rule in ("image-alt", "color-contrast", "heading-order", "scrollable-region-focusable"):
        assert rule in found and axe_fails(found[rule]), f"{rule} not reported as failing"
    assert "region" in found and not axe_fails(found["region"])
    assert "image-alt" in axe_report("planted", [found["image-alt"]])


def test_every_page_loads_without_errors_or_offsite_requests(visits: dict) -> None:
    """On a laptop-sized and a phone-sized window, no page logs a console error, no request fails,
    and nothing is requested from outside localhost."""
    assert set(visits["pages"]) == set(toc_files())
    assert visits["problems"].summary() == {}


def test_math_is_typeset_and_no_raw_tex_is_left(visits: dict) -> None:
    """Every math element holds MathJax output, and no TeX delimiter shows in the text."""
    with_math = 0
    for entry, seen in visits["pages"].items():
        for window, state in seen.items():
            math = state["math"]
            assert math["untypeset"] == [], f"{entry} ({window}): math not typeset"
            assert math["raw"] == [], f"{entry} ({window}): raw TeX in the text"
        with_math += seen["laptop"]["math"]["count"] > 0
    assert with_math >= 4, "expected math on every chapter page"


def test_every_figure_loads_with_a_size(visits: dict) -> None:
    """Every image on every page loads (non-zero natural size) and is shown with a width; on a
    phone at a legible width (scrolling sideways inside its box), not squeezed to the screen."""
    figures = 0
    for entry, seen in visits["pages"].items():
        for window, state in seen.items():
            for image in state["images"]:
                where = f"{entry} ({window}): {image['src']}"
                assert image["width"] > 0 and image["height"] > 0, f"{where} did not load"
                assert image["shown"] > 0, f"{where} has no width on the page"
                if window == "phone":  # shrunk to a phone's width, a figure's labels are unreadable
                    legible = min(500, image["width"])
                    assert image["shown"] >= legible, f"{where} is {image['shown']:.0f} px wide"
        figures += len(seen["laptop"]["images"])
    assert figures >= 10, f"only {figures} figures in the whole book"


def test_pages_fit_the_window_and_code_scrolls_in_its_box(visits: dict) -> None:
    """No page is wider than a laptop or phone window, and a long code line scrolls inside its
    code box instead of being cut off."""
    for entry, seen in visits["pages"].items():
        for window, state in seen.items():
            assert state["overflow"]["page"] <= 0, f"{entry} is wider than the {window} window"
            assert state["overflow"]["clipped"] == [], f"{entry} ({window}): code cut off"


def test_next_links_and_sidebar_reach_every_page(site: str) -> None:
    """Following "next" from the first page walks the table of contents in order and back with
    "previous"; the sidebar on the first page links to every page."""
    order = toc_files()
    with chromium() as browser:
        page = browser.new_page(viewport=LAPTOP)
        page.goto(page_url(site, order[0]))
        sidebar = page.eval_on_selector_all(
            "nav.bd-docs-nav a.reference", "links => links.map(a => a.href)")
        sidebar_pages = {href.split("#")[0] for href in sidebar}
        for entry in order[1:]:
            assert page_url(site, entry) in sidebar_pages, f"{entry} is missing from the sidebar"
        walked = [order[0]]
        while page.locator("a.right-next").count():
            page.locator("a.right-next").first.click()
            page.wait_for_load_state()
            walked.append(page.url.removeprefix(f"{site}/").removesuffix(".html"))
        assert walked[:len(order)] == order, "next links do not follow the table of contents"
        back = [walked[-1]]
        while page.locator("a.left-prev").count() and len(back) < len(walked):
            page.locator("a.left-prev").first.click()
            page.wait_for_load_state()
            back.append(page.url.removeprefix(f"{site}/").removesuffix(".html"))
        assert back == walked[::-1], "previous links do not retrace the next links"


def test_search_finds_a_term_from_a_chapter(site: str) -> None:
    """The search page (Sphinx's own, served from the site) finds a chapter by a term in it."""
    with chromium() as browser:
        page = browser.new_page(viewport=LAPTOP)
        page.goto(f"{site}/search.html?q={SEARCH_TERM}")
        results = page.locator("#search-results a")
        results.first.wait_for(timeout=30_000)
        hrefs = results.evaluate_all("links => links.map(a => a.href)")
        assert any(page_url(site, SEARCH_CHAPTER) in href for href in hrefs), hrefs
        nothing = f"{site}/search.html?q=qwzrtxvb"
        page.goto(nothing)
        page.locator("#search-results p").first.wait_for(timeout=30_000)
        assert page.locator("#search-results a").count() == 0


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercise_page_downloads_the_student_notebook(site: str, assignment: str,
                                                      tmp_path: Path) -> None:
    """The exercise page's download menu gives the notebook byte for byte as in exercises/, and so
    does the exercises page's link."""
    expected = (EXERCISES / assignment / f"{assignment}.ipynb").read_bytes()
    with chromium() as browser:
        context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
        page = context.new_page()
        page.goto(page_url(site, f"exercises/{assignment}/{assignment}"))
        page.locator(".dropdown-download-buttons button.dropdown-toggle").click()
        # The button opens a new tab; Chromium reports the download on this page.
        with page.expect_download() as download:
            page.locator("a.btn-download-source-button").click()
        target = tmp_path / "from_page.ipynb"
        download.value.save_as(target)
        assert target.read_bytes() == expected

        page.goto(page_url(site, "chapters/exercises"))
        with page.expect_download() as download:
            page.locator(f"a[href$='/{assignment}.ipynb']").first.click()
        target = tmp_path / "from_list.ipynb"
        download.value.save_as(target)
        assert target.read_bytes() == expected
        context.close()


def test_math_and_image_detectors_are_not_vacuous() -> None:
    """The page checks report raw TeX, an untypeset math element and a broken image."""
    html = ("<main><p>the mean is \\(x\\) and $$y$$</p><span class='math'>\\(z\\)</span>"
            "<img src='data:image/png;base64,AAAA'></main>")
    with chromium() as browser:
        page = browser.new_page()
        page.set_content(html)
        math = page.evaluate(MATH_STATE)
        images = page.evaluate(IMAGE_STATE)
    assert len(math["raw"]) == 1 and math["untypeset"] == ["\\(z\\)"]
    assert images[0]["width"] == 0
