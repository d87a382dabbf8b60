"""Fault decisions as data and pure functions: what to delay, when a flow is forgotten.

Covers: the part of every faultnet back-end that is a decision rather than
I/O. The asyncio proxy (``proxy.py``) and the namespace NAT (``kernel.py``)
are thin shells that ask these functions what to do, so the decisions can be
tested with a seeded ``random.Random`` and a clock that is just a number.

Scenario (the seeds' SP5 deployment, as a timeline)::

    t=0      the program opens its Chirp file and writes event 1
    t=N      writes event 2; the flow was idle N > IDLE seconds
    t=IDLE   the NAT forgets the flow, silently: no RST either way
    t=N      the request vanishes; the client waits for a reply that never comes
    t=N+T    the driver's deadline (TCP_USER_TIMEOUT, recv timeout) fires: ETIMEDOUT
    t=N+T+   the driver reconnects, reopens the file by path, checks the inode, resends

A :class:`Timeline` holds such a script as ``(at, what)`` steps that a runner
(the matrix, the CLI) walks top to bottom.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

__all__ = [
    "CANNOT_REPRODUCE",
    "FAULT_KINDS",
    "FaultKind",
    "LinkFaults",
    "NewConnections",
    "Timeline",
    "chunk_delay",
    "forgotten",
    "is_blackholed",
]


class NewConnections(enum.Enum):
    """What happens to a connection attempt."""

    ACCEPT = "accept"  # forwarded to the server
    REFUSE = "refuse"  # ECONNREFUSED: nobody listens (the server host is down, the port closed)
    HANG = "hang"  # accepted, then never answered (a server frozen by SIGSTOP)


class FaultKind(enum.Enum):
    """The faults the matrix applies, one per row."""

    IDLE_NAT_DROP = "idle-nat-drop"  # the flow is forgotten after idling: no RST
    SILENT_KILL = "silent-kill"  # the flow is forgotten now: no RST
    RST_KILL = "rst-kill"  # the connection is reset
    SERVER_CRASH = "server-crash"  # SIGKILL, then restart on the same port and data
    SERVER_FREEZE = "server-freeze"  # SIGSTOP for a while, then SIGCONT
    DELAY = "delay"  # every chunk delayed (latency with jitter)


FAULT_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)

#: What a userspace proxy cannot reproduce, said plainly.
CANNOT_REPRODUCE = (
    "the proxy terminates TCP on both sides: its own kernel acknowledges what the client "
    "sends into a blackhole, so the client's kernel never retransmits, TCP_USER_TIMEOUT "
    "never fires and keepalive probes are answered; only the client's own receive "
    "deadline notices. Packet loss, reordering and RST-less drops of single segments are "
    "invisible to TCP above it. Use the kernel back-end (namespaces and conntrack NAT) "
    "for those."
)


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """The state of the faulty link, replaced whole when a fault is applied or healed.

    All times in seconds, bandwidth in bytes per second (None: unlimited).
    """

    delay: float = 0.0  # one-way delay added to every chunk
    jitter: float = 0.0  # plus a uniform random 0..jitter
    bandwidth: float | None = None  # serialisation time of a chunk: len / bandwidth
    idle_timeout: float | None = None  # a flow idle this long is forgotten (the NAT)
    new_connections: NewConnections = NewConnections.ACCEPT

    def but(self, **changes: object) -> LinkFaults:
        """A copy with ``changes`` applied (``faults.but(delay=0.05)``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def chunk_delay(faults: LinkFaults, rng: random.Random, size: int) -> float:
    """Seconds to hold a chunk of ``size`` bytes before forwarding it."""
    delay = faults.delay
    if faults.jitter > 0:
        delay += rng.uniform(0.0, faults.jitter)
    if faults.bandwidth:
        delay += size / faults.bandwidth
    return delay


def forgotten(faults: LinkFaults, idle_for: float) -> bool:
    """Whether a NAT with these settings has forgotten a flow idle for ``idle_for`` s."""
    return faults.idle_timeout is not None and idle_for > faults.idle_timeout


def is_blackholed(faults: LinkFaults, last_activity: float, now: float, killed: bool) -> bool:
    """Whether a flow forwards nothing any more: killed silently, or forgotten when idle.

    Once true it stays true for that flow (a NAT that forgot a flow does not
    remember it when the next packet comes: that packet is INVALID).
    """
    return killed or forgotten(faults, now - last_activity)


@dataclass
class Timeline:
    """A scripted scenario: ``(at_seconds, description)`` steps, read top to bottom."""

    name: str
    steps: list[tuple[float, str]] = field(default_factory=list)

    def at(self, seconds: float, what: str) -> Timeline:
        self.steps.append((seconds, what))
        return self

    def __iter__(self) -> Iterator[tuple[float, str]]:
        return iter(sorted(self.steps, key=lambda step: step[0]))

    def render(self) -> str:
        return "\n".join(f"t={at:6.1f}s  {what}" for at, what in self)
