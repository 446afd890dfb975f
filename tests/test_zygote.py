"""The warm start (``autograder/engine/zygote.py``): each sandbox forked from the zygote starts
from a clean interpreter state that no earlier submission touched, holds nothing secret, and
is protected exactly as a cold one (the self-test measures the same on both paths).

Every test here runs on the warm path (the default) and proves it: the zygote that forked the
sandbox is the same process before and after, and the sandbox says it was not started cold.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from course import SHORT_LIMITS

from autograder.engine import sandbox as sb

pytestmark = pytest.mark.skipif(not sb._linux(), reason="the sandbox needs Linux")

# What one submission changes in every kind of state it can reach.
DIRTY = r'''
import builtins, ctypes, os, random, sys, types
import numpy, torch
import dropout_course, dropout_course.checks
dropout_course.MARK = "planted"
dropout_course.checks.MARK = "planted"
builtins.MARK = "planted"
sys.modules["planted_module"] = types.ModuleType("planted_module")
sys.path.insert(0, "/tmp/planted")
os.environ["PLANTED"] = "1"
random.seed(1); numpy.random.seed(1); torch.manual_seed(1)
torch.set_num_threads(3)
torch.ones(64, 64) @ torch.ones(64, 64)
for path in ("/tmp/planted", "/home/student/planted", "/dev/shm/planted"):
    open(path, "w").write("planted")
libc = ctypes.CDLL(None, use_errno=True)
SHM_KEY = 0x5EED
assert libc.shmget(SHM_KEY, 4096, 0o1666) >= 0  # IPC_CREAT | 0666
'''

# What a fresh interpreter shows, printed as JSON (compared with a cold sandbox's).
LOOK = r'''
import builtins, ctypes, json, os, random, sys
import numpy, torch
import dropout_course, dropout_course.checks
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({
    "module_marks": [hasattr(dropout_course, "MARK"), hasattr(dropout_course.checks, "MARK")],
    "builtins_mark": hasattr(builtins, "MARK"),
    "planted_module": "planted_module" in sys.modules,
    "planted_path": "/tmp/planted" in sys.path,
    "planted_env": "PLANTED" in os.environ,
    "files": [os.path.exists(p) for p in
              ("/tmp/planted", "/home/student/planted", "/dev/shm/planted")],
    "shm": libc.shmget(0x5EED, 0, 0) >= 0,
    "torch_threads": torch.get_num_threads(),
    "torch_seed": torch.initial_seed(),
    "torch_draw": torch.rand(3).tolist(),
    "threads": len(os.listdir("/proc/self/task")),
    "cuda_initialised": torch.cuda.is_initialized(),
    "open_fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))[:5],
    "python_draw": random.random(),
    "numpy_draw": float(numpy.random.rand()),
    "pid": os.getpid(),
    "capabilities": [line.split()[1] for line in open("/proc/self/status")
                     if line.startswith(("CapInh", "CapPrm", "CapEff", "CapAmb"))],
    "dumpable": libc.prctl(3, 0, 0, 0, 0),
}))
'''

FRESH_KEYS = ("module_marks", "builtins_mark", "planted_module", "planted_path", "planted_env",
              "files", "shm", "torch_threads", "threads", "cuda_initialised", "open_fds", "pid",
              "capabilities", "dumpable")
# Drawn from the system's entropy at start-up: different in every new interpreter.
ENTROPY_KEYS = ("python_draw", "numpy_draw", "torch_seed")


def _run_cells(tmp_path: Path, cells: list[str], warm: bool = True) -> tuple[list[dict], Any]:
    """Run ``cells`` in one new sandbox; the replies and the stopped sandbox."""
    limits = sb.Limits(**{**SHORT_LIMITS, "warm_start": warm})
    sandbox = sb.Sandbox(sb.prepare_workdir(tmp_path), limits, 0)
    replies = []
    try:
        sandbox.start()
        for i, code in enumerate(cells):
            reply, _ = sandbox.request({"op": "cell", "source": code, "name": f"<cell {i}>"},
                                       timeout=60)
            assert reply["error"] is None, reply["error"]
            replies.append(reply)
    finally:
        sandbox.stop()
    return replies, sandbox


def _looked(reply: dict[str, Any]) -> dict[str, Any]:
    return json.loads(reply["stdout"].strip().splitlines()[-1])


@pytest.fixture(scope="module")
def zygote_pid() -> Iterator[int]:
    yield sb.warm_zygote().zygote.proc.pid


@pytest.mark.slow
def test_a_submission_state_is_invisible_to_the_next(tmp_path: Path, zygote_pid: int) -> None:
    dirty, first = _run_cells(tmp_path, [DIRTY, LOOK])
    seen_dirty = _looked(dirty[1])
    # The planting worked in its own sandbox (else the test below would prove nothing).
    assert seen_dirty["module_marks"] == [True, True] and seen_dirty["shm"]
    assert seen_dirty["files"] == [True, True, True] and seen_dirty["torch_threads"] == 3
    replies, second = _run_cells(tmp_path, [LOOK])
    after = _looked(replies[0])
    replies, cold = _run_cells(tmp_path, [LOOK], warm=False)
    fresh = _looked(replies[0])
    assert {k: after[k] for k in FRESH_KEYS} == {k: fresh[k] for k in FRESH_KEYS}
    assert after["module_marks"] == [False, False] and not after["shm"]
    assert after["files"] == [False, False, False] and after["torch_threads"] == 1
    assert after["capabilities"] == ["0000000000000000"] * 4 and after["dumpable"] == 1
    # The random states come from entropy, as in a new interpreter: not the seeded streams of
    # the dirty sandbox, and not one state shared by every fork.
    replies, _ = _run_cells(tmp_path, [LOOK])
    again = _looked(replies[0])
    for key in ENTROPY_KEYS:
        assert len({seen_dirty[key], after[key], again[key], fresh[key]}) == 4, key
    # Both warm sandboxes came from the same zygote, which no submission touched.
    for sandbox in (first, second):
        assert not [w for w in sandbox.warnings if "started cold" in w]
    assert sb.warm_zygote().zygote.proc.pid == zygote_pid
    assert not [w for w in cold.warnings if "started cold" in w]


@pytest.mark.slow
def test_the_zygote_holds_nothing_secret(tmp_path: Path, zygote_pid: int) -> None:
    """What the zygote imported and may read is what every fork of it starts with."""
    code = r'''
import json, os, sys
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("autograder", "nbgrader",
                      "solutions", "sqlalchemy", "jupyter_client", "nbformat")),
    "path": sys.path,
    "cwd": os.getcwd(),
}))
'''
    replies, _ = _run_cells(tmp_path, [code])
    seen = _looked(replies[0])
    assert set(seen["modules"]) <= {"autograder", "autograder.engine", "autograder.engine.wire",
                                    "autograder.engine.runner", "autograder.engine.jail",
                                    "autograder.engine.zygote"}, seen["modules"]
    # Python's own folders and the public library's copy only: no folder of the course (a .pth
    # file of the grader's venv names two).
    allowed = (sys.prefix, sys.base_prefix, str(sb.warm_zygote().folder))
    assert all(p.startswith(allowed) for p in seen["path"]), seen["path"]
    root = str(sb.COURSE_ROOT)
    assert seen["cwd"] == sb.SANDBOX_HOME
    # The zygote's command line and open files: its interpreter and library copy, never a
    # folder of the course (the venv, inside the repository here, is Python's own).
    def course_paths(paths: list[str]) -> list[str]:
        return [p for p in paths if p.startswith(root + "/") and not p.startswith(sys.prefix)]

    command = os.fsdecode(Path(f"/proc/{zygote_pid}/cmdline").read_bytes()).split("\0")
    assert not course_paths(command), command
    fds = [os.readlink(fd) for fd in Path(f"/proc/{zygote_pid}/fd").iterdir()]
    assert not course_paths(fds), fds


@pytest.mark.slow
def test_warm_and_cold_sandboxes_measure_the_same_protections() -> None:
    def numbers_out(measured: dict[str, str]) -> dict[str, str]:
        return {k: re.sub(r"\d+", "N", v) for k, v in measured.items()}  # host pids, uids

    warm = sb.self_test(sb.Limits(**{**SHORT_LIMITS, "warm_start": True}))
    cold = sb.self_test(sb.Limits(**{**SHORT_LIMITS, "warm_start": False}))
    assert numbers_out(warm.measured) == numbers_out(cold.measured)
    assert warm.mode == cold.mode and not warm.lost()


@pytest.mark.slow
def test_the_self_test_forks_its_probe_from_a_light_zygote() -> None:
    """The self-test's probe (exec'd after the jail) is forked by a zygote of its own that
    imported none of the libraries (no torch mapped), while submissions keep the full one; the
    self-test still finds every protection, and the same ones as through the full zygote."""
    sb.stop_zygote("probe")
    measured = sb.self_test(sb.Limits(**SHORT_LIMITS))
    assert "probe" in sb._WARM  # started by the self-test
    probe, full = sb.warm_zygote(kind="probe"), sb.warm_zygote()
    assert probe.zygote.proc.pid != full.zygote.proc.pid
    maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in (
        probe.zygote.proc.pid, full.zygote.proc.pid)}
    assert "libtorch" not in maps[probe.zygote.proc.pid]
    assert "libtorch" in maps[full.zygote.proc.pid]
    assert not measured.lost()


@pytest.mark.slow
def test_a_stopped_sandbox_leaves_no_stream_open(tmp_path: Path) -> None:
    """Every stream of a stopped sandbox is closed: one left to the garbage collector warned
    (ResourceWarning) during a later submission's test, where the checks note a call's
    warnings in the test's output."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run_cells(tmp_path, [LOOK])  # the sandbox is dropped on return
        gc.collect()
    assert not [w for w in caught if "unclosed" in str(w.message)], [
        str(w.message) for w in caught]


@pytest.mark.slow
def test_optional_libraries_load_only_when_asked() -> None:
    """A zygote told that no exercise uses SciPy's statistics never maps SciPy (about 0.7 s of
    CPU saved at each start); by default, or when asked, it has them imported; a name outside
    ``zygote.OPTIONAL`` is never imported."""
    pytest.importorskip("scipy.stats")
    from autograder.engine import zygote

    script = str(Path(zygote.__file__))
    env = {**sb.sandbox_env(), "PYTHONPATH": str(Path(zygote.__file__).parents[2])}
    handles = {asked: zygote.Zygote(sys.executable, script, env, optional=asked)
               for asked in [(), ("scipy.stats",), ("json", "scipy.stats")]}
    default = zygote.Zygote(sys.executable, script, env)
    try:
        maps = {}
        for asked, handle in [*handles.items(), ("default", default)]:
            handle.ready()
            maps[asked] = Path(f"/proc/{handle.proc.pid}/maps").read_text()
            assert "libtorch" in maps[asked]
        assert "/scipy/" not in maps[()]
        assert all("/scipy/" in maps[k] for k in [("scipy.stats",), ("json", "scipy.stats"),
                                                   "default"])
        assert handles[("json", "scipy.stats")].proc.args[-1] == "--with=scipy.stats"
    finally:
        for handle in [*handles.values(), default]:
            handle.close()


@pytest.mark.slow
def test_a_dead_zygote_is_replaced(tmp_path: Path) -> None:
    old = sb.warm_zygote()
    old.zygote.proc.kill()
    old.zygote.proc.wait(timeout=10)
    replies, sandbox = _run_cells(tmp_path, [LOOK])
    assert _looked(replies[0])["torch_threads"] == 1
    assert sb.warm_zygote().zygote.proc.pid != old.zygote.proc.pid
    assert not [w for w in sandbox.warnings if "started cold" in w]


def test_the_zygote_refuses_to_fork_with_a_second_thread() -> None:
    import threading

    from autograder.engine import zygote

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert "threads" in (zygote.fork_hazard() or "")
    finally:
        stop.set()
        thread.join()


USERNS_RUN = r'''
import json, tempfile
from pathlib import Path
from autograder.engine import sandbox as sb
cells = ["import os\nprint([l.split()[1] for l in open('/proc/self/status') "
         "if l.startswith(('CapInh', 'CapPrm', 'CapEff', 'CapAmb'))])",
         "import os\ntry:\n    os.mkdir('/tmp/x')\n    os.chroot('/tmp/x')\n    print('chroot')\n"
         "except OSError as err:\n    print(type(err).__name__)"]
box = sb.Sandbox(sb.prepare_workdir(Path(tempfile.mkdtemp())), sb.Limits(), 0)
box.start()
try:
    out = [box.request({"op": "cell", "name": "<cell 1>", "source": c}, timeout=60)[0]["stdout"]
           for c in cells]
finally:
    box.stop()
print(json.dumps({"mode": box.mode, "out": out, "warnings": box.warnings}))
'''


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop a capability")
def test_in_a_user_namespace_the_warm_runner_keeps_no_capability() -> None:
    """As root without CAP_SYS_ADMIN the sandbox is built in a user namespace, where the
    process keeps every capability until execve: the warm start drops them all itself, so the
    student's code cannot, say, chroot out of its root."""
    proc = subprocess.run(["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin",
                           sys.executable, "-c", USERNS_RUN], cwd=sb.COURSE_ROOT, text=True,
                          capture_output=True, timeout=180, check=False)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["mode"] == "userns-root", found
    assert not [w for w in found["warnings"] if "started cold" in w], found
    assert found["out"][0].strip() == str(["0000000000000000"] * 4), found
    assert found["out"][1].strip() == "PermissionError", found


KEYS = r'''
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_ADD_KEY, SYS_KEYCTL, KEYCTL_SEARCH = 248, 250, 10
RINGS = {"user": -4, "user_session": -5, "session": -3}
def find(ring):
    return libc.syscall(ctypes.c_long(SYS_KEYCTL), ctypes.c_long(KEYCTL_SEARCH),
                        ctypes.c_long(ring), b"user", b"planted-key", ctypes.c_long(0)) > 0
found = {name: find(ring) for name, ring in RINGS.items()}
added = {name: libc.syscall(ctypes.c_long(SYS_ADD_KEY), b"user", b"planted-key", b"carry",
                            ctypes.c_size_t(5), ctypes.c_long(ring)) > 0
         for name, ring in RINGS.items()}
print(json.dumps({"found": found, "added": added}))
'''


@pytest.mark.slow
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the key syscalls' numbers are x86_64's")
@pytest.mark.parametrize("warm", [True, False])
def test_kernel_keyrings_do_not_carry_over(tmp_path: Path, warm: bool) -> None:
    """The kernel's key store is per uid (and a sandbox's uid serves every submission of its
    grading process): a key one submission adds to any keyring it can reach is not there for
    the next, and never in the grader's own session keyring."""
    first, _ = _run_cells(tmp_path, [KEYS], warm=warm)
    planted = _looked(first[0])
    assert planted["added"] == {"user": True, "user_session": True, "session": True}, planted
    second, _ = _run_cells(tmp_path, [KEYS], warm=warm)
    assert not any(_looked(second[0])["found"].values()), _looked(second[0])
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ours = libc.syscall(ctypes.c_long(250), ctypes.c_long(10), ctypes.c_long(-3), b"user",
                        b"planted-key", ctypes.c_long(0))
    assert ours < 0, "a sandbox wrote into the grader's session keyring"
