"""The network, the server and one client connection, as simpy processes.

Covers: per-link latency and jitter, bandwidth, TCP connection set-up (the
handshake and the login: measured per protocol, else one round trip and
``AUTH_ROUND_TRIPS``), a NAT that forgets connections idle longer than its timeout
without sending RST, a server with a bounded number of workers and a service
time per request, and a client that fails fast after its timeout and, with
recovery on, reconnects and reopens its files (the seeds' SP5 deployment).

Scenario: a worker calls ``connection.operation(cost)`` for each POSIX
operation of its workload; the connection spends the operation's round trips
on the link and its requests' service time on the server, opening TCP
connections where the protocol does, and finding out the hard way when the
NAT has silently dropped it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field

import simpy

from simulation.protocols import OpCost

__all__ = ["LAN_RTT", "WAN_RTT", "Connection", "Link", "NatFailure", "Server"]

LAN_RTT = 130e-6  # seconds: the seeds' LAN (Figure 10)
WAN_RTT = 654e-6  # seconds: the seeds' WAN through the firewall (Figure 10)
AUTH_ROUND_TRIPS = 3  # round trips to authenticate a new connection (Chirp address auth)
TIME_WAIT = 60.0  # seconds a closed TCP connection holds its client port
#: Ephemeral client ports of the seeds' era (Linux 2.4: 1024-4999); a protocol that opens a
#: connection per operation runs out of them: "RFIO (overwhelmed by repeated connections)".
EPHEMERAL_PORTS = 3976
REOPEN_ROUND_TRIPS = 2  # round trips to reopen one file and check its inode

Process = Generator[simpy.Event, object, None]


class NatFailure(Exception):
    """The connection died silently and the client gave up (no recovery)."""


@dataclass
class Link:
    """One network path: round-trip time, jitter and bandwidth, with a seeded generator."""

    rtt: float  # seconds
    jitter: float = 0.0  # seconds, standard deviation of the round-trip time
    bandwidth: float = 12.5e6  # bytes per second (100 Mb/s, the seeds' LAN)
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    #: Seconds each round trip costs the client's path beyond the network's RTT: through
    #: an interposition agent, the traced program, the agent and the relay each wake up
    #: after the wait, which a plain echo does not pay (measured: ``agent_path``).
    path_s: float = 0.0

    def round_trips(self, count: int, nbytes: float) -> float:
        """Seconds for ``count`` request/response pairs carrying ``nbytes`` in all.

        The jitter of a sum of independent round trips grows with its square root.
        """
        noise = self.rng.gauss(0.0, self.jitter * math.sqrt(count)) if self.jitter else 0.0
        wire = max(count * self.rtt + noise, count * self.rtt / 2)
        return wire + count * self.path_s + nbytes / self.bandwidth


class Server:
    """A server with ``workers`` concurrent request slots."""

    def __init__(
        self, env: simpy.Environment, workers: int, max_connections: int | None = None
    ) -> None:
        self.env = env
        self.slots = simpy.Resource(env, capacity=workers)
        self.max_connections = max_connections
        self.connections = 0
        self.closed_at: deque[float] = deque()  # when short-lived connections closed (TIME_WAIT)
        self.requests = 0
        self.busy_seconds = 0.0

    def serve(self, seconds: float) -> Process:
        with self.slots.request() as slot:
            yield slot
            self.requests += 1
            self.busy_seconds += seconds
            yield self.env.timeout(seconds)


class Connection:
    """One client's connection to the server, through a NAT that may forget it."""

    def __init__(
        self,
        env: simpy.Environment,
        link: Link,
        server: Server,
        nat_timeout: float | None = None,
        client_timeout: float = 30.0,
        recovery: bool = True,
        connect_cost: OpCost | None = None,
    ) -> None:
        self.env, self.link, self.server = env, link, server
        self.connect_cost = connect_cost  # measured; else SYN and AUTH_ROUND_TRIPS
        self.nat_timeout, self.client_timeout, self.recovery = nat_timeout, client_timeout, recovery
        self.open_files = 0
        self.last_active: float | None = None  # None: not connected
        self.reconnects = 0
        self.round_trips = 0

    def connect(self) -> Process:
        """Open the connection now (else the first operation does): SYN, then authentication."""
        yield from self._connect()

    def _connect(self, login: bool = True) -> Process:
        """Open a connection: with ``login`` false, one that only shakes hands (a data connection).

        A protocol without a measured connection cost (the seeds') logs in on every one.
        """
        if (
            self.server.max_connections is not None
            and self.server.connections >= self.server.max_connections
        ):
            raise NatFailure("server refuses connections: exhausted")
        self.server.connections += 1
        cost = self.connect_cost
        if cost is None:
            yield self.env.timeout(self.link.rtt * (1 + AUTH_ROUND_TRIPS))  # SYN, authentication
        elif not login:
            yield self.env.timeout(self.link.round_trips(1, 0.0))  # SYN only
        else:
            count = max(1, round(cost.round_trips))
            nbytes = cost.bytes_sent + cost.bytes_received
            yield self.env.timeout(self.link.round_trips(count, nbytes) + cost.service_s * count)
        self.last_active = self.env.now

    def _spend_port(self) -> None:
        closed = self.server.closed_at
        while closed and closed[0] < self.env.now - TIME_WAIT:
            closed.popleft()
        if len(closed) >= EPHEMERAL_PORTS:
            raise NatFailure(f"no free ports: {len(closed)} connections in TIME_WAIT")
        closed.append(self.env.now)

    def _check_nat(self) -> Process:
        """A silently forgotten flow: the next request blackholes until the client's timeout."""
        idle = self.env.now - self.last_active if self.last_active is not None else 0.0
        if self.last_active is None or self.nat_timeout is None or idle <= self.nat_timeout:
            return
        yield self.env.timeout(self.client_timeout)
        if not self.recovery:
            raise NatFailure(f"connection dropped by the NAT after {idle:.0f} s idle")
        self.reconnects += 1
        self.server.connections -= 1
        yield from self._connect()
        for _ in range(self.open_files):
            yield from self._request(REOPEN_ROUND_TRIPS, 200.0, 2 * 50e-6)

    def _request(self, round_trips: float, nbytes: float, service: float) -> Process:
        count = max(1, round(round_trips))
        yield self.env.timeout(self.link.round_trips(count, nbytes))
        yield from self.server.serve(service)
        self.round_trips += count
        self.last_active = self.env.now

    def operation(self, cost: OpCost, repeat: int = 1) -> Process:
        """Spend ``repeat`` operations of ``cost`` (batched: one pass through the server queue)."""
        if self.last_active is None:
            yield from self._connect()
        else:
            yield from self._check_nat()
        for _ in range(round(cost.connections * repeat)):
            yield from self._connect(login=False)  # a connection per file or operation
            self.server.connections -= 1  # ... which they close again, into TIME_WAIT
            self._spend_port()
        rts = cost.round_trips * repeat
        if rts <= 0:
            return
        nbytes = (cost.bytes_sent + cost.bytes_received) * repeat
        yield from self._request(rts, nbytes, cost.service_s * max(cost.round_trips, 1.0) * repeat)
