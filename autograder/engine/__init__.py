"""The grading engine: instructors only, never shipped to students.

intake (submissions and LMS downloads) -> sandbox/jail (where student code runs) -> runner and
wire (inside the sandbox: run cells, answer calls with plain data) -> remote and verify (the
trusted side: hidden tests judge proxies of the student's code) -> grade (the command),
feedback, release and benchmark. The student package ``dropout_course`` is imported from here;
nothing in it imports this package.
"""
