# nbgrader configuration for the Dropout course (nbgrader 0.9.6).
#
# Found by every nbgrader command and by JupyterLab's Validate button through
# JUPYTER_CONFIG_PATH=autograder (the Makefile and the grading command set it).
# Each setting says why it is here; the instructor guide explains them for instructors.
import os

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

COURSE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The course's own words for nbgrader's folders: source -> solutions, release -> exercises.
c.CourseDirectory.root = COURSE_ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# What makes a test cell pass (time limit per cell, warnings on stderr cost nothing, Validate
# agrees with grading) is set once, in the file the student kit ships: students' Validate and the
# course's commands judge alike.
load_subconfig(  # noqa: F821  (provided by traitlets, like get_config)
    "nbgrader_config.py", path=os.path.join(COURSE_ROOT, "autograder", "student", "kit"))

# A deleted test cell is put back and run, rather than leaving "needs manual grade" forever.
c.OverwriteCells.add_missing_cells = True

# Feedback must never show hidden tests: strip their source and shorten the tracebacks of any
# cell that held them (autograder/engine/feedback.py).
# Student-written markdown and outputs are untrusted HTML: scripts, event handlers and remote
# resources are removed before the page is written (the same cleaning as the grading command's).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "autograder.engine.feedback.HideHiddenTests",
    "autograder.engine.feedback.SanitizeStudentContent",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = {"clean_html": "autograder.engine.untrusted.safe_html"}
# The page itself loads no script and nothing remote (autograder/engine/templates/feedback).
c.HTMLExporter.extra_template_basedirs = [os.path.join(COURSE_ROOT, "autograder", "engine",
                                                       "templates")]
c.HTMLExporter.template_name = "feedback"
