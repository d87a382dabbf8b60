"""The fault matrix: fault kind x driver and server -> outcome and time to recover.

Covers: for each fault and each target (a driver on a real server, with its
recovery on, plus Chirp with recovery off for contrast), one session that
writes, suffers the fault, and writes again. The outcome is ``completed``
(and then every acknowledged byte must be on the server), ``failed fast``
(an OSError, with its errno, in bounded time) or ``hung`` (no answer within
``HANG_LIMIT``, the thing a driver that claims recovery must never do).
Written as JSON and as a Markdown table (``reports/faults.json``, ``.md``).

Scenario of one cell (times in seconds)::

    t=0       open /cell, write "before" at 0, fsync: acknowledged
    t=0       the fault: kernel NAT forgets flows (idle or now), RST, partition,
              server SIGKILL or SIGSTOP (to every process it started: sessions
              served by processes of their own meet it too), 100 ms latency each
              way, or the server's whole host gone (its namespace ended, the
              server killed)
    t=0       write "after" at 6 and fsync, in a thread acting as the client
    t=HEAL    the fault heals where it does (restart, SIGCONT, partition lifted)
    t<=LIMIT  the fsync returns (completed / failed) or the cell is "hung"

FTP's cells all run on the kernel back-end: its server has an address of its
own there, so the relay also carries the server's passive data ports (the
driver connects to the port EPSV names, on the control connection's peer).
A write reaches an FTP server only at fsync or close (the get/put model), so
"acknowledged" means the fsync returned. Every other small file under the
server's data directory is compared before the fault and after the write: a
byte that landed anywhere but /cell is "misplaced", and the cell lost it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from drivers import Driver, Handle
from drivers.chirp import ChirpDriver
from drivers.ftp import FtpDriver
from drivers.sftp import SftpDriver
from drivers.webdav import WebDavDriver
from drivers.xrootd import XRootDDriver
from faultnet.backends import ProxyNet, crash, freeze, open_faultnet, restart, thaw
from faultnet.faults import FaultKind
from faultnet.kernel import KernelNet, _setns
from servers import RunningServer, start_server
from servers.ftp import passive_range

__all__ = [
    "DEFAULT_TARGETS",
    "QUICK_FAULTS",
    "QUICK_TARGETS",
    "CellResult",
    "MakeDriver",
    "Target",
    "render_markdown",
    "run_cell",
    "run_matrix",
    "write_reports",
]

TIMEOUT = 2.0  # seconds: the driver's deadline for one network wait
BUDGET = 12.0  # seconds of recovery a driver may spend
HEAL_AFTER = 3.0  # seconds until a healing fault heals (restart, SIGCONT, partition lifted)
HANG_LIMIT = BUDGET + 3 * TIMEOUT  # seconds after which a write that has not returned "hung"
IDLE = 1.0  # seconds: the NAT idle timeout of the idle-drop row
DELAY = 0.1  # seconds each way in the delay row

#: Which back-end carries each fault: the kernel's real NAT where TCP itself
#: must meet the fault, the proxy where only timing matters.
BACKEND_FOR: dict[FaultKind, str] = {
    FaultKind.IDLE_NAT_DROP: "kernel",
    FaultKind.SILENT_KILL: "kernel",
    FaultKind.RST_KILL: "kernel",
    FaultKind.SERVER_CRASH: "proxy",
    FaultKind.SERVER_FREEZE: "proxy",
    FaultKind.DELAY: "proxy",
}
#: Kernel-only rows: a silent partition healed after HEAL_AFTER; the server's whole host
#: crashing (namespace gone, server killed) and coming back after HEAL_AFTER.
EXTRA_ROWS = ("partition-3s", "host-crash")


@dataclass(frozen=True)
class Target:
    """A column: a server and the driver's recovery budget."""

    server: str  # "chirp/cctools"
    recovery: float = BUDGET

    @property
    def label(self) -> str:
        return self.server if self.recovery else f"{self.server} (recovery off)"

    @property
    def protocol(self) -> str:
        return self.server.split("/", 1)[0]


DEFAULT_TARGETS = (
    Target("chirp/cctools"),
    Target("chirp/aviary"),
    Target("chirp/cctools", recovery=0),
    Target("ftp/vsftpd"),
    Target("ftp/pyftpdlib"),
    Target("sftp/openssh"),
    Target("dav/wsgidav"),
    Target("dav/nginx"),
    Target("root/xrootd"),
)
#: The README's test command runs these: one server per network driver, the two faults
#: that break a connection in the two ways a driver must tell apart (a reset it hears
#: at once, a crash whose server comes back on the same port).
QUICK_TARGETS = (
    Target("chirp/aviary"),
    Target("ftp/pyftpdlib"),
    Target("sftp/openssh"),
    Target("dav/wsgidav"),
    Target("root/xrootd"),
)
QUICK_FAULTS = (FaultKind.RST_KILL.value, FaultKind.SERVER_CRASH.value)
#: Protocols whose cells all need the kernel back-end (more than one port).
KERNEL_ONLY = frozenset({"ftp"})
#: Protocols whose cells all run on the proxy: the XRootD bindings connect from threads
#: of their own, which stay in the process's network namespace, never the client's.
PROXY_ONLY = frozenset({"root"})


def backend_for(fault: str, target: Target) -> str:
    """The back-end that carries ``fault`` for ``target``."""
    if target.protocol in PROXY_ONLY:
        return "proxy"
    if fault in EXTRA_ROWS or target.protocol in KERNEL_ONLY:
        return "kernel"
    return BACKEND_FOR.get(FaultKind(fault), "kernel")


def _known_hosts_for(server: RunningServer, address: tuple[str, int]) -> str:
    """The server's host key line, for the address the client reaches it at through faultnet."""
    host, port = address
    line = Path(server.client_env["AVIARY_SFTP_KNOWN_HOSTS"]).read_text().split(None, 1)[1]
    path = server.state_dir / "known_hosts.faultnet"
    path.write_text(f"[{host}]:{port} {line}")
    return str(path)


def _driver_for(target: Target, server: RunningServer, address: tuple[str, int]) -> Driver:
    host, port = address
    user, password = server.spec.user, server.spec.password
    if target.protocol == "chirp":
        return ChirpDriver(
            host, port, auth_methods=("address",), timeout=TIMEOUT, recovery=target.recovery
        )
    if target.protocol == "ftp":
        return FtpDriver(host, port, user, password, timeout=TIMEOUT, recovery=target.recovery)
    if target.protocol == "sftp":
        # The driver reads its key and known hosts from the environment when it connects.
        os.environ.update(server.client_env)
        os.environ["AVIARY_SFTP_KNOWN_HOSTS"] = _known_hosts_for(server, address)
        return SftpDriver(host, port, user, timeout=TIMEOUT, recovery=target.recovery)
    if target.protocol == "dav":
        return WebDavDriver(
            host, port, user=user, password=password, timeout=TIMEOUT, recovery=target.recovery
        )
    if target.protocol == "root":
        return XRootDDriver(host, port, timeout=TIMEOUT, recovery=target.recovery)
    raise ValueError(f"the fault matrix has no driver for {target.server}")


def _extra_ports(target: Target, server: RunningServer) -> range:
    if target.protocol == "ftp":
        low, high = passive_range(server.port)
        return range(low, high + 1)
    return range(0)


@dataclass
class CellResult:
    fault: str
    target: str
    backend: str
    outcome: str  # completed | failed fast | hung | error
    errno: str | None
    seconds: float
    acknowledged_bytes_kept: bool | None
    detail: str = ""


def _in_client(net: ProxyNet | KernelNet, fn: Callable[[], object], limit: float) -> list[object]:
    """Run ``fn`` as the client (inside the client namespace for the kernel back-end).

    Returns [result] or [exception], or [] when it did not return within ``limit``.
    """
    box: list[object] = []

    def body() -> None:
        try:
            if isinstance(net, KernelNet):
                _setns(net.pids["client"])
            box.append(fn())
        except BaseException as exc:  # reported as the cell's outcome
            box.append(exc)

    thread = threading.Thread(target=body, name="faultnet-matrix-client", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return []
    return box


def _apply(fault: str, net: ProxyNet | KernelNet, server: RunningServer) -> Callable[[], None]:
    """Inflict ``fault``; return what heals it (called HEAL_AFTER seconds later)."""
    if fault == FaultKind.IDLE_NAT_DROP.value:
        net.set_idle_timeout(IDLE)
        time.sleep(IDLE + 1.5)  # idle past the NAT's timeout (whole seconds, lazily expired)
        return lambda: None
    if fault == FaultKind.SILENT_KILL.value:
        net.silent_kill()
        return lambda: None
    if fault == FaultKind.RST_KILL.value:
        net.rst_kill()
        return lambda: None
    if fault == FaultKind.SERVER_CRASH.value:
        crash(server)
        return lambda: restart(server)
    if fault == FaultKind.SERVER_FREEZE.value:
        freeze(server)
        return lambda: thaw(server)
    if fault == FaultKind.DELAY.value:
        net.delay(DELAY)
        return lambda: None
    if fault == "partition-3s":
        net.partition(silent=True)
        return net.heal
    if fault == "host-crash" and isinstance(net, ProxyNet):
        # The nearest the proxy comes: flows die silently, new ones hang, the server dies.
        net.partition(silent=True)
        crash(server)

        def back() -> None:
            restart(server)
            net.heal()

        return back
    if fault == "host-crash" and isinstance(net, KernelNet):
        net.crash_server_host()
        crash(server)

        def reboot() -> None:
            restart(server)
            net.restart_server_host()

        return reboot
    raise ValueError(f"unknown fault {fault!r}")


MakeDriver = Callable[[Target, RunningServer, tuple[str, int]], Driver]


def run_cell(
    fault: str,
    backend: str,
    target: Target,
    *,
    make_driver: MakeDriver | None = None,
    hang_limit: float = HANG_LIMIT,
) -> CellResult:
    """One session through one fault; see the module's scenario.

    ``make_driver`` replaces the target's own driver (the tests seed broken ones);
    ``hang_limit`` is how long the write after the fault may take before it "hung".
    """
    server = start_server(target.server)
    net = open_faultnet(
        backend, (server.host, server.port), extra_ports=_extra_ports(target, server)
    )
    heal: Callable[[], None] = lambda: None  # noqa: E731
    try:
        net.up()
        driver = (make_driver or _driver_for)(target, server, net.address)
        box = _in_client(net, lambda: _prepare(driver), hang_limit)
        if not box or isinstance(box[0], BaseException):
            raise RuntimeError(f"the session did not start: {box}")
        handle = box[0]
        assert isinstance(handle, int)
        others = _other_files(server.data_dir)
        heal = _apply(fault, net, server)
        healer = threading.Timer(HEAL_AFTER, heal)
        healer.start()
        started = time.monotonic()
        box = _in_client(net, lambda: _write_after(driver, Handle(handle)), hang_limit)
        seconds = time.monotonic() - started
        healer.join()
        heal = lambda: None  # noqa: E731 - healed
        result = _judge(fault, backend, target, box, seconds, server)
        moved = _changed(others, _other_files(server.data_dir))
        if moved:  # bytes that landed anywhere but /cell: misplaced
            result.acknowledged_bytes_kept = False
            result.detail = f"misplaced: other files changed: {', '.join(moved)}"
        _in_client(net, driver.close_driver, hang_limit)
        return result
    except Exception as exc:  # a cell that could not run says why, the matrix goes on
        return CellResult(fault, target.label, backend, "error", None, 0.0, None, str(exc))
    finally:
        with _quietly():
            heal()
        thaw(server)
        net.down()
        server.stop()


def _prepare(driver: Driver) -> int:
    handle = driver.open("/cell", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    driver.pwrite(handle, b"before", 0)
    driver.fsync(handle)
    return int(handle)


def _write_after(driver: Driver, handle: Handle) -> None:
    driver.pwrite(handle, b"after", 6)
    driver.fsync(handle)


MAX_WATCHED = 1 << 20  # bytes: larger files beside /cell are not the cell's business


def _other_files(root: Path) -> dict[str, bytes]:
    """Every small regular file under ``root`` but /cell, by relative path (no symlinks)."""
    found: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = Path(folder, name)
            relative = str(path.relative_to(root))
            with _quietly():
                info = path.lstat()
                if (
                    relative != "cell"
                    and stat.S_ISREG(info.st_mode)
                    and info.st_size <= MAX_WATCHED
                ):
                    found[relative] = path.read_bytes()
    return found


def _changed(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """Names of files that appeared, vanished or changed between two looks."""
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )


def _judge(
    fault: str,
    backend: str,
    target: Target,
    box: list[object],
    seconds: float,
    server: RunningServer,
) -> CellResult:
    on_disk = (server.data_dir / "cell").read_bytes()
    if not box:
        return CellResult(fault, target.label, backend, "hung", None, seconds, None)
    if isinstance(box[0], OSError):
        code = errno.errorcode.get(box[0].errno or 0, str(box[0].errno))
        kept = on_disk.startswith(b"before")
        return CellResult(
            fault, target.label, backend, "failed fast", code, seconds, kept, str(box[0])
        )
    if isinstance(box[0], BaseException):
        return CellResult(fault, target.label, backend, "error", None, seconds, None, repr(box[0]))
    kept = on_disk == b"beforeafter"
    return CellResult(fault, target.label, backend, "completed", None, seconds, kept)


class _quietly:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def run_matrix(
    targets: tuple[Target, ...] = DEFAULT_TARGETS,
    faults: tuple[str, ...] | None = None,
    progress: Callable[[CellResult], None] = lambda cell: None,
) -> list[CellResult]:
    """Every fault against every target; one fresh server and back-end per cell."""
    rows = faults or (*(f.value for f in FaultKind), *EXTRA_ROWS)
    results = []
    for fault in rows:
        for target in targets:
            backend = backend_for(fault, target)
            if backend == "kernel" and KernelNet.missing() is not None:
                cell = CellResult(fault, target.label, backend, "error", None, 0.0, None,
                                  f"kernel back-end unavailable: {KernelNet.missing()}")  # fmt: skip
            else:
                cell = run_cell(fault, backend, target)
            progress(cell)
            results.append(cell)
    return results


#: What a reader needs to read a column right.
NOTES: dict[str, str] = {
    "ftp": (
        "FTP writes reach the server at fsync or close (the get/put model): the driver "
        "puts the whole staged file again after a reconnect; every cell runs on the kernel "
        "back-end, which relays the server's passive data ports, so faults hit the data "
        "connections too."
    ),
    "sftp/openssh": (
        "the driver reconnects, reopens its handle by path and checks the bytes it last "
        "wrote there before sending the broken write again."
    ),
    "dav": (
        "WebDAV writes reach the server at fsync or close (the get/put model): the staged "
        "file's whole-file PUT is sent again after a reconnect."
    ),
    "root/xrootd": (
        "every xrootd cell runs on the proxy back-end (the bindings connect from threads of "
        "their own, outside the client's namespace); its host-crash is the proxy's nearest: "
        "a silent partition and the server killed, both healed after 3 s."
    ),
}


def render_markdown(results: list[CellResult]) -> str:
    """Faults as rows, targets as columns, outcome and seconds in each cell."""
    faults = list(dict.fromkeys(r.fault for r in results))
    targets = list(dict.fromkeys(r.target for r in results))
    cells = {(r.fault, r.target): r for r in results}
    lines = [
        f"Fault matrix: driver timeout {TIMEOUT:g} s, recovery budget {BUDGET:g} s, "
        f"healing faults heal after {HEAL_AFTER:g} s, hung = no answer in {HANG_LIMIT:g} s.",
        "",
        "| fault (back-end) | " + " | ".join(targets) + " |",
        "| --- | " + " | ".join("---" for _ in targets) + " |",
    ]
    for fault in faults:
        row = []
        for target in targets:
            r = cells.get((fault, target))
            if r is None:
                row.append("")
                continue
            text = r.outcome if r.errno is None else f"{r.outcome} {r.errno}"
            text += f", {r.seconds:.1f} s" if r.outcome != "error" else f": {r.detail[:60]}"
            if r.acknowledged_bytes_kept is False:
                text += ", LOST ACKNOWLEDGED BYTES"
            row.append(text)
        backends = sorted({r.backend for r in results if r.fault == fault})
        lines.append(f"| {fault} ({', '.join(backends)}) | " + " | ".join(row) + " |")
    notes = [
        f"- {key}: {text}"
        for key, text in NOTES.items()
        if any(t == key or t.startswith(key + "/") for t in targets)
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_reports(results: list[CellResult], out: Path) -> tuple[Path, Path]:
    """``out``.json and ``out``.md (``reports/faults``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    md_path.write_text(render_markdown(results))
    return json_path, md_path
