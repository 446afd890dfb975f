"""Every comparison the book makes goes through its statistics module (issue 18).

The chapters' code cells are parsed (not run): no chapter defines its own ``claim``, and no
``claim(...)`` states a comparison of settings (those need a test and ``claim_verdict``). The
guard's detector is the one ``claim()`` itself applies at build time, so the two cannot drift.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chapters._scripts.stats import _is_comparative

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = [pytest.param(path, id=path.stem) for path in sorted((ROOT / "chapters").glob("0*.md"))]
_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


_YAML_OPTIONS = re.compile(r"\A---\n.*?^---\n", re.MULTILINE | re.DOTALL)


def code_cells(text: str) -> list[str]:
    """The source of each code cell of a MyST notebook (options, cell magics and shell lines
    dropped: a ``---`` YAML block or ``:key: value`` lines at its top)."""
    cells = []
    for body in _CELL.findall(text):
        lines = [line for line in _YAML_OPTIONS.sub("", body).splitlines()
                 if not line.startswith((":", "%", "!"))]
        cells.append("\n".join(lines))
    return cells


def _statement_text(node: ast.expr) -> str:
    """The literal text of a statement argument (f-string pieces joined, values as '{}')."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}"
                       for part in node.values)
    return ""


def comparison_claims(source: str) -> list[str]:
    """Statements of plain ``claim(...)`` calls in ``source`` that are worded as comparisons,
    and ``def claim`` definitions (a chapter's own claim bypasses the guard)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "claim":
            found.append("def claim (use chapters._scripts.stats.claim)")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "claim" and len(node.args) >= 2):
            statement = _statement_text(node.args[1])
            if _is_comparative(statement):
                found.append(statement)
    return found


def test_code_cells_drop_yaml_options() -> None:
    cell = ("```{code-cell} ipython3\n---\nmystnb:\n  markdown_format: gfm\n---\n"
            "claim(a > b, 'x')\n```\n")
    assert code_cells(cell) == ["claim(a > b, 'x')"]


def test_the_guard_finds_a_planted_comparison_claim() -> None:
    planted = ('claim(abs(acc["dropout"] - acc["plain"]) < 0.05,\n'
               '      "in accuracy they were within the seed-to-seed spread")\n'
               'claim(a > b, f"dropout beats {name}")\n'
               'claim(x == 1, "every kept unit equals x / (1 - p)")\n')
    assert comparison_claims(planted) == ["in accuracy they were within the seed-to-seed spread",
                                          "dropout beats {}"]
    assert comparison_claims("def claim(holds, statement):\n    pass\n")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_chapter_claims_a_comparison_without_a_test(chapter: Path) -> None:
    found = [s for cell in code_cells(chapter.read_text()) for s in comparison_claims(cell)]
    assert not found, (f"{chapter.name}: compare settings with a test from chapters/_scripts/"
                       f"stats.py and claim_verdict, not claim(): {found}")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_imports_its_claims_from_the_statistics_module(chapter: Path) -> None:
    text = chapter.read_text()
    if "claim(" in text:
        assert "from chapters._scripts.stats import" in text, chapter.name
