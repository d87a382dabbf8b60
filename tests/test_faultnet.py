"""faultnet: the fault decisions, the proxy and the kernel back-end, the matrix, the CLI."""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from drivers import Handle
from drivers._network import call_with_recovery
from drivers.chirp import ChirpDriver
from faultnet.backends import ProxyNet
from faultnet.cli import apply_command
from faultnet.faults import (
    LinkFaults,
    NewConnections,
    Timeline,
    chunk_delay,
    forgotten,
    is_blackholed,
)
from faultnet.kernel import KernelNet
from faultnet.matrix import (
    QUICK_FAULTS,
    QUICK_TARGETS,
    MakeDriver,
    Target,
    render_markdown,
    run_cell,
    run_matrix,
    write_reports,
)
from faultnet.proxy import FaultProxy
from faultnet.pytest_plugin import MakeFaultNet, faultnet  # noqa: F401 - a fixture
from servers import RunningServer, child_pids
from tests.helpers import warm_up_xrootd_bindings


@pytest.fixture(scope="module", autouse=True)
def bindings_started() -> None:
    """The matrix's xrootd cells start the bindings' poller, once per process: not a leak."""
    warm_up_xrootd_bindings()


@contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """A loopback echo server in a thread, for raw TCP behaviour through the faults."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve_one(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            conn.sendall(data)

    def serve() -> None:
        workers = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            workers.append(threading.Thread(target=serve_one, args=(conn,)))
            workers[-1].start()
        for w in workers:
            w.join()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()
        listener.close()


def client(address: tuple[str, int], timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def test_fault_decisions() -> None:
    rng = random.Random(7)
    assert chunk_delay(LinkFaults(), rng, 1000) == 0
    assert chunk_delay(LinkFaults(delay=0.1, bandwidth=1000), rng, 500) == pytest.approx(0.6)
    jittered = [chunk_delay(LinkFaults(delay=0.1, jitter=0.05), rng, 1) for _ in range(100)]
    assert 0.1 <= min(jittered) < max(jittered) <= 0.15
    assert not forgotten(LinkFaults(), 1e9)
    assert forgotten(LinkFaults(idle_timeout=2), 2.5) and not forgotten(
        LinkFaults(idle_timeout=2), 1
    )
    assert is_blackholed(LinkFaults(), 0, 0, killed=True)
    assert is_blackholed(LinkFaults(idle_timeout=1), last_activity=0, now=1.5, killed=False)
    assert LinkFaults().but(delay=1).delay == 1
    sp5 = Timeline("sp5").at(3, "event 2").at(0, "event 1").at(1, "NAT forgets")
    assert [what for _, what in sp5] == ["event 1", "NAT forgets", "event 2"]
    assert "t=   1.0s  NAT forgets" in sp5.render()


def test_proxy_forwards_delays_and_counts() -> None:
    with echo_server() as upstream, FaultProxy(upstream) as proxy:
        with client(proxy.address) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
            proxy.set(proxy.faults.but(delay=0.1))
            started = time.monotonic()
            s.sendall(b"slow")
            assert s.recv(10) == b"slow"
            assert 0.2 <= time.monotonic() - started < 1.0  # 0.1 s each way
            proxy.set(LinkFaults(bandwidth=100_000))
            started = time.monotonic()
            s.sendall(b"x" * 20_000)
            got = b""
            while len(got) < 20_000:
                got += s.recv(65536)
            assert time.monotonic() - started >= 0.35  # 0.2 s each way at 100 kB/s
        assert proxy.stats.accepted == 1


def test_proxy_idle_blackhole_and_kills() -> None:
    with (
        echo_server() as upstream,
        FaultProxy(upstream, faults=LinkFaults(idle_timeout=0.3)) as proxy,
    ):
        with client(proxy.address, timeout=0.5) as s:
            s.sendall(b"a")
            assert s.recv(10) == b"a"
            time.sleep(0.5)
            s.sendall(b"b")  # accepted by the proxy's kernel: nobody is told
            with pytest.raises(TimeoutError):
                s.recv(10)
            assert proxy.stats.blackholed_idle == 1
        proxy.set(LinkFaults())
        with client(proxy.address) as s:
            s.sendall(b"c")
            assert s.recv(10) == b"c"  # the flow is up on both sides
            assert proxy.kill(rst=True) == 2  # this one and the blackholed one
            with pytest.raises(ConnectionResetError):
                s.recv(10)
        with client(proxy.address, timeout=0.5) as s:
            s.sendall(b"d")
            assert s.recv(10) == b"d"
            assert proxy.kill(rst=False) == 1
            s.sendall(b"d")
            with pytest.raises(TimeoutError):
                s.recv(10)
        assert proxy.stats.killed_rst == 2 and proxy.stats.killed_silently == 1


def test_proxy_refuses_and_hangs_new_connections() -> None:
    with echo_server() as upstream, FaultProxy(upstream) as proxy:
        proxy.set(LinkFaults(new_connections=NewConnections.REFUSE))
        with pytest.raises(ConnectionRefusedError):
            client(proxy.address)
        proxy.set(LinkFaults(new_connections=NewConnections.HANG))
        with client(proxy.address, timeout=0.3) as s:
            s.sendall(b"hello?")
            with pytest.raises(TimeoutError):
                s.recv(10)
        proxy.set(LinkFaults())
        with client(proxy.address) as s:
            s.sendall(b"back")
            assert s.recv(10) == b"back"
        assert (proxy.stats.hung, proxy.stats.accepted, proxy.stats.refused_periods) == (1, 1, 1)


def test_kernel_nat_forgets_an_idle_flow_silently(
    faultnet: MakeFaultNet,  # noqa: F811 - the fixture
) -> None:
    with echo_server() as (host, port):
        net = faultnet("kernel", RunningServerLike(host, port), idle_timeout=1)
        assert isinstance(net, KernelNet)

        def conversation() -> tuple[bytes, int, int, float]:
            with socket.create_connection(net.address, timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)
                s.sendall(b"one")
                first = s.recv(10)
                flows = net.flows()
                time.sleep(2.5)  # idle past the NAT's timeout
                s.sendall(b"two")
                started = time.monotonic()
                try:
                    s.recv(10)
                except OSError as exc:  # the client's kernel gave up retransmitting
                    return first, flows, exc.errno or 0, time.monotonic() - started
                return first, flows, 0, 0.0

        first, flows, code, took = net.in_client(conversation)
        assert first == b"one"
        assert flows == 1  # the NAT knew the flow before it idled
        assert code == errno.ETIMEDOUT, "no RST may come back from a forgotten flow"
        assert took < 3.0  # TCP_USER_TIMEOUT, not 15 minutes
        holder = net.pids["router"]
        net.down()  # what the fixture does after the test; twice is harmless
    assert not os.path.exists(f"/proc/{holder}"), "the namespaces outlived the test"


class RunningServerLike:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port


def test_kernel_faults_and_teardown(faultnet: MakeFaultNet) -> None:  # noqa: F811
    with echo_server() as (host, port):
        net = faultnet("kernel", RunningServerLike(host, port))
        assert isinstance(net, KernelNet)
        pids = dict(net.pids)
        for command, expected in (("refuse", errno.ECONNREFUSED), ("hang", errno.ETIMEDOUT)):
            apply_command(net, command)

            def connect() -> int:
                try:
                    socket.create_connection(net.address, timeout=0.5).close()
                except OSError as exc:
                    return errno.ETIMEDOUT if isinstance(exc, TimeoutError) else exc.errno or 0
                return 0

            assert net.in_client(connect) == expected
            apply_command(net, "heal")
            assert net.in_client(connect) == 0
        with pytest.raises(ValueError):
            apply_command(net, "explode")
        net.down()
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}")
    assert not child_pids(os.getpid())


def test_proxy_backend_is_a_faultnet(chirp_server: RunningServer) -> None:
    with ProxyNet((chirp_server.host, chirp_server.port)) as net:
        for line in ("delay 0.01", "idle 5", "bandwidth 1000000", "rst", "silent", "heal"):
            assert apply_command(net, line) == line.split()[0]
        assert "never retransmits" in net.limits
        assert net.client_command(["true"]) == ["true"]


def _kernel_or_fail() -> None:
    if KernelNet.missing():
        pytest.fail(f"the fault matrix needs the kernel back-end: {KernelNet.missing()}")


def test_quick_fault_matrix_over_every_network_driver(tmp_path: Path) -> None:
    """chirp, ftp, sftp, webdav and xrootd each through a reset and a server crash: every
    cell completes (no hang, no error) with every acknowledged byte on the server."""
    _kernel_or_fail()
    results = run_matrix(QUICK_TARGETS, faults=QUICK_FAULTS)
    assert {r.target.split("/")[0] for r in results} == {"chirp", "ftp", "sftp", "dav", "root"}
    assert len(results) == len(QUICK_TARGETS) * len(QUICK_FAULTS)
    wrong = [r for r in results if r.outcome != "completed" or not r.acknowledged_bytes_kept]
    assert not wrong, wrong
    json_path, md_path = write_reports(results, tmp_path / "faults")
    assert len(json.loads(json_path.read_text())) == len(results)
    assert "| rst-kill (kernel, proxy) | completed" in md_path.read_text()
    assert render_markdown(results) == md_path.read_text()


def test_without_recovery_a_fault_is_an_error_within_the_timeout() -> None:
    """The contrast column: chirp with recovery off fails fast, with the fault's errno."""
    _kernel_or_fail()
    off = Target("chirp/cctools", recovery=0)
    results = run_matrix((off,), faults=("rst-kill", "silent-kill"))
    by_fault = {r.fault: r for r in results}
    assert by_fault["rst-kill"].errno == "ECONNRESET"
    assert by_fault["silent-kill"].errno == "ETIMEDOUT"
    for cell in results:
        assert cell.outcome == "failed fast" and cell.acknowledged_bytes_kept, cell


class SwallowsWriteErrors(ChirpDriver):
    """A seeded bug: write errors are swallowed, so the program is told its bytes landed."""

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        try:
            return super().pwrite(handle, data, offset)
        except OSError:
            return len(data)

    def fsync(self, handle: Handle) -> None:
        with suppress(OSError):
            super().fsync(handle)


class AlsoWritesElsewhere(ChirpDriver):
    """A seeded bug: the write lands where it should, and also in a file it was never for
    (a handle sent on the wrong connection, a temporary name never cleaned up)."""

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        if data == b"after":
            self.write_file("/stray", data)
        return super().pwrite(handle, data, offset)


class HangsOnWrite(ChirpDriver):
    """A seeded bug: a write after the fault waits for an answer that never comes."""

    release = threading.Event()

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        if data == b"after":
            self.release.wait(60)  # bounded, and released by the test at its end
        return super().pwrite(handle, data, offset)


def _seeded(kind: type[ChirpDriver]) -> MakeDriver:
    def make(target: Target, server: RunningServer, address: tuple[str, int]) -> ChirpDriver:
        host, port = address
        return kind(host, port, auth_methods=("address",), timeout=2.0, recovery=0)

    return make


def test_the_matrix_catches_a_driver_that_swallows_a_write_error() -> None:
    _kernel_or_fail()
    target = Target("chirp/aviary", recovery=0)
    cell = run_cell("rst-kill", "kernel", target, make_driver=_seeded(SwallowsWriteErrors))
    assert cell.outcome == "completed" and cell.acknowledged_bytes_kept is False, cell
    assert "LOST ACKNOWLEDGED BYTES" in render_markdown([cell])
    honest = run_cell("rst-kill", "kernel", target, make_driver=_seeded(ChirpDriver))
    assert honest.outcome == "failed fast" and honest.acknowledged_bytes_kept, honest


def test_the_matrix_catches_a_driver_that_misplaces_a_write() -> None:
    target = Target("chirp/aviary", recovery=0)
    cell = run_cell("delay", "proxy", target, make_driver=_seeded(AlsoWritesElsewhere))
    assert cell.outcome == "completed" and cell.acknowledged_bytes_kept is False, cell
    assert cell.detail == "misplaced: other files changed: stray"
    honest = run_cell("delay", "proxy", target, make_driver=_seeded(ChirpDriver))
    assert honest.outcome == "completed" and honest.acknowledged_bytes_kept, honest


def test_the_matrix_catches_a_driver_that_hangs() -> None:
    target = Target("chirp/aviary", recovery=0)
    try:
        cell = run_cell("delay", "proxy", target, make_driver=_seeded(HangsOnWrite), hang_limit=2.0)
    finally:
        HangsOnWrite.release.set()
    assert cell.outcome == "hung", cell


def test_call_with_recovery_replays_within_its_budget() -> None:
    slept: list[float] = []
    failures = [errno.ECONNRESET, errno.ECONNREFUSED]

    def flaky() -> str:
        if failures:
            raise OSError(failures.pop(0), "broken")
        return "done"

    resets: list[int] = []
    result = call_with_recovery(
        "stat", flaky, budget=5, reset=lambda: resets.append(1), sleep=slept.append
    )
    assert result == "done" and len(resets) == 2 and slept == [0.05, 0.1]
    # A replayed mkdir that finds its directory made: the first copy did it.
    calls = iter([OSError(errno.ETIMEDOUT, "lost reply"), OSError(errno.EEXIST, "exists")])

    def mkdir() -> None:
        raise next(calls)

    assert (
        call_with_recovery("mkdir", mkdir, budget=5, reset=lambda: None, sleep=slept.append) is None
    )
    # Not a broken connection, or no budget: the error, at once.
    with pytest.raises(FileNotFoundError):
        call_with_recovery("stat", _raises(errno.ENOENT), budget=5, reset=lambda: None)
    with pytest.raises(ConnectionResetError):
        call_with_recovery("stat", _raises(errno.ECONNRESET), budget=0, reset=lambda: None)


def _raises(code: int) -> Callable[[], None]:
    def fail() -> None:
        raise OSError(code, os.strerror(code))

    return fail


def test_cli_runs_a_program_as_the_client() -> None:
    if KernelNet.missing():
        pytest.skip(str(KernelNet.missing()))
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))",
         "faultnet", "kernel", "--target", "127.0.0.1:1", "--", "ip", "-br", "addr"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if "invalid choice: 'faultnet'" in result.stderr:
        pytest.skip("aviary faultnet is not wired into harness/cli.py yet")
    assert result.returncode == 0, result.stderr
    assert "10.200.1.2/24" in result.stdout
