"""A throwaway PostgreSQL server for the tests of the gradebook's `--db-url` option.

`postgres_server()` creates a cluster in a fresh temporary folder (initdb), starts it (pg_ctl) on
127.0.0.1 at a free port (and on a unix socket in that folder), creates one database and yields
its SQLAlchemy URL, ``postgresql+psycopg2://course@127.0.0.1:PORT/gradebook`` (trust
authentication: no password). Afterwards, also after a failure, the server is stopped and the
folder removed. Test modules use the ``postgres_url`` fixture: ``from pg_server import
postgres_url``.

PostgreSQL refuses to run as root; as root the server runs as an unprivileged user (``nobody``,
or ``COURSE_PG_USER``) that owns the temporary folder. The server binaries are Debian's
`postgresql` package (found through ``pg_config --bindir`` or /usr/lib/postgresql/*/bin;
``COURSE_PG_BINDIR`` overrides). Where they are missing the tests are skipped with a message
saying how to install them, except under CI (``CI`` set and not ``false``), where that is a
failure: `.ci/run` installs the package.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from browser import free_port

SUPERUSER = "course"
DATABASE = "gradebook"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT_S = 60
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found, so the PostgreSQL "
    "gradebook tests cannot run. Install Debian's package: `sudo apt-get install postgresql` "
    "(or point COURSE_PG_BINDIR at a folder holding initdb and pg_ctl)."
)
# Settings for a disposable server: no durability (faster), only local connections, small
# memory, logs to stderr (pg_ctl's -l file).
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "50",
    "logging_collector": "off",
    "log_destination": "'stderr'",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "false")


def _has_server(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(folder: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,), for picking the newest installed version."""
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def find_bindir() -> Path | None:
    """The folder holding the PostgreSQL server binaries, or None when they are not installed."""
    candidates: list[Path] = []
    if os.environ.get("COURSE_PG_BINDIR"):
        candidates.append(Path(os.environ["COURSE_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        # pg_config may come from libpq-dev alone, or name a version whose server is missing.
        with suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
            if out:
                candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key,
                         reverse=True)
    initdb = shutil.which("initdb")  # other distributions put the binaries on PATH
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return next((folder for folder in candidates if _has_server(folder)), None)


def require_bindir() -> Path:
    """The server binaries' folder; a skip where they are missing (a failure under CI)."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    banner = "*" * 78
    message = f"\n{banner}\n{INSTALL_HINT}\n{banner}"
    if _in_ci():
        pytest.fail(f"{message}\nCI is set, so this is a failure, not a skip: `.ci/run` "
                    "installs postgresql and it is missing.", pytrace=False)
    pytest.skip(message)


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("COURSE_PG_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.fail(f"running as root, PostgreSQL must run as an unprivileged user, but user "
                    f"{name!r} does not exist; set COURSE_PG_USER to an existing one",
                    pytrace=False)


def _reachable_by_others(folder: Path) -> bool:
    """Whether every folder from / down to ``folder`` lets other users through."""
    folder = folder.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (folder, *folder.parents))


def _temp_parent(as_other_user: bool) -> str:
    """Where to make the temporary folder: the usual temp dir, unless the server user could not
    reach it or the unix socket path (at most 107 bytes) would be too long there."""
    usual = Path(tempfile.gettempdir())
    fine = len(str(usual)) <= 60 and (not as_other_user or _reachable_by_others(usual))
    return str(usual) if fine else "/tmp"


def _clean_env() -> dict[str, str]:
    """The environment without PG* settings that would redirect the tools, in the C locale
    (a container often has no other locale installed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def _run(cmd: list[str], user: pwd.struct_passwd | None, cwd: Path,
         timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool, as ``user`` when one is given (we are root)."""
    kwargs: dict = {}
    if user is not None:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          check=False, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as err:
        return f"(no server log: {err})"


def _stop(bindir: Path, data: Path, user: pwd.struct_passwd | None, cwd: Path) -> None:
    """Stop the server: fast shutdown, then immediate, then SIGKILL the postmaster."""
    if not (data / "postmaster.pid").exists():
        return
    for mode in ("fast", "immediate"):
        with suppress(subprocess.TimeoutExpired):
            proc = _run([str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", mode, "-w",
                         "-t", "20"], user, cwd, timeout=30)
            if proc.returncode == 0:
                return
    with suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)


@contextmanager
def postgres_server(database: str = DATABASE) -> Iterator[str]:
    """A running throwaway PostgreSQL server with an empty database ``database``; yields its
    SQLAlchemy URL. Stops the server and deletes all its files on exit."""
    bindir = require_bindir()
    user = _server_user()
    top = Path(tempfile.mkdtemp(prefix="course-pg-", dir=_temp_parent(user is not None)))
    data, log = top / "data", top / "server.log"
    try:
        if user is not None:
            os.chown(top, user.pw_uid, user.pw_gid)
        proc = _run([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                     "--encoding=UTF8", "--locale=C", "--no-sync"], user, top)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{top}'"}
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# course tests\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

        port = _start(bindir, data, log, user, top)
        url = f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{port}/{database}"
        proc = _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                     SUPERUSER, database], user, top, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"createdb {database} failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()}\nserver log:\n{_tail(log)}")
        yield url
    finally:
        try:
            _stop(bindir, data, user, top)
        finally:
            shutil.rmtree(top, ignore_errors=True)


def _start(bindir: Path, data: Path, log: Path, user: pwd.struct_passwd | None,
           cwd: Path) -> int:
    """Start the server on a free port and wait until it accepts connections; its port. A port
    taken between choosing and binding it is retried with another."""
    for _attempt in range(3):
        port = free_port()
        started = time.monotonic()
        try:
            proc = _run([str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(log),
                         "-o", f"-p {port}", "-w", "-t", str(START_TIMEOUT_S)], user, cwd,
                        timeout=START_TIMEOUT_S + 15)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT_S} s; "
                               f"server log:\n{_tail(log)}") from None
        if proc.returncode == 0:
            problem = _connection_problem(bindir, port, user, cwd)
            if problem is None:
                return port
            raise RuntimeError(f"PostgreSQL started (pg_ctl) but does not accept connections on "
                               f"127.0.0.1:{port}: {problem}\nserver log:\n{_tail(log)}")
        server_log = _tail(log)
        if "could not bind" in server_log or "already in use" in server_log:
            _stop(bindir, data, user, cwd)
            log.write_text("")
            continue
        raise RuntimeError(
            f"PostgreSQL failed to start after {time.monotonic() - started:.1f} s "
            f"(pg_ctl exit {proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}\n"
            f"server log:\n{server_log}")
    raise RuntimeError(f"PostgreSQL found no free port in 3 attempts; last server log:\n"
                       f"{_tail(log)}")


def _connection_problem(bindir: Path, port: int, user: pwd.struct_passwd | None,
                        cwd: Path, timeout_s: float = 15) -> str | None:
    """None once the server answers over TCP as clients will reach it (pg_ctl -w has already
    waited for it to be ready), else what pg_isready last said."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = _run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U",
                     SUPERUSER, "-d", "postgres", "-t", "5"], user, cwd, timeout=15)
        if proc.returncode == 0:
            return None
        said = f"pg_isready exit {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}"
        if proc.returncode == 3 or time.monotonic() > deadline:  # 3: bad invocation
            return said
        time.sleep(0.1)


def create_database(url: str, name: str) -> str:
    """Create another empty database on the server of ``url``; its URL (for a fresh gradebook
    per test on a module's server)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the module: the URL of its empty `gradebook` database,
    ``postgresql+psycopg2://course@127.0.0.1:PORT/gradebook``."""
    with postgres_server() as url:
        yield url
