"""The Dropout course's instructor side (this repository is private: it holds solutions).

* ``autograder/student/`` — the student package ``dropout_course`` (checks library, the course's
  layers): the only code that ships to students, built as a wheel into the student kit.
* ``autograder/engine/`` — the grading engine (sandbox, trusted verification, the grading
  command, release, benchmark): instructors only.
* ``autograder/demo/`` — demo submissions and attacks for the tests and the benchmark.
* ``autograder/nbgrader_config.py`` — nbgrader's configuration for the course.
"""
