"""A warm grading service for one course folder: grading processes that stay loaded between
commands, so that grading one late submission costs the submission's own tests, not a start.

A grading command starts its processes (each imports torch, nbconvert and nbgrader, and starts a
zygote that imports what students use): about 9 s of CPU, 4 to 5 s of waiting on two cores,
before the first test runs. ``python -m autograder.engine.grade ... --keep-warm`` (or
``python -m autograder.engine.warm start COURSE``) leaves a service behind that holds such
processes for the course folder; every later command on that folder hands its submissions to
the service's processes instead of starting its own, until the service has been idle for its
timeout (default :data:`DEFAULT_IDLE_S`) or is stopped (``python -m autograder.engine.warm stop
COURSE``).

What the service does is exactly what the command's own processes do (:func:`grade._grade_one`
in :func:`grade.start_workers`' pool): grades are the same, and the command keeps everything
else (intake, gradebook, exports). What it must not do is grade with anything stale or answer
anyone but the instructor:

* **Staleness.** The service is used only when its :func:`fingerprint` (the engine's and the
  public package's source, the interpreter and the libraries' versions) equals the command's;
  otherwise it is told to stop and the command starts its own processes. Each process keeps an
  assignment's hidden tests keyed by the digest of the course's solution and release, so an
  edited solution is read again.
* **Who may talk to it.** A Unix socket in ``COURSE/.warm/`` (a folder of the instructor's own,
  mode 0700; refused when it is anything else) whose peer must have the service's uid
  (``SO_PEERCRED``), both ways; messages are JSON lines, never pickles; a task for another
  course folder is refused. A sandbox never sees the course folder. It is not used at all when
  the command accepts a weaker sandbox (``--allow-weaker-sandbox``): where a submission might
  run as the instructor, nothing the instructor left running is offered to it.
* **Failures.** A task the service cannot finish (the service stopped, a process died) comes
  back as a grader error: not graded, not recorded, graded again by the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # holds the autograder package
FOLDER = ".warm"
SOCKET = "grader.sock"
LOCK = "service.lock"
SESSION_LOCK = "session.lock"  # held by the service while it grades for a command
LOG = "service.log"
DEFAULT_IDLE_S = 900.0
START_TIMEOUT_S = 180.0  # the processes load first (about 5 s on two cores)
MAX_LINE = 64 << 20  # one result; a student's messages in it are already bounded
HELLO_TIMEOUT_S = 10.0  # how long the service waits for a command's first message


class WarmError(Exception):
    """The service cannot be started or used (the message says why)."""


# --------------------------------------------------------------------------- shared

def fingerprint() -> str:
    """What grading depends on besides the course folder: every file of the ``autograder``
    package (the engine, its templates, the public student package), every installed
    distribution and its version (the names of the ``*.dist-info`` folders in site-packages),
    and the sandbox's host key (:func:`selftest_cache.host_key`: the interpreter, the process's
    uid, capabilities, limits, namespaces and cgroup, the environment the jail reads). A service
    whose fingerprint differs from the command's is not used: it would grade with other code,
    or build its sandboxes where the command's self-test did not measure."""
    from autograder.engine import selftest_cache

    digest = hashlib.sha256()
    package = LIBRARY_ROOT / "autograder"
    for path in sorted(package.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(os.fsencode(path.relative_to(package)) + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    paths = sysconfig.get_paths()
    for folder in dict.fromkeys([paths["purelib"], paths["platlib"]]):
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(folder)):
                if name.endswith((".dist-info", ".egg-info", ".pth")):
                    digest.update(os.fsencode(name) + b"\0")
    digest.update(selftest_cache.host_key({}, selftest_cache.host_key).encode())
    return digest.hexdigest()


def private_folder(course: Path, create: bool = False) -> Path | None:
    """``course/.warm`` when it is a real folder (not a link) of this user's with mode 0700;
    None when absent (created first when ``create``). Anything else raises :class:`WarmError`:
    a socket there could be someone else's."""
    folder = course / FOLDER
    if create:
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() \
            or stat.S_IMODE(info.st_mode) != 0o700:
        raise WarmError(f"{folder} is not a private folder of this user (a directory, mode "
                        "0700, not a link): the warm service is not used")
    return folder


def _address(path: Path) -> tuple[str, int | None]:
    """The address of the Unix socket ``path``: the path itself, or, when it is too long for
    one (108 bytes), the same file through ``/proc/self/fd`` of its folder, opened here; the
    caller keeps that descriptor (returned) open while it binds or connects."""
    if len(os.fsencode(path)) <= 100:
        return str(path), None
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{dir_fd}/{path.name}", dir_fd


def _connectable(path: Path) -> tuple[socket.socket, Any] | None:
    """A connected socket to ``path`` and the folder descriptor kept for it, or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dir_fd = None
    try:
        address, dir_fd = _address(path)
        sock.settimeout(5.0)  # a full backlog: treated as no service, not waited on forever
        sock.connect(address)
        sock.settimeout(None)
        return sock, dir_fd
    except OSError:
        sock.close()
        if dir_fd is not None:
            os.close(dir_fd)
        return None


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _one_name(name: str) -> bool:
    """Whether ``name`` is one path component (what the intake makes of an id)."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


class Channel:
    """JSON lines over a stream socket, one object per line; sends are serialised."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """Raises ``ValueError`` for a message over :data:`MAX_LINE` (nothing is sent)."""
        data = json.dumps(message, ensure_ascii=True).encode() + b"\n"
        if len(data) > MAX_LINE:
            raise ValueError(f"a message of {len(data)} bytes (at most {MAX_LINE})")
        with self.lock:
            self.sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        """The next object, or None at the end (or on a line too long or not an object)."""
        line = self.reader.readline(MAX_LINE + 1)
        if not line or len(line) > MAX_LINE or not line.endswith(b"\n"):
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        for part in (self.reader, self.sock):
            with contextlib.suppress(OSError):
                part.close()


# --------------------------------------------------------------------------- the command's side

class RemotePool:
    """The grading command's handle on a running service, used where it would use its own
    :class:`~concurrent.futures.ProcessPoolExecutor`: ``submit(_grade_one, ...)`` gives a
    future of the same result; ``shutdown`` ends the session (the service drops the tasks it
    has not started)."""

    def __init__(self, channel: Channel, info: dict[str, Any], dir_fd: int | None) -> None:
        self.channel, self.info, self.dir_fd = channel, info, dir_fd
        self.futures: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.count = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def jobs(self) -> int:
        return int(self.info.get("jobs", 0))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        # by name: the grading command runs as __main__, its _grade_one is that module's
        if getattr(fn, "__qualname__", None) != "_grade_one":
            raise ValueError("the warm service runs only the grading of one submission")
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self.lock:
            self.count += 1
            number = self.count
            self.futures[number] = future
        try:
            self.channel.send({"task": number, "args": list(args)})
        except Exception as err:  # gone, or arguments JSON cannot carry: this task fails
            self._fail(number, f"the task could not be sent to the warm service "
                       f"({type(err).__name__}: {err})")
        return future

    def _fail(self, number: int, why: str) -> None:
        with self.lock:
            future = self.futures.pop(number, None)
        if future is not None and not future.done():
            future.set_exception(WarmError(why))

    def _read(self) -> None:
        while True:
            message = self.channel.receive()
            if message is None:
                break
            number = message.get("done", message.get("failed"))
            with self.lock:
                future = self.futures.pop(number, None) if isinstance(number, int) else None
            if future is None:
                continue
            if "done" in message and isinstance(message.get("result"), dict):
                future.set_result(message["result"])
            else:
                future.set_exception(WarmError(str(message.get("error"))[:300]))
        with self.lock:
            left = list(self.futures)
        for number in left:
            self._fail(number, "the warm service stopped before grading it")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.channel.close()
        if wait:
            self.reader.join(timeout=10)
        if self.dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.dir_fd)
            self.dir_fd = None


def optional_set(optional: tuple[str, ...] | None) -> list[str]:
    """The optional libraries a zygote preloads (``None``: all of ``zygote.OPTIONAL``), as the
    hello carries them."""
    from autograder.engine.zygote import OPTIONAL

    return sorted(OPTIONAL if optional is None else set(optional) & set(OPTIONAL))


def connect(course: Path, jobs: int, optional: tuple[str, ...] | None = None,
            wait: float = 3600.0) -> RemotePool | None:
    """A session with the service of ``course`` when one runs, is the instructor's, is current
    (same :func:`fingerprint`; a stale one is told to stop), grades ``jobs`` submissions at
    once and its zygotes preload the same ``optional`` libraries (default: all) as the
    command's would (what a sandbox holds counts against its memory limit); else None. A
    service finishing the submissions of an interrupted command is waited for, up to ``wait``
    seconds."""
    course = course.resolve()
    folder = private_folder(course)
    if folder is None or not (folder / SOCKET).exists():
        return None
    connected = _connectable(folder / SOCKET)
    if connected is None:
        return None
    sock, dir_fd = connected
    channel = Channel(sock)
    try:
        if peer_uid(sock) != os.getuid():
            raise WarmError("the warm service's socket is served by another user")
        channel.send({"hello": fingerprint(), "course": str(course), "jobs": jobs,
                      "optional": optional_set(optional)})
        reply = _reply_to_hello(sock, channel, folder, wait)
    except (OSError, ValueError, WarmError):
        reply = None
    if reply and not reply.get("ready"):
        print(f"NOTE: the warm service of this course folder was not used: "
              f"{str(reply.get('error'))[:200]!r}", file=sys.stderr)
    if not reply or not reply.get("ready"):
        channel.close()
        if dir_fd is not None:
            os.close(dir_fd)
        return None
    return RemotePool(channel, reply, dir_fd)


def _reply_to_hello(sock: socket.socket, channel: Channel, folder: Path,
                    wait: float) -> dict[str, Any] | None:
    """The service's answer to the hello; said once on stderr when it is busy."""
    import select

    deadline = time.monotonic() + wait
    said = False
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 2.0)
        if readable:
            return channel.receive()
        if not _locked(folder):
            return None  # the service is gone
        if not said:
            print("waiting for the warm service: it is busy with another command (or with the "
                  "submissions an interrupted one left)", file=sys.stderr)
            said = True
    return None


def wait_idle(course: Path) -> None:
    """Return once the service of ``course`` (if any) grades for no command: a command that
    grades without it must not overlap the submissions an interrupted command left it."""
    folder = private_folder(course.resolve())
    if folder is None:
        return
    try:
        fd = os.open(folder / SESSION_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            print("waiting for the warm service to finish what it grades", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def start(course: Path, jobs: int, idle: float = DEFAULT_IDLE_S,
          timeout: float = START_TIMEOUT_S, optional: tuple[str, ...] | None = None) -> None:
    """Start the service of ``course`` (detached; it outlives this process), its zygotes
    preloading ``optional`` (default: all of ``zygote.OPTIONAL``), and wait until it answers.
    Nothing happens when one already runs."""
    from autograder.engine.grade import MARKER

    course = course.resolve()
    if not idle > 0:
        raise WarmError(f"an idle timeout of {idle!r} seconds: it must be positive")
    if not (course / MARKER).is_file():
        # and nothing is created in it: the grading command takes only folders it made
        raise WarmError(f"{course} is not a course folder of the grading command (grade into "
                        "it first, or with --keep-warm)")
    folder = private_folder(course, create=True)
    assert folder is not None
    command = [sys.executable, "-m", "autograder.engine.warm", "serve", str(course), "--jobs",
               str(jobs), "--idle", str(idle), "--optional", ",".join(optional_set(optional))]

    def spawn() -> subprocess.Popen[bytes]:
        # one log per service (the last one's): it never grows without end
        with open(folder / LOG, "wb") as log:
            # the same environment as this command (the fingerprint's host key compares it);
            # the package is found from the working folder, as `python -m` finds it here
            return subprocess.Popen(command, cwd=LIBRARY_ROOT, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)

    proc = spawn()
    respawned = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / SOCKET).exists():
            connected = _connectable(folder / SOCKET)
            if connected is not None:
                sock, dir_fd = connected
                sock.close()
                if dir_fd is not None:
                    os.close(dir_fd)
                return
        if proc.poll() is not None and not _locked(folder):
            if proc.returncode != 0 or respawned:
                raise WarmError(f"the warm service did not start: see {folder / LOG}")
            proc, respawned = spawn(), True  # it found a stopping service's lock: again
        time.sleep(0.02)
    raise WarmError(f"the warm service did not answer within {timeout:g} s: see {folder / LOG}")


def _take(fd: int, tries: int = 20) -> bool:
    """Take the service lock on ``fd``; False when another service holds it (retried a
    moment: :func:`_locked` takes it briefly to look)."""
    for _ in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _locked(folder: Path) -> bool:
    """Whether a service holds ``folder``'s lock."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def stop(course: Path, timeout: float = 60.0) -> bool:
    """Tell the service of ``course`` to stop (after the session it may be serving), and wait
    until it has; whether one ran. Raises :class:`WarmError` when it did not stop in time."""
    folder = private_folder(course.resolve())
    if folder is None:
        return False
    running = _locked(folder)  # also one that is stopping by itself (its socket already gone)
    connected = _connectable(folder / SOCKET) if (folder / SOCKET).exists() else None
    if connected is not None:
        running = True
        sock, dir_fd = connected
        try:
            if peer_uid(sock) == os.getuid():
                Channel(sock).send({"stop": True})
        except OSError:
            pass
        finally:
            sock.close()
            if dir_fd is not None:
                os.close(dir_fd)
    if not running:
        return False
    deadline = time.monotonic() + timeout
    while _locked(folder):
        if time.monotonic() > deadline:
            raise WarmError(f"the warm service of {course} did not stop within {timeout:g} s")
        time.sleep(0.05)
    return True


# --------------------------------------------------------------------------- the service

class Service:
    """The service process: a pool of grading processes (:func:`grade.start_workers`, every
    optional library preloaded) and the socket; one command's session at a time."""

    def __init__(self, course: Path, jobs: int, idle: float,
                 optional: tuple[str, ...] | None = None) -> None:
        self.course, self.jobs, self.idle = course, jobs, idle
        self.optional = optional_set(optional)
        self.fingerprint = fingerprint()
        self.stopping = False
        self.broken = False

    def run(self) -> int:
        from autograder.engine.grade import start_workers

        folder = private_folder(self.course, create=True)
        assert folder is not None
        lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        if not _take(lock):
            return 0  # another service holds this course folder
        pool = start_workers(self.jobs, tuple(self.optional))
        session_lock = os.open(folder / SESSION_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
        try:
            self.warm_up(pool)
        except Exception:
            pool.shutdown(cancel_futures=True)
            raise
        address, _dir_fd = _address(folder / SOCKET)  # kept open while the service lives
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / SOCKET)  # a dead service's (we hold the lock)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            listener.bind(address)
        finally:
            os.umask(old)
        listener.listen(4)
        # `kill` (SIGTERM) ends it as `stop` does: the processes are shut down, the socket goes
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while not self.stopping and not self.broken:
                listener.settimeout(self.idle)
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    break
                conn.settimeout(HELLO_TIMEOUT_S)  # a command that says nothing holds no one up
                with contextlib.closing(conn):
                    if peer_uid(conn) == os.getuid():
                        try:
                            self.session(Channel(conn), pool, session_lock)
                        except OSError:
                            pass  # the command went away
                        except Exception as err:  # one bad session never ends the service
                            print(f"session failed: {type(err).__name__}: {err}",
                                  file=sys.stderr, flush=True)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(folder / SOCKET)
            listener.close()
            pool.shutdown(cancel_futures=True)
        return 0

    def warm_up(self, pool: Any, timeout: float = 120.0) -> None:
        """Return once every grading process has loaded and its zygote is ready (the socket
        opens only then: a command that finds the service never waits for a start). Each
        probe holds its process until its zygote is ready, so the others take the rest."""
        from concurrent.futures import wait

        from autograder.engine.grade import worker_ready

        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < self.jobs:
            if time.monotonic() > deadline:
                raise WarmError("the grading processes did not start")
            probes = [pool.submit(worker_ready) for _ in range(self.jobs)]
            wait(probes, timeout=max(0.0, deadline - time.monotonic()))
            seen |= {p.result() for p in probes if p.done()}

    def session(self, channel: Channel, pool: Any, session_lock: int | None = None) -> None:
        """One command's session: a hello, then tasks until it ends (and what it started has
        ended: ``session_lock`` is held until then)."""
        hello = channel.receive()
        channel.sock.settimeout(None)
        if hello is None:
            return
        if hello.get("stop"):
            self.stopping = True
            return
        if hello.get("hello") != self.fingerprint:
            self.stopping = True  # the library changed: make way for a current service
            with contextlib.suppress(OSError):
                channel.send({"error": "stale: the grading library changed"})
            return
        if hello.get("course") != str(self.course) or hello.get("jobs") != self.jobs \
                or hello.get("optional") != self.optional:
            with contextlib.suppress(OSError):
                channel.send({"error": "another course folder, number of processes or set of "
                              "preloaded libraries"})
            return
        try:
            self.warm_up(pool, timeout=30.0)  # all alive (instant when they are)
        except Exception:
            self.broken = True
            self._send(channel, {"error": "the grading processes died"})
            return
        if session_lock is not None:
            fcntl.flock(session_lock, fcntl.LOCK_EX)
        try:
            self.serve_tasks(channel, pool)
        finally:
            if session_lock is not None:
                fcntl.flock(session_lock, fcntl.LOCK_UN)

    def serve_tasks(self, channel: Channel, pool: Any) -> None:
        """The tasks of a session, until the command ends it; returns when every task it
        started has ended."""
        channel.send({"ready": True, "jobs": self.jobs, "pid": os.getpid()})
        futures: list[Future] = []
        while (message := channel.receive()) is not None:
            if message.get("stop"):
                self.stopping = True
                break
            number = message.get("task")
            args = message.get("args")
            why = self.refuse(args)
            if not isinstance(number, int) or why is not None:
                self._send(channel, {"failed": number, "error": why or "no task number"})
                continue
            future = self.submit(pool, args)
            if future is None:
                self._send(channel, {"failed": number, "error": "the grading processes died"})
                continue
            future.add_done_callback(lambda f, n=number: self._reply(channel, n, f))
            futures.append(future)
        for future in futures:
            future.cancel()  # what has not started: the command has gone
        for future in futures:
            with contextlib.suppress(Exception):
                future.exception()

    def refuse(self, args: Any) -> str | None:
        """Why the task's arguments are refused, or None: ``_grade_one``'s five arguments, for
        this course folder."""
        if not (isinstance(args, list) and len(args) == 5
                and all(isinstance(a, str) for a in args[:4]) and isinstance(args[4], dict)):
            return "malformed task"
        student, notebook, assignment, out, _limits = args
        if out != str(self.course):
            return "a task for another course folder"
        if not all(_one_name(name) for name in (student, assignment)):
            return "a student or assignment that is not one file name"
        return self._refuse_paths(assignment, notebook)

    def _refuse_paths(self, assignment: str, notebook: str) -> str | None:
        try:
            if not (self.course / "solutions" / assignment).is_dir():
                return "an assignment this course folder has not released"
            if not Path(os.path.realpath(notebook)).is_relative_to(self.course):
                return "a notebook outside the course folder"
        except (OSError, ValueError) as err:  # a NUL byte, a name too long, ...
            return f"malformed task ({type(err).__name__})"
        return None

    def submit(self, pool: Any, args: list[Any]) -> Future | None:
        from concurrent.futures.process import BrokenProcessPool

        from autograder.engine.grade import _grade_one

        try:
            return pool.submit(_grade_one, *args)
        except (BrokenProcessPool, RuntimeError):
            self.broken = True
            return None

    def _reply(self, channel: Channel, number: int, future: Future) -> None:
        from concurrent.futures.process import BrokenProcessPool

        if future.cancelled():
            return
        err = future.exception()
        if isinstance(err, BrokenProcessPool):
            self.broken = True  # ends after this session: the next command starts afresh
        try:
            if err is not None:
                raise err
            channel.send({"done": number, "result": future.result()})
        except Exception as failed:  # whatever it is, the command must hear of this task
            self._send(channel, {"failed": number,
                                 "error": f"{type(failed).__name__}: {failed}"[:1000]})

    @staticmethod
    def _send(channel: Channel, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ValueError):
            channel.send(message)


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status", "serve"),
                        help="start a service for COURSE, stop it, say whether one runs "
                        "(serve: be the service, in this process)")
    parser.add_argument("course", type=Path, help="the course folder (as --course of grade)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="grading processes (default: the number of cores)")
    parser.add_argument("--optional", default=None, metavar="NAME[,NAME]",
                        help="the optional libraries its zygotes preload (default: all of "
                        "zygote.OPTIONAL; a command uses the service only when its own would "
                        "preload the same: those its assignments' sources import)")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_S,
                        help=f"seconds without a command before it stops "
                        f"(default {DEFAULT_IDLE_S:g})")
    args = parser.parse_args(argv)
    course = args.course.resolve()
    optional = None if args.optional is None else tuple(filter(None, args.optional.split(",")))
    try:
        if args.action == "serve":
            # the module by its name, not as __main__: the pool's processes import it so
            service = importlib.import_module("autograder.engine.warm").Service
            return service(course, max(1, args.jobs), args.idle, optional).run()
        if args.action == "start":
            start(course, max(1, args.jobs), args.idle, optional=optional)
            print(f"warm service running for {course}")
        elif args.action == "stop":
            print("stopped" if stop(course) else "no warm service was running")
        else:
            folder = private_folder(course)
            print("running" if folder is not None and _locked(folder) else "not running")
    except WarmError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
