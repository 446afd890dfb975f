# nbgrader configuration at the repository root: the course's own, autograder/nbgrader_config.py,
# so that plain `nbgrader generate_assignment ex01_overfitting --force` (or `validate`,
# `generate_feedback`) run here need no JUPYTER_CONFIG_PATH. Graded work lives in the course
# folder (course/ by default), which has its own generated nbgrader_config.py.
import os

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)
load_subconfig(  # noqa: F821  (provided by traitlets, like get_config)
    "nbgrader_config.py", path=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "autograder"))
