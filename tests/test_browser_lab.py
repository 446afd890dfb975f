"""The student's side, in a real browser: JupyterLab started with the README's student command
(`make lab`), driven through its menus, cell editors and nbgrader's Validate button.

The walk-through follows a student: open the exercise, run everything and see the visible tests
fail with the stub's message; type the answers into the answer cells; run again and see every
visible test pass; press Validate and read its verdict. Then the same with an answer that is wrong
in a common way, whose test must say what to check. The server is then shut down and no process
it started may be left.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import chromium
from course import EXERCISES, ROOT, SOLUTIONS
from lab_server import running_lab
from notebook_code import solution_cells, test_cells
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"
RUN_TIMEOUT_MS = 180_000
SCREENSHOTS = ROOT / "_build" / "screenshots"
# A common mistake for task 2: counting only weight matrices and forgetting the biases.
WRONG_COUNT = '''def count_trainable_parameters(model):
    return sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight"))
'''

IDLE = """() => {
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const running = [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]
    .some(prompt => prompt.textContent.includes('*'));
  return indicator !== null && indicator.dataset.status === 'idle' && !running;
}"""
STARTED = """() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]
  .some(prompt => prompt.textContent.includes('*'))"""


def notebook_cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def positions() -> dict[str, int]:
    """{grade id: position of its cell in the student's notebook}, the order JupyterLab shows."""
    cells = notebook_cells(EXERCISES / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    return {c["metadata"]["nbgrader"]["grade_id"]: i for i, c in enumerate(cells)
            if "grade_id" in c["metadata"].get("nbgrader", {})}


def answer_cells() -> dict[int, str]:
    """{cell position: what a student who solved it would type} for every answer cell: the code
    answers (the reference solution without nbgrader's marker lines) and the written (Markdown)
    answers, which Validate requires too."""
    where = positions()
    answers = {where[gid]: "\n".join(line for line in source.splitlines()
                                      if "BEGIN SOLUTION" not in line
                                      and "END SOLUTION" not in line)
               for gid, source in solution_cells(ASSIGNMENT)}
    for cell in notebook_cells(SOLUTIONS / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"):
        meta = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "markdown" and meta.get("solution"):
            answers[where[meta["grade_id"]]] = "".join(cell["source"])
    return answers


def visible_test_cells() -> dict[int, str]:
    """{cell position: grade id} of the test cells whose tests a student sees."""
    where = positions()
    return {where[gid]: gid for gid, _ in test_cells(ASSIGNMENT, hidden=False)}


def click_menu(page, menu: str, item: str) -> None:
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def run_all(page, restart: bool) -> None:
    """Run every cell through the menus (after a kernel restart if asked) and wait until done."""
    for _attempt in range(3):
        if restart:
            click_menu(page, "Kernel", "Restart Kernel and Run All Cells")
            page.locator(".jp-Dialog button", has_text="Restart").click()
        else:
            click_menu(page, "Run", "Run All Cells")
        try:
            page.wait_for_function(STARTED, timeout=15_000)
            break
        except PlaywrightTimeout:  # the menu opened before the page took clicks: again
            page.keyboard.press("Escape")
    else:
        pytest.fail("Run All Cells did not start running the notebook")
    page.wait_for_function(IDLE, timeout=RUN_TIMEOUT_MS)


def output_text(page, index: int) -> str:
    # text_content, not inner_text: cells out of view are not rendered (content-visibility).
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea").text_content()


ACTIVE_INDEX = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]
  .findIndex(cell => cell.classList.contains('jp-mod-active'))"""


def select_cell(page, index: int) -> None:
    """Make cell ``index`` the active one with J/K in command mode, one key at a time (JupyterLab
    may drop keys pressed while it scrolls)."""
    for _ in range(4 * len(page.locator(".jp-Notebook .jp-Cell").all()) + 20):
        active = page.evaluate(ACTIVE_INDEX)
        if active == index:
            return
        page.keyboard.press("j" if active < index else "k")
        page.wait_for_function(f"() => ({ACTIVE_INDEX})() !== {active}", timeout=5_000)
    pytest.fail(f"could not select cell {index}")


def type_answers(page, answers: dict[int, str]) -> None:
    """Replace answer cells' text the way a student does with the keyboard: select the cell in
    command mode (which scrolls it into view), Enter to edit, select all, type, Escape."""
    # The prompt area, not the cell's middle: a click there could land on a link.
    page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    for index in sorted(answers):
        select_cell(page, index)
        cell = page.locator(".jp-Notebook .jp-Cell").nth(index).element_handle()
        page.keyboard.press("Enter")
        # Wait for the keyboard focus, not visibility: JupyterLab may skip rendering cells out
        # of view (content-visibility), which a browser test would see as hidden.
        page.wait_for_function(
            "cell => cell.querySelector('.cm-content')?.contains(document.activeElement)",
            arg=cell)
        page.keyboard.press("Control+a")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(answers[index])
        page.keyboard.press("Escape")


def save(page, path: Path, expect: dict[int, str]) -> None:
    """Save with Ctrl+S and wait until the file on disk holds the typed code."""
    page.keyboard.press("Control+s")
    for _ in range(100):
        cells = notebook_cells(path)
        if all("".join(cells[i]["source"]) == code for i, code in expect.items()):
            return
        page.wait_for_timeout(100)
    pytest.fail("the typed code did not reach the saved notebook")


def shot(page, name: str, cell: int | None = None) -> None:
    """Save a screenshot (showing cell ``cell`` when given) under _build/screenshots/."""
    if cell is not None:
        page.locator(".jp-Notebook .jp-Cell").nth(cell).evaluate(
            "cell => cell.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(500)  # let the browser render the cells now in view
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"lab-{name}.png"))


def validate(page, name: str) -> str:
    """Press nbgrader's Validate button; the text of the dialog it opens (then closed)."""
    page.locator(".jp-Toolbar [title='Validate Assignment']").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=RUN_TIMEOUT_MS)
    text = dialog.text_content()
    shot(page, name)
    dialog.locator("button").last.click()
    dialog.wait_for(state="detached")
    return text


def open_notebook(browser, lab, name: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    # reset: a fresh workspace with only this notebook open, not the tabs of the last visit.
    page.goto(f"{lab.base}/lab/tree/{name}?reset&token={lab.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.wait_for_function(IDLE, timeout=RUN_TIMEOUT_MS)
    news = page.locator(".jp-Notification-Toast button", has_text="No")  # "Get Jupyter news?"
    if news.count():
        news.first.click()
    return page


def test_a_student_completes_an_exercise_in_jupyterlab(tmp_path: Path) -> None:
    """Stub fails with its message; typed solutions pass; Validate reports success; a common
    mistake fails with what to check; the server leaves no process behind."""
    stub = (EXERCISES / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    notebook = tmp_path / f"{ASSIGNMENT}.ipynb"
    notebook.write_bytes(stub)
    wrong_notebook = tmp_path / "wrong.ipynb"
    answers, visible = answer_cells(), visible_test_cells()
    assert len(answers) >= 4 and len(visible) >= 4
    first_test = min(visible)

    with running_lab(tmp_path) as lab, chromium() as browser:
        page = open_notebook(browser, lab, notebook.name)
        run_all(page, restart=False)
        message = output_text(page, first_test)
        shot(page, "1-stub-fails", first_test)
        assert "not written yet" in message and "What to check" in message, message

        type_answers(page, answers)
        save(page, notebook, answers)
        run_all(page, restart=True)
        for index, grade_id in visible.items():
            assert "Passed" in output_text(page, index), f"{grade_id}: {output_text(page, index)}"
        verdict = validate(page, "2-validate-success")
        assert "Success! Your notebook passes all the tests." in verdict, verdict
        page.close()

        # The same completed notebook with task 2 answered by a common mistake.
        wrong = dict(answers)
        count_cell = next(i for i, code in answers.items()
                          if "def count_trainable_parameters" in code)
        wrong[count_cell] = WRONG_COUNT
        wrong_notebook.write_bytes(stub)
        page = open_notebook(browser, lab, wrong_notebook.name)
        type_answers(page, wrong)
        save(page, wrong_notebook, wrong)
        run_all(page, restart=True)
        count_test = min(i for i in visible if i > count_cell)
        message = output_text(page, count_test)
        shot(page, "3-wrong-answer", count_test)
        assert "AssertionError" in message and "What to check" in message, message
        assert "count_trainable_parameters" in message, message
        # The report is short: the test cell's line and the message, no checks-library source.
        assert "autograder/checks" not in message and "expect_equal(" not in message, message
        verdict = validate(page, "4-validate-failure")
        assert "Success" not in verdict and "What to check" in verdict, verdict
        page.close()

    assert lab.leftovers == [], f"processes left after the server shut down: {lab.leftovers}"
