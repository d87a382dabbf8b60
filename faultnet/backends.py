"""One interface over both back-ends, and crashing a real server.

Covers: :class:`FaultNet`, the calls every back-end answers (where the
client connects, how to run code as the client, and the faults), the proxy
back-end behind it (:class:`ProxyNet`), :func:`open_faultnet` to pick one by
name, and the server faults (:func:`crash`, :func:`freeze`, :func:`thaw`,
:func:`restart`) that act on a ``servers.RunningServer`` by its PID.

Scenario::

    with open_faultnet("kernel", (server.host, server.port)) as net:
        run(net.client_command(["aviary", "run", "--", "prog"]))   # as the client
        net.silent_kill()                                          # the NAT forgets
        crash(server); restart(server)                             # the server dies

What a back-end cannot do raises :class:`NotImplementedError` naming the
reason, and each back-end states its limits in ``limits``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from faultnet.faults import CANNOT_REPRODUCE, LinkFaults, NewConnections
from faultnet.kernel import KernelNet
from faultnet.proxy import FaultProxy

__all__ = [
    "BACKENDS",
    "FaultNet",
    "ProxyNet",
    "crash",
    "freeze",
    "open_faultnet",
    "restart",
    "thaw",
]

T = TypeVar("T")
BACKENDS = ("proxy", "kernel")


class FaultNet(Protocol):
    """What the tests, the matrix and the CLI use of a back-end."""

    limits: str

    @property
    def address(self) -> tuple[str, int]: ...

    def client_command(self, argv: list[str]) -> list[str]: ...

    def in_client(self, fn: Callable[[], T]) -> T: ...

    def set_idle_timeout(self, seconds: float) -> None: ...

    def silent_kill(self) -> None: ...

    def rst_kill(self) -> None: ...

    def partition(self, *, silent: bool) -> None: ...

    def new_connections(self, policy: NewConnections) -> None: ...

    def bandwidth(self, bytes_per_second: float | None) -> None: ...

    def delay(self, seconds: float, jitter: float = 0.0) -> None: ...

    def heal(self) -> None: ...

    def up(self) -> FaultNet: ...

    def down(self) -> None: ...


class ProxyNet:
    """The proxy back-end behind the :class:`FaultNet` interface."""

    limits = CANNOT_REPRODUCE

    def __init__(self, upstream: tuple[str, int], *, seed: int = 0) -> None:
        self.proxy = FaultProxy(upstream, seed=seed)

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    def up(self) -> ProxyNet:
        self.proxy.start()
        return self

    def down(self) -> None:
        self.proxy.close()

    def __enter__(self) -> ProxyNet:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def client_command(self, argv: list[str]) -> list[str]:
        return list(argv)  # the client is any process on this host

    def in_client(self, fn: Callable[[], T]) -> T:
        return fn()

    def _change(self, **changes: object) -> None:
        self.proxy.set(self.proxy.faults.but(**changes))

    def set_idle_timeout(self, seconds: float) -> None:
        self._change(idle_timeout=seconds)

    def silent_kill(self) -> None:
        self.proxy.kill(rst=False)

    def rst_kill(self) -> None:
        self.proxy.kill(rst=True)

    def partition(self, *, silent: bool) -> None:
        """Existing flows die (silently or with RST); new ones hang or are refused."""
        self.proxy.kill(rst=not silent)
        self.new_connections(NewConnections.HANG if silent else NewConnections.REFUSE)

    def new_connections(self, policy: NewConnections) -> None:
        self._change(new_connections=policy)

    def bandwidth(self, bytes_per_second: float | None) -> None:
        self._change(bandwidth=bytes_per_second)

    def delay(self, seconds: float, jitter: float = 0.0) -> None:
        self._change(delay=seconds, jitter=jitter)

    def heal(self) -> None:
        self.proxy.set(LinkFaults(idle_timeout=self.proxy.faults.idle_timeout))


def open_faultnet(
    backend: str, upstream: tuple[str, int], *, extra_ports: Sequence[int] = ()
) -> ProxyNet | KernelNet:
    """A back-end by name ("proxy", "kernel"), not yet up: use ``with`` or ``.up()``.

    ``extra_ports`` (an FTP server's passive data ports) are relayed on the same
    numbers; only the kernel back-end can, as its server has an address of its own.

    Raises:
        ValueError: an unknown back-end, or extra ports asked of the proxy.
    """
    if backend == "proxy":
        if extra_ports:
            raise ValueError(
                "the proxy back-end relays one port on 127.0.0.1, where the server's own data "
                "ports are taken: use the kernel back-end for FTP"
            )
        return ProxyNet(upstream)
    if backend == "kernel":
        return KernelNet(upstream, extra_ports=extra_ports)
    raise ValueError(f"unknown faultnet back-end {backend!r}; choose from {', '.join(BACKENDS)}")


class _Server(Protocol):
    """The part of ``servers.RunningServer`` the server faults use."""

    @property
    def pid(self) -> int: ...

    def restart(self, *, kill_signal: int = ..., timeout: float = ...) -> None: ...


def _descendants(pid: int, depth: int = 4) -> list[int]:
    """The processes ``pid`` started, and theirs, ``depth`` generations down (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            parents.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    generation = [pid]
    for _ in range(depth):
        generation = [child for one in generation for child in parents.get(one, [])]
        found += generation
    return found


def _signal_group(server: _Server, sig: int) -> None:
    # The server leads its own process group: a forking server's per-connection
    # children are in it too, and a crash takes them all, as a real one would. Some
    # servers serve each session from a process in a session of its own (sshd, vsftpd):
    # those are found as descendants, so a crash or a freeze reaches them too.
    targets = _descendants(server.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, sig)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def crash(server: _Server) -> None:
    """SIGKILL the server and every process it started: connections die, the port closes."""
    _signal_group(server, signal.SIGKILL)


def freeze(server: _Server) -> None:
    """SIGSTOP the server and every process it started: connections stay open, nothing
    answers."""
    _signal_group(server, signal.SIGSTOP)


def thaw(server: _Server) -> None:
    """SIGCONT a frozen server."""
    _signal_group(server, signal.SIGCONT)


def restart(server: _Server) -> None:
    """Start the server again on the same port over the same data directory."""
    server.restart(kill_signal=signal.SIGKILL)
