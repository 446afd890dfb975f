"""The sandbox self-test's measurement, reused by the next grading run on an unchanged host.

The grading command starts a real probe sandbox before it grades anything
(:func:`autograder.engine.sandbox.self_test`, about a second of every run). What it measures is
the HOST, never a submission: whether this kernel, in this process's namespaces, cgroups,
capabilities, seccomp filter and resource limits, with this engine's code and these
``Limits``, builds every protection. So a measurement can stand for a later run exactly as long
as none of those inputs has changed. :func:`host_key` is a SHA-256 over all of them, read
fresh on every run (about a millisecond: /proc, /sys and the engine's sources, nothing
started); a stored measurement is used only when its key is the key of now, it is younger than
:data:`LIFETIME_S`, and every protection it holds is one the run accepts. Otherwise the
self-test runs again: a changed host, an expired or unreadable record, ``--recheck-sandbox``,
and any measurement that would refuse (a refusal is always measured, never remembered).

Why this keeps the sandbox as strong as before:

* Every input the self-test's verdict depends on is in the key (see :func:`host_key`): the
  kernel and boot, this process's uids, groups, capabilities, no_new_privs, seccomp, LSM label,
  rlimits, namespaces and cgroups, the mount table, the namespace and cgroup settings of
  /proc/sys and /sys/fs/cgroup, GPU devices, the interpreter, the environment the jail reads,
  the engine's own source (sandbox, jail, runner, zygote, wire, ...) and the ``Limits`` with
  ``allow_weaker``. A host that lost a protection has changed one of them, so its key differs
  and it is measured again, and refused.
* The lifetime (:data:`LIFETIME_S`) bounds what no key can see.
* Each sandbox still refuses to start without a protection the run does not accept (the jail
  checks as it builds it), with or without a stored measurement: the self-test is the
  additional measurement from outside, not the only guard.
* The record lives in the instructor's course folder (no sandbox can see it) and is used only
  when it is a regular file owned by this user and writable by nobody else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CACHE_NAME = ".sandbox-self-test.json"
LIFETIME_S = 600.0
"""How long a measurement stands, at most, even on an unchanged host (seconds)."""
FORMAT = 1
MAX_BYTES = 1 << 16
ENGINE = Path(__file__).resolve().parent
COURSE_ROOT = ENGINE.parents[1]
_SYS_FILES = (
    "/proc/sys/kernel/random/boot_id", "/proc/sys/kernel/osrelease",
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    "/proc/sys/kernel/yama/ptrace_scope", "/proc/sys/kernel/pid_max",
    "/proc/sys/user/max_user_namespaces", "/proc/sys/user/max_pid_namespaces",
    "/proc/sys/user/max_net_namespaces", "/proc/sys/user/max_mnt_namespaces",
    "/proc/sys/user/max_ipc_namespaces", "/proc/sys/user/max_uts_namespaces",
    "/proc/sys/user/max_cgroup_namespaces", "/sys/kernel/security/lsm",
    "/sys/fs/selinux/enforce", "/proc/self/cgroup", "/proc/self/mountinfo",
    "/proc/self/attr/current", "/proc/self/attr/apparmor/current",
)
_STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                  "NoNewPrivs", "Seccomp", "Seccomp_filters")
# The environment the sandbox is built from: the dynamic loader's and Python's settings, the
# GPU selection passed in, the temporary folder (the uid locks when /run is not writable) and
# the home. Not PATH: every program is started by absolute path, and the sandbox gets a PATH of
# its own (sandbox.sandbox_env), while the grading command itself prepends the venv's bin to it.
_ENV_PREFIXES = ("LD_", "PYTHON", "CUDA_", "NVIDIA_")
_ENV_NAMES = ("HOME", "TMPDIR", "TMP", "TEMP")


def _read(path: str | Path) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20).decode("utf-8", "replace")
    except OSError as err:
        return f"<{type(err).__name__} {err.errno}>"


def _stat(path: str | Path) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError as err:
        return [f"<{type(err).__name__} {err.errno}>"]
    return [st.st_mode, st.st_uid, st.st_gid, st.st_ino, st.st_dev,
            os.access(path, os.W_OK)]


def _cgroups() -> dict[str, Any]:
    """What the sandbox's cgroups depend on: for each v1 controller and the unified
    hierarchy, this process's own group there, its ownership and writability, and (v2) the
    controllers it offers and delegates."""
    root = Path("/sys/fs/cgroup")
    own: dict[str, str] = {}
    for line in _read("/proc/self/cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") or [""]:
                own[name] = parts[2]
    found: dict[str, Any] = {"root": _stat(root)}
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(root)):
            base = root / entry
            group = base / own.get(entry, own.get("", "/")).lstrip("/")
            found[entry] = [_stat(base), _stat(group)]
            for name in ("cgroup.controllers", "cgroup.subtree_control"):
                if (base / name).exists():
                    found[f"{entry}/{name}"] = _read(group / name)
    for name in ("cgroup.controllers", "cgroup.subtree_control"):
        if (root / name).exists():
            found[name] = [_read(root / name),
                           _read(root / own.get("", "/").lstrip("/") / name)]
    return found


def _home_entries() -> dict[str, list[str]]:
    """The top of the grader's home and /root: the self-test checks that none of it is
    visible inside (``sandbox._secret_paths``)."""
    found = {}
    for home in sorted({"/root", str(Path.home())}):
        try:
            found[home] = sorted(os.listdir(home))[:50]
        except OSError as err:
            found[home] = [f"<{type(err).__name__} {err.errno}>"]
    return found


def _sources() -> str:
    """SHA-256 of the engine's source (every module, the sandbox's, the jail's and the
    runner's included) and of the package's ``__init__``."""
    digest = hashlib.sha256()
    for path in [*sorted(ENGINE.glob("*.py")), COURSE_ROOT / "autograder" / "__init__.py"]:
        digest.update(path.name.encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def host_state(limits: Mapping[str, Any], measure: Callable[..., Any]) -> dict[str, Any]:
    """Everything the self-test's verdict depends on, read now (see the module's docstring):
    ``limits`` are the ``Limits`` keyword arguments the sandbox gets (``allow_weaker``
    included), ``measure`` is the self-test function itself (its identity is part of the
    state: another function measures differently)."""
    status = {}
    for line in _read("/proc/self/status").splitlines():
        name, _, value = line.partition(":")
        if name in _STATUS_FIELDS:
            status[name] = value.split()
    rlimits = {name: resource.getrlimit(getattr(resource, name))
               for name in sorted(dir(resource)) if name.startswith("RLIMIT_")}
    namespaces = {}
    with contextlib.suppress(OSError):
        for kind in sorted(os.listdir("/proc/self/ns")):
            with contextlib.suppress(OSError):
                namespaces[kind] = os.readlink(f"/proc/self/ns/{kind}")
    env = {k: v for k, v in sorted(os.environ.items())
           if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    executable = os.path.realpath(sys.executable)
    return {
        "format": FORMAT,
        "limits": {k: limits[k] for k in sorted(limits)},
        "measure": f"{getattr(measure, '__module__', '')}.{getattr(measure, '__qualname__', '')}",
        "engine": _sources(),
        "course_root": str(COURSE_ROOT),
        "python": [sys.executable, executable, _stat(executable), sys.version,
                   sys.prefix, sys.base_prefix],
        "uname": list(os.uname()),
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
        "status": status,
        "rlimits": rlimits,
        "namespaces": namespaces,
        "files": {path: _read(path) for path in _SYS_FILES},
        "cgroups": _cgroups(),
        "devices": sorted(str(p) for p in Path("/dev").glob("nvidia*")),
        "run": _stat("/run"),
        "tmp": [_stat("/tmp"), _stat("/dev/shm")],
        "homes": _home_entries(),
        "env": env,
    }


def host_key(limits: Mapping[str, Any], measure: Callable[..., Any]) -> str:
    """SHA-256 hex of :func:`host_state`."""
    text = json.dumps(host_state(limits, measure), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _path(folder: Path) -> Path:
    return folder / CACHE_NAME


def load(folder: Path, key: str, now: float | None = None) -> dict[str, Any] | None:
    """The measurement stored in ``folder`` for ``key`` (``measured``, ``mode``, ``age``), or
    None: none stored, another key, older than :data:`LIFETIME_S` (or from the future), or a
    file that is not a plain file owned by this user and writable only by it."""
    data = _read_record(_path(folder))
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        return None
    age = (time.time() if now is None else now) - data.get("measured_at", float("nan"))
    measured = data.get("measured")
    if not 0 <= age <= LIFETIME_S or not isinstance(measured, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in measured.items()):
        return None
    return {"measured": measured, "mode": str(data.get("mode", "")), "age": age}


def _read_record(path: Path) -> Any:
    """The JSON in ``path`` when it is a regular file (not a link) owned by this user, not
    writable by anyone else and small; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fh.fileno())
            if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                    or st.st_mode & 0o022 or st.st_size > MAX_BYTES):
                return None
            return json.loads(fh.read(MAX_BYTES))
        except (OSError, ValueError):
            return None


def save(folder: Path, key: str, measured: Mapping[str, str], mode: str = "",
         measured_at: float | None = None) -> None:
    """Store a measurement for ``key`` in ``folder`` (atomically, readable only by this
    user); a folder that cannot be written is left as it is."""
    path = _path(folder)
    data = {"format": FORMAT, "key": key, "mode": mode, "measured": dict(measured),
            "measured_at": time.time() if measured_at is None else measured_at}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=True)
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def forget(folder: Path) -> None:
    """Remove the stored measurement of ``folder``, if any."""
    with contextlib.suppress(OSError):
        _path(folder).unlink(missing_ok=True)
