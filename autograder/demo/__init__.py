"""Demo submissions: answers that fake students give, for trying and testing the grading.

Each exercise module defines ``STUDENTS``: student id -> {grade_id: new cell source, or None to
delete that cell}, and ``EXPECTED``: student id -> the automatic score they must get.
"""
