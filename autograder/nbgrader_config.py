# nbgrader configuration for the Dropout course (nbgrader 0.9.6).
#
# Found by every nbgrader command and by JupyterLab's Validate button through
# JUPYTER_CONFIG_PATH=autograder (the Makefile and the grading command set it).
# See shared/reference/nbgrader.md for why each setting is here.
import os

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

COURSE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The course's own words for nbgrader's folders: source -> solutions, release -> exercises.
c.CourseDirectory.root = COURSE_ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# Per-cell time limit (nbgrader has no per-notebook limit).
c.Execute.timeout = 120

# nbgrader zeroes a test cell that writes anything to stderr. A warning printed by a student's
# correct code (e.g. a PyTorch UserWarning) must not cost points: drop warning lines from stderr
# before scoring. Errors are separate outputs and still count.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?m)^[^\n]*Warning: "

# A deleted test cell is put back and run, rather than leaving "needs manual grade" forever.
c.OverwriteCells.add_missing_cells = True

# Feedback must never show hidden tests: strip their source and shorten the tracebacks of any
# cell that held them (autograder/engine/feedback.py).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "autograder.engine.feedback.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
