"""Enter the sandbox and exec the submission's runner (or the self-test's probe). Started by
``sandbox.py``; Linux only; only the standard library is used and nothing here runs student code.

``python -I jail.py CONFIG_JSON``. Waits for one byte on the "go" descriptor (the grader first
puts this process into its cgroups), then, by the host kind the grader names in ``mode``:

* ``root`` (root with CAP_SYS_ADMIN): unshare mount, network, PID and IPC namespaces here, fork;
  the child is PID 1 of the new PID namespace and changes to the claimed sandbox uid;
* ``userns-root`` (root without CAP_SYS_ADMIN, e.g. a default container): fork a child that
  unshares a user namespace with the others; this process, still in the host namespace with
  CAP_SETUID/CAP_SETGID, maps one non-root uid inside (``INSIDE_UID``) to the claimed sandbox uid
  outside; the child forks PID 1, which keeps its capabilities in the new user namespace only
  until ``execve`` (mounts, chroot), so the code runs as the claimed uid outside, non-root inside;
* ``userns`` (an unprivileged grader): unshare a user namespace with the others here, mapping the
  grader's own uid to ``INSIDE_UID``, fork PID 1.

PID 1 builds a new root from read-only binds of the system and Python directories, size-limited
tmpfs for the home (``/home/student``, with the read-only library bound at ``.grader``), ``/tmp``
and ``/dev/shm``, a private ``/dev`` and ``/proc``; chroots; sets resource limits; sets the
parent-death signal (after the uid change, which clears it) and checks the parent still lives;
sets no_new_privs and execs. When namespaces or the file system cannot be made and the grader did
not allow it (``allow_weaker``), nothing runs: exit 97.

Messages go to the grader on a dedicated pipe (``msg_fd``, close-on-exec: neither the runner nor
the student's code ever holds it), one JSON object a line: ``warning``/``error`` (``text``),
``pid`` (``role`` jail or runner, ``pid`` as the host sees it) and ``exec``, written just
before ``execve``. Nothing on stdout or stderr comes from here.
"""

import ctypes
import errno
import fcntl
import json
import os
import resource
import select
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x20000, 0x8000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = (
    1024, 2048, 4096, 16384, 1 << 18, 1 << 21)
# statvfs f_flag bits of a mount's flags that a user namespace may not clear on a remount.
LOCKED_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME,
                2048: MS_NODIRATIME, 4096: MS_RELATIME}
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
PR_SET_DUMPABLE, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 4, 47, 4
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_CLEAR = 1, 7
KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = -4, -5
CAPABILITY_VERSION_3 = 0x20080522
SANDBOX_HOME = "/home/student"
INSIDE_UID = INSIDE_GID = 1000
# What is lost without namespaces: all of it must be allowed for the jail to run without them.
NAMESPACE_PROTECTIONS = ("network", "filesystem", "pid", "ipc", "scratch")
FILESYSTEM_PROTECTIONS = ("filesystem", "scratch")
REFUSED = 97
LIBC = ctypes.CDLL(None, use_errno=True)
CHANNEL = {"fd": -1}
#: Set by the zygote (``zygote.py``) in the process it forked for a sandbox: called with the
#: environment and argv instead of ``execve`` when the config says ``in_process``, to run the
#: runner already imported there; it never returns.
IN_PROCESS = {"run": None}


class Refused(Exception):
    """A protection could not be set up and the grader did not allow running without it."""


def say(kind, **fields):
    """Write one record to the grader's jail channel (atomic: a pipe write under PIPE_BUF)."""
    if "text" in fields:
        fields["text"] = str(fields["text"])[:1500]
    line = (json.dumps({"kind": kind, **fields}) + "\n").encode()
    try:  # noqa: SIM105  (kept apart from contextlib: the jail imports as little as it can)
        os.write(CHANNEL["fd"], line)
    except OSError:
        pass  # the grader is gone: nothing left to tell


def warn(text):
    say("warning", text=text)


def refuse(text):
    """Report why nothing runs, then end with REFUSED (never returns)."""
    say("error", text=text)
    os._exit(REFUSED)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags, what):
    check(LIBC.unshare(ctypes.c_int(flags)), what)


def mount(source, target, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()

    check(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          f"mount {target}")


def open_sources(cfg):
    """O_PATH descriptors of everything to bind, opened by the process that still has the
    host's view of the files (root's, as owner): PID 1 of a user namespace binds them through
    /proc/self/fd even where it could not walk the path itself (a 0700 folder of root's)."""
    paths = [*cfg["ro_binds"], *cfg["devices"], cfg["library"]]
    found = {}
    for path in paths:
        try:
            found[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a system folder this host lacks (/lib32)
    return found


def bind(root, source_fd, path, writable=False, dest=None):
    target = root + (dest or path)
    if os.path.isdir(f"/proc/self/fd/{source_fd}"):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(f"/proc/self/fd/{source_fd}", target, None, MS_BIND | MS_REC)
    kept = 0
    try:
        have = os.statvfs(target).f_flag
        kept = sum(flag for bit, flag in LOCKED_FLAGS.items() if have & bit)
    except OSError:
        pass
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (kept & ~MS_RDONLY) | (0 if writable else MS_RDONLY)
    try:
        mount(None, target, None, flags)
    except OSError:
        mount(None, target, None, flags | MS_NODEV)


def tmpfs(target, size, mode, owner=None):
    os.makedirs(target, exist_ok=True)
    data = f"size={size},mode={mode}" + (f",uid={owner[0]},gid={owner[1]}" if owner else "")
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data)


def build_root(cfg, sources, owner):
    """The new root under ``cfg['root']``, then chroot into it; ``owner`` (uid, gid as this
    namespace sees them) owns the writable home."""
    root = cfg["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    # The private /tmp comes first: the binds below may lie under /tmp (a clone's venv).
    tmpfs(root + "/tmp", cfg["tmp_bytes"], "1777")
    for path in cfg["ro_binds"]:
        if path in sources:
            bind(root, sources[path], path)
    tmpfs(root + "/dev", 1 << 20, "755")
    for node in cfg["devices"]:
        if node in sources:
            open(root + node, "a").close()
            mount(f"/proc/self/fd/{sources[node]}", root + node, None, MS_BIND)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", f"{root}/dev/{name}")
    tmpfs(root + "/dev/shm", cfg["tmp_bytes"], "1777")
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # The writable home is memory, capped: nothing the submission writes reaches the host disk.
    tmpfs(root + SANDBOX_HOME, cfg["home_bytes"], "700", owner)
    bind(root, sources[cfg["library"]], cfg["library"], dest=SANDBOX_HOME + "/.grader")
    try:
        mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    except OSError as err:
        if "filesystem" not in cfg["allow_weaker"]:
            raise
        warn(f"the sandbox root stays writable ({err})")
    os.chroot(root)
    os.chdir(SANDBOX_HOME)


def set_limits(cfg):
    limits = {
        resource.RLIMIT_CPU: cfg["cpu_seconds"],
        resource.RLIMIT_NPROC: cfg["processes"],
        resource.RLIMIT_FSIZE: cfg["file_bytes"],
        resource.RLIMIT_NOFILE: 512,
        resource.RLIMIT_CORE: 0,
    }
    if cfg.get("address_space"):
        limits[resource.RLIMIT_AS] = cfg["address_space"]
    for which, value in limits.items():
        try:
            hard = resource.getrlimit(which)[1]
            cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
            # a host's lower hard limit is kept, never raised
            resource.setrlimit(which, (cap, cap))
        except (ValueError, OSError) as err:
            if "rlimits" not in cfg["allow_weaker"]:
                raise Refused(f"could not set resource limit {which}: {err}") from None
            warn(f"could not set resource limit {which}: {err}")


def like_exec():
    """What ``execve`` of the runner does to this process, done without it (the zygote's warm
    start runs the runner in this process): every capability set emptied (a process in a user
    namespace keeps its capabilities there until ``execve``), and dumpable again (the uid
    change cleared it, ``execve`` sets it back: ``/proc/self`` is the process's own). Checked:
    a capability left refuses the sandbox."""
    LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
    check(LIBC.capset(header, (ctypes.c_uint32 * 6)()), "dropping capabilities")
    check(LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("CapInh:", "CapPrm:", "CapEff:", "CapAmb:")) and int(
                    line.split()[1], 16):
                raise Refused(f"a capability is left: {line.strip()}")


def fresh_keyrings(cfg):
    """The kernel's key store is per uid, not per namespace (as root): empty this uid's user
    and user-session keyrings, which outlive its processes (an earlier submission of this
    grading process could have left keys there for this one), and join a new session keyring
    (the one inherited is the grader's, which this process would otherwise possess). Without
    the keyctl system call (not built in) there is nothing to share."""
    if SYS_KEYCTL is None:
        warn("the kernel's keyrings were not emptied (unknown architecture)")
        return
    LIBC.syscall.restype = ctypes.c_long
    for args, what in (((KEYCTL_JOIN_SESSION_KEYRING, None), "a new session keyring"),
                       ((KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING), "the user keyring"),
                       ((KEYCTL_CLEAR, KEY_SPEC_USER_SESSION_KEYRING), "the user session keyring")):
        if LIBC.syscall(ctypes.c_long(SYS_KEYCTL), ctypes.c_long(args[0]),
                        ctypes.c_void_p(None) if args[1] is None else ctypes.c_long(args[1])) >= 0:
            continue
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EOPNOTSUPP):
            return
        if "ipc" not in cfg["allow_weaker"]:
            raise Refused(f"could not set up {what}: {os.strerror(err)}")
        warn(f"could not set up {what}: {os.strerror(err)}")


def lifeline():
    """A pipe whose write end only the parent keeps: EOF on the read end means it died."""
    return os.pipe()


def parent_alive(life_r):
    return not select.select([life_r], [], [], 0)[0]


def sandbox_child(cfg, mode, sources, life):
    """PID 1 of the sandbox (or, without namespaces, its first process): never returns."""
    life_r, life_w = life
    os.close(life_w)
    uid = cfg.get("uid")
    try:
        if mode == "none":
            os.chdir(cfg["fallback_home"])
        else:
            owner = (uid, uid) if mode == "root" and uid is not None else (INSIDE_UID, INSIDE_GID)
            try:
                build_root(cfg, sources, owner)
            except OSError as err:
                raise Refused(f"could not build the sandbox's file system: {err}") from None
        for fd in sources.values():
            os.close(fd)
        set_limits(cfg)
        if mode in ("root", "none") and uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        fresh_keyrings(cfg)
        # After the uid change, which clears it; then make sure the parent did not die meanwhile.
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if not parent_alive(life_r):
            os._exit(1)
        os.close(life_r)
        check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        # The runner reads requests on descriptor 3 and writes replies on 4.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in cfg["pipes"]]
        for fd in cfg["pipes"]:
            if fd not in (3, 4):
                os.close(fd)
        for target, fd in zip((3, 4), high, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        env = dict(cfg["env"])
        argv = list(cfg["argv"])
        if mode == "none":
            env.update(HOME=cfg["fallback_home"], TMPDIR=cfg["fallback_home"])
            argv = [cfg["library"] + a[len(SANDBOX_HOME + "/.grader"):]
                    if a.startswith(SANDBOX_HOME + "/.grader") else a for a in argv]
        in_process = cfg.get("in_process") and IN_PROCESS["run"] is not None
        if in_process:
            like_exec()
        say("exec")
        if in_process:
            IN_PROCESS["run"](env, argv)
            os._exit(0)
        os.execve(cfg["python"], argv, env)
    except Refused as err:
        refuse(str(err))
    except BaseException as err:
        refuse(f"{type(err).__name__}: {err}")


def supervise(pid):
    """Wait for ``pid`` and end with its status (128 + signal when killed); never returns."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (os.kill(pid, signal.SIGKILL), os._exit(1)))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def no_namespaces(cfg, err):
    """Without namespaces: refuse unless everything they give was allowed; else say so."""
    missing = [p for p in NAMESPACE_PROTECTIONS if p not in cfg["allow_weaker"]]
    if missing:
        refuse(f"no namespaces could be made ({err}): {', '.join(missing)} would not be "
               "enforced, and were not allowed")
    warn(f"no namespaces ({err}): network, file system, process and IPC isolation and the "
         "scratch quota are NOT enforced")
    return "none"


def start_pid1(cfg, mode, sources):
    life = lifeline()
    pid = os.fork()
    if pid == 0:
        sandbox_child(cfg, mode, sources, life)
    os.close(life[0])
    say("pid", role="runner", pid=pid)
    for fd in sources.values():
        os.close(fd)
    supervise(pid)


def write_maps(pid, uid, gid):
    """Map INSIDE_UID/GID of ``pid``'s new user namespace to ``uid``/``gid`` outside."""
    with open(f"/proc/{pid}/setgroups", "w") as fh:
        fh.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as fh:
        fh.write(f"{INSIDE_UID} {uid} 1")
    with open(f"/proc/{pid}/gid_map", "w") as fh:
        fh.write(f"{INSIDE_GID} {gid} 1")


def run_userns_root(cfg):
    """Root without CAP_SYS_ADMIN: a child unshares a user namespace; this process maps it."""
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    life = lifeline()
    child = os.fork()
    if child == 0:
        os.close(to_parent_r)
        os.close(to_child_w)
        os.close(life[1])
        try:
            os.setgroups([])  # root's groups would stay in force, unseen, in the namespace
            unshare(CLONE_NEWUSER | NAMESPACES, "unshare")
        except OSError as err:
            os.write(to_parent_w, b"f" + str(err).encode()[:1000])
            os._exit(REFUSED)
        os.write(to_parent_w, b"u")
        if os.read(to_child_r, 1) != b"m":
            os._exit(REFUSED)  # the parent reported why
        try:
            sources = open_sources(cfg)  # as root, the files' owner, before the uid changes
            os.setresgid(INSIDE_GID, INSIDE_GID, INSIDE_GID)
            os.setresuid(INSIDE_UID, INSIDE_UID, INSIDE_UID)
        except OSError as err:
            refuse(f"could not enter the user namespace: {err}")
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if not parent_alive(life[0]):
            os._exit(1)
        start_pid1(cfg, "userns-root", sources)
    os.close(to_parent_w)
    os.close(to_child_r)
    os.close(life[0])
    say("pid", role="jail", pid=child)
    answer = os.read(to_parent_r, 1100)
    if answer != b"u":
        os.waitpid(child, 0)
        return no_namespaces(cfg, answer[1:].decode(errors="replace") or "the child ended")
    try:
        write_maps(child, cfg["uid"], cfg["gid"])
    except OSError as err:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return no_namespaces(cfg, f"uid map: {err}")
    os.write(to_child_w, b"m")
    supervise(child)


def main():
    enter(json.loads(sys.argv[1]))


def enter(cfg):
    """Everything after reading the config: wait for "go", build the sandbox, start PID 1."""
    CHANNEL["fd"] = cfg["msg_fd"]
    os.set_inheritable(cfg["msg_fd"], False)  # close-on-exec: the runner never holds it
    os.read(cfg["go_fd"], 1)
    os.close(cfg["go_fd"])
    mode = cfg["mode"]
    if mode == "userns-root":
        mode = run_userns_root(cfg)  # returns only when no namespace could be made
    elif mode in ("root", "userns"):
        uid, gid = os.getuid(), os.getgid()
        try:
            unshare(NAMESPACES | (CLONE_NEWUSER if mode == "userns" else 0), "unshare")
        except OSError as err:
            mode = no_namespaces(cfg, err)
        else:
            if mode == "userns":
                try:
                    write_maps("self", uid, gid)
                except OSError as err:
                    refuse(f"user namespace maps failed: {err}")
    if mode == "none" and any(p not in cfg["allow_weaker"] for p in NAMESPACE_PROTECTIONS):
        refuse("no namespaces on this host, and running without them was not allowed")
    sources = open_sources(cfg) if mode != "none" else {}
    start_pid1(cfg, mode, sources)


def guarded(fn, *args):
    """Run ``fn``; any failure is reported on the channel and ends this process (exit 97)."""
    try:
        fn(*args)
    except SystemExit:
        raise
    except BaseException as exc:
        say("error", text=f"{type(exc).__name__}: {exc}")
        os._exit(REFUSED)


if __name__ == "__main__":
    guarded(main)
