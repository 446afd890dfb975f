"""Enter the sandbox and exec the submission's runner. Started by ``sandbox.py``; Linux only.

``python -I jail.py CONFIG_JSON``. Waits for one byte on the "go" descriptor (the grader first
puts this process into its cgroups), then creates new mount, network and PID namespaces (plus a
user namespace when not root), forks: the child is PID 1 of the new PID namespace, so when it
ends the kernel kills every process the submission started. The child builds a new root from
read-only binds of the system and Python directories, a private /tmp, /dev and /proc, and the
submission's working folder, chroots into it, drops to an unprivileged uid (when root), sets
resource limits and execs the runner. Each step that fails is reported on stderr as
``JAIL-WARNING`` (the grader turns that into a loud message) or aborts with exit code 97.
Only the standard library is used: nothing here runs student code.
"""

import ctypes
import fcntl
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 16384, 1 << 18)
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SANDBOX_HOME = "/home/student"
LIBC = ctypes.CDLL(None, use_errno=True)


def warn(text):
    sys.stderr.write(f"JAIL-WARNING {text}\n")
    sys.stderr.flush()


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()

    check(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          f"mount {target}")


def bind(root, path, writable=False, dest=None):
    target = root + (dest or path)
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(path, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if writable else MS_RDONLY)
    try:
        mount(None, target, None, flags)
    except OSError:
        mount(None, target, None, flags | MS_NODEV)


def write_id_maps(uid, gid):
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"0 {gid} 1")


def build_root(cfg):
    root = cfg["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=755")
    # The private /tmp comes first: the binds below may lie under /tmp (a clone's venv).
    os.makedirs(root + "/tmp", exist_ok=True)
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['tmp_bytes']},mode=1777")
    for path in cfg["ro_binds"]:
        if os.path.exists(path):
            bind(root, path)
    os.makedirs(root + "/dev", exist_ok=True)
    mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID, "size=1m,mode=755")
    for node in cfg["devices"]:
        if os.path.exists(node):
            open(root + node, "a").close()
            mount(node, root + node, None, MS_BIND)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", f"{root}/dev/{name}")
    os.makedirs(root + "/dev/shm", exist_ok=True)
    mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={cfg['tmp_bytes']},mode=1777")
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
    bind(root, cfg["workdir"], writable=True, dest=SANDBOX_HOME)
    try:
        mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    except OSError as err:
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
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as err:
            warn(f"could not set resource limit {which}: {err}")


def drop_privileges(cfg):
    if cfg.get("uid") is None:
        return
    os.setgroups([])
    os.setgid(cfg["gid"])
    os.setuid(cfg["uid"])


def child(cfg):
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        build_root(cfg)
    except OSError as err:
        if cfg["require_fs_isolation"]:
            sys.stderr.write(f"JAIL-ERROR could not build the sandbox's file system: {err}\n")
            os._exit(97)
        warn(f"no private file system: {err}")
        os.chdir(cfg["workdir"])
    set_limits(cfg)
    drop_privileges(cfg)
    LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # The runner reads requests on descriptor 3 and writes replies on 4.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in cfg["pipes"]]
    for fd in cfg["pipes"]:
        os.close(fd)
    for target, fd in zip((3, 4), high, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.execve(cfg["python"], [cfg["python"], "-I", cfg["runner"]], cfg["env"])


def main():
    cfg = json.loads(sys.argv[1])
    os.read(cfg["go_fd"], 1)
    os.close(cfg["go_fd"])
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        flags |= CLONE_NEWUSER
    if LIBC.unshare(flags) != 0:
        warn(f"no namespaces (unshare: {os.strerror(ctypes.get_errno())}): network, file system "
             "and process isolation are NOT enforced")
        cfg["require_fs_isolation"] = False
    elif uid != 0:
        try:
            write_id_maps(uid, gid)
        except OSError as err:
            warn(f"user namespace maps failed: {err}")
    pid = os.fork()
    if pid == 0:
        try:
            child(cfg)
        except BaseException as err:
            sys.stderr.write(f"JAIL-ERROR {type(err).__name__}: {err}\n")
        os._exit(97)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: (os.kill(pid, signal.SIGKILL), os._exit(1)))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
