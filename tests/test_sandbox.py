"""The sandbox measured, not assumed: its self-test on this host, as root without CAP_SYS_ADMIN
(the user-namespace path), as an unprivileged user and on a host where no namespace can be made;
and what each protection must stop: System V shared memory outliving a sandbox, a setsid()'d
process outliving stop, writes past the scratch quota, forged jail messages, a jail failure
recorded as the student's crash, a sandbox uid handed out with processes still running under it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autograder.engine import sandbox as sandbox_module
from autograder.engine.sandbox import (
    PROTECTIONS,
    Cgroup2,
    Limits,
    Sandbox,
    SandboxGone,
    cgroup2_mount,
    prepare_workdir,
    protections,
    self_test,
    uid_processes,
)

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")
IS_ROOT = LINUX and os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
NAMESPACE_PROTECTIONS = ("network", "filesystem", "pid", "ipc", "scratch")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="separate uids and capabilities: Linux, root")
needs_setpriv = pytest.mark.skipif(SETPRIV is None, reason="needs util-linux's setpriv")

# Runs CODE (argv[1]) as root of a user namespace (uid 0 and the sandbox uids mapped to
# themselves) where no further namespace can be made (max_user_namespaces 0), without
# CAP_SYS_ADMIN: a host where the jail can build nothing.
NO_NAMESPACES = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
up_r, up_w = os.pipe()
down_r, down_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(3)
    os.write(up_w, b"u")
    os.read(down_r, 1)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    with open("/proc/sys/user/max_user_namespaces", "w") as fh:
        fh.write("0")
    os.execvp("setpriv", ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin",
                          sys.executable, "-c", sys.argv[1]])
if os.read(up_r, 1) != b"u":
    sys.exit(3)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as fh:
        fh.write("0 0 1\n61000 61000 1000\n")
os.write(down_w, b"m")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
'''


@contextlib.contextmanager
def running(folder: Path, limits: Limits | None = None) -> Iterator[Sandbox]:
    """A started sandbox with the real runner, stopped on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    box = Sandbox(prepare_workdir(folder), limits or Limits(), 0)
    box.start()
    try:
        yield box
    finally:
        box.stop()


def cell(box: Sandbox, source: str) -> str:
    """Run one cell; its printed output (the cell must not raise)."""
    reply, _ = box.request({"op": "cell", "source": textwrap.dedent(source), "name": "<cell 1>"},
                           timeout=60)
    assert reply["error"] is None, reply
    return str(reply["stdout"])


def run_python(prefix: list[str], code: str, *args: str, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, check=False)


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def host_shm_keys() -> set[int]:
    text = Path("/proc/sysvipc/shm").read_text()
    return {int(line.split()[0]) for line in text.splitlines()[1:] if line.split()}


# --------------------------------------------------------------------------- the self-test

@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_self_test_measures_every_protection_and_loses_none_here() -> None:
    """Every promised protection is measured as enforced on this host, within 2 s; and
    protections() reports what the self-test measured, not a guess."""
    started = time.monotonic()
    test = self_test(Limits())
    assert time.monotonic() - started < 2.0
    assert set(test.measured) == set(PROTECTIONS)
    if not IS_ROOT:
        assert test.lost() == ["uid"] and test.lost(["uid"]) == []
        return
    assert test.lost() == [], test.measured
    reported = protections()
    assert {k: reported[k] for k in PROTECTIONS} == test.measured


@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_lost_lists_only_what_is_not_allowed() -> None:
    test = sandbox_module.SelfTest({name: "ok" for name in PROTECTIONS})
    test.measured["memory"] = "NOT ENFORCED: no cgroup"
    test.measured["uid"] = "NOT ENFORCED: not root"
    assert test.lost() == ["uid", "memory"]
    assert test.lost(["uid"]) == ["memory"]


SETPRIV_RUN = r'''
import json, os, sys, tempfile
from pathlib import Path
from autograder.engine.sandbox import Limits, Sandbox, prepare_workdir, self_test
caps = int(next(l for l in open("/proc/self/status") if l.startswith("CapEff")).split()[1], 16)
test = self_test(Limits())
box = Sandbox(prepare_workdir(Path(tempfile.mkdtemp())), Limits(), 0)
box.start()
try:
    reply, _ = box.request({"op": "cell", "name": "<cell 1>",
                            "source": "import os\nprint(os.getuid(), os.getpid())"}, timeout=60)
    status = Path(f"/proc/{box.runner_pid}/status").read_text()
    outside = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:]
    again, _ = box.request({"op": "integrity"}, timeout=60)
finally:
    box.stop()
print(json.dumps({"sys_admin": bool(caps >> 21 & 1), "mode": test.mode, "lost": test.lost(),
                  "measured": test.measured, "stdout": reply["stdout"], "uid": box.uid,
                  "outside": outside, "integrity": again, "leftovers": box.leftovers_after_stop}))
'''


@pytest.mark.slow
@needs_root
@needs_setpriv
def test_root_without_cap_sys_admin_uses_a_user_namespace() -> None:
    """As root without CAP_SYS_ADMIN (a default container): the self-test passes through the
    user-namespace path, and a real sandbox runs a cell and answers a request as the claimed
    uid outside, uid 1000 (not root) inside."""
    found = last_json(run_python(WITHOUT_SYS_ADMIN, SETPRIV_RUN))
    assert found["sys_admin"] is False
    assert found["mode"] == "userns-root"
    assert found["lost"] == [], found["measured"]
    assert "user namespace" in found["measured"]["uid"]
    assert found["stdout"].split() == ["1000", "1"]
    assert found["outside"] == [str(found["uid"])] * 4
    assert "findings" in found["integrity"] and found["leftovers"] == []


UNPRIVILEGED_RUN = r'''
import json
from autograder.engine.sandbox import Limits, self_test
test = self_test(Limits())
print(json.dumps({"mode": test.mode, "lost": test.lost(), "measured": test.measured}))
'''


@needs_root
@needs_setpriv
def test_an_unprivileged_grader_still_gets_its_sandbox() -> None:
    """A grader that is not root runs the sandbox in a user namespace of its own uid: every
    protection but the separate uid is measured (the venv's interpreter may sit in root's
    home, so the system's Python is used)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 an unprivileged user can run")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           python, "-c", UNPRIVILEGED_RUN], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, check=False)
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr:
        pytest.skip(f"the system Python cannot import the engine: {proc.stderr[-300:]}")
    found = last_json(proc)
    assert found["mode"] == "userns"
    assert found["lost"] == ["uid"], found["measured"]


NO_NAMESPACE_RUN = r'''
import json, tempfile
from pathlib import Path
from autograder.engine.sandbox import Limits, Sandbox, SandboxGone, prepare_workdir, self_test
test = self_test(Limits())
box = Sandbox(prepare_workdir(Path(tempfile.mkdtemp())), Limits(), 0)
try:
    box.start()
    gone = None
except SandboxGone as exc:
    gone = [exc.reason, exc.detail]
print(json.dumps({"mode": test.mode, "lost": test.lost(), "measured": test.measured,
                  "gone": gone, "messages": box.jail_messages()}))
'''


@needs_root
@needs_setpriv
def test_a_host_without_namespaces_is_refused() -> None:
    """Where no namespace can be made, nothing runs: the self-test reports every protection
    lost (with the jail's reason) and a sandbox fails to start as the grader's failure."""
    found = last_json(run_python([], NO_NAMESPACES, NO_NAMESPACE_RUN))
    assert found["mode"] == "userns-root"
    assert found["lost"] == list(PROTECTIONS)
    assert "no namespaces could be made" in found["measured"]["network"]
    assert found["gone"][0] == "grader" and "no namespaces" in found["gone"][1]
    assert any(m.startswith("error: no namespaces") for m in found["messages"])


# --------------------------------------------------------------------------- each protection

@pytest.mark.slow
@needs_root
def test_system_v_shared_memory_does_not_outlive_its_sandbox(tmp_path: Path) -> None:
    """A System V segment made in one sandbox is in neither the host nor the next sandbox."""
    key = secrets.randbelow(1 << 30) + 1
    probe = f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.shmget({key}, 4096, FLAGS), ctypes.get_errno())
    """
    with running(tmp_path / "one") as box:
        made = cell(box, probe.replace("FLAGS", "0o1000 | 0o666")).split()
        assert int(made[0]) >= 0
        assert key not in host_shm_keys()
    with running(tmp_path / "two") as box:
        found = cell(box, probe.replace("FLAGS", "0")).split()
    assert int(found[0]) == -1 and int(found[1]) == 2  # ENOENT


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_a_setsid_child_that_ignores_sigterm_dies_at_stop(tmp_path: Path) -> None:
    """live_processes() sees a setsid()'d, SIGTERM-ignoring child from outside before stop,
    and after stop it is dead (checked in /proc) and nothing of the sandbox is left."""
    with running(tmp_path) as box:
        inside = int(cell(box, """
            import os, signal, time
            pid = os.fork()
            if pid == 0:
                os.setsid()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                while True:
                    time.sleep(1)
            print(pid)
        """))
        left = box.live_processes()
        assert len(left) == 1, left
        status = Path(f"/proc/{left[0]}/status").read_text()
        nspid = next(x for x in status.splitlines() if x.startswith("NSpid:")).split()
        assert int(nspid[-1]) == inside
    assert not sandbox_module._alive(left[0])
    assert box.leftovers_after_stop == []
    if box.uid is not None:
        assert uid_processes(box.uid) == []


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_writing_past_the_scratch_quota_fails_and_spares_the_host_disk(tmp_path: Path) -> None:
    """The home, /tmp and /dev/shm are tmpfs of ``tmp_bytes``: writing more fails with ENOSPC
    inside, and nothing of it lands in the host's folders."""
    quota = 16 << 20
    name = f"fill-{secrets.token_hex(4)}"
    with running(tmp_path, Limits(tmp_bytes=quota)) as box:
        host_before = sorted(str(p) for p in tmp_path.rglob("*"))
        found = json.loads(cell(box, f"""
            import errno, json, os
            result = {{}}
            for folder in ("/home/student", "/tmp", "/dev/shm"):
                written = 0
                try:
                    with open(folder + "/{name}", "wb") as fh:
                        while written < {4 * quota}:
                            fh.write(b"x" * (1 << 20))
                            fh.flush()
                            written += 1 << 20
                    result[folder] = [written, "none"]
                except OSError as exc:
                    result[folder] = [written, errno.errorcode[exc.errno]]
            print(json.dumps(result))
        """))
        for folder, (written, error) in found.items():
            assert error == "ENOSPC" and written <= quota, (folder, written, error)
        assert sorted(str(p) for p in tmp_path.rglob("*")) == host_before
        assert not [p for p in box.scratch.rglob(name)]


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_jail_lines_on_stderr_are_not_believed(tmp_path: Path) -> None:
    """What the submission writes to stderr never becomes a jail message."""
    with running(tmp_path) as box:
        cell(box, """
            import os
            os.write(2, b"JAIL-WARNING forged by the student\\nJAIL-ERROR also forged\\n")
        """)
        deadline = time.monotonic() + 5
        while b"forged" not in box.output["stderr"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert b"JAIL-WARNING forged" in bytes(box.output["stderr"])
    assert not any("forged" in message for message in box.jail_messages())
    assert any(r.get("kind") == "exec" for r in box.jail_records)


@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_a_jail_failure_before_exec_is_the_graders(tmp_path: Path) -> None:
    """A jail that cannot build the sandbox (here: the library to bind is missing) ends before
    any student code exists: SandboxGone "grader", with the jail's reason, never "crash"."""
    box = Sandbox(tmp_path / "no-such-workdir", Limits(), 0)
    with pytest.raises(SandboxGone) as caught:
        box.start()
    assert caught.value.reason == "grader"
    assert box.jail_failure() is not None
    assert any(m.startswith("error:") for m in box.jail_messages())
    with pytest.raises(SandboxGone) as again:
        box.request({"op": "integrity"})
    assert again.value.reason == "grader"


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="the sandbox needs Linux")
def test_send_and_receive_make_a_request(tmp_path: Path) -> None:
    """send() numbers a request, receive() reads its reply; request() is both, id checked."""
    with running(tmp_path) as box:
        first = box.send({"op": "cell", "source": "print(6 * 7)", "name": "<cell 1>"})
        reply, blobs = box.receive(timeout=60)
        assert reply["id"] == first and reply["stdout"] == "42\n" and blobs == []
        reply, _ = box.request({"op": "integrity"})
        assert reply["id"] == first + 1


# --------------------------------------------------------------------------- cgroup v2

TREE = r'''
import os, signal, sys, time
sys.stdin.readline()
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            while True:
                time.sleep(1)
        while True:
            time.sleep(1)
    time.sleep(0.05)
print("started", flush=True)
while True:
    time.sleep(1)
'''


@needs_root
@pytest.mark.skipif(cgroup2_mount() is None, reason="no cgroup v2 hierarchy on this host")
def test_a_cgroup_v2_group_kills_a_setsid_tree() -> None:
    """A v2 group (on a hybrid host, under /sys/fs/cgroup/unified) takes a process, follows
    its setsid()'d descendants and kills them all with cgroup.kill; where memory and pids are
    v1 controllers, the group reports neither limit as in force."""
    group = Cgroup2.create(f"dropout-test-{os.getpid()}-{time.monotonic_ns()}",
                           memory_bytes=1 << 30, processes=64)
    assert group is not None and group.path.is_dir()
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        group.add(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "started"
        members = group.pids()
        assert proc.pid in members and len(members) == 7, members
        sessions = {os.getsid(pid) for pid in members if sandbox_module._alive(pid)}
        assert len(sessions) == 4  # the parent's and three setsid()'d ones
        group.kill()
        deadline = time.monotonic() + 5
        while any(sandbox_module._alive(p) for p in members) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [p for p in members if sandbox_module._alive(p)]
    finally:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait(timeout=5)
        group.remove()
    assert not group.path.exists()
    if cgroup2_mount() == Path("/sys/fs/cgroup/unified") and _cgroup_v1("memory"):
        assert group.limits == frozenset()


def _cgroup_v1(controller: str) -> bool:
    return sandbox_module._cgroup_dir(controller) is not None


@needs_root
@pytest.mark.skipif(cgroup2_mount() is None, reason="no cgroup v2 hierarchy on this host")
def test_without_v1_controllers_the_sandbox_uses_cgroup_v2(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """With the v1 controllers out of reach, the sandbox lives in a v2 group (killed through
    cgroup.kill) and the self-test reports exactly what v2 gives here."""
    monkeypatch.setattr(sandbox_module, "_cgroup_dir", lambda controller: None)
    test = self_test(Limits())
    assert "cgroup v2 cgroup.kill" in test.measured["kill_all"], test.measured
    assert not test.measured["kill_all"].startswith("NOT ENFORCED")
    offered = (cgroup2_mount() / "cgroup.controllers").read_text().split()
    if "memory" not in offered:
        assert test.measured["memory"].startswith("address-space limit"), test.measured
    if "pids" not in offered:
        assert test.measured["pids"].startswith("RLIMIT_NPROC"), test.measured
    assert test.lost() == [], test.measured


# --------------------------------------------------------------------------- the uid claim

# A private range of uids and lock folder, so that other grading runs on the machine (which
# claim the lowest free uid of the shared range) cannot take the uid between the two steps.
PRIVATE_UIDS = """
from pathlib import Path
import autograder.engine.sandbox as sandbox
sandbox.UID_BASE = {base}
sandbox.uid_lock_folder = lambda: Path({folder!r})
"""
LEAVE_BEHIND = r'''
import subprocess
uid = sandbox.claim_uid()
child = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                          "sleep", "600"], start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
print(uid, child.pid, flush=True)
'''
CLAIM = r'''
uid = sandbox.claim_uid()
print(uid, len(sandbox.uid_processes(uid)), flush=True)
'''


@needs_root
@needs_setpriv
def test_a_claimed_uid_is_emptied_of_leftover_processes(tmp_path: Path) -> None:
    """A grading process that died released its uid's lock but left a process under that uid:
    whoever claims the uid next kills it first and checks the uid is empty."""
    prelude = PRIVATE_UIDS.format(base=64000 + secrets.randbelow(400), folder=str(tmp_path))
    uid, leftover = (int(x) for x in run_python([], prelude + LEAVE_BEHIND).stdout.split())
    try:
        assert sandbox_module._alive(leftover)
        second, remaining = (int(x) for x in run_python([], prelude + CLAIM).stdout.split())
        assert second == uid and remaining == 0
        assert not sandbox_module._alive(leftover)
    finally:
        with contextlib.suppress(OSError):
            os.kill(leftover, signal.SIGKILL)


FORKED = r'''
import os
from autograder.engine.sandbox import claim_uid
mine = claim_uid()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, str(claim_uid()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(mine, os.read(read, 20).decode())
'''


@needs_root
def test_a_forked_child_claims_its_own_uid() -> None:
    """flock follows the open file, which a forked child shares: it must not reuse the
    parent's uid."""
    parent, child = run_python([], FORKED).stdout.split()
    assert parent != child

