"""Run one submission in an operating-system sandbox and talk to it (grader side).

What is promised, on Linux (see the README's "What the sandbox enforces"), one name each in
:data:`PROTECTIONS`:

* ``network``: a new network namespace holding only ``lo``;
* ``filesystem``: a new mount namespace + chroot: read-only system and Python directories and the
  public checks library; no course root, ``solutions/``, gradebook, other submissions or grader's
  home; the root read-only;
* ``pid``: a new PID namespace whose first process is the runner: when it ends, the kernel kills
  every process the submission started;
* ``ipc``: a new IPC namespace (System V shared memory dies with the sandbox);
* ``uid``: a separate unprivileged uid when the grader runs as root, one per grading process
  (claimed with a lock file and emptied of leftover processes before use), no capabilities;
* ``no_new_privs``;
* ``rlimits``: CPU time, processes, file size, open files, core dumps;
* ``memory``: a cgroup (v1, else v2) memory limit, else an address-space limit (not with a GPU);
* ``pids``: a pids cgroup, else ``RLIMIT_NPROC`` alone;
* ``scratch``: the writable home, ``/tmp`` and ``/dev/shm`` are size-limited tmpfs: nothing the
  submission writes reaches the host's disk;
* ``kill_all``: when grading stops, nothing the submission started is left alive (cgroup kill,
  the PID namespace, and as root every process of the sandbox uid), checked from outside.

Wall time per cell, per call and per submission and the size of the output are enforced here,
outside the sandbox. :func:`self_test` measures each protection on this host by starting a real
sandbox through the same jail with a trusted probe in place of the runner; the jail refuses to
run without a protection it cannot set up unless ``Limits.allow_weaker`` names it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograder.engine import wire
from autograder.engine.zygote import Zygote, ZygoteError

HERE = Path(__file__).resolve().parent
COURSE_ROOT = HERE.parents[1]
STUDENT_PACKAGE = COURSE_ROOT / "autograder" / "student" / "src" / "dropout_course"
UID_BASE = 61000
UID_COUNT = 1000  # sandbox uids UID_BASE .. UID_BASE + UID_COUNT - 1
INSIDE_UID = 1000  # the uid the code has inside a user namespace (jail.INSIDE_UID)
JAIL_REFUSED = 97  # jail.REFUSED
CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID = 21, 7, 6
SANDBOX_HOME = "/home/student"
RUNNER = f"{SANDBOX_HOME}/.grader/autograder/engine/runner.py"
START_SECONDS = 30.0  # how long the jail may take to build the sandbox
STOP_SECONDS = 5.0  # how long stop() keeps killing before it records leftovers
_CLAIMED: dict[str, int] = {}
_LAST_TEST: dict[str, SelfTest] = {}
#: The protections the self-test measures, by the names ``--allow-weaker-sandbox`` takes.
PROTECTIONS: tuple[str, ...] = ("network", "filesystem", "pid", "ipc", "uid", "no_new_privs",
                                "rlimits", "memory", "pids", "scratch", "kill_all")
# What the sandbox may import, copied read-only into .grader/: the student package (what every
# student has anyway) and the two engine modules that run inside the sandbox (the runner and its
# wire format). Nothing else of the engine, and no solution, hidden test or reference answer.
PUBLIC_LIBRARY = {
    "dropout_course": STUDENT_PACKAGE,
    "autograder/__init__.py": COURSE_ROOT / "autograder" / "__init__.py",
    "autograder/engine/__init__.py": HERE / "__init__.py",
    "autograder/engine/wire.py": HERE / "wire.py",
    "autograder/engine/runner.py": HERE / "runner.py",
    # The warm start (zygote.py) runs from this copy too, with the jail it forks into.
    "autograder/engine/zygote.py": HERE / "zygote.py",
    "autograder/engine/jail.py": HERE / "jail.py",
}


@dataclass(frozen=True)
class Limits:
    """Resource caps for one submission's sandbox. ``tmp_bytes`` caps each of the home,
    ``/tmp`` and ``/dev/shm``; ``allow_weaker`` names protections of :data:`PROTECTIONS` the
    sandbox may run without (by default, none: the jail refuses instead)."""

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
    allow_weaker: tuple[str, ...] = ()
    warm_start: bool = True
    """Fork the sandbox from this process's zygote (:func:`warm_zygote`) instead of starting
    a new interpreter; the protections are the same either way."""


class SandboxGone(Exception):
    """The sandbox ended or was killed: ``reason`` is one of timeout, memory, crash, protocol,
    or grader (the sandbox could not be built: the grader's failure, not the submission's)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- the host

def _linux() -> bool:
    return sys.platform.startswith("linux")


def _capabilities() -> int:
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("CapEff:"))
        return int(line.split()[1], 16)
    return 0


def host_mode() -> str:
    """How the jail isolates on this host: ``root`` (root with CAP_SYS_ADMIN), ``userns-root``
    (root without it, e.g. a container: a user namespace mapped to the sandbox uid), ``userns``
    (an unprivileged grader: its own uid in a user namespace) or ``none`` (not Linux)."""
    if not _linux():
        return "none"
    if os.geteuid() != 0:
        return "userns"
    return "root" if _capabilities() >> CAP_SYS_ADMIN & 1 else "userns-root"


def _cgroup_dir(controller: str) -> Path | None:
    """This process's own group of the cgroup v1 ``controller``, if one can be made under it."""
    base = Path("/sys/fs/cgroup") / controller
    if not base.is_dir() or (base / "cgroup.controllers").exists():
        return None
    own = "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(","):
                own = path
    parent = base / own.lstrip("/")
    probe = parent / f"dropout-grader-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return None
    return parent


def cgroup2_mount() -> Path | None:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified
    on a hybrid host."""
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (base / "cgroup.controllers").is_file():
            return base
    return None


class Cgroup2:
    """A child group of this process's own cgroup v2 group: limits, membership, kill."""

    def __init__(self, path: Path, limits: frozenset[str]) -> None:
        self.path = path
        self.limits = limits  # the limits in force through this group: memory, pids

    @classmethod
    def create(cls, name: str, memory_bytes: int | None = None,
               processes: int | None = None) -> Cgroup2 | None:
        """Make the group ``name`` (None where no v2 group can be made); enable the memory and
        pids controllers in the parent where possible and set the limits asked for (None: not
        wanted). :attr:`limits` says which of them are in force."""
        base = cgroup2_mount()
        if base is None:
            return None
        own = "/"
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    own = line[3:]
        parent = base / own.lstrip("/")
        wanted = {"memory": memory_bytes, "pids": processes}
        with contextlib.suppress(OSError):
            offered = set((parent / "cgroup.controllers").read_text().split())
            for controller, value in wanted.items():
                if value is not None and controller in offered:
                    with contextlib.suppress(OSError):
                        (parent / "cgroup.subtree_control").write_text(f"+{controller}")
        group = parent / name
        try:
            group.mkdir()
        except OSError:
            return None
        enabled = set()
        with contextlib.suppress(OSError):
            enabled = set((group / "cgroup.controllers").read_text().split())
        limits = set()
        with contextlib.suppress(OSError):
            if memory_bytes is not None and "memory" in enabled:
                (group / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (group / "memory.swap.max").write_text("0")
                limits.add("memory")
        with contextlib.suppress(OSError):
            if processes is not None and "pids" in enabled:
                (group / "pids.max").write_text(str(processes))
                limits.add("pids")
        return cls(group, frozenset(limits))

    def add(self, pid: int) -> None:
        """Move ``pid`` into the group (OSError where it cannot)."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        """The processes in the group now (none once it is removed)."""
        with contextlib.suppress(OSError, ValueError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def kill(self) -> None:
        """SIGKILL everything in the group: cgroup.kill, else each process listed."""
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            fields = dict(line.split() for line in
                          (self.path / "memory.events").read_text().splitlines())
            return int(fields.get("oom_kill", 0)) > 0
        return False

    def remove(self) -> None:
        """Kill what is left and remove the group (retried while processes are ending)."""
        for _ in range(100):
            if not self.path.exists():
                return
            self.kill()
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.01)


def _gpu_devices() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())


# --------------------------------------------------------------------------- processes

def _status(pid: int) -> dict[str, str] | None:
    """/proc/<pid>/status as a dict, or None where the process is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k: v.strip() for k, v in fields.items()}
    return None if fields.get("State", "X")[:1] in "ZX" else fields


def _alive(pid: int) -> bool:
    return _status(pid) is not None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def uid_processes(uid: int) -> list[int]:
    """Live processes (not zombies) any of whose uids (real, effective, saved, fs) is ``uid``."""
    found = []
    for pid in _all_pids():
        fields = _status(pid)
        if fields is not None and str(uid) in fields.get("Uid", "").split():
            found.append(pid)
    return found


def _namespace(pid: int | str, kind: str) -> str | None:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    return None


def _namespace_members(link: str) -> list[int]:
    return [pid for pid in _all_pids() if _namespace(pid, "pid") == link and _alive(pid)]


def _kill_uid(uid: int, seconds: float) -> bool:
    """SIGKILL every process of ``uid`` until none is left (True) or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        pids = uid_processes(uid)
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def uid_lock_folder() -> Path:
    """Where the sandbox uids' lock files live: /run when writable (root), else the temp dir."""
    if os.access("/run", os.W_OK):
        return Path("/run/dropout-grader-uids")
    return Path(tempfile.gettempdir()) / f"dropout-grader-uids-{os.geteuid()}"


def claim_uid() -> int:
    """The sandbox uid of this process: the first of ``UID_BASE + n`` whose lock file no other
    live process holds, emptied of any process still running under it (left by a grading
    process that died: its lock died with it, its sandbox's processes need not have) and
    checked empty before it is returned. The lock is held until this process exits, so two
    grading runs never put submissions under the same uid. A forked child claims its own: a
    lock taken with flock belongs to the open file, which the child shares with its parent."""
    if _CLAIMED.get("pid") == os.getpid():
        return _CLAIMED["uid"]
    _CLAIMED.clear()
    folder = uid_lock_folder()
    folder.mkdir(mode=0o700, exist_ok=True)
    for n in range(UID_COUNT):
        uid = UID_BASE + n
        fd = os.open(folder / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if os.geteuid() == 0 and not _kill_uid(uid, 3.0):
            os.close(fd)  # something of this uid will not die: never hand it out
            continue
        _CLAIMED.update(uid=uid, fd=fd, pid=os.getpid())  # the open fd holds the lock
        return uid
    raise RuntimeError(f"all {UID_COUNT} sandbox uids are in use by other grading processes")


# --------------------------------------------------------------------------- the sandbox

def sandbox_env() -> dict[str, str]:
    """The environment of the code in a sandbox (and of the zygote, which imports for it)."""
    env = {"PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": SANDBOX_HOME,
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": "/tmp",
           "MPLCONFIGDIR": "/tmp/matplotlib", "XDG_CACHE_HOME": "/tmp/cache",
           "PYTHONHASHSEED": "0"}
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@dataclass
class WarmStart:
    """This process's zygote and the public library it runs from (bound read-only into each
    sandbox at its own path, where the zygote's modules were imported from; the sandbox's
    ``.grader`` stays its own copy, as on a cold start)."""

    zygote: Zygote
    library: str
    folder: Path


_WARM: dict[str, WarmStart] = {}
_WARM_LOCK = threading.Lock()
_WARM_HOOKS: set[str] = set()


def warm_zygote(wait: bool = True, kind: str = "zygote",
                optional: tuple[str, ...] | None = None) -> WarmStart:
    """This process's zygote, started on first use (and again if it died). ``wait=False``
    returns at once, the zygote still importing (a worker starts it while it loads).
    ``optional``: which of the libraries some exercises use (``zygote.OPTIONAL``, the default)
    a zygote started now imports; a running one is used as it is.

    ``kind="probe"``: the zygote of the trusted programs that replace the runner (the
    self-test's probe), which are exec'd after the jail: the same zygote, jail and fork, but
    without the libraries a submission uses (``zygote.py --light``: about 0.1 s to start
    instead of about 2 s of CPU, which the grading command's own self-test paid while its
    workers started)."""
    with _WARM_LOCK:
        warm = _WARM.get(kind)
        if warm is not None and not warm.zygote.alive():
            stop_zygote(kind)
            warm = None
        if warm is None:
            folder = Path(tempfile.mkdtemp(prefix="dropout-zygote-"))
            os.chmod(folder, 0o755)
            library = prepare_workdir(folder) / ".grader"
            zygote = Zygote(sys.executable, str(library / "autograder" / "engine" / "zygote.py"),
                            sandbox_env(), light=kind == "probe", optional=optional)
            warm = _WARM[kind] = WarmStart(zygote, str(library), folder)
            if "atexit" not in _WARM_HOOKS:
                import atexit

                atexit.register(stop_zygote)
                _WARM_HOOKS.add("atexit")
    if wait:
        try:
            warm.zygote.ready()
        except ZygoteError:
            stop_zygote(kind)
            raise
    return warm


def warm_zygote_peak() -> int | None:
    """This process's zygote's peak resident memory in bytes, or None without one."""
    warm = _WARM.get("zygote")
    return None if warm is None else warm.zygote.peak_memory()


def stop_zygote(kind: str | None = None) -> None:
    """End this process's zygote of ``kind`` (default: every one) and remove its library copy
    (nothing if there is none)."""
    for name in [kind] if kind is not None else list(_WARM):
        warm = _WARM.pop(name, None)
        if warm is not None:
            warm.zygote.close()
            shutil.rmtree(warm.folder, ignore_errors=True)


class Sandbox:
    """One running sandbox: start it, send requests, read replies, kill it.

    One sandbox runs at a time in a grading process: its processes are found (and killed) by
    the process's claimed uid. ``command`` replaces the runner by a trusted program (the
    self-test's probe), started the same way."""

    def __init__(self, workdir: Path, limits: Limits, slot: int,
                 command: Sequence[str] | None = None) -> None:
        self.workdir = workdir
        self.limits = limits
        self.slot = slot
        self.command = list(command) if command is not None else None
        self.mode = host_mode()
        self.uid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroups: list[Path] = []  # the v1 groups
        self._v1_groups: dict[str, Path] = {}
        self.cgroup2: Cgroup2 | None = None
        self.cgroup_limits: dict[str, str] = {}  # memory/pids -> the group file that sets it
        self.output: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.output_seen = 0
        self.warnings: list[str] = []
        self.jail_records: list[dict[str, Any]] = []
        self.runner_pid: int | None = None
        self.jail_pids: set[int] = set()
        self.pid_namespace: str | None = None
        self.leftovers_after_stop: list[int] = []
        self.deadline = time.monotonic() + limits.submission_seconds
        self.gone: SandboxGone | None = None
        self.requests = 0
        self.stopped = False
        self.peak_memory: int | None = None
        """The memory cgroup's high-water mark in bytes (read when the sandbox stops), or None
        where no memory cgroup was used."""
        self.req_w = self.rep_r = -1
        self._records = threading.Condition()
        self._channel_closed = False
        self.readers: list[threading.Thread] = []

    # ----------------------------------------------------------------- start / stop

    def start(self) -> None:
        """Build the sandbox and wait until its program is exec'd. Raises
        :class:`SandboxGone` with reason "grader" where the jail could not build it (or
        refused to run without a protection that was not allowed)."""
        if self.mode in ("root", "userns-root"):
            self.uid = claim_uid()
            if not _kill_uid(self.uid, 3.0):
                raise self._fail(f"processes of the sandbox uid {self.uid} will not die")
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        go_r, go_w = os.pipe()
        msg_r, msg_w = os.pipe()
        self.scratch = Path(tempfile.mkdtemp(prefix="dropout-jail-"))
        # PID 1 of a user namespace walks to its new root as the sandbox uid.
        os.chmod(self.scratch, 0o711)
        (self.scratch / "root").mkdir(mode=0o755)
        (self.scratch / "home").mkdir(mode=0o700)
        try:
            if self.uid is not None:
                try:
                    os.chown(self.scratch / "home", self.uid, self.uid)
                except OSError as err:  # the fallback home serves only without namespaces
                    self.warnings.append(f"the fallback home is not the sandbox uid's: {err}")
            self._make_cgroups()
            cfg = self._config(go_r, req_r, rep_w, msg_w)
            self.proc = self._warm_start(cfg, go_r, req_r, rep_w, msg_w)
            if self.proc is None:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", str(HERE / "jail.py"), json.dumps(cfg)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    pass_fds=(go_r, req_r, rep_w, msg_w), start_new_session=True,
                )
        except OSError as err:
            for fd in (go_r, go_w, req_r, rep_w, msg_r, msg_w):
                os.close(fd)
            raise self._fail(f"{type(err).__name__}: {err}") from None
        for fd in (go_r, req_r, rep_w, msg_w):
            os.close(fd)
        self.readers = [threading.Thread(target=self._drain, args=(stream, name), daemon=True)
                        for stream, name in ((self.proc.stdout, "stdout"),
                                             (self.proc.stderr, "stderr"))]
        self.readers.append(threading.Thread(target=self._listen, args=(msg_r,), daemon=True))
        for reader in self.readers:
            reader.start()
        try:
            self._join_cgroups(self.proc.pid)
        except SandboxGone:
            os.close(go_w)
            raise
        os.write(go_w, b"g")
        os.close(go_w)
        os.set_blocking(self.req_w, False)
        os.set_blocking(self.rep_r, False)
        self._wait_for_exec()

    def _warm_start(self, cfg: dict[str, Any], go_r: int, req_r: int, rep_w: int,
                    msg_w: int) -> Any:
        """The jail process forked by this process's zygote (a :class:`zygote.Child`), or None
        for a cold start: warm starts turned off, or a zygote that cannot serve (said in
        :attr:`warnings`). The runner then runs in the forked process; a trusted program in
        its place (the self-test's probe) is exec'd there, after the same jail."""
        if not self.limits.warm_start:
            return None
        cold_binds = list(cfg["ro_binds"])
        try:
            warm = warm_zygote(kind="zygote" if self.command is None else "probe")
            # Where the zygote imported its modules from: bound read-only at the same path.
            cfg.update(in_process=self.command is None, ro_binds=[*cold_binds, warm.library])
            return warm.zygote.spawn(cfg, {"go_fd": go_r, "req_r": req_r, "rep_w": rep_w,
                                           "msg_fd": msg_w})
        except (ZygoteError, OSError) as err:
            self.warnings.append(f"started cold: {err}")
            cfg.update(in_process=False, ro_binds=cold_binds)
            return None

    def _config(self, go_fd: int, req_r: int, rep_w: int, msg_w: int) -> dict[str, Any]:
        prefixes = {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parents[1])}
        env = sandbox_env()
        gpu = _gpu_devices()
        memory_cgroup = "memory" in self.cgroup_limits
        return {
            "go_fd": go_fd, "msg_fd": msg_w, "mode": self.mode, "root": str(self.scratch / "root"),
            "library": str(self.workdir / ".grader"), "fallback_home": str(self.scratch / "home"),
            "allow_weaker": list(self.limits.allow_weaker),
            "ro_binds": ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/etc", "/sys",
                         *sorted(prefixes)],
            "devices": ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                        *gpu],
            "tmp_bytes": self.limits.tmp_bytes, "home_bytes": self.limits.tmp_bytes,
            "cpu_seconds": self.limits.cpu_seconds, "processes": self.limits.processes,
            "file_bytes": self.limits.file_bytes,
            "address_space": None if gpu or memory_cgroup else self.limits.memory_bytes,
            "uid": self.uid, "gid": self.uid, "pipes": [req_r, rep_w],
            "python": sys.executable, "env": env,
            "argv": self.command or [sys.executable, "-I", RUNNER],
        }

    def _make_cgroups(self) -> None:
        """Make this sandbox's groups (before the jail starts: whether memory is capped by a
        cgroup decides whether the jail sets an address-space limit)."""
        name = f"dropout-grader-{os.getpid()}-{self.slot}-{time.monotonic_ns()}"
        settings = {"memory": {"memory.limit_in_bytes": self.limits.memory_bytes,
                               "memory.swappiness": 0},
                    "pids": {"pids.max": self.limits.processes}}
        for controller, values in settings.items():
            parent = _cgroup_dir(controller)
            if parent is None:
                continue
            group = parent / name
            try:
                group.mkdir()
                for key, value in values.items():
                    with contextlib.suppress(OSError):
                        (group / key).write_text(str(value))
                if controller == "memory":
                    with contextlib.suppress(OSError):
                        (group / "memory.memsw.limit_in_bytes").write_text(
                            str(self.limits.memory_bytes))
                self.cgroups.append(group)
                self._v1_groups[controller] = group
                self.cgroup_limits[controller] = str(group / next(iter(values)))
            except OSError as err:
                self.warnings.append(f"could not use the {controller} cgroup: {err}")
        self.cgroup2 = Cgroup2.create(
            name, None if "memory" in self.cgroup_limits else self.limits.memory_bytes,
            None if "pids" in self.cgroup_limits else self.limits.processes)
        if self.cgroup2 is not None:
            for controller in self.cgroup2.limits:
                file = "memory.max" if controller == "memory" else "pids.max"
                self.cgroup_limits[controller] = str(self.cgroup2.path / file)

    def _join_cgroups(self, pid: int) -> None:
        """Put the jail into every group; one that carries a limit and cannot be joined stops
        the sandbox unless that limit was allowed to be lost."""
        for controller, group in self._v1_groups.items():
            try:
                (group / "cgroup.procs").write_text(str(pid))
            except OSError as err:
                self._lose_group(controller, err)
        if self.cgroup2 is not None:
            try:
                self.cgroup2.add(pid)
            except OSError as err:
                for controller in self.cgroup2.limits:
                    self._lose_group(controller, err)
                self.cgroup2.remove()
                self.cgroup2 = None

    def _lose_group(self, controller: str, err: OSError) -> None:
        self.cgroup_limits.pop(controller, None)
        if controller not in self.limits.allow_weaker:
            raise self._fail(f"could not join the {controller} cgroup: {err}")
        self.warnings.append(f"could not join the {controller} cgroup: {err}")

    def _fail(self, detail: str) -> SandboxGone:
        self.stop()
        self.gone = SandboxGone("grader", f"the sandbox could not be built: {detail}")
        return self.gone

    def _drain(self, stream: Any, name: str) -> None:
        # Closed at its end: left to the garbage collector, the stream's ResourceWarning came
        # during a later submission's test, where the checks report a call's warnings.
        with contextlib.closing(stream):
            while True:
                chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
                if not chunk:
                    return
                self.output_seen += len(chunk)
                room = self.limits.output_bytes - len(self.output[name])
                if room > 0:
                    self.output[name] += chunk[:room]

    def _listen(self, fd: int) -> None:
        """Read the jail's channel: one JSON record a line, until every writer is gone."""
        buffer = b""
        with open(fd, "rb", buffering=0) as channel:
            while True:
                chunk = channel.read(65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    with contextlib.suppress(ValueError, UnicodeDecodeError):
                        record = json.loads(line)
                        if isinstance(record, dict) and len(self.jail_records) < 1000:
                            with self._records:
                                self._note(record)
                                self._records.notify_all()
        with self._records:
            self._channel_closed = True
            self._records.notify_all()

    def _note(self, record: dict[str, Any]) -> None:
        self.jail_records.append(record)
        if record.get("kind") == "pid" and isinstance(record.get("pid"), int):
            if record.get("role") == "runner":
                self.runner_pid = record["pid"]
            else:
                self.jail_pids.add(record["pid"])

    def _exec_seen(self) -> bool:
        return any(r.get("kind") == "exec" for r in self.jail_records)

    def jail_failure(self) -> str | None:
        """Why the jail failed before (or at) exec'ing the program, or None: read from its
        channel only, so nothing the submission writes can fake or hide it."""
        errors = [str(r.get("text", "")) for r in self.jail_records if r.get("kind") == "error"]
        if errors:
            return "; ".join(errors)
        if not self._exec_seen() and (self._channel_closed or (
                self.proc is not None and self.proc.poll() is not None)):
            return "the jail ended before starting the submission's process"
        return None

    def _wait_for_exec(self) -> None:
        limit = time.monotonic() + START_SECONDS
        with self._records:
            while not (self._exec_seen() and self.runner_pid is not None) and \
                    not self._channel_closed and time.monotonic() < limit:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                self._records.wait(0.05)
        if self.proc is not None and self.proc.poll() is not None:
            self.readers[-1].join(timeout=1)  # the jail's last records, to the channel's end
        failure = self.jail_failure()
        if failure is None and not self._exec_seen():
            failure = f"the jail did not start it within {START_SECONDS:g} s"
        if failure is not None:
            raise self._fail(failure)
        own = _namespace("self", "pid")
        theirs = _namespace(self.runner_pid, "pid")
        if theirs is not None and theirs != own:
            self.pid_namespace = theirs

    def _members(self) -> set[int]:
        """Live processes of this sandbox seen from outside: by its uid (root), its cgroups
        and its PID namespace. The jail's own processes included."""
        found: set[int] = set()
        if self.uid is not None and os.geteuid() == 0:
            found.update(uid_processes(self.uid))
        for group in self.cgroups:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
        if self.cgroup2 is not None:
            found.update(self.cgroup2.pids())
        if self.pid_namespace is not None:
            found.update(_namespace_members(self.pid_namespace))
        return {pid for pid in found if _alive(pid)}

    def live_processes(self) -> list[int]:
        """The sandbox's processes other than its runner (and the jail's), as host pids,
        observed from outside by uid, cgroup and PID namespace: anything the submission left
        running. Empty once the sandbox is stopped."""
        if self.proc is None or self.stopped:
            return []
        ours = {self.proc.pid, *self.jail_pids}
        if self.runner_pid is not None:
            ours.add(self.runner_pid)
        return sorted(self._members() - ours)

    def stop(self) -> None:
        """Kill everything the submission started and free the sandbox's resources: the
        jail's process group, the cgroups (cgroup.kill, or each process of a v1 group), the
        PID namespace and, as root, every process of the sandbox uid, again until none is left
        or :data:`STOP_SECONDS` pass; what is still alive then is kept in
        :attr:`leftovers_after_stop` (empty unless something is very wrong)."""
        if self.stopped:
            return
        self.stopped = True
        deadline = time.monotonic() + STOP_SECONDS
        while True:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            if self.cgroup2 is not None:
                self.cgroup2.kill()
            left = self._members()
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            ended = self.proc is None or self.proc.poll() is not None
            if (not left and ended) or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
        self.leftovers_after_stop = sorted(self._members())
        self.peak_memory = self._read_peak_memory()
        for group in self.cgroups:
            self._empty_cgroup(group)
        if self.cgroup2 is not None:
            self.cgroup2.remove()
        for fd in (self.req_w, self.rep_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        for reader in self.readers:
            reader.join(timeout=2)
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)

    def _read_peak_memory(self) -> int | None:
        """The memory group's peak usage (v1 ``memory.max_usage_in_bytes``, v2
        ``memory.peak``), read before the group is removed; None where there is none."""
        files = []
        if "memory" in self._v1_groups:
            files.append(self._v1_groups["memory"] / "memory.max_usage_in_bytes")
        if self.cgroup2 is not None:
            files.append(self.cgroup2.path / "memory.peak")
        for file in files:
            with contextlib.suppress(OSError, ValueError):
                return int(file.read_text())
        return None

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
        return self.cgroup2 is not None and "memory" in self.cgroup2.limits and \
            self.cgroup2.oom_killed()

    def jail_messages(self) -> list[str]:
        """The jail's warnings and errors (from its own channel, never from the sandbox's
        stderr) and the grader's own warnings about this sandbox."""
        return [f"{r['kind']}: {r.get('text', '')}" for r in self.jail_records
                if r.get("kind") in ("warning", "error")] + list(self.warnings)

    # ----------------------------------------------------------------- requests

    def _limit(self, timeout: float | None) -> float:
        return min(self.deadline, time.monotonic() + (timeout or self.limits.call_seconds))

    def send(self, header: dict[str, Any], blobs: Sequence[bytes] = (),
             timeout: float | None = None) -> int:
        """Send one request (``header`` with an ``id`` added) and return that id, within
        ``timeout`` seconds (default: the call limit) and the submission's deadline. Raises
        :class:`SandboxGone` (again on every later call, once the sandbox is gone)."""
        return self._send_request(header, blobs, self._limit(timeout))

    def receive(self, timeout: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Read one frame from the sandbox (a reply or a callback; its id is not checked),
        within ``timeout`` seconds (default: the call limit) and the submission's deadline.
        Raises :class:`SandboxGone` as :meth:`send` does."""
        return self._receive(self._limit(timeout))

    def request(self, header: dict[str, Any], blobs: Sequence[bytes] = (),
                timeout: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        """Send one request and wait for its reply, within ``timeout`` seconds and the
        submission's overall deadline. Raises :class:`SandboxGone` (again on every later
        request, once the sandbox is gone)."""
        limit = self._limit(timeout)
        rid = self._send_request(header, blobs, limit)
        reply = self._receive(limit)
        if reply[0].get("id") != rid:
            raise self._gone("protocol", "a reply did not answer its request (something wrote "
                             "into the grader's channel)")
        if "fault" in reply[0]:
            raise SandboxGone("protocol", f"the runner failed: {reply[0]['fault']}")
        return reply

    def _send_request(self, header: dict[str, Any], blobs: Sequence[bytes], limit: float) -> int:
        if self.gone is not None:
            raise self.gone
        self.requests += 1
        try:
            self._send({**header, "id": self.requests}, list(blobs), limit)
        except wire.WireError as err:
            raise self._gone("protocol", str(err)) from None
        return self.requests

    def _receive(self, limit: float) -> tuple[dict[str, Any], list[bytes]]:
        if self.gone is not None:
            raise self.gone
        try:
            return wire.read_frame(lambda n: self._read(n, limit))
        except wire.WireError as err:
            raise self._gone("protocol", str(err)) from None

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
                if err.errno in (errno.EPIPE, errno.EBADF):
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
            except OSError:
                raise self._gone("crash", "the submission's process ended") from None
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
            try:
                ready = select.select([], [fd], [], min(left, 0.5)) if write else \
                    select.select([fd], [], [], min(left, 0.5))
            except (OSError, ValueError):
                raise self._gone("crash", "the submission's process ended") from None
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
        if ended and self.readers:
            self.readers[-1].join(timeout=1)  # the jail's channel, to its end
        failure = self.jail_failure()
        memory = self.memory_exceeded()  # before stop() removes the cgroup
        self.stop()
        if failure is not None and reason in ("crash", "protocol"):
            return SandboxGone("grader", f"the sandbox could not be built: {failure}")
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
    """A fresh working folder under ``parent`` holding the public library in ``.grader/``
    (read-only). It is bound read-only into the sandbox at ``/home/student/.grader``; the
    sandbox's writable home is a size-limited tmpfs made inside it, so this folder is never
    written by the submission."""
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


# --------------------------------------------------------------------------- the self-test

# The trusted probe the self-test runs in place of the runner (standard library only): it
# measures from inside, reports one frame on descriptor 4, leaves a setsid()'d child that
# ignores SIGTERM, and waits on descriptor 3 while the grader looks at it from outside.
PROBE = r'''
import ctypes, errno, json, os, resource, signal, socket, struct, sys, time
cfg = json.loads(sys.argv[1])
out = {}
def attempt(fn):
    try:
        return fn()
    except OSError as exc:
        return "error: " + (errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__)
    except Exception as exc:
        return "error: " + type(exc).__name__
out["ids"] = [os.getuid(), os.geteuid(), os.getgid()]
out["pid"] = os.getpid()
out["interfaces"] = attempt(lambda: sorted(n for _, n in socket.if_nameindex()))
out["visible"] = [p for p in cfg["secrets"] if os.path.lexists(p)]
def create(path):
    with open(path, "w") as fh:
        fh.write("x")
    return "written"
out["root_write"] = attempt(lambda: create("/.probe"))
out["library_write"] = attempt(lambda: create(cfg["home"] + "/.grader/.probe"))
mounts = {}
for line in open("/proc/self/mounts"):
    parts = line.split()
    mounts[parts[1]] = [parts[2], parts[3]]
out["mounts"] = {p: mounts.get(p) for p in (cfg["home"], "/tmp", "/dev/shm", "/")}
def size(path):
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize
out["sizes"] = {p: attempt(lambda p=p: size(p)) for p in (cfg["home"], "/tmp", "/dev/shm")}
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
out["nnp"] = status.get("NoNewPrivs", "").strip()
out["capeff"] = status.get("CapEff", "").strip()
out["rlimits"] = {n: list(resource.getrlimit(getattr(resource, n))) for n in
                  ("RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_AS")}
libc = ctypes.CDLL(None, use_errno=True)
out["shm"] = libc.shmget(ctypes.c_int(cfg["shm_key"]), ctypes.c_size_t(4096), 0o1000 | 0o600)
def fill(folder, quota, per_file):
    # Most of the quota is reserved with fallocate (fast); the last MiBs are really written.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    chunk, written, n = b"\0" * (1 << 20), 0, 0
    try:
        while written <= quota + (8 << 20):
            with open(f"{folder}/fill-{n}", "wb", buffering=0) as fh:
                n += 1
                done = min(per_file, max(0, quota - written - (4 << 20)))
                if done:
                    os.posix_fallocate(fh.fileno(), 0, done)
                    written += done
                    fh.seek(done)
                while done + len(chunk) <= per_file:
                    fh.write(chunk)
                    done += len(chunk)
                    written += len(chunk)
        return [written, "none"]
    except OSError as exc:
        return [written, errno.errorcode.get(exc.errno, str(exc.errno))]
    finally:
        for i in range(n + 1):
            try:
                os.unlink(f"{folder}/fill-{i}")
            except OSError:
                pass
home = out["mounts"].get(cfg["home"])
if home and home[0] == "tmpfs":
    out["fill"] = fill(cfg["home"], cfg["quota"], cfg["file_bytes"])
else:
    out["fill"] = "not a tmpfs: not filled"
child = os.fork()
if child == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.closerange(0, 64)
    while True:
        time.sleep(60)
out["child"] = child
text = json.dumps({"probe": out, "_blobs": []}).encode()
os.write(4, struct.pack("<QI", 4 + len(text), len(text)) + text)
os.read(3, 1)
'''


@dataclass
class SelfTest:
    """What :func:`self_test` measured: ``measured`` maps each name of :data:`PROTECTIONS` to
    how it is enforced here, or to "NOT ENFORCED: why"; ``mode`` is :func:`host_mode`."""

    measured: dict[str, str]
    mode: str = ""
    messages: list[str] = field(default_factory=list)

    def lost(self, allowed: Iterable[str] = ()) -> list[str]:
        """The protections that are promised but not enforced here, less those ``allowed``."""
        ok = set(allowed)
        return [name for name in PROTECTIONS if name not in ok and
                self.measured.get(name, "NOT ENFORCED: not measured").startswith("NOT ENFORCED")]


def _secret_paths(workdir: Path) -> list[str]:
    """Paths that exist on the host and must not exist in the sandbox: the course's files, the
    grader's home and the folder beside the sandbox's own (other submissions')."""
    kept = [Path(p) for p in (sys.base_prefix, sys.prefix)]
    found = [str(workdir.parent), str(COURSE_ROOT / "solutions"), str(HERE / "sandbox.py")]
    for home in {Path("/root"), Path.home()}:
        with contextlib.suppress(OSError):
            for entry in sorted(home.iterdir())[:20]:
                if not any(entry == k or entry in k.parents for k in kept):
                    found.append(str(entry))
    return [p for p in found if os.path.lexists(p)]


def _proc_limits(pid: int) -> dict[str, str]:
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
            name, soft = line[:26].strip(), line[26:47].strip()
            found[name] = soft
    return found


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def self_test(limits: Limits | None = None) -> SelfTest:
    """Start a real sandbox through the jail, with ``limits`` (``allow_weaker`` included),
    running a trusted probe instead of student code, and measure each protection of
    :data:`PROTECTIONS` from inside (the probe's report) and from outside (/proc of the probe,
    the cgroup files, a setsid()'d child of the probe after stop). Takes well under 2 s; the
    result is also what :func:`protections` reports afterwards."""
    limits = limits or Limits()
    if not _linux():
        test = SelfTest({name: "NOT ENFORCED: needs Linux" for name in PROTECTIONS}, "none")
        _LAST_TEST["test"] = test
        return test
    with tempfile.TemporaryDirectory(prefix="dropout-selftest-") as tmp:
        workdir = Path(tmp) / "work"
        (workdir / ".grader").mkdir(parents=True)
        (workdir / ".grader" / "library").write_text("the probe's library\n")
        os.chmod(workdir / ".grader", 0o555)
        os.chmod(workdir, 0o755)
        before = sorted((str(p), p.stat().st_size) for p in workdir.rglob("*"))
        key = secrets.randbelow(1 << 30) + 1
        probe_cfg = {"secrets": _secret_paths(workdir), "shm_key": key, "home": SANDBOX_HOME,
                     "quota": limits.tmp_bytes, "file_bytes": limits.file_bytes}
        sandbox = Sandbox(workdir, limits, -1,
                          command=[sys.executable, "-I", "-c", PROBE, json.dumps(probe_cfg)])
        try:
            sandbox.start()
            header, _ = sandbox.receive(timeout=20)
            report = header.get("probe")
            if not isinstance(report, dict):
                raise SandboxGone("protocol", "the probe's report is unreadable")
            outside = _look_from_outside(sandbox, key)
            outside["left"] = sandbox.live_processes()
        except (SandboxGone, OSError) as gone:
            sandbox.stop()
            reason = gone.detail if isinstance(gone, SandboxGone) and gone.reason == "grader" \
                else f"the probe failed: {gone}"
            test = SelfTest({name: f"NOT ENFORCED: {reason}" for name in PROTECTIONS},
                            sandbox.mode, sandbox.jail_messages())
            _LAST_TEST["test"] = test
            return test
        sandbox.stop()
        outside["survivors"] = [p for p in outside["left"] if _alive(p)]
        outside["leftovers"] = sandbox.leftovers_after_stop
        outside["disk_untouched"] = before == sorted(
            (str(p), p.stat().st_size) for p in workdir.rglob("*"))
    measured = _judge(sandbox, limits, report, outside)
    test = SelfTest(measured, sandbox.mode, sandbox.jail_messages())
    _LAST_TEST["test"] = test
    return test


def _look_from_outside(sandbox: Sandbox, key: int) -> dict[str, Any]:
    pid = sandbox.runner_pid
    seen: dict[str, Any] = {"status": _status(pid) or {}, "limits": _proc_limits(pid)}
    seen["namespaces"] = {kind: (_namespace(pid, kind), _namespace("self", kind))
                          for kind in ("net", "mnt", "pid", "ipc", "user")}
    with contextlib.suppress(OSError):
        seen["cgroup"] = Path(f"/proc/{pid}/cgroup").read_text()
    shm = ""
    with contextlib.suppress(OSError):
        shm = Path("/proc/sysvipc/shm").read_text()
    seen["host_shm"] = any(line.split()[:1] == [str(key)] for line in shm.splitlines()[1:])
    seen["group_values"] = {}
    for controller, file in sandbox.cgroup_limits.items():
        with contextlib.suppress(OSError):
            seen["group_values"][controller] = (file, Path(file).read_text().strip())
    return seen


def _separate_ns(outside: dict[str, Any], kind: str) -> bool | None:
    theirs, ours = outside["namespaces"].get(kind, (None, None))
    return None if theirs is None or ours is None else theirs != ours


def _judge(sandbox: Sandbox, limits: Limits, report: dict[str, Any],  # noqa: PLR0915
           outside: dict[str, Any]) -> dict[str, str]:
    """Each protection from what the probe reported and what the grader saw."""
    status, pid = outside["status"], sandbox.runner_pid
    found: dict[str, str] = {}

    def verdict(name: str, ok: bool, how: str, why: str) -> None:
        found[name] = how if ok else f"NOT ENFORCED: {why}"

    def ns_text(kind: str) -> str:
        seen = _separate_ns(outside, kind)
        return {True: "its own namespace seen from outside", False: "the grader's namespace",
                None: "not visible from outside"}[seen]

    ifaces = report.get("interfaces")
    verdict("network", ifaces == ["lo"] and _separate_ns(outside, "net") is not False,
            f"network namespace with only lo ({ns_text('net')})",
            f"interfaces {ifaces}, {ns_text('net')}")
    visible = report.get("visible", [])
    fs_ok = (not visible and report.get("root_write") == "error: EROFS"
             and report.get("library_write") == "error: EROFS"
             and _separate_ns(outside, "mnt") is not False)
    verdict("filesystem", fs_ok,
            "mount namespace + chroot: course root, grader's home and other submissions not "
            f"visible, root and library read-only ({ns_text('mnt')})",
            f"visible {visible[:3]}, root write {report.get('root_write')}, library write "
            f"{report.get('library_write')}, {ns_text('mnt')}")
    nspid = status.get("NSpid", "").split()
    verdict("pid", report.get("pid") == 1 and nspid[-1:] == ["1"]
            and _separate_ns(outside, "pid") is not False,
            f"PID namespace: the sandbox's first process is PID 1 (host pid {pid})",
            f"the probe is pid {report.get('pid')} inside, NSpid {nspid}")
    verdict("ipc", _separate_ns(outside, "ipc") is True and report.get("shm", -1) >= 0
            and not outside["host_shm"],
            "IPC namespace: System V shared memory made inside is not on the host",
            f"{ns_text('ipc')}, shared memory {'seen' if outside['host_shm'] else 'not seen'} "
            "on the host")
    uids = status.get("Uid", "").split()
    caps = status.get("CapEff", report.get("capeff", "?"))
    no_caps = caps.strip("0") == ""
    if sandbox.mode in ("root", "userns-root"):
        inside = sandbox.uid if sandbox.mode == "root" else INSIDE_UID
        ok = uids == [str(sandbox.uid)] * 4 and no_caps and report.get("ids", [None])[0] == inside
        how = f"separate uid {sandbox.uid} (seen in /proc/{pid}/status)" + (
            f", {INSIDE_UID} inside a user namespace" if sandbox.mode == "userns-root" else "")
        verdict("uid", ok, how + ", no capabilities",
                f"uids {uids} outside, {report.get('ids')} inside, CapEff {caps}")
    else:
        found["uid"] = (f"NOT ENFORCED: the grader's own uid {os.geteuid()} "
                        f"({INSIDE_UID} inside a user namespace); run as root for a separate uid")
    nnp = status.get("NoNewPrivs", report.get("nnp"))
    verdict("no_new_privs", nnp == "1", "no_new_privs set (seen in /proc/<pid>/status)",
            f"NoNewPrivs {nnp}")
    seen, rl = outside["limits"], report.get("rlimits", {})
    want = {"Max cpu time": (limits.cpu_seconds, "RLIMIT_CPU"),
            "Max processes": (limits.processes, "RLIMIT_NPROC"),
            "Max file size": (limits.file_bytes, "RLIMIT_FSIZE"),
            "Max open files": (512, "RLIMIT_NOFILE")}
    def at_most(text: Any, value: int) -> bool:
        return str(text).isdigit() and int(text) <= value

    wrong = [name for name, (value, key) in want.items()
             if not at_most(seen.get(name, value), value)
             or not at_most(rl.get(key, [None])[0], value)]
    verdict("rlimits", not wrong, "CPU time, processes, file size, open files (seen in "
            "/proc/<pid>/limits and inside)", f"wrong or missing: {wrong}")
    cgroup_text = outside.get("cgroup", "")
    values = outside["group_values"]

    def v2(controller: str) -> bool:
        file = values.get(controller, ("", ""))[0]
        return sandbox.cgroup2 is not None and file.startswith(str(sandbox.cgroup2.path))

    def in_group(controller: str) -> bool:
        rel = str(Path(values.get(controller, ("", ""))[0]).parent)
        for line in cgroup_text.splitlines():
            number, names, path = [*line.split(":", 2), "", ""][:3]
            right = (number, names) == ("0", "") if v2(controller) else \
                controller in names.split(",")
            if right and path not in ("", "/") and rel.endswith(path):
                return True
        return False

    memory = values.get("memory")
    as_limit = seen.get("Max address space")
    if memory and in_group("memory") and int(memory[1]) <= limits.memory_bytes:
        kind = "v2 memory.max" if v2("memory") else "v1 memory.limit_in_bytes"
        found["memory"] = f"cgroup {kind} {_mib(int(memory[1]))} (the probe is in the group)"
    elif as_limit == str(limits.memory_bytes):
        found["memory"] = f"address-space limit (RLIMIT_AS) {_mib(limits.memory_bytes)}"
    else:
        found["memory"] = ("NOT ENFORCED: no memory cgroup could be used, and RLIMIT_AS "
                           "breaks CUDA" if _gpu_devices() else
                           f"NOT ENFORCED: no memory cgroup, address space {as_limit}")
    pids = values.get("pids")
    nproc_ok = seen.get("Max processes") == str(limits.processes)
    shared = sandbox.uid is None
    if pids and in_group("pids") and pids[1] == str(limits.processes):
        kind = "v2" if v2("pids") else "v1"
        found["pids"] = f"pids cgroup ({kind}) max {pids[1]}, and RLIMIT_NPROC"
    elif nproc_ok:
        found["pids"] = f"RLIMIT_NPROC {limits.processes} " + (
            "counted with every process of the grader's own uid" if shared else
            f"for the sandbox uid {sandbox.uid}") + " (no pids cgroup)"
    else:
        found["pids"] = "NOT ENFORCED: no pids cgroup and no RLIMIT_NPROC"
    mounts, sizes, fill = report.get("mounts", {}), report.get("sizes", {}), report.get("fill")
    sized = all((mounts.get(p) or [""])[0] == "tmpfs" and sizes.get(p) == limits.tmp_bytes
                for p in (SANDBOX_HOME, "/tmp", "/dev/shm"))
    filled = isinstance(fill, list) and fill[1] == "ENOSPC" and fill[0] <= limits.tmp_bytes
    verdict("scratch", sized and filled and outside["disk_untouched"],
            f"home, /tmp and /dev/shm are tmpfs of {_mib(limits.tmp_bytes)} each; writing past "
            "it fails (ENOSPC) and the host disk is untouched",
            f"mounts {mounts}, sizes {sizes}, writing past the quota: {fill}, host disk "
            f"{'untouched' if outside['disk_untouched'] else 'written'}")
    left, survivors = outside["left"], outside["survivors"]
    ways = [w for w, on in (("cgroup v2 cgroup.kill", sandbox.cgroup2 is not None),
                            ("cgroup v1 procs", bool(sandbox.cgroups)),
                            ("PID namespace", sandbox.pid_namespace is not None),
                            ("sandbox uid", sandbox.uid is not None)) if on]
    verdict("kill_all", bool(left) and not survivors and not outside["leftovers"],
            f"stop kills everything ({', '.join(ways)}): a setsid()'d child that ignores "
            "SIGTERM was seen from outside and was dead after stop",
            "the probe's setsid()'d child " + ("was not seen from outside" if not left else
                                               f"survived stop: {survivors}"))
    return found


def protections() -> dict[str, str]:
    """Each protection and how it is enforced here, or 'NOT ENFORCED: why': what the last
    :func:`self_test` of this process measured (one is run now if none was), plus what the
    grader itself enforces (wall time, output) and the GPU passed in."""
    test = _LAST_TEST.get("test") or self_test(Limits())
    found = dict(test.measured)
    found.update({"wall time": "per cell, per call and per submission (grader side)",
                  "output": "capped by the grader",
                  "gpu": ", ".join(_gpu_devices()) or "no GPU here"})
    return found


def unenforced() -> list[str]:
    """``name: why`` of each protection :func:`protections` reports as not enforced."""
    return [f"{k}: {v}" for k, v in protections().items() if v.startswith("NOT ENFORCED")]
