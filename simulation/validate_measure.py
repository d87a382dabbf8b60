"""The measuring side of ``aviary simulate validate``: the echo, Figure 7 calls, Andrew-like runs.

Each function measures one thing in whatever namespace it is called in (the
caller runs them in the client namespace through ``KernelNet.in_client``).
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from benchmarks.andrew import TargetRun, run_stages
from drivers import Driver, Handle
from simulation.protocols import load_models
from simulation.validate_results import (
    FIGURE7_BLOCK,
    PING_COUNT,
    RELAYED_PROTOCOLS,
    SMALL,
    WARMUP,
    ValidationError,
)

__all__ = [
    "EchoServer",
    "andrew_run",
    "measure_figure7",
    "ping",
    "ping_samples",
    "say",
    "server_key",
]


# -- the network probe -------------------------------------------------------------------------


class EchoServer:
    """A TCP echo on 127.0.0.1 (a free port), for measuring round trips through the relay."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="validate-echo")

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def _serve(self) -> None:
        peers: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([self._listener, *peers], [], [], 0.1)
                for sock in readable:
                    if sock is self._listener:
                        peer, _ = self._listener.accept()
                        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        peers.append(peer)
                        continue
                    try:
                        data = sock.recv(4096)
                        if data:
                            sock.sendall(data)
                            continue
                    except OSError:
                        pass
                    peers.remove(sock)
                    sock.close()
        finally:
            for peer in peers:
                peer.close()


def _echo_once(sock: socket.socket) -> float:
    began = time.perf_counter()
    sock.sendall(b"p" * 16)
    got = 0
    while got < 16:
        chunk = sock.recv(16 - got)
        if not chunk:
            raise OSError("the echo through the relay hung up")
        got += len(chunk)
    return time.perf_counter() - began


def ping_samples(address: tuple[str, int], count: int = PING_COUNT) -> list[float]:
    """Seconds for 16 bytes to go to the echo and back, ``count`` times (after a warm-up)."""
    with socket.create_connection(address, timeout=10.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = [_echo_once(sock) for _ in range(WARMUP + count)]
    return samples[WARMUP:]


def ping(address: tuple[str, int], count: int = PING_COUNT) -> float:
    """Median seconds for 16 bytes to go to the echo and back (after a warm-up)."""
    return statistics.median(ping_samples(address, count))


# -- measuring -----------------------------------------------------------------------------


def server_key(protocol: str) -> str:
    """The server to measure for ``protocol``: a model name (``chirp``) or a key (``chirp/aviary``)."""
    from servers import SERVERS

    if "/" in protocol:
        if protocol not in SERVERS:
            raise ValidationError(f"unknown server {protocol!r}; known: {', '.join(SERVERS)}")
        key = protocol
    else:
        models = load_models()
        model = models.get(protocol)
        if model is None:
            raise ValidationError(
                f"unknown protocol {protocol!r}; known: {', '.join(sorted(models))}"
            )
        if not model.origin.startswith("measured: "):
            raise ValidationError(
                f"{protocol} cannot be validated: {model.origin}; its server no longer exists"
            )
        key = model.origin.removeprefix("measured: ")
    if SERVERS[key].protocol not in RELAYED_PROTOCOLS:
        raise ValidationError(
            f"{key}: the relay carries one TCP connection per client; "
            f"validation runs {', '.join(RELAYED_PROTOCOLS)} servers only"
        )
    return key


def measure_figure7(
    driver: Driver, runs: int, latency: Callable[[bool], None], echo: tuple[str, int]
) -> tuple[dict[str, float], dict[str, float], dict[bool, list[float]]]:
    """Median seconds of each Figure 7 operation through ``driver``, with and without latency.

    The calls alternate, in blocks of ``FIGURE7_BLOCK``, between the link with its
    latency (``latency(True)``) and without (``latency(False)``): the calls at RTT 0
    are the calibration of the calls with latency, made within a second of them, so
    that a machine whose load moves shows it to both. Called in the client namespace.

    Each block begins with two echoes through the relay (``echo``), so the link's
    RTT with and without the latency is sampled in the same seconds as the calls.

    Returns:
        (medians with latency, medians at RTT 0) by operation, and the echoes'
        seconds with (True) and without (False) the latency.
    """
    driver.write_file("/f7-one", b"x")
    driver.write_file("/f7-small", os.urandom(SMALL))
    one = driver.open("/f7-one", os.O_RDONLY)
    small = driver.open("/f7-small", os.O_RDONLY)
    written = driver.open("/f7-written", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    payload = os.urandom(SMALL)

    def open_close() -> None:
        driver.close(driver.open("/f7-small", os.O_RDONLY))

    calls: dict[str, Callable[[], object]] = {
        "stat": lambda: driver.stat("/f7-small"),
        "open/close": open_close,
        "read 1B": lambda: driver.pread(one, 1, 0),
        "read 8KB": lambda: driver.pread(small, SMALL, 0),
        "write 8KB": lambda: driver.pwrite(written, payload, 0),
    }
    slow: dict[str, float] = {}
    fast: dict[str, float] = {}
    echoes: dict[bool, list[float]] = {True: [], False: []}
    probe = socket.create_connection(echo, timeout=10.0)
    probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for name, call in calls.items():
            samples: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(WARMUP):
                call()
            while len(samples[True]) < runs:
                for delayed in (False, True):
                    latency(delayed)
                    call()  # the first call after a switch may meet the old setting's data
                    echoes[delayed] += [_echo_once(probe) for _ in range(2)]
                    for _ in range(FIGURE7_BLOCK):
                        began = time.perf_counter()
                        call()
                        samples[delayed].append(time.perf_counter() - began)
            slow[name] = statistics.median(samples[True])
            fast[name] = statistics.median(samples[False])
    finally:
        probe.close()
        latency(True)
        handles: tuple[Handle, ...] = (one, small, written)
        for handle in handles:
            driver.close(handle)
    return slow, fast, echoes


def andrew_run(
    source: Path, dest: str, work: Path, prefix: Sequence[str], trace: Path, label: str
) -> TargetRun:
    if trace.exists():
        trace.unlink()
    run = run_stages(source, dest, work, trace=trace, prefix=prefix)
    if run.error is not None:
        raise ValidationError(f"the Andrew-like run at RTT {label} failed: {run.error}")
    return run


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
