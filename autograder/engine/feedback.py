"""nbgrader preprocessor that keeps hidden tests out of the feedback students receive.

Autograding restores every test cell from the gradebook, hidden tests included, so stock
``nbgrader generate_feedback`` shows them. For each cell that held hidden tests this removes
the hidden region from the source and cuts every traceback down to its last line
(``AssertionError: what is wrong ... What to check: ...``), because traceback frames quote the
hidden source lines.
"""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

HIDDEN_NOTE = "# (hidden tests ran here; their code is not shown)"


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
