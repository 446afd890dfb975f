"""Scale-out on an existing scheduler (autograder/deploy/): the Slurm job array and the Kubernetes
Indexed Job run exactly as their files say, N shards at once against a real PostgreSQL gradebook
(a throwaway server, tests/pg_server.py), then the merge; the merged class results equal a run
of the same submissions on one machine, and every student was graded by exactly one shard.

The Slurm scripts run whole, with bash, with the variables Slurm sets for an array task
(``SLURM_ARRAY_TASK_ID``...); the Kubernetes Jobs' container command (``bash -c`` and its
``args``, read with yaml.safe_load) runs with the container's ``env`` as the YAML gives it (paths
moved into a temporary folder, the Secret's URL the test server's) and ``JOB_COMPLETION_INDEX``.
The demo students are chosen so that one of the three shards is empty: its task must succeed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from course import ROOT
from pg_server import create_database, postgres_url

from autograder.demo.__main__ import write_submissions

__all__ = ["postgres_url"]  # a fixture: imported for pytest to find, used by name below

DEPLOY = ROOT / "autograder" / "deploy"
SLURM = DEPLOY / "slurm"
KUBERNETES = DEPLOY / "kubernetes"
ASSIGNMENT = "ex01_overfitting"
SHARDS = 3
# The demo students, cy_raises under another name: by the stable hash, shards 0 and 2 get two
# or three students each and shard 1 none (asserted below), so the empty shard is covered.
RENAMED = {"cy_raises": "cy_crashes"}
STUDENTS = ("ada_correct", "ben_partial", "cy_crashes", "dee_deleted_test", "eve_warnings")
EMPTY_SHARD = 1
RUN_TIMEOUT_S = 600
BEGIN, END = "# BEGIN COURSE COMMAND", "# END COURSE COMMAND"
# What a scheduler or an earlier test run might have left in the environment, and what only the
# test runner sets (an instructor's job has neither): the recipes must work without them.
DROPPED_ENV = ("JOB_COMPLETION_INDEX", "JUPYTER_CONFIG_PATH", "PYTHONHASHSEED", "SHARDS",
               "SHARDS_DIR", "SHARD_COURSE", "COURSE", "COURSE_REPO", "GRADE_ARGS", "JOBS",
               "ASSIGNMENTS", "SUBMISSIONS", "GRADEBOOK_URL", "DROPOUT_COURSE_DIR")


def shard_of(student: str, shards: int) -> int:
    """The shard of a student (the contract of ``--shard``, independent of the engine's code)."""
    return int(hashlib.sha256(student.encode()).hexdigest()[:16], 16) % shards


# --------------------------------------------------------------------------- reading the recipes

def marked_block(path: Path) -> str:
    """The lines between ``# BEGIN COURSE COMMAND`` and ``# END COURSE COMMAND`` (exactly one
    such block)."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(rf"^{BEGIN}\n(.*?)^{END}$", text, flags=re.M | re.S)
    assert len(blocks) == 1, f"{path}: expected one {BEGIN} ... {END} block, found {len(blocks)}"
    return blocks[0]


def container(path: Path) -> dict:
    """The one container of the Job in ``path``."""
    job = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1", path
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{path}: one container expected"
    return containers[0]


def container_script(path: Path) -> str:
    """What the container runs: ``bash -c SCRIPT``; the script."""
    box = container(path)
    assert box["command"] == ["bash", "-c"], f"{path}: command {box['command']}"
    assert len(box["args"]) == 1, f"{path}: args {box['args']}"
    # Kubernetes itself replaces $(NAME) in args: the script must not rely on bash's $(...).
    assert "$(" not in box["args"][0], f"{path}: $( in args is expanded by Kubernetes"
    return box["args"][0]


def container_env(path: Path, secret_url: str, jobs: str = "1") -> dict[str, str]:
    """The container's environment as Kubernetes would set it: literal values as written, the
    Secret's gradebook URL, JOBS from the CPU limit (``jobs`` here)."""
    env: dict[str, str] = {}
    for item in container(path)["env"]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            assert item["valueFrom"]["secretKeyRef"] == {"name": "course-gradebook", "key": "url"}
            env[item["name"]] = secret_url
        elif "resourceFieldRef" in item["valueFrom"]:
            env[item["name"]] = jobs
        else:
            raise AssertionError(f"{path}: env {item['name']} from {item['valueFrom']}")
    return env


def grade_line(script: str) -> str:
    lines = [line for line in script.splitlines()
             if line.startswith("python -m autograder.engine.grade ")]
    assert len(lines) == 1, f"one grading command expected in:\n{script}"
    return lines[0]


def merge_lines(script: str) -> list[str]:
    return [line for line in script.splitlines()
            if line.strip() and not line.startswith(("#", "set -"))]


def test_recipes_run_the_same_commands() -> None:
    """Slurm and Kubernetes run the same grading command (only the index variable differs), with
    the shared gradebook, a course folder per shard and the stable-hash shard; the same merge."""
    slurm = grade_line(marked_block(SLURM / "grade-array.sbatch"))
    kube = grade_line(container_script(KUBERNETES / "grade-job.yaml"))
    for flag in ('--course "$SHARD_COURSE"', '--db-url "$GRADEBOOK_URL"',
                 '--shard "SLURM_ARRAY_TASK_ID/$SHARDS"', '--jobs "$JOBS"'):
        assert flag in slurm, f"{flag} not in the Slurm grading command: {slurm}"
    assert kube == slurm.replace("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"), (
        f"the Kubernetes grading command differs from Slurm's:\n{kube}\n{slurm}")
    slurm_merge = merge_lines(marked_block(SLURM / "merge.sbatch"))
    assert slurm_merge == merge_lines(container_script(KUBERNETES / "merge-job.yaml"))
    assert slurm_merge[-1] == ('python -m autograder.engine.export merge --course "$COURSE" '
                               '--db-url "$GRADEBOOK_URL"'), slurm_merge


def test_indexed_job_is_consistent() -> None:
    """The Indexed Job has one completion per shard, all run at once, and says SHARDS the same."""
    job = yaml.safe_load((KUBERNETES / "grade-job.yaml").read_text(encoding="utf-8"))
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    env = container_env(KUBERNETES / "grade-job.yaml", "postgresql://x")
    assert spec["completions"] == spec["parallelism"] == int(env["SHARDS"]) == SHARDS, (
        f"completions {spec['completions']}, parallelism {spec['parallelism']}, "
        f"SHARDS {env['SHARDS']}")
    mounts = {m["name"]: m["mountPath"] for m in container(KUBERNETES / "grade-job.yaml")
              ["volumeMounts"]}
    for name in ("SUBMISSIONS", "SHARDS_DIR"):
        assert any(env[name].startswith(path + "/") for path in mounts.values()), (
            f"{name}={env[name]} is not on the shared volume {mounts}")
    merge_env = container_env(KUBERNETES / "merge-job.yaml", "postgresql://x")
    assert merge_env["SHARDS_DIR"] == env["SHARDS_DIR"]


def test_submit_script_chains_the_merge_after_the_array(tmp_path: Path) -> None:
    """submit.sh submits the array 0..SHARDS-1 and the merge with afterok on the array's job id
    (a stand-in sbatch records what it was asked)."""
    log = tmp_path / "sbatch.log"
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text('#!/bin/bash\nn=$(( $(cat "$LOG" 2>/dev/null | wc -l) + 4242 ))\n'
                    'printf "%q " "$@" >> "$LOG"; echo >> "$LOG"\necho "$n;cluster1"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
           "LOG": str(log), "SHARDS": "5"}
    proc = subprocess.run(["bash", str(SLURM / "submit.sh"), "--partition=cpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    array, merge = (shlex.split(line) for line in log.read_text().splitlines())
    assert "--array=0-4" in array and "--partition=cpu" in array, array
    assert Path(array[-1]) == SLURM / "grade-array.sbatch", array
    assert "--dependency=afterok:4242" in merge and "--partition=cpu" in merge, merge
    assert Path(merge[-1]) == SLURM / "merge.sbatch", merge
    assert "4242" in proc.stdout and "4243" in proc.stdout, proc.stdout
    del env["SHARDS"]
    proc = subprocess.run(["bash", str(SLURM / "submit.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "SHARDS" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- running them

def test_the_chosen_students_leave_one_shard_empty() -> None:
    shards = {k: sorted(s for s in STUDENTS if shard_of(s, SHARDS) == k) for k in range(SHARDS)}
    assert shards[EMPTY_SHARD] == [], shards
    assert all(shards[k] for k in range(SHARDS) if k != EMPTY_SHARD), shards


def base_env() -> dict[str, str]:
    """An instructor's shell: the venv's python first on PATH, no scheduler or test variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in DROPPED_ENV}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@dataclass
class Finished:
    name: str
    returncode: int
    log: Path

    def tail(self, chars: int = 6000) -> str:
        return f"--- {self.name} (exit {self.returncode}):\n" + \
            self.log.read_text(errors="replace")[-chars:]


def run_parallel(commands: dict[str, tuple[list[str], dict[str, str]]],
                 logs: Path) -> dict[str, Finished]:
    """Start every command at once (cwd: the repository), wait for all; their outcomes."""
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name, (argv, env) in commands.items():
            log = logs / f"{name}.log"
            with log.open("wb") as out:
                procs[name] = (subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True), log)
        for proc, _log in procs.values():
            proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        for proc, _log in procs.values():
            if proc.poll() is None:  # timed out or interrupted: stop this command's own group
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {name: Finished(name, proc.returncode, log) for name, (proc, log) in procs.items()}


def read_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    assert path.is_file(), f"{path} was not written"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keyed = {(row["assignment"], row.get("student_id") or row["student"]): row for row in rows}
    assert len(keyed) == len(rows), f"{path}: a (assignment, student) appears twice"
    return keyed


@pytest.fixture(scope="module")
def submissions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The class folder: the demo students of exercise 1 (cy_raises renamed)."""
    folder = tmp_path_factory.mktemp("class") / "submitted"
    write_submissions(ASSIGNMENT, folder)
    for old, new in RENAMED.items():
        (folder / old).rename(folder / new)
    assert sorted(p.name for p in folder.iterdir()) == sorted(STUDENTS)
    return folder


@pytest.fixture(scope="module")
def one_machine(submissions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same class graded on one machine, no shard, its sqlite gradebook: its course folder."""
    course = tmp_path_factory.mktemp("one-machine") / "course"
    argv = [sys.executable, "-m", "autograder.engine.grade", ASSIGNMENT, str(submissions),
            "--course", str(course), "--jobs", "2"]
    done = run_parallel({"one-machine": (argv, base_env())}, course.parent / "logs")
    assert done["one-machine"].returncode == 0, done["one-machine"].tail()
    return course


@dataclass
class ScaleOut:
    recipe: str
    course: Path
    shards_dir: Path
    shards: dict[int, Finished]
    merge: Finished


def slurm_commands(submissions: Path, work: Path, url: str
                   ) -> tuple[dict[str, tuple[list[str], dict[str, str]]], list[str], dict]:
    """The array's tasks and the merge job, as Slurm would start them (submit.sh's variables)."""
    env = {**base_env(), "SHARDS": str(SHARDS), "ASSIGNMENTS": ASSIGNMENT,
           "SUBMISSIONS": str(submissions), "COURSE": str(work / "course"),
           "GRADEBOOK_URL": url, "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_CPUS_PER_TASK": "1",
           "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_COUNT": str(SHARDS),
           "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": str(SHARDS - 1)}
    tasks = {f"shard-{k}": (["bash", str(SLURM / "grade-array.sbatch")],
                            {**env, "SLURM_ARRAY_TASK_ID": str(k), "SLURM_JOB_ID": str(4243 + k)})
             for k in range(SHARDS)}
    merge_env = {k: v for k, v in env.items() if not k.startswith("SLURM_ARRAY")}
    return tasks, ["bash", str(SLURM / "merge.sbatch")], {**merge_env, "SLURM_JOB_ID": "4250"}


def kubernetes_commands(submissions: Path, work: Path, url: str
                        ) -> tuple[dict[str, tuple[list[str], dict[str, str]]], list[str], dict]:
    """The Indexed Job's pods and the merge Job's, their container command and env as the YAML
    gives them, the shared volume's paths moved into ``work``."""
    volume = "/course-data"

    def moved(env: dict[str, str]) -> dict[str, str]:
        return {k: str(work) + v[len(volume):] if v.startswith(volume + "/") else v
                for k, v in env.items()}

    env = moved(container_env(KUBERNETES / "grade-job.yaml", url))
    env.update(ASSIGNMENTS=ASSIGNMENT, SUBMISSIONS=str(submissions))
    script = container_script(KUBERNETES / "grade-job.yaml")
    tasks = {f"shard-{k}": (["bash", "-c", script],
                            {**base_env(), **env, "JOB_COMPLETION_INDEX": str(k)})
             for k in range(int(env["SHARDS"]))}
    merge_env = {**base_env(), **moved(container_env(KUBERNETES / "merge-job.yaml", url))}
    return tasks, ["bash", "-c", container_script(KUBERNETES / "merge-job.yaml")], merge_env


@pytest.fixture(scope="module", params=["slurm", "kubernetes"])
def scale_out(request: pytest.FixtureRequest, postgres_url: str, submissions: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    """The recipe run: its shards at once against a fresh PostgreSQL gradebook, then its merge."""
    recipe = request.param
    work = tmp_path_factory.mktemp(recipe)
    url = create_database(postgres_url, f"gradebook_{recipe}")
    build = slurm_commands if recipe == "slurm" else kubernetes_commands
    tasks, merge_argv, merge_env = build(submissions, work, url)
    shards = run_parallel(tasks, work / "logs")
    failed = [done.tail() for done in shards.values() if done.returncode != 0]
    assert not failed, f"{recipe}: shard(s) failed:\n" + "\n".join(failed)
    merge = run_parallel({"merge": (merge_argv, merge_env)}, work / "logs")["merge"]
    assert merge.returncode == 0, f"{recipe}: the merge failed:\n{merge.tail()}"
    course = Path(merge_env["COURSE"])
    shards_dir = Path(merge_env.get("SHARDS_DIR") or f"{course}-shards")
    yield ScaleOut(recipe, course, shards_dir,
                   {int(name.split("-")[1]): done for name, done in shards.items()}, merge)



def graded_by(shard_course: Path) -> set[str]:
    """The students a shard graded: its cached results (one per graded submission)."""
    return {p.stem for p in (shard_course / "results" / ASSIGNMENT).glob("*.json")}


@pytest.mark.slow
def test_each_student_is_graded_by_exactly_one_shard(scale_out: ScaleOut) -> None:
    """Shard K graded exactly the students whose hash gives K; the empty shard graded none."""
    graded = {k: graded_by(scale_out.shards_dir / f"shard-{k}") for k in scale_out.shards}
    expected = {k: {s for s in STUDENTS if shard_of(s, SHARDS) == k} for k in range(SHARDS)}
    assert graded == expected, f"{scale_out.recipe}: shards graded {graded}, expected {expected}"
    assert graded[EMPTY_SHARD] == set()
    for k, done in scale_out.shards.items():
        said = done.log.read_text(errors="replace")
        for student in STUDENTS:
            mine = f"graded {student} in" in said
            assert mine == (student in expected[k]), (
                f"{scale_out.recipe}: shard {k} {'graded' if mine else 'did not grade'} "
                f"{student}:\n{done.tail(3000)}")


@pytest.mark.slow
def test_merged_grades_equal_one_machine(scale_out: ScaleOut, one_machine: Path) -> None:
    """grades.csv and scores_by_test.csv after the merge: the same rows as the one-machine run."""
    for name in ("grades.csv", "scores_by_test.csv"):
        merged = read_rows(scale_out.course / name)
        alone = read_rows(one_machine / name)
        assert sorted(merged) == sorted(alone) == [(ASSIGNMENT, s) for s in sorted(STUDENTS)], (
            f"{scale_out.recipe}: {name} rows {sorted(merged)}, one machine {sorted(alone)}")
        for key, row in alone.items():
            assert merged[key] == row, (
                f"{scale_out.recipe}: {name} {key} differs from the one-machine run:\n"
                + "\n".join(f"  {col}: merged {merged[key].get(col)!r}, one machine {v!r}"
                            for col, v in row.items() if merged[key].get(col) != v))


@pytest.mark.slow
def test_merged_course_has_every_students_files(scale_out: ScaleOut) -> None:
    """The instructor's course folder holds every student's autograded notebook and feedback
    (for formgrader and release_feedback) and the gradebook's URL in its config."""
    files = {"autograded": f"{ASSIGNMENT}.ipynb", "feedback": f"{ASSIGNMENT}.html",
             "submitted": f"{ASSIGNMENT}.ipynb"}
    for student in STUDENTS:
        for part, name in files.items():
            path = scale_out.course / part / student / ASSIGNMENT / name
            assert path.is_file(), f"{scale_out.recipe}: {path} missing after the merge"
    config = scale_out.course / "nbgrader_config.py"
    assert config.is_file(), f"{scale_out.recipe}: the merged course has no nbgrader_config.py"
    assert "postgresql" in config.read_text(encoding="utf-8"), (
        f"{scale_out.recipe}: {config} does not point at the shared gradebook")
    # nbgrader's own commands (formgrader's too) run there see the shared gradebook.
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "db", "student", "list"],
                          cwd=scale_out.course, env=base_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, f"nbgrader db student list: {proc.stderr[-3000:]}"
    listed = set(re.findall(r"^(\S+) \(", proc.stdout + proc.stderr, flags=re.M))
    assert listed == set(STUDENTS), f"nbgrader db student list in {scale_out.course}: {listed}"
