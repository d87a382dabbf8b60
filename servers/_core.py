"""Real servers on loopback: start one over a fresh directory, wait, stop it by PID.

Covers: the one mechanism that tests, benchmarks and reports use to get a real
server. Each kind of server is a :class:`ServerSpec` in :data:`SERVERS`, keyed
``protocol/implementation`` ("chirp/cctools", "chirp/aviary"). Starting one:

1. makes a private base directory (mode 0711, so a server that drops to an
   unprivileged user can still reach its data) holding ``data/`` and
   ``state/``;
2. picks a free port on 127.0.0.1 and runs the server's command line in its
   own session, stdin closed, output to ``state/out.log``;
3. waits until the server answers a protocol-level probe, or fails with the
   tail of its log if the process died or the deadline passed;
4. on stop, sends SIGTERM to the server's PID and to the PIDs of its children
   (a forking server leaves one per connection), SIGKILL after a grace
   period, and removes the base directory;
5. if the run that started it dies first, even by SIGKILL, a watchdog
   (:class:`Watchdog`: a small process of its own, holding the read end of a
   pipe whose write end only the run holds) sees the pipe close and ends the
   server's process group, so no server outlives its run. A parent-death
   signal alone would not do: the kernel forgets it when a server drops to
   its service user, and forking servers' children never had it.

Nothing here reaches anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from drivers import Driver, driver_for_scheme, parse_url

__all__ = [
    "SERVERS",
    "SERVICE_USER",
    "RunningServer",
    "ServerError",
    "ServerHandle",
    "ServerSpec",
    "ServerUnavailable",
    "Watchdog",
    "child_pids",
    "free_port",
    "give_to",
    "pid_alive",
    "running_server",
    "start_server",
]

LOOPBACK = "127.0.0.1"
#: The unprivileged account servers run as when we are root (made by setup).
SERVICE_USER = "aviary"
START_TIMEOUT = 15.0  # seconds until a server must answer its probe
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


class ServerError(RuntimeError):
    """A server failed to start or to answer."""


class ServerUnavailable(ServerError):
    """The server's program is not installed here; ``hint`` says how to get it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message} ({hint})")
        self.hint = hint


@dataclass(frozen=True)
class ServerContext:
    """Where a starting server lives."""

    base: Path
    data: Path
    state: Path
    port: int
    as_user: str | None  # the account to drop to, when we are root


@dataclass(frozen=True)
class ServerSpec:
    """How to run one real server implementation."""

    protocol: str
    implementation: str
    programs: tuple[str, ...]
    install_hint: str
    command: Callable[[ServerContext], list[str]]
    probe: Callable[[str, int, float], None]
    prepare: Callable[[ServerContext], None] = lambda ctx: None
    description: str = ""
    #: Login for URLs (ftp://user:pass@host:port/); None for protocols without one.
    user: str | None = None
    password: str | None = None
    #: Environment a client needs (a key file for sftp, ...), made once the server is prepared.
    client_env: Callable[[ServerContext], dict[str, str]] = lambda ctx: {}
    #: Whether it needs root (chroot, PAM): started without root it is unavailable.
    needs_root: bool = False
    #: For the docker backend: the image to run the command in, and what installs the server.
    image: str | None = None
    image_setup: str = ""

    @property
    def key(self) -> str:
        return f"{self.protocol}/{self.implementation}"

    def missing_programs(self) -> list[str]:
        return [p for p in self.programs if shutil.which(p) is None]


class ServerHandle(Protocol):
    """What users of a started server rely on, whether native or in a container."""

    spec: ServerSpec
    host: str
    port: int
    data_dir: Path
    as_user: str | None
    client_env: dict[str, str]

    def url(self, path: str = "/") -> str: ...

    def stop(self) -> None: ...


# The watchdog's program: wait for the run's end of the pipe to close; a
# message first ("q") means the run stopped the server itself.
_WATCHDOG_PROGRAM = """
import os, shutil, signal, sys, time
group, grace, base = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
try:
    said = os.read(0, 1)
except OSError:
    said = b""
if said:
    sys.exit(0)
for sig in (signal.SIGTERM, signal.SIGCONT):
    try:
        os.killpg(group, sig)
    except OSError:
        pass
ends = time.monotonic() + grace
while time.monotonic() < ends:
    try:
        os.killpg(group, 0)
    except OSError:
        break
    time.sleep(0.05)
else:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
if base:
    shutil.rmtree(base, ignore_errors=True)
"""


class Watchdog:
    """Ends a server's process group when the process that started it dies.

    It also removes the server's base directory ``base``. The watchdog runs in
    a session of its own (a Ctrl-C or a killed process group of the run does
    not reach it) and is released by :meth:`release` when the run stops the
    server itself.
    """

    def __init__(self, group: int, base: Path | None = None) -> None:
        read_end, self._write_end = os.pipe()  # not inherited by later children (O_CLOEXEC)
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WATCHDOG_PROGRAM,
                    str(group),
                    str(STOP_GRACE),
                    str(base or ""),
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    def release(self) -> None:
        """The server was stopped by its run: let the watchdog go without acting."""
        if self._write_end < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._write_end, b"q")
        os.close(self._write_end)
        self._write_end = -1
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class RunningServer:
    """A started server; use as a context manager or call :meth:`stop`."""

    spec: ServerSpec
    host: str
    port: int
    base: Path
    data_dir: Path
    state_dir: Path
    process: subprocess.Popen[bytes]
    as_user: str | None = None
    client_env: dict[str, str] = field(default_factory=dict)
    _stopped: bool = field(default=False, repr=False)
    _watchdog: Watchdog | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._watchdog = Watchdog(self.process.pid, self.base)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        login = ""
        if self.spec.user is not None:
            login = quote(self.spec.user, safe="")
            login += (
                f":{quote(self.spec.password, safe='')}@" if self.spec.password is not None else "@"
            )
        return f"{self.spec.protocol}://{login}{self.host}:{self.port}/{path.lstrip('/')}"

    def driver(self, timeout: float = 30.0) -> Driver:
        """A fresh driver object for this server, found by its protocol's URL scheme.

        The server's client environment (``client_env``) is put into ``os.environ``
        first, where drivers and the agent's children find it.
        """
        os.environ.update(self.client_env)
        location = parse_url(self.url())
        return driver_for_scheme(location.scheme).from_location(location, timeout=timeout)

    def log_tail(self, lines: int = 20) -> str:
        log = self.state_dir / "out.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def restart(self, *, kill_signal: int = signal.SIGTERM, timeout: float = START_TIMEOUT) -> None:
        """End the server process with ``kill_signal`` (SIGKILL: a crash) and start it
        again on the same port over the same data directory; its clients' connections die.

        Raises:
            ServerError: it did not come back within ``timeout`` (the port may still be held).
        """
        if self._stopped:
            raise ServerError(f"{self.spec.key} on port {self.port} was stopped, not restartable")
        self._end_processes(kill_signal)
        ctx = ServerContext(self.base, self.data_dir, self.state_dir, self.port, self.as_user)
        deadline = time.monotonic() + timeout
        while True:  # the old process's listening socket may linger a moment
            self.process = _launch(self.spec, ctx)
            if self._watchdog is not None:  # the last try's process died at once
                self._watchdog.release()
            self._watchdog = Watchdog(self.process.pid, self.base)
            try:
                _wait_until_ready(self, deadline)
                return
            except ServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server and its children by PID, then remove its files."""
        if self._stopped:
            return
        self._stopped = True
        self._end_processes(signal.SIGTERM)
        shutil.rmtree(self.base, ignore_errors=True)

    def _end_processes(self, first_signal: int) -> None:
        children = child_pids(self.pid)
        # The server leads its own process group (start_new_session): children
        # that outlived a crashed parent were reparented but are still in it.
        for pid in [self.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, first_signal)
        # A process stopped by SIGSTOP (faultnet freezes servers) acts on it once continued.
        for sig in (first_signal, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_GRACE)
        deadline = time.monotonic() + STOP_GRACE
        for pid in children:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._watchdog is not None:
            self._watchdog.release()
            self._watchdog = None

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def child_pids(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (from /proc; no signals to strangers)."""
    result = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            result.append(int(entry.name))
    return result


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _service_user() -> str | None:
    """The account to drop to: ``aviary`` when we are root, else nobody."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ServerUnavailable(
            f"user {SERVICE_USER!r} does not exist",
            "run ./setup.sh, or: useradd -r -M -s /usr/sbin/nologin aviary",
        ) from None
    return SERVICE_USER


def give_to(user: str | None, *paths: Path) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


# -- the catalogue ---------------------------------------------------------------------------

#: Every known server, "protocol/implementation" -> spec, filled from the
#: ``servers.<protocol>`` modules (each lists its specs in ``SPECS``).
SERVERS: dict[str, ServerSpec] = {}
PROTOCOL_MODULES = ("chirp", "ftp", "http", "sftp", "xrootd")


def _load_catalogue() -> None:
    for protocol in PROTOCOL_MODULES:
        module = importlib.import_module(f"servers.{protocol}")
        for spec in module.SPECS:
            SERVERS[spec.key] = spec


def start_server(key: str, *, timeout: float = START_TIMEOUT, attempts: int = 3) -> RunningServer:
    """Start the server ``key`` ("chirp/cctools") on a free loopback port.

    Raises:
        KeyError: no such server.
        ServerUnavailable: its program is not installed.
        ServerError: it did not start or did not answer in time.
    """
    spec = SERVERS[key]
    missing = spec.missing_programs()
    if missing:
        raise ServerUnavailable(f"{key}: {', '.join(missing)} not found", spec.install_hint)
    if spec.needs_root and os.geteuid() != 0:
        raise ServerUnavailable(f"{key} needs root (chroot, PAM)", "run the tests as root")
    as_user = _service_user()
    last_error: ServerError | None = None
    for _ in range(attempts):  # a lost race for the free port is retried
        try:
            return _start_once(spec, as_user, timeout)
        except ServerError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


def _start_once(spec: ServerSpec, as_user: str | None, timeout: float) -> RunningServer:
    base = Path(tempfile.mkdtemp(prefix=f"aviary-{spec.protocol}-{spec.implementation}-"))
    base.chmod(0o711)
    ctx = ServerContext(
        base=base, data=base / "data", state=base / "state", port=free_port(), as_user=as_user
    )
    ctx.data.mkdir()
    ctx.state.mkdir()
    spec.prepare(ctx)
    process = _launch(spec, ctx)
    server = RunningServer(
        spec, LOOPBACK, ctx.port, base, ctx.data, ctx.state, process, as_user, spec.client_env(ctx)
    )
    try:
        _wait_until_ready(server, time.monotonic() + timeout)
    except ServerError:
        server.stop()
        raise
    return server


def _launch(spec: ServerSpec, ctx: ServerContext) -> subprocess.Popen[bytes]:
    """Run the server's command in its own session, output appended to ``state/out.log``."""
    log = open(ctx.state / "out.log", "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    )
    try:
        return subprocess.Popen(
            spec.command(ctx),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ctx.state,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()


def _wait_until_ready(server: RunningServer, deadline: float) -> None:
    """Wait until the server answers its probe; ServerError if it died or the deadline passed."""
    spec, process = server.spec, server.process
    while True:
        if process.poll() is not None:
            raise ServerError(
                f"{spec.key} exited with status {process.returncode}: {server.log_tail()}"
            )
        try:
            spec.probe(LOOPBACK, server.port, 2.0)
            return
        except (OSError, ServerError) as exc:
            if time.monotonic() > deadline:
                # Not ours to leave running: end it before saying so.
                server._end_processes(signal.SIGTERM)
                raise ServerError(
                    f"{spec.key} did not answer on port {server.port}: {exc}; log: {server.log_tail()}"
                ) from None
            time.sleep(0.02)


@contextlib.contextmanager
def running_server(key: str) -> Iterator[RunningServer]:
    """``with running_server("chirp/aviary") as server: ...``"""
    server = start_server(key)
    try:
        yield server
    finally:
        server.stop()


_load_catalogue()
