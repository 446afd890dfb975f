"""The Dropout course's student package.

* :mod:`dropout_course.checks` — the checks library that every exercise's test cells call.
* :mod:`dropout_course.layers` — layers the exercises use in their own code.

It ships to students (the student kit's wheel) and holds no answer to any graded task: the
grading engine, the solutions, the hidden tests and the reference answers stay with the
instructor. Importing this package imports nothing else.
"""
