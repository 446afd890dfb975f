"""The warm grading service (autograder.engine.warm): a command that finds the course folder's
service grades through it exactly as with its own processes; a stale, foreign or dead service
is never trusted with a grade; the socket is private to the instructor; the service stops by
itself when idle."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autograder.demo.__main__ import write_submissions
from autograder.engine import grade as g
from autograder.engine import warm

EX01 = "ex01_overfitting"


def _running(course: Path) -> bool:
    folder = warm.private_folder(course)
    return folder is not None and warm._locked(folder)


def _gone_within(course: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _running(course):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _graded(results: list) -> dict[str, tuple]:
    return {r.student: (r.score, r.per_test, r.problems, r.flags, r.grader_error)
            for r in results}


@pytest.mark.slow
def test_a_warm_service_grades_as_the_commands_own_processes(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``--keep-warm`` leaves a service that later commands on the folder use (they say so);
    its grades, feedback and autograded notebooks equal those of processes started for the
    run; a solution edited and released again between commands is read again (worker_plan);
    ``stop`` ends it and removes its socket; a service whose library changed is not used and
    makes way."""
    expected = write_submissions(EX01, tmp_path / "subs")
    local = g.grade(EX01, tmp_path / "subs", tmp_path / "local", quiet=True, jobs=1)
    course = tmp_path / "course"
    try:
        first = g.grade(EX01, tmp_path / "subs", course, jobs=1, keep_warm=120)
        assert _running(course)
        again = g.grade(EX01, tmp_path / "subs", course, jobs=1, force=True)
        err = capfd.readouterr().err
        assert err.count("grading in the warm service") == 2, err[-2000:]
        assert {r.student: r.score for r in again} == expected
        assert _graded(first) == _graded(again) == _graded(local)
        for student in expected:
            for kind, name in (("autograded", f"{EX01}.ipynb"), ("feedback", f"{EX01}.html")):
                assert (course / kind / student / EX01 / name).read_bytes() == \
                    (tmp_path / "local" / kind / student / EX01 / name).read_bytes()
        # the library changed (here: as the command computes it): not used, and it stops
        real = warm.fingerprint
        warm.fingerprint = lambda: "another library"  # type: ignore[assignment]
        try:
            assert warm.connect(course, 1) is None
        finally:
            warm.fingerprint = real  # type: ignore[assignment]
        assert _gone_within(course, 30), "a stale service went on running"
        assert not (course / warm.FOLDER / warm.SOCKET).exists()
        warm.start(course, jobs=1)
        assert _running(course)
        assert warm.stop(course) and not _running(course)
        assert not warm.stop(course)  # nothing left to stop
        # another --jobs or other preloaded libraries: not used, and left running; `kill` ends
        # it with its processes
        warm.start(course, jobs=1)
        assert warm.connect(course, 2) is None and _running(course)
        assert warm.connect(course, 1, ()) is None and _running(course)
        pool = warm.connect(course, 1)
        assert pool is not None
        pid = pool.info["pid"]
        pool.shutdown()
        family = _descendants(pid)
        assert len(family) >= 2, family  # a grading process and its zygote at least
        os.kill(pid, signal.SIGTERM)
        assert _gone_within(course, 60)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in family if _alive(p)], "processes outlived the service"
    finally:
        warm.stop(course)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in "ZX"


@pytest.mark.slow
def test_an_idle_service_stops_by_itself(tmp_path: Path) -> None:
    """A service that no command used for its idle time stops, socket and all; a client
    that connects and never says a word holds it up no longer than the hello timeout."""
    course = tmp_path / "course"
    course.mkdir()
    with pytest.raises(warm.WarmError, match="not a course folder"):
        warm.start(course, jobs=1, idle=2)
    assert list(course.iterdir()) == []
    (course / g.MARKER).write_text("")
    with pytest.raises(warm.WarmError, match="positive"):
        warm.start(course, jobs=1, idle=0)
    try:
        warm.start(course, jobs=1, idle=2)
        assert _running(course)
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(str(course / warm.FOLDER / warm.SOCKET))
        assert _gone_within(course, warm.HELLO_TIMEOUT_S + 60)
        silent.close()
        assert not (course / warm.FOLDER / warm.SOCKET).exists()
    finally:
        warm.stop(course)


def test_the_command_line_takes_warm_idle_only_with_keep_warm(tmp_path: Path) -> None:
    """``--warm-idle`` without ``--keep-warm``, or not positive, is a usage error (nothing is
    graded or written)."""
    for extra in (["--warm-idle", "5"], ["--keep-warm", "--warm-idle", "0"],
                  ["--keep-warm", "--warm-idle", "-3"]):
        with pytest.raises(SystemExit) as stopped:
            g.main([EX01, str(tmp_path), "--course", str(tmp_path / "c"), *extra])
        assert stopped.value.code == 2, extra
    assert not (tmp_path / "c").exists()


def test_worker_plan_is_read_again_when_the_solution_changes(tmp_path: Path) -> None:
    """A worker keeps one plan per content of the solution and release: the same object while
    they are unchanged, a new one (with the new tests) once the solution is edited."""
    from course import release_notebook, source_notebook

    for folder, notebook in (("solutions", source_notebook(EX01)),
                             ("exercises", release_notebook(EX01))):
        path = tmp_path / folder / EX01 / f"{EX01}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(notebook), "utf-8")
    plan = g.worker_plan(tmp_path, EX01)
    assert g.worker_plan(tmp_path, EX01) is plan
    source = tmp_path / "solutions" / EX01 / f"{EX01}.ipynb"
    data = json.loads(source.read_text("utf-8"))
    graded = next(c for c in data["cells"] if c["metadata"].get("nbgrader", {}).get("grade")
                  and not c["metadata"]["nbgrader"].get("solution"))
    graded["metadata"]["nbgrader"]["points"] = 1234
    source.write_text(json.dumps(data), "utf-8")
    edited = g.worker_plan(tmp_path, EX01)
    assert edited is not plan and 1234.0 in [points for _, points, _ in edited.tests]
    assert 1234.0 not in [points for _, points, _ in plan.tests]


def test_the_service_refuses_what_is_not_a_task_of_its_course(tmp_path: Path) -> None:
    """Only _grade_one's five arguments for this course folder, an assignment it released,
    ids that are one file name and a notebook inside the folder are accepted."""
    course = tmp_path / "course"
    (course / "solutions" / EX01).mkdir(parents=True)
    notebook = course / "submitted" / "ada" / EX01 / f"{EX01}.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text("{}")
    (tmp_path / "outside.ipynb").write_text("{}")
    (course / "submitted" / "link.ipynb").symlink_to(tmp_path / "outside.ipynb")
    service = warm.Service(course, jobs=1, idle=1)
    good = ["ada", str(notebook), EX01, str(course), {}]
    assert service.refuse(good) is None
    for bad, why in [
        (good[:4], "malformed"), ({"a": 1}, "malformed"), ([*good[:4], []], "malformed"),
        ([1, *good[1:]], "malformed"),
        ([*good[:3], str(tmp_path / "other"), {}], "another course"),
        (["../ada", *good[1:]], "one file name"), (["..", *good[1:]], "one file name"),
        (["ada", str(notebook), "../" + EX01, str(course), {}], "one file name"),
        (["ada", str(notebook), "ex09_none", str(course), {}], "not released"),
        (["ada", str(tmp_path / "outside.ipynb"), EX01, str(course), {}], "outside"),
        (["ada", str(course / "submitted" / "link.ipynb"), EX01, str(course), {}], "outside"),
        (["ada", str(course / ".." / "outside.ipynb"), EX01, str(course), {}], "outside"),
        (["ada", str(notebook) + "\0", EX01, str(course), {}], "malformed task"),
    ]:
        assert why in (service.refuse(bad) or ""), bad


def test_the_socket_folder_must_be_private(tmp_path: Path) -> None:
    """``COURSE/.warm`` is used only when it is this user's own directory with mode 0700 (made
    so when created); a link or a wider mode is refused, and a command then grades without a
    service (warm_pool says why)."""
    assert warm.private_folder(tmp_path) is None
    folder = warm.private_folder(tmp_path, create=True)
    assert folder == tmp_path / warm.FOLDER and (folder.stat().st_mode & 0o777) == 0o700
    folder.chmod(0o755)
    with pytest.raises(warm.WarmError, match="private"):
        warm.private_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / warm.FOLDER).mkdir(mode=0o700)
    (other / warm.FOLDER).chmod(0o700)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / warm.FOLDER).symlink_to(other / warm.FOLDER)
    with pytest.raises(warm.WarmError, match="private"):
        warm.private_folder(linked)
    assert g.warm_pool(linked, 1, None, ()) is None


def test_no_service_under_a_weaker_sandbox(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """With protections accepted as lost, the command never talks to a service (not even to
    start one): it says so when asked to keep one warm."""
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the service was consulted")

    monkeypatch.setattr(warm, "connect", refuse)
    monkeypatch.setattr(warm, "start", refuse)
    assert g.warm_pool(Path("/nonexistent"), 2, 60.0, ("uid",)) is None
    assert "no warm service under a weaker sandbox" in capsys.readouterr().err


def _serve_once(listener: socket.socket, script: list[dict | None],
                heard: list[dict | None]) -> None:
    """A stand-in service: accept one session and answer with ``script`` (None: read one
    message into ``heard``), then hang up."""
    conn, _ = listener.accept()
    channel = warm.Channel(conn)
    try:
        for step in script:
            if step is None:
                heard.append(channel.receive())
            else:
                channel.send(step)
    finally:
        channel.close()
        listener.close()


def _stand_in(course: Path, script: list[dict | None],
              heard: list[dict | None] | None = None) -> threading.Thread:
    folder = warm.private_folder(course, create=True)
    assert folder is not None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / warm.SOCKET))
    listener.listen(1)
    heard = [] if heard is None else heard
    thread = threading.Thread(target=_serve_once, args=(listener, script, heard), daemon=True)
    thread.start()
    return thread


def test_a_service_that_dies_leaves_its_tasks_not_graded(tmp_path: Path) -> None:
    """A service that hangs up mid-session: every task it did not answer fails (a grader error:
    not graded, graded again by the next run), an answered one keeps its result, and an answer
    for no task or a malformed one is ignored."""
    result = {"seconds": 1.0, "scores": {}, "problems": [], "flags": {}}
    thread = _stand_in(tmp_path, [None, {"ready": True, "jobs": 3}, None, None, None,
                                  {"done": 99, "result": result}, {"done": "x"},
                                  {"done": 1, "result": result}])
    pool = warm.connect(tmp_path, 3)
    assert pool is not None and pool.jobs == 3
    futures = [pool.submit(g._grade_one, "s", "n", EX01, str(tmp_path), {}) for _ in range(3)]
    unsendable = pool.submit(g._grade_one, "s", "n", EX01, str(tmp_path), {"x": {1}})
    with pytest.raises(warm.WarmError, match="could not be sent"):
        unsendable.result(timeout=30)
    assert futures[0].result(timeout=30) == result
    for future in futures[1:]:
        with pytest.raises(warm.WarmError, match="stopped before grading"):
            future.result(timeout=30)
    pool.shutdown()
    thread.join(timeout=10)
    with pytest.raises(ValueError, match="only the grading"):
        pool.submit(print, "anything")


def test_a_result_too_long_to_send_fails_only_its_own_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result over the line limit (a student can make messages long) is answered as that
    task's failure; the session goes on; a result that cannot be sent at all likewise."""
    from concurrent.futures import Future

    monkeypatch.setattr(warm, "MAX_LINE", 2000)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel, other = warm.Channel(ours), warm.Channel(theirs)
    service = warm.Service(tmp_path, jobs=1, idle=1)
    for number, result in ((1, {"problems": ["x" * 5000]}), (2, {"bad": {1, 2}}),
                           (3, {"problems": ["fine"]})):
        future: Future = Future()
        future.set_result(result)
        service._reply(channel, number, future)
    first, second, third = other.receive(), other.receive(), other.receive()
    assert first is not None and first["failed"] == 1 and "ValueError" in first["error"]
    assert second is not None and second["failed"] == 2 and "TypeError" in second["error"]
    assert third == {"done": 3, "result": {"problems": ["fine"]}}
    channel.close()
    other.close()


def test_a_service_of_another_user_or_another_library_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The command checks the peer's uid before saying anything, and uses a service only when
    it answers ``ready`` to its fingerprint."""
    heard: list[dict | None] = []
    thread = _stand_in(tmp_path, [None, {"error": "stale"}], heard)
    assert warm.connect(tmp_path, 2) is None
    assert "was not used: 'stale'" in capsys.readouterr().err
    thread.join(timeout=10)
    assert heard == [{"hello": warm.fingerprint(), "course": str(tmp_path.resolve()), "jobs": 2,
                      "optional": warm.optional_set(None)}]
    os.unlink(tmp_path / warm.FOLDER / warm.SOCKET)
    heard = []
    thread = _stand_in(tmp_path, [None], heard)
    monkeypatch.setattr(warm, "peer_uid", lambda _sock: os.getuid() + 1)
    assert warm.connect(tmp_path, 1) is None
    thread.join(timeout=10)
    assert heard == [None], "the command spoke to another user's socket"


def _blocks_until_released(holder: int, wait: Callable[[], object]) -> None:
    """``wait()`` (in a thread) does not return while ``holder`` holds its exclusive lock, and
    returns once it is released."""
    import fcntl

    fcntl.flock(holder, fcntl.LOCK_EX)
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive(), "it did not wait for the lock"
    fcntl.flock(holder, fcntl.LOCK_UN)
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "it went on waiting after the lock was released"


def test_commands_on_one_folder_take_turns(tmp_path: Path) -> None:
    """A grading command waits for another on the same course folder (hold_course), and one
    that grades without the service waits until the service has finished what it grades for an
    interrupted command (wait_idle, on the service's session lock)."""
    holder = os.open(tmp_path / g.GRADING_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        _blocks_until_released(holder, lambda: os.close(g.hold_course(tmp_path, quiet=True)))
    finally:
        os.close(holder)
    folder = warm.private_folder(tmp_path, create=True)
    assert folder is not None
    warm.wait_idle(tmp_path)  # no service: at once
    holder = os.open(folder / warm.SESSION_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        _blocks_until_released(holder, lambda: warm.wait_idle(tmp_path))
    finally:
        os.close(holder)


def test_peer_uid_is_the_callers() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert warm.peer_uid(ours) == os.getuid()


def test_socket_paths_too_long_or_not_utf8_still_work(tmp_path: Path) -> None:
    """A course folder whose socket path is over a Unix socket's limit (108 bytes), or is not
    UTF-8, is bound and reached through the folder's /proc/self/fd path."""
    for name in ("x" * 120, os.fsdecode(b"caf\xe9")):
        folder = tmp_path / name
        folder.mkdir()
        address, dir_fd = warm._address(folder / warm.SOCKET)
        assert (dir_fd is None) == (len(os.fsencode(folder / warm.SOCKET)) <= 100)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(address)
            listener.listen(1)
            connected = warm._connectable(folder / warm.SOCKET)
            assert connected is not None, name
            connected[0].close()
            if connected[1] is not None:
                os.close(connected[1])
        finally:
            listener.close()
            if dir_fd is not None:
                os.close(dir_fd)
