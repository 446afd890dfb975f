"""A warm start for sandboxes: a process that has imported what submissions use, forked once
per submission into a fresh sandbox.

Started by a grading process (``python -I .grader/autograder/engine/zygote.py FD``, from a copy
of the public library, like the runner), the zygote imports torch, NumPy, SciPy's statistics
(unless told that no exercise graded uses them: :data:`OPTIONAL`), the public checks package
and the runner, and nothing else: no hidden test, solution, reference answer or gradebook
handle ever reaches it (only the public library is on its path, and the grader sends it
nothing but sandbox configurations and the names of :data:`OPTIONAL` to import). It then
waits on a control socket (descriptor ``FD``).

For each request (a sandbox's jail configuration and its descriptors) it forks. The child
takes the place of today's ``python -I jail.py`` process: the same ``jail.enter`` waits for
"go" (after the grader put it in the sandbox's cgroups), unshares the namespaces, builds the
root, changes uid, sets limits and no_new_privs, and where the jail would ``execve`` the
runner it runs the runner already imported here (:func:`become_runner`). What a fresh
interpreter would have differently is set as it would be: the environment, ``argv``, the
descriptors (only 0 to 4 stay open), no capabilities and dumpable (``jail.like_exec``), and
the global random states of Python, NumPy and torch (from the system's entropy, as at
start-up).

Each child starts from the zygote's state, which no submission ever touched: whatever a
submission changes (modules, random state, threads, files, IPC) lives and dies in its own
processes and namespaces. Fork hazards are refused rather than risked: the zygote checks
before every fork that it runs one thread and that CUDA is not initialised (a child
initialises CUDA itself when a GPU is passed in).

The grader's side is :class:`Zygote` (a handle on the process) and :class:`Child` (what
``subprocess.Popen`` gave for a cold start: ``pid``, ``poll``, ``wait``, ``returncode``,
``stdout``, ``stderr``). Replies on the control socket are one JSON object each:
``{"pid": n}`` or ``{"error": text}`` per request, ``{"exit": n, "code": c}`` when a child
ends (the zygote reaps its children).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

MAX_MESSAGE = 1 << 20
FD_NAMES = ("go_fd", "req_r", "rep_w", "msg_fd", "stdout", "stderr")
FIRST_FREE_FD = 10  # received descriptors move at or above this (the jail dups onto 3 and 4)
READY = b"ready"


# --------------------------------------------------------------------------- the zygote process

#: Libraries a zygote imports only when asked (``--with=NAME``): those that some exercises'
#: students use and the rest never do. SciPy's statistics (Exercise 4 tells students to use
#: ``scipy.stats``) cost about 0.7 s of CPU to import: about 0.5 s of every Exercise 4
#: submission when the zygote lacks them, and of every zygote start when it has them.
OPTIONAL = ("scipy.stats",)


def _preload(optional: tuple[str, ...] = ()) -> None:
    """Import what a submission's first cell would (the libraries and the public package) and
    what the first calls of its tests would import lazily, each in every sandbox:

    * the libraries of :data:`OPTIONAL` named in ``optional``, where installed;
    * ``torch.fx.experimental.symbolic_shapes`` (and SymPy), which ``torch.autograd.grad``
      imports on its first call with explicit output gradients: about 0.2 s of every
      submission whose tests check a gradient.

    Imports only: nothing here starts a thread or touches CUDA."""
    import importlib
    import pkgutil

    import dropout_course
    import numpy  # noqa: F401
    import torch  # noqa: F401

    importlib.import_module("torch.fx.experimental.symbolic_shapes")
    for name in optional:
        if name in OPTIONAL:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    for info in pkgutil.walk_packages(dropout_course.__path__, "dropout_course."):
        importlib.import_module(info.name)
    from autograder.engine import jail, runner, wire  # noqa: F401


def keep_public_path() -> None:
    """Only the public library (this file's copy) and Python's own folders stay on the import
    path: a ``.pth`` file of the grader's environment may name the course's folders, which exist
    here (outside the sandbox), and the zygote must not be able to import from them."""
    library = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    allowed = tuple(os.path.realpath(p) + os.sep for p in
                    {library, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})
    sys.path[:] = [p for p in sys.path if (os.path.realpath(p) + os.sep).startswith(allowed)]
    sys.path_importer_cache.clear()


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def fork_hazard() -> str | None:
    """Why forking now would be unsafe, or None: another thread (a lock it holds would stay
    held in the child forever), or an initialised CUDA context (unusable after a fork)."""
    if _threads() != 1:
        return f"the zygote runs {_threads()} threads"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialised in the zygote"
    return None


def become_runner(env: dict[str, str], argv: list[str]) -> None:
    """In the sandbox, where the jail would exec the runner: make this process what a fresh
    ``python -I runner.py`` would be, then serve; never returns."""
    import random

    import numpy as np
    import torch

    os.environ.clear()
    os.environ.update(env)
    sys.argv = [argv[-1]]
    os.closerange(5, 1 << 16)  # the jail's channel and anything else of the zygote's
    random.seed()
    np.random.seed()
    torch.seed()
    from autograder.engine import runner

    runner.serve()
    os._exit(0)


def _child(control: socket.socket, cfg: dict[str, Any], fds: dict[str, int]) -> None:
    """The forked child: the jail's process for one sandbox; never returns."""
    from autograder.engine import jail

    try:
        control.close()
        os.setsid()  # its own process group, as start_new_session gave the cold jail
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(fds["stdout"], 1)
        os.dup2(fds["stderr"], 2)
        for name in ("stdout", "stderr"):
            os.close(fds[name])
        cfg.update(go_fd=fds["go_fd"], msg_fd=fds["msg_fd"], pipes=[fds["req_r"], fds["rep_w"]])
        jail.IN_PROCESS["run"] = become_runner
    except BaseException:
        os._exit(jail.REFUSED)
    jail.guarded(jail.enter, cfg)
    os._exit(0)


def _spawn(control: socket.socket, data: bytes, received: list[int]) -> int | str:
    """Fork one sandbox's jail process; its pid, or why not."""
    fds: dict[str, int] = {}
    try:
        cfg = json.loads(data)
        if not isinstance(cfg, dict) or len(received) != len(FD_NAMES):
            return "malformed request"
        for name, fd in zip(FD_NAMES, received, strict=True):
            fds[name] = fcntl_dup(fd)
        hazard = fork_hazard()
        if hazard is not None:
            return hazard
        pid = os.fork()
        if pid == 0:
            _child(control, cfg, fds)
        return pid
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    finally:
        for fd in [*received, *fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)


def fcntl_dup(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD, FIRST_FREE_FD)


def serve(control_fd: int) -> None:
    """The zygote's loop: fork on each request, report each child's end, stop at EOF."""
    import gc

    control = socket.socket(fileno=control_fd)
    children: dict[int, int] = {}  # pidfd -> pid
    gc.freeze()  # what is imported now stays out of the children's collections (fewer copies)
    control.send(READY)
    while True:
        ready, _, _ = select.select([control, *children], [], [])
        for fd in ready:
            if fd is control:
                try:
                    data, received, _, _ = socket.recv_fds(control, MAX_MESSAGE, len(FD_NAMES))
                except OSError:
                    return
                if not data:
                    return
                outcome = _spawn(control, data, received)
                if isinstance(outcome, int):
                    children[os.pidfd_open(outcome)] = outcome
                    control.send(json.dumps({"pid": outcome}).encode())
                else:
                    control.send(json.dumps({"error": outcome[:1000]}).encode())
            else:
                pid = children.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                control.send(json.dumps(
                    {"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


def main() -> None:
    import ctypes
    import signal

    # Dies with the grading process that started it (checked once more after setting it).
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)
    keep_public_path()
    if "--light" in sys.argv[2:]:  # forks only trusted programs, which exec: no libraries
        from autograder.engine import jail, runner, wire  # noqa: F401
    else:
        _preload(tuple(a.removeprefix("--with=") for a in sys.argv[2:] if a.startswith("--with=")))
    hazard = fork_hazard()
    if hazard is not None:
        sys.stderr.write(f"zygote: {hazard}\n")
        os._exit(1)
    serve(int(sys.argv[1]))
    os._exit(0)


# --------------------------------------------------------------------------- the grader's side

class ZygoteError(Exception):
    """The zygote could not start or fork a sandbox (the grader then starts it cold)."""


class Child:
    """A sandbox's jail process forked by the zygote, seen as ``subprocess.Popen`` shows a
    child: ``pid``, ``stdout``/``stderr`` (readable binary streams), ``poll``, ``wait``,
    ``returncode`` (told by the zygote, which reaps it)."""

    def __init__(self, zygote: Zygote, pid: int, stdout: Any, stderr: Any) -> None:
        self.zygote, self.pid = zygote, pid
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.zygote.read_messages(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            if not self.zygote.read_messages(left) and not self.zygote.alive():
                # the zygote is gone: nothing will report this child's end any more
                self.returncode = -9 if _gone(self.pid) else None
                if self.returncode is None:
                    time.sleep(0.01)
        return self.returncode


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


class Zygote:
    """The grader's handle on one zygote process (one per grading process)."""

    def __init__(self, python: str, script: str, env: dict[str, str], light: bool = False,
                 optional: tuple[str, ...] | None = None) -> None:
        """``optional``: the libraries of :data:`OPTIONAL` to import (default: all)."""
        self.lock = threading.RLock()
        self.children: dict[int, Child] = {}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [python, "-I", script, str(theirs.fileno()), *(["--light"] if light else []),
                 *(f"--with={name}" for name in (OPTIONAL if optional is None else optional)
                   if name in OPTIONAL)],
                env=env, pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/")
        finally:
            theirs.close()
        self.control = ours
        self.started = False

    def ready(self, timeout: float = 120.0) -> None:
        """Wait until the zygote has imported everything (raises :class:`ZygoteError`)."""
        with self.lock:
            if self.started:
                return
            readable, _, _ = select.select([self.control], [], [], timeout)
            if not readable or self.control.recv(MAX_MESSAGE) != READY:
                self.close()
                raise ZygoteError("the zygote did not start")
            self.started = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, cfg: dict[str, Any], fds: dict[str, int]) -> Child:
        """Fork a jail process for ``cfg`` holding ``fds`` (by :data:`FD_NAMES`; the grader
        keeps its copies and closes them as after a cold start)."""
        self.ready()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        with self.lock:
            try:
                fds = {**fds, "stdout": out_w, "stderr": err_w}
                socket.send_fds(self.control, [json.dumps(cfg).encode()],
                                [fds[name] for name in FD_NAMES])
                reply = self._reply()
            except (OSError, ValueError) as err:
                for fd in (out_r, err_r):
                    os.close(fd)
                raise ZygoteError(f"the zygote failed: {err}") from None
            finally:
                os.close(out_w)
                os.close(err_w)
            if "pid" not in reply:
                for fd in (out_r, err_r):
                    os.close(fd)
                raise ZygoteError(f"the zygote refused: {str(reply.get('error'))[:300]}")
            # The streams live as long as the sandbox: its readers close them at the end.
            child = Child(self, reply["pid"], open(out_r, "rb", buffering=0),  # noqa: SIM115
                          open(err_r, "rb", buffering=0))  # noqa: SIM115
            self.children[child.pid] = child
            return child

    def _reply(self) -> dict[str, Any]:
        while True:
            message = self._receive(30.0)
            if message is None:
                raise ZygoteError("the zygote did not answer")
            if "exit" not in message:
                return message

    def _receive(self, timeout: float | None) -> dict[str, Any] | None:
        """One message (exit reports are applied to their child on the way), or None."""
        readable, _, _ = select.select([self.control], [], [], timeout)
        if not readable:
            return None
        data = self.control.recv(MAX_MESSAGE)
        if not data:
            raise OSError("the zygote closed its socket")
        message = json.loads(data)
        if "exit" in message:
            child = self.children.pop(message["exit"], None)
            if child is not None:
                child.returncode = int(message["code"])
        return message

    def read_messages(self, timeout: float | None) -> bool:
        """Apply the exit reports waiting (waiting up to ``timeout`` for the first one);
        whether any message came."""
        with self.lock:
            got = False
            try:
                while self._receive(0 if got else timeout) is not None:
                    got = True
            except (OSError, ValueError):
                pass
            return got

    def peak_memory(self) -> int | None:
        """The zygote's peak resident memory in bytes (VmHWM), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def close(self) -> None:
        with self.lock:
            with contextlib.suppress(OSError):
                self.control.close()
            try:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


if __name__ == "__main__":
    # .grader/autograder/engine/zygote.py: .grader holds autograder.engine and dropout_course.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    main()
