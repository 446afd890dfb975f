"""What readers and students expect on every page, checked in the sources (no build needed):
chapters open with goals and prerequisites and close with a summary and their exercise; exercises
open with how to run their tests and how they are graded; every cited paper is in the bibliography
and every bibliography entry is cited; figures and progress bars are wired into every chapter, and
every figure a chapter draws carries alt text."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from course import ASSIGNMENTS, EXERCISES, ROOT

CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))
# Papers the course must cite where it uses them (bibtex keys in chapters/references.bib).
REQUIRED_PAPERS = ["srivastava2014dropout", "gal2016dropout", "tompson2015efficient",
                   "wan2013regularization", "ghiasi2018dropblock", "klambauer2017self",
                   "li2019understanding"]
CITE = re.compile(r"\{cite:[a-z]+\}`([^`]+)`")


def sections(text: str) -> list[str]:
    """The chapter's level-2 headings, in order (code cells left out)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.findall(r"^## (.+)$", prose, flags=re.MULTILINE)


def test_there_is_a_chapter_per_exercise() -> None:
    assert [c.stem[:2] for c in CHAPTERS] == [a[2:4] for a in ASSIGNMENTS]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_goals_and_prerequisites(chapter: Path) -> None:
    """Before the first section: an 'In this chapter' box with what you will learn and need."""
    text = chapter.read_text(encoding="utf-8")
    intro = text[:text.index("\n## ")]
    assert ":::{admonition} In this chapter" in intro
    assert "**You will learn**" in intro and "**You need**" in intro


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_closes_with_a_summary_and_its_exercise(chapter: Path) -> None:
    """The last section is the summary, and it links the chapter's exercise notebook."""
    text = chapter.read_text(encoding="utf-8")
    assert sections(text)[-1] == "Summary"
    summary = text[text.rindex("\n## Summary"):]
    assignment = next(a for a in ASSIGNMENTS if a[2:] == chapter.stem)
    assert f"{{doc}}`../exercises/{assignment}/{assignment}`" in summary


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercise_opens_with_how_to_test_and_how_it_is_graded(assignment: str) -> None:
    nb = json.loads((EXERCISES / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8"))
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown"
    for heading in ("**How to run the tests.**", "**How it is graded**", "**How to work.**"):
        assert heading in first, f"{assignment}: the first cell lacks {heading}"


def test_bibliography_holds_exactly_the_cited_papers() -> None:
    """Every required paper is in references.bib and cited in a chapter; every entry is cited;
    the bibliography page prints them."""
    bib = (ROOT / "chapters" / "references.bib").read_text(encoding="utf-8")
    entries = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.MULTILINE))
    cited = {key.strip() for chapter in CHAPTERS
             for keys in CITE.findall(chapter.read_text(encoding="utf-8"))
             for key in keys.split(",")}
    assert set(REQUIRED_PAPERS) <= entries
    assert set(REQUIRED_PAPERS) <= cited
    assert cited <= entries, f"cited but not in references.bib: {cited - entries}"
    assert entries <= cited, f"in references.bib but never cited: {entries - cited}"
    page = (ROOT / "chapters" / "bibliography.md").read_text(encoding="utf-8")
    assert "{bibliography}" in page


def _citation_labels(bib: str) -> dict[str, str]:
    """key -> the author-year label a reader sees, e.g. 'Gal & Ghahramani 2016a' (first
    authors' surnames, 'et al.' beyond two, and the year field as written)."""
    from pybtex.database import parse_string

    labels = {}
    for key, entry in parse_string(bib, "bibtex").entries.items():
        names = [" ".join(person.last_names) for person in entry.persons["author"]]
        who = " & ".join(names) if len(names) <= 2 else f"{names[0]} et al."
        labels[key] = f"{who} {entry.fields['year']}"
    return labels


def test_no_two_papers_read_the_same_in_the_text() -> None:
    """Two papers by the same authors in the same year must be told apart (2016a, 2016b): an
    author-year citation otherwise points at either. The check is shown to work on a planted
    second Gal & Ghahramani 2016 entry."""
    bib = (ROOT / "chapters" / "references.bib").read_text(encoding="utf-8")
    labels = _citation_labels(bib)
    seen: dict[str, str] = {}
    for key, label in labels.items():
        assert label not in seen, f"{key} and {seen[label]} both read '{label}'"
        seen[label] = key
    planted = bib + "\n@misc{planted, author = {Gal, Yarin and Ghahramani, Zoubin}, " \
                    "title = {Planted}, year = {2016a}}\n"
    assert len(set(_citation_labels(planted).values())) == len(labels)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_audits_its_figures_and_shows_progress(chapter: Path) -> None:
    """The setup cell turns the figure audit on, the last cell enforces it, and long loops use
    the plain-text progress bar (never a notebook widget, which would load remote JavaScript)."""
    text = chapter.read_text(encoding="utf-8")
    assert "\naudit_figures()" in text
    last_cell = text[text.rindex("```{code-cell}"):]
    assert "assert_figures_audited()" in last_cell
    assert "progress(" in text
    assert "tqdm.auto" not in text and "tqdm.notebook" not in text and "ipywidgets" not in text


def test_figure_audit_reports_what_a_reader_would_miss() -> None:
    """The audit is not vacuous: an untitled, unlabelled plot with two series and no legend is
    reported, the same plot made readable passes, and colours that are not colour-blind safe are
    reported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chapters._scripts.figures import figure_problems

    fig, (left, right) = plt.subplots(1, 2, sharey=True)
    left.plot([0, 1], [0, 1], color="#0072B2", label="a")  # Okabe-Ito blue and orange
    left.plot([0, 1], [1, 0], color="#E69F00", label="b")
    right.imshow([[0, 1], [1, 0]])
    problems = figure_problems(fig)
    assert any("no title" in p for p in problems)
    assert any("no x label" in p for p in problems) and any("no y label" in p for p in problems)
    assert any("no legend" in p for p in problems)
    left.set(title="left", xlabel="epoch", ylabel="loss (nats)")
    left.legend()
    right.set_title("a mask")
    assert figure_problems(fig) == []
    # matplotlib's default red and green, and the jet colour map, are refused.
    left.plot([0, 1], [0.5, 0.5], color="tab:red", label="c")
    left.scatter([0], [0], c=[1.0], cmap="jet", label="d")
    left.legend()
    colours = [p for p in figure_problems(fig) if "colour-blind" in p]
    assert len(colours) == 2 and "line 'c'" in colours[1] and "jet" in colours[0], colours
    plt.close(fig)



def test_figure_audit_refuses_truncated_bars_out_of_range_error_bars_and_small_text() -> None:
    """Issue 18's figure rules: a bar chart on a 0.85-1.0 axis, error bars past 1 on an accuracy
    axis and a 12 in wide figure with 8 pt legends are each reported; the same figure drawn
    readably (bars from 0, clipped error bars, 7 in wide) passes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chapters._scripts.figures import figure_problems

    def draw(width: float, lower: float, err_top: float, legend_pt: float) -> list[str]:
        fig, ax = plt.subplots(figsize=(width, 3))
        ax.bar([0, 1], [0.93, 0.95], color=["#0072B2", "#E69F00"], label="mean")
        ax.errorbar([0, 1], [0.93, 0.95], yerr=[[0.02, 0.02], [err_top, err_top]],
                    fmt="none", ecolor="#000000", label="95 % interval")
        ax.set(title="accuracies", xlabel="setting", ylabel="test accuracy", ylim=(lower, 1.0))
        ax.legend(fontsize=legend_pt)
        problems = figure_problems(fig)
        plt.close(fig)
        return problems

    bad = draw(width=12, lower=0.85, err_top=0.08, legend_pt=8)
    assert any("leaves out 0" in p for p in bad), bad
    assert any("error bars past [0, 1]" in p for p in bad), bad
    assert any("legend text" in p for p in bad), bad
    assert any("tick labels" in p for p in bad), bad  # default 10 pt x 7.3/12 < 8 pt
    assert draw(width=7, lower=0.0, err_top=0.04, legend_pt=10) == []
    # A bar floated above 0 with `bottom` is a truncated bar too; a shaded band past 1 is caught.
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([0], [0.1], bottom=0.85, color="#0072B2")
    ax.fill_between([0, 1], [0.9, 0.95], [1.02, 1.05], color="#56B4E9", alpha=0.3)
    ax.set(title="t", xlabel="x", ylabel="fraction kept", ylim=(0, 1.1))
    problems = figure_problems(fig)
    plt.close(fig)
    assert any("do not start at 0" in p for p in problems), problems
    assert any("shaded band past [0, 1]" in p for p in problems), problems


def test_figure_audit_sees_figures_shown_with_plt_show_in_a_kernel(tmp_path: Path) -> None:
    """In a real kernel the inline backend's ``plt.show()`` closes the figures it displays, so
    an audit run only at the end of a cell saw none of them (the audit was vacuous for every
    chapter figure). A figure with no title shown with ``plt.show()`` must fail the last cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cells = ["from chapters._scripts.figures import assert_figures_audited, audit_figures\n"
             "import matplotlib.pyplot as plt\naudit_figures()",
             "fig, ax = plt.subplots()\nax.plot([0, 1], [0, 1], color='#0072B2')\nplt.show()",
             "assert_figures_audited()"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    with pytest.raises(CellExecutionError, match="no title"):
        client.execute()


# A chapter cell draws a figure when its own code (outside any function it defines) calls one of
# these pyplot functions, or calls a function defined in the chapter whose body does.
DRAWING_CALLS = {"subplots", "subplot_mosaic", "figure", "show", "imshow", "plot"}
MIN_ALT_WORDS = 6


def _draws(node: ast.AST, helpers: set[str]) -> bool:
    """Whether the code under ``node``, outside the functions it defines, draws a figure."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.Call):
            func = child.func
            if (isinstance(func, ast.Attribute) and func.attr in DRAWING_CALLS
                    and isinstance(func.value, ast.Name) and func.value.id == "plt"):
                return True
            if isinstance(func, ast.Name) and func.id in helpers:
                return True
        if _draws(child, helpers):
            return True
    return False


def figure_cells_without_alt(text: str) -> list[str]:
    """The code cells of a MyST chapter (read by MyST-NB's own reader, as the build reads it)
    that draw a figure but carry no alt text of at least ``MIN_ALT_WORDS`` words in their
    ``mystnb: image: alt:`` option; each named by its first line."""
    from myst_nb.core.read import read_myst_markdown_notebook

    cells = [c for c in read_myst_markdown_notebook(text).cells if c.cell_type == "code"]
    trees = [ast.parse(cell.source) for cell in cells]
    helpers = {node.name for tree in trees for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef)
               and _draws(ast.Module(body=node.body, type_ignores=[]), set())}
    missing = []
    for cell, tree in zip(cells, trees, strict=True):
        if not _draws(tree, helpers):
            continue
        alt = ((cell.metadata.get("mystnb") or {}).get("image") or {}).get("alt") or ""
        if len(str(alt).split()) < MIN_ALT_WORDS:
            missing.append(cell.source.splitlines()[0])
    return missing


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_cell_has_alt_text(chapter: Path) -> None:
    """Every chapter cell that draws a figure states what the figure shows in its alt text
    (``mystnb: image: alt:``, which MyST-NB writes into the ``<img alt>`` of the cell's output);
    without it a screen reader announces only the image's file name."""
    assert figure_cells_without_alt(chapter.read_text(encoding="utf-8")) == []


def test_alt_text_check_finds_a_figure_cell_without_alt() -> None:
    """The check is not vacuous: a cell that draws with pyplot and one that calls the chapter's
    own plotting helper, both without alt text, are found; a cell with alt text, the cell that
    only defines the helper, and a cell that draws nothing are not."""
    text = """# T

```{code-cell} ipython3
import matplotlib.pyplot as plt

def draw_curve(values):
    fig, ax = plt.subplots()
    ax.plot(values)
```

```{code-cell} ipython3
fig, ax = plt.subplots()
plt.show()
```

```{code-cell} ipython3
---
mystnb:
  image:
    alt: A rising line of accuracy against the epoch, levelling off near the end.
---
fig, ax = plt.subplots()
plt.show()
```

```{code-cell} ipython3
draw_curve([1, 2, 3])
```

```{code-cell} ipython3
---
mystnb:
  image:
    alt: a plot
---
total = sum([1, 2, 3])
```
"""
    assert figure_cells_without_alt(text) == ["fig, ax = plt.subplots()", "draw_curve([1, 2, 3])"]
