# nbgrader settings that decide whether a test cell passes, set once for students and instructors:
# shipped in the student kit (Validate, the toolbar button or `nbgrader validate`, finds this file
# when JupyterLab is started in the kit's folder) and loaded by the course's own configuration
# (autograder/nbgrader_config.py), so that Validate on a student's machine judges as grading does.
c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# Per-cell time limit (nbgrader has no per-notebook limit; its default is 30 s, which Exercise 4's
# experiments can pass on a slow laptop).
c.Execute.timeout = 120

# nbgrader's autograding zeroes a test cell that writes anything to stderr. A warning printed by a
# student's correct code (e.g. a PyTorch UserWarning) must not cost points: drop warning lines from
# stderr before scoring. Errors are separate outputs and still count. (Validate cannot run this
# filter, but the checks library prints the warnings of the student's code to stdout, so Validate
# does not see them on stderr either.)
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?m)^[^\n]*Warning: "
