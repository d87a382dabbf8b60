"""The seeds' SP5 scenario: a program appends an event to a Chirp mount every N seconds,
longer than a NAT's idle timeout, under ``aviary run``.

Covers: the whole path (program -> agent -> Chirp driver -> faulty network ->
real server) with the idle fault of the kernel back-end (a real conntrack
NAT in private namespaces) and of the proxy back-end (an idle blackhole).

Scenario (times in seconds)::

    t=0        the program opens /chirp/HOST:PORT/events for appending, writes event 1
    t=IDLE     the NAT forgets the idle flow; nobody is told
    t=PERIOD   event 2 goes into the blackhole
    t=PERIOD+T with recovery: ETIMEDOUT inside the driver, reconnect, reopen, same inode,
               write again; without: the write fails with ETIMEDOUT, the program stops
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from faultnet.backends import ProxyNet, crash, restart
from faultnet.kernel import KernelNet
from faultnet.pytest_plugin import MakeFaultNet, faultnet  # noqa: F401 - a fixture
from servers import RunningServer, give_to
from tests.helpers import start_or_skip

EVENTS = 3
PERIOD = 3.0  # seconds between events: longer than the NAT's idle timeout
IDLE = 1.0  # seconds a flow may idle before the NAT forgets it
TIMEOUT = 2.0  # seconds: the driver's deadline for any network wait
BUDGET = 15.0  # seconds of reconnecting the driver may spend

PROGRAM = """
exec 3>>"$1"
i=1
while [ $i -le {events} ]; do
    {echo} "event $i of the SP5 run" >&3 || exit 3
    [ $i -lt {events} ] && sleep {period}
    i=$((i+1))
done
"""

CASES = [("kernel", "chirp/cctools"), ("proxy", "chirp/aviary")]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    running = start_or_skip(request.param)
    try:
        yield running
    finally:
        running.stop()


def run_sp5(
    net_command: list[str], target: str, recovery: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = PROGRAM.format(events=EVENTS, period=PERIOD, echo="echo")
    env = dict(os.environ, AVIARY_CHIRP_RECOVERY=str(recovery))
    argv = [sys.executable, "-m", "harness.cli", "run", "--timeout", str(TIMEOUT), "--"]
    argv += ["sh", "-c", script, "sp5", target]
    started = time.monotonic()
    result = subprocess.run(
        [*net_command, *argv], capture_output=True, text=True, env=env, timeout=60
    )
    return result, time.monotonic() - started


def expected_events() -> bytes:
    return b"".join(f"event {i} of the SP5 run\n".encode() for i in range(1, EVENTS + 1))


@pytest.mark.parametrize(("backend", "server"), CASES, indirect=["server"])
def test_sp5_with_recovery_every_event_arrives(
    backend: str,
    server: RunningServer,
    faultnet: MakeFaultNet,  # noqa: F811 - the fixture
    record_property: object,
) -> None:
    net = faultnet(backend, server, idle_timeout=IDLE)
    host, port = net.address
    result, took = run_sp5(net.client_command([]), f"/chirp/{host}:{port}/events", BUDGET)
    assert result.returncode == 0, result.stderr
    assert (server.data_dir / "events").read_bytes() == expected_events()
    # Each idle gap costs at most one driver deadline to notice.
    assert took < (EVENTS - 1) * (PERIOD + TIMEOUT) + 10
    print(f"SP5 {backend} {server.spec.key} with recovery: completed in {took:.1f} s")


@pytest.mark.parametrize(("backend", "server"), CASES, indirect=["server"])
def test_sp5_without_recovery_fails_fast(
    backend: str,
    server: RunningServer,
    faultnet: MakeFaultNet,  # noqa: F811 - the fixture
) -> None:
    net = faultnet(backend, server, idle_timeout=IDLE)
    host, port = net.address
    result, took = run_sp5(net.client_command([]), f"/chirp/{host}:{port}/events", 0)
    assert result.returncode == 3, result.stderr  # the second write failed
    # dash's builtin echo reports any failed write as "I/O error" (the agent gave ETIMEDOUT).
    assert "i/o error" in result.stderr.lower(), result.stderr
    first_event = expected_events().split(b"\n")[0] + b"\n"
    assert (server.data_dir / "events").read_bytes() == first_event
    # No hang: the failing write took at most about one driver deadline.
    assert took < PERIOD + 2 * TIMEOUT + 5
    print(f"SP5 {backend} {server.spec.key} without recovery: failed after {took:.1f} s")


def sp5_with_an_outage(
    net: ProxyNet | KernelNet, server: RunningServer, during_the_outage: Callable[[], None]
) -> tuple[int, str]:
    """Run SP5 under the agent; after the first event, kill the server, call
    ``during_the_outage``, start the server again. Returns the exit status and stderr."""
    host, port = net.address
    # coreutils' echo names the errno of a failed write (dash's builtin says "I/O error").
    script = PROGRAM.format(events=EVENTS, period=PERIOD, echo="/bin/echo")
    env = dict(os.environ, AVIARY_CHIRP_RECOVERY=str(BUDGET))
    argv = [sys.executable, "-m", "harness.cli", "run", "--timeout", str(TIMEOUT), "--"]
    argv += ["sh", "-c", script, "sp5", f"/chirp/{host}:{port}/events"]
    program = subprocess.Popen(
        [*net.client_command([]), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        events = server.data_dir / "events"
        deadline = time.monotonic() + 30
        while not (events.exists() and events.read_bytes().endswith(b"\n")):
            assert program.poll() is None, program.communicate()
            assert time.monotonic() < deadline, "the first event never arrived"
            time.sleep(0.05)
        crash(server)  # SIGKILL: the connection dies with the server
        during_the_outage()
        restart(server)  # same port, same data directory, before the next event
        _, stderr = program.communicate(timeout=60)
    finally:
        if program.poll() is None:
            program.kill()
            program.communicate()
    return program.returncode, stderr


@pytest.mark.parametrize("server", ["chirp/cctools"], indirect=True)
def test_sp5_survives_a_server_restart_mid_run(
    server: RunningServer,
    faultnet: MakeFaultNet,  # noqa: F811 - the fixture
) -> None:
    net = faultnet("kernel", server, idle_timeout=IDLE)
    status, stderr = sp5_with_an_outage(net, server, lambda: time.sleep(1.0))
    assert status == 0, stderr
    assert (server.data_dir / "events").read_bytes() == expected_events()


@pytest.mark.parametrize("server", ["chirp/cctools"], indirect=True)
def test_sp5_file_renamed_during_the_outage_is_stale(
    server: RunningServer,
    faultnet: MakeFaultNet,  # noqa: F811 - the fixture
) -> None:
    """Reopened by path after the outage, "events" is another file: ESTALE, nothing misplaced."""
    net = faultnet("kernel", server, idle_timeout=IDLE)

    def replace_the_file() -> None:
        (server.data_dir / "events").rename(server.data_dir / "events.moved")
        (server.data_dir / "events").write_bytes(b"someone else's file\n")
        give_to(server.spec.user, server.data_dir / "events")  # readable: the inode decides

    status, stderr = sp5_with_an_outage(net, server, replace_the_file)
    assert status == 3, stderr  # the second write failed...
    assert "stale file handle" in stderr.lower(), stderr  # ...with ESTALE
    first_event = expected_events().split(b"\n")[0] + b"\n"
    assert (server.data_dir / "events.moved").read_bytes() == first_event
    assert (server.data_dir / "events").read_bytes() == b"someone else's file\n"
