# The Dropout course: one entry point. `make book` and `make test` are the two README commands;
# both create .venv and install requirements.txt into it first when needed (once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# nbgrader finds autograder/nbgrader_config.py through this; the course root is the repo.
export JUPYTER_CONFIG_PATH := $(CURDIR)/autograder
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

RUFF_ARGS := check --isolated --line-length 100 --target-version py311 \
	--select E,F,W,I,B,UP,SIM,RUF,PL --ignore PLR0913,PLR0917,PLR2004,PLR0912,PLC0415

.PHONY: help venv book student-kit test test-quick test-browser calibrate test-cuda time-dropout lab release course grade-demo grade benchmark benchmark-class lint clean

help:
	@echo "make book        build the HTML book into _build/html (open _build/html/index.html)"
	@echo "make student-kit  the students' download, _build/student-kit.zip (notebooks, wheel, README)"
	@echo "make test        run the whole test suite (what CI runs)"
	@echo "make test-quick  the fast tier: checks library, notebooks, style (no book build)"
	@echo "make test-browser  the book and JupyterLab in headless Chromium (part of make test)"
	@echo "make calibrate   the random checks over SEEDS=5000 seeds (zero failures allowed)"
	@echo "make test-cuda   the checks' tests with CUDA required (needs only torch, numpy, pytest)"
	@echo "make time-dropout [ARGS=\"--device cuda --quick\"]  time a training step with/without dropout"
	@echo "make lab         students: JupyterLab on exercises/ with nbgrader's Validate button"
	@echo "make release     instructors: regenerate exercises/ from solutions/"
	@echo "make course      instructors: the course folder (COURSE=course) ready for a term: gradebook, exercises"
	@echo "make grade A=ex01_overfitting S=path/to/submitted  autograde a class folder into the course folder"
	@echo "                 COURSE=course (default; nbgrader's course directory: gradebook, feedback, grades.csv)"
	@echo "                 A=all: every exercise; STUDENT=id[,id]: regrade only them; GRADE_ARGS=\"--due ...\""
	@echo "make grade-demo  autograde the demo submissions into _build/grading/"
	@echo "make benchmark   stock nbgrader vs the sandboxed command, where the time goes, one full submission"
	@echo "make benchmark-class N=1000 A=ex02_dropout_mechanics  a class of N at --jobs 2 and --jobs 1"
	@echo "make clean       delete _build/ (book, kit, demo runs); never the course folder (grades)"

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	# Make the instructor side (autograder/) and the student package (dropout_course, from its
	# source) importable from every kernel started in this venv.
	printf '%s\n' "$(CURDIR)" "$(CURDIR)/autograder/student/src" \
		> "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dropout_course.pth"
	touch $(STAMP)

# The book links the student kit (the exercises page and every exercise page), so it is built first.
book: student-kit
	COURSE_BOOK_BUILD=1 $(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

# The four exercise notebooks, the package dropout_course as a wheel (pip, from autograder/student),
# the students' requirements.txt and README; deterministic (same bytes on every rebuild).
student-kit: $(STAMP)
	$(BIN)/python -m autograder.engine.kit --out _build/student-kit.zip

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests

test-quick: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests -m "not slow"

test-browser: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/test_browser_book.py tests/test_browser_lab.py

SEEDS ?= 5000
calibrate: $(STAMP)
	COURSE_CALIBRATION_SEEDS=$(SEEDS) $(BIN)/python -m pytest -p no:cacheprovider \
		tests/test_checks_ex02.py tests/test_checks_ex03.py -k never_fail

# On a GPU machine with only Python, torch, numpy and pytest (no venv needed): PY=python3.
PY ?= $(BIN)/python
test-cuda:
	COURSE_DEVICES=cpu,cuda $(PY) -m pytest -p no:cacheprovider \
		tests/test_checks_ex02.py tests/test_checks_ex03.py tests/test_checks_ex04.py

# Chapter 4's timing script: needs only Python, torch and numpy (PY=python3 on a GPU machine).
ARGS ?=
time-dropout:
	$(PY) chapters/_scripts/time_dropout.py $(ARGS)

LAB_DIR ?= exercises
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

release: $(STAMP)
	$(BIN)/python -m autograder.engine.release

# The course folder is the instructor's and persistent (git-ignored; `make clean` keeps it).
COURSE ?= course
STUDENT ?=
GRADE_ARGS ?=
# Before the term: the course folder with every exercise in its gradebook (release, students).
course: $(STAMP)
	$(BIN)/python -m autograder.engine.grade all --prepare --course $(COURSE) $(GRADE_ARGS)

grade: $(STAMP)
	$(BIN)/python -m autograder.engine.grade $(A) $(S) --course $(COURSE) \
		$(if $(STUDENT),--student $(STUDENT)) $(GRADE_ARGS)

grade-demo: $(STAMP)
	$(BIN)/python -m autograder.demo --out _build/grading/demo

benchmark: $(STAMP)
	$(BIN)/python -m autograder.engine.benchmark --out _build/grading/benchmark $(BENCH_ARGS)

# A class of N generated submissions of one exercise graded at --jobs JOBS, then at --jobs 1 (the
# long part; BENCH_ARGS=--skip-jobs1 skips it), scores compared exactly; no stock nbgrader.
benchmark-class: N ?= 1000
benchmark-class: A ?= ex02_dropout_mechanics
benchmark-class: JOBS ?= 2
benchmark-class: $(STAMP)
	$(BIN)/python -m autograder.engine.benchmark --class-size $(N) --exercises $(A) \
		--jobs $(JOBS) --out _build/grading/benchmark-class $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff $(RUFF_ARGS) autograder tests chapters/_ext chapters/_scripts

# Only build outputs: the course folder (COURSE, gradebooks and grades) is never deleted here.
clean:
	rm -rf _build
