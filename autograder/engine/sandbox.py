"""Run one submission in an operating-system sandbox and talk to it (grader side).

What is enforced, on Linux (see the README's "What the sandbox enforces"):

* no network (a new, empty network namespace);
* a private file system (new mount namespace + chroot): read-only system and Python
  directories, a private /tmp and /dev, and a working folder holding only this submission and
  the public checks library; no ``solutions/``, gradebook, other students or grader's home;
* a new PID namespace whose first process is the runner: when it ends, the kernel kills every
  process the submission started; the grader kills the whole namespace when grading ends;
* an unprivileged uid when the grader runs as root, one per grading process on the machine
  (claimed with a lock file, so concurrent grading runs never share one), no new privileges;
* memory (cgroup where writable, else an address-space limit), CPU time, processes, file size,
  open files: kernel limits; wall time per cell, per call and per submission and the size of
  the output: enforced here, outside the sandbox.

Anything that cannot be enforced is reported by :func:`protections` and printed loudly by the
grading command; it is never skipped silently.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograder.engine import wire

HERE = Path(__file__).resolve().parent
COURSE_ROOT = HERE.parents[1]
STUDENT_PACKAGE = COURSE_ROOT / "autograder" / "student" / "src" / "dropout_course"
UID_BASE = 61000
UID_COUNT = 1000  # sandbox uids UID_BASE .. UID_BASE + UID_COUNT - 1
_CLAIMED: dict[str, int] = {}
# What the sandbox may import, copied read-only into .grader/: the student package (what every
# student has anyway) and the two engine modules that run inside the sandbox (the runner and its
# wire format). Nothing else of the engine, and no solution, hidden test or reference answer.
PUBLIC_LIBRARY = {
    "dropout_course": STUDENT_PACKAGE,
    "autograder/__init__.py": COURSE_ROOT / "autograder" / "__init__.py",
    "autograder/engine/__init__.py": HERE / "__init__.py",
    "autograder/engine/wire.py": HERE / "wire.py",
    "autograder/engine/runner.py": HERE / "runner.py",
}


@dataclass(frozen=True)
class Limits:
    """Resource caps for one submission's sandbox."""

    memory_bytes: int = 3 << 30
    cpu_seconds: int = 900
    cell_seconds: float = 60.0
    call_seconds: float = 60.0
    submission_seconds: float = 600.0
    processes: int = 256
    output_bytes: int = 1 << 20
    file_bytes: int = 64 << 20
    tmp_bytes: int = 256 << 20
    restarts: int = 3


class SandboxGone(Exception):
    """The sandbox ended or was killed: ``reason`` is one of timeout, memory, crash, protocol."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- what is enforced

def _cgroup_dir(controller: str) -> Path | None:
    base = Path("/sys/fs/cgroup") / controller
    if not base.is_dir():
        return None
    own = "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(","):
                own = path
    parent = base / own.lstrip("/")
    probe = parent / f"dropout-grader-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return None
    return parent


def _gpu_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())


def protections() -> dict[str, str]:
    """Each protection and how it is enforced here, or 'NOT ENFORCED: why'."""
    linux = sys.platform.startswith("linux")
    root = linux and os.geteuid() == 0
    found = {
        "namespaces": "network, mount (chroot) and PID namespaces" if linux else
        "NOT ENFORCED: needs Linux (no network/file/process isolation)",
        "user": f"unprivileged uids {UID_BASE}+ (one per grading process)" if root else
        "the grader's own uid inside a user namespace (run as root for a separate uid)",
        "memory": "cgroup v1 memory limit" if _cgroup_dir("memory") else
        ("address-space limit (RLIMIT_AS)" if not _gpu_devices() else
         "NOT ENFORCED: no writable memory cgroup and RLIMIT_AS breaks CUDA"),
        "processes": "RLIMIT_NPROC per uid" + (" + pids cgroup" if _cgroup_dir("pids") else ""),
        "cpu": "RLIMIT_CPU", "wall time": "per cell, per call and per submission (grader side)",
        "output": "capped by the grader", "gpu": ", ".join(_gpu_devices()) or "no GPU here",
    }
    if not linux:
        for key in ("memory", "processes", "cpu"):
            found[key] = "NOT ENFORCED: needs Linux"
    return found


def unenforced() -> list[str]:
    return [f"{k}: {v}" for k, v in protections().items() if v.startswith("NOT ENFORCED")]


def uid_lock_folder() -> Path:
    """Where the sandbox uids' lock files live: /run when writable (root), else the temp dir."""
    if os.access("/run", os.W_OK):
        return Path("/run/dropout-grader-uids")
    return Path(tempfile.gettempdir()) / f"dropout-grader-uids-{os.geteuid()}"


def claim_uid() -> int:
    """The sandbox uid of this process: the first of ``UID_BASE + n`` whose lock file no other
    live process holds. The lock is held until this process exits, so two grading runs on one
    machine (two shards, two instructors) never put submissions under the same uid, where one
    could use up the other's process limit (RLIMIT_NPROC counts per uid)."""
    if "uid" in _CLAIMED:
        return _CLAIMED["uid"]
    folder = uid_lock_folder()
    folder.mkdir(mode=0o700, exist_ok=True)
    for n in range(UID_COUNT):
        fd = os.open(folder / f"{UID_BASE + n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _CLAIMED.update(uid=UID_BASE + n, fd=fd)  # the fd stays open: that holds the lock
        return UID_BASE + n
    raise RuntimeError(f"all {UID_COUNT} sandbox uids are in use by other grading processes")


# --------------------------------------------------------------------------- the sandbox

class Sandbox:
    """One running sandbox: start it, send requests, read replies, kill it."""

    def __init__(self, workdir: Path, limits: Limits, slot: int) -> None:
        self.workdir = workdir
        self.limits = limits
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroups: list[Path] = []
        self.output: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.output_seen = 0
        self.warnings: list[str] = []
        self.deadline = time.monotonic() + limits.submission_seconds
        self.gone: SandboxGone | None = None
        self.requests = 0

    # ----------------------------------------------------------------- start / stop

    def start(self) -> None:
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        go_r, go_w = os.pipe()
        scratch = Path(tempfile.mkdtemp(prefix="dropout-jail-"))
        self.scratch = scratch
        (scratch / "root").mkdir()
        cfg = self._config(scratch / "root", go_r, req_r, rep_w)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(HERE / "jail.py"), json.dumps(cfg)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(go_r, req_r, rep_w), start_new_session=True,
        )
        for fd in (go_r, req_r, rep_w):
            os.close(fd)
        self._join_cgroups(self.proc.pid)
        os.write(go_w, b"g")
        os.close(go_w)
        self.readers = [threading.Thread(target=self._drain, args=(stream, name), daemon=True)
                        for stream, name in ((self.proc.stdout, "stdout"),
                                             (self.proc.stderr, "stderr"))]
        for reader in self.readers:
            reader.start()
        os.set_blocking(self.req_w, False)
        os.set_blocking(self.rep_r, False)

    def _config(self, root: Path, go_fd: int, req_r: int, rep_w: int) -> dict[str, Any]:
        uid = claim_uid() if os.geteuid() == 0 else None
        if uid is not None:
            os.chown(self.workdir, uid, uid)
            for path in self.workdir.rglob("*"):
                if path.name == "submission":
                    os.chown(path, uid, uid)
        prefixes = {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parents[1])}
        env = {"PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/student",
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": "/tmp",
               "MPLCONFIGDIR": "/tmp/matplotlib", "XDG_CACHE_HOME": "/tmp/cache",
               "PYTHONHASHSEED": "0"}
        for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
            if name in os.environ:
                env[name] = os.environ[name]
        gpu = _gpu_devices()
        return {
            "go_fd": go_fd, "root": str(root), "workdir": str(self.workdir),
            "ro_binds": ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/etc", "/sys",
                         *sorted(prefixes)],
            "devices": ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                        *gpu],
            "tmp_bytes": self.limits.tmp_bytes, "cpu_seconds": self.limits.cpu_seconds,
            "processes": self.limits.processes, "file_bytes": self.limits.file_bytes,
            "address_space": None if gpu or _cgroup_dir("memory") else self.limits.memory_bytes,
            "uid": uid, "gid": uid, "require_fs_isolation": True, "pipes": [req_r, rep_w],
            "python": sys.executable, "env": env,
            "runner": "/home/student/.grader/autograder/engine/runner.py",
        }

    def _join_cgroups(self, pid: int) -> None:
        settings = {"memory": {"memory.limit_in_bytes": self.limits.memory_bytes,
                               "memory.swappiness": 0},
                    "pids": {"pids.max": self.limits.processes}}
        for controller, values in settings.items():
            parent = _cgroup_dir(controller)
            if parent is None:
                continue
            group = parent / f"dropout-grader-{os.getpid()}-{self.slot}-{time.monotonic_ns()}"
            try:
                group.mkdir()
                for key, value in values.items():
                    with contextlib.suppress(OSError):
                        (group / key).write_text(str(value))
                with contextlib.suppress(OSError):
                    (group / "memory.memsw.limit_in_bytes").write_text(
                        str(self.limits.memory_bytes))
                (group / "cgroup.procs").write_text(str(pid))
                self.cgroups.append(group)
            except OSError as err:
                self.warnings.append(f"could not use the {controller} cgroup: {err}")

    def _drain(self, stream: Any, name: str) -> None:
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            self.output_seen += len(chunk)
            room = self.limits.output_bytes - len(self.output[name])
            if room > 0:
                self.output[name] += chunk[:room]

    def stop(self) -> None:
        """Kill everything the submission started and free the sandbox's resources."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        for group in self.cgroups:
            self._empty_cgroup(group)
        for fd in (self.req_w, self.rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        for reader in getattr(self, "readers", []):
            reader.join(timeout=2)
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)

    @staticmethod
    def _empty_cgroup(group: Path) -> None:
        for _ in range(50):
            try:
                pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            except OSError:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                group.rmdir()
                return
            except OSError:
                time.sleep(0.05)

    def memory_exceeded(self) -> bool:
        """Whether the memory cgroup hit its limit (read before the cgroup is removed)."""
        for group in self.cgroups:
            with contextlib.suppress(OSError, ValueError):
                if int((group / "memory.failcnt").read_text()) > 0:
                    return True
            with contextlib.suppress(OSError, ValueError):
                fields = dict(line.split() for line in
                              (group / "memory.oom_control").read_text().splitlines())
                if int(fields.get("oom_kill", 0)) > 0:
                    return True
        return False

    def jail_messages(self) -> list[str]:
        text = bytes(self.output["stderr"]).decode("utf-8", "replace")
        return [line.split(" ", 1)[1] for line in text.splitlines()
                if line.startswith(("JAIL-WARNING ", "JAIL-ERROR "))]

    # ----------------------------------------------------------------- requests

    def request(self, header: dict[str, Any], blobs: list[bytes] = (),
                timeout: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Send one request and wait for its reply, within ``timeout`` seconds and the
        submission's overall deadline. Raises :class:`SandboxGone` (again on every later
        request, once the sandbox is gone)."""
        if self.gone is not None:
            raise self.gone
        limit = min(self.deadline, time.monotonic() + (timeout or self.limits.call_seconds))
        self.requests += 1
        try:
            self._send({**header, "id": self.requests}, blobs, limit)
            reply = wire.read_frame(lambda n: self._read(n, limit))
        except wire.WireError as err:
            raise self._gone("protocol", str(err)) from None
        if reply[0].get("id") != self.requests:
            raise self._gone("protocol", "a reply did not answer its request (something wrote "
                             "into the grader's channel)")
        if "fault" in reply[0]:
            raise SandboxGone("protocol", f"the runner failed: {reply[0]['fault']}")
        return reply

    def _send(self, header: dict[str, Any], blobs: list[bytes], limit: float) -> None:
        head = dict(header)
        head["_blobs"] = [len(b) for b in blobs]
        text = json.dumps(head).encode()
        data = memoryview(b"".join([wire.struct.pack("<QI", 4 + len(text) + sum(
            len(b) for b in blobs), len(text)), text, *blobs]))
        while data:
            self._wait(self.req_w, limit, write=True)
            try:
                data = data[os.write(self.req_w, data):]
            except BlockingIOError:
                continue
            except OSError as err:
                if err.errno == errno.EPIPE:
                    raise self._gone("crash", "the submission's process ended") from None
                raise

    def _read(self, n: int, limit: float) -> bytes:
        chunks, left = [], n
        while left:
            self._wait(self.rep_r, limit)
            try:
                chunk = os.read(self.rep_r, min(left, 1 << 22))
            except BlockingIOError:
                continue
            if not chunk:
                raise self._gone("crash", "the submission's process ended")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _wait(self, fd: int, limit: float, write: bool = False) -> None:
        while True:
            left = limit - time.monotonic()
            if left <= 0:
                overall = time.monotonic() >= self.deadline
                raise self._gone("timeout", "the whole submission ran past "
                                 f"{self.limits.submission_seconds:g} s" if overall else
                                 "a cell or call ran past its time limit")
            ready = select.select([], [fd], [], min(left, 0.5)) if write else \
                select.select([fd], [], [], min(left, 0.5))
            if ready[0] or ready[1]:
                return
            ended = self.proc is not None and self.proc.poll() is not None and not write
            # Replies already in the pipe are still read; an empty pipe means it ended.
            if ended and not select.select([fd], [], [], 0)[0]:
                raise self._gone("crash", "the submission's process ended")

    def _gone(self, reason: str, detail: str) -> SandboxGone:
        self.gone = self._diagnose(reason, detail)
        return self.gone

    def _diagnose(self, reason: str, detail: str) -> SandboxGone:
        if self.proc is not None and self.proc.poll() is None and reason == "crash":
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)  # the jail reports the runner's end a moment later
        ended = self.proc is not None and self.proc.poll() is not None
        memory = self.memory_exceeded()  # before stop() removes the cgroup
        self.stop()
        code = self.proc.returncode if self.proc is not None else None
        if memory or (code == 128 + signal.SIGKILL and reason == "crash" and self._oom_hint()):
            return SandboxGone("memory", f"it used more than {self.limits.memory_bytes >> 20} MiB")
        if reason == "crash" and code == 128 + signal.SIGXCPU:
            return SandboxGone("timeout", f"it used more than {self.limits.cpu_seconds} s of CPU")
        if reason == "crash" and ended:
            detail = f"the submission's process ended (exit status {code})"
        return SandboxGone(reason, detail)

    def _oom_hint(self) -> bool:
        return any("MemoryError" in line for line in
                   bytes(self.output["stderr"]).decode("utf-8", "replace").splitlines()[-5:])


def prepare_workdir(parent: Path) -> Path:
    """A fresh working folder: the public library in ``.grader/`` (read-only) and an empty,
    writable ``submission`` folder the cells run in."""
    workdir = Path(tempfile.mkdtemp(prefix="work-", dir=parent))
    library = workdir / ".grader"
    for name, source in PUBLIC_LIBRARY.items():
        (library / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, library / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, library / name)
    for path in [workdir / ".grader", *(workdir / ".grader").rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    os.chmod(workdir, 0o755)
    return workdir
