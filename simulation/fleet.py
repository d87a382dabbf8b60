"""SP5 for a fleet of workers without simpy: the same model, fast enough for a million workers.

Covers: the SP5 job of :func:`simulation.run.simulate_sp5` (initialisation
batches, events of reads, CPU and a write, a NAT that forgets idle flows, a
recovering or failing client, one server with ``SERVER_WORKERS`` request slots)
computed by a specialised event loop. Profiling the simpy engine at 10,000
workers x 100 events showed its time in simpy's scheduler and generator
plumbing (``Environment.step``, ``Timeout.__init__``, ``Resource`` requests and
releases: about 20 simpy events per server visit); a worker's only interaction
with another is the server's queue, so here a worker is a few numbers in
arrays, a server visit is one entry on a heap of arrivals, and the server's
slots are a heap of the times they fall free. Taking arrivals in time order
and giving each the slot that frees first is exactly a first-come-first-served
queue with that many slots, so the results equal the simpy engine's (tested),
up to the order of visits that arrive at the very same instant.

Scenario: every worker starts at time 0; each visit is (delay before it reaches
the server, service time); when it leaves the server the worker's next visit is
computed from its step counter. Protocols that open a connection per operation
(RFIO) or refuse connections need the simpy engine.
"""

from __future__ import annotations

import heapq

from simulation.model import AUTH_ROUND_TRIPS, REOPEN_ROUND_TRIPS
from simulation.protocols import CALIBRATION_IO, OpCost, ProtocolModel
from simulation.run import SEED, SERVER_WORKERS, Sp5Result
from simulation.workloads import Sp5Job, event_sizes

__all__ = ["simulate_fleet", "supports"]

OPEN_FILES = 4  # database files SP5 keeps open (reopened after a reconnect)
REOPEN_BYTES = 200.0  # bytes of one reopen and inode check
REOPEN_SERVICE_S = 2 * 50e-6  # seconds of server time per reopen


def supports(model: ProtocolModel) -> bool:
    """Whether the fleet engine can run ``model`` (no connection per operation, no limit)."""
    return model.max_connections is None and all(
        c.connections == 0 for op, c in model.costs.items() if op != "connect"
    )


class _Costs:
    """Per-visit delays and service times, computed once (the simpy engine's arithmetic)."""

    def __init__(self, model: ProtocolModel, job: Sp5Job, rtt: float, bandwidth: float) -> None:
        self.rtt, self.bandwidth = rtt, bandwidth
        self.read = model.cost("pread", job.init_read_bytes)
        self.write_base = model.costs["pwrite"]
        self.model = model
        connect = model.costs.get("connect")
        if connect is None:
            self.connect_s = rtt * (1 + AUTH_ROUND_TRIPS)
        else:
            count = max(1, round(connect.round_trips))
            nbytes = connect.bytes_sent + connect.bytes_received
            self.connect_s = count * rtt + nbytes / bandwidth + connect.service_s * count
        self.reopen_s = REOPEN_ROUND_TRIPS * rtt + REOPEN_BYTES / bandwidth

    def write_visit(self, size: int) -> tuple[float, float] | None:
        """:meth:`visit` of one pwrite of ``size`` bytes (``OpCost.scaled``'s arithmetic,
        without making a cost per size: every event writes a size of its own)."""
        base = self.write_base
        if base.round_trips <= 0:
            return None
        if size:
            extra = size - CALIBRATION_IO
            if base.bytes_received > base.bytes_sent:
                nbytes = base.bytes_sent + max(0.0, base.bytes_received + extra)
            else:
                nbytes = max(0.0, base.bytes_sent + extra) + base.bytes_received
        else:
            nbytes = base.bytes_sent + base.bytes_received
        link = max(1, round(base.round_trips)) * self.rtt + nbytes / self.bandwidth
        return link, base.service_s * max(base.round_trips, 1.0)

    def visit(self, cost: OpCost, repeat: int) -> tuple[float, float] | None:
        """(link seconds, server seconds) of ``repeat`` operations; None: no request at all."""
        rts = cost.round_trips * repeat
        if rts <= 0:
            return None
        count = max(1, round(rts))
        nbytes = (cost.bytes_sent + cost.bytes_received) * repeat
        link = count * self.rtt + nbytes / self.bandwidth
        return link, cost.service_s * max(cost.round_trips, 1.0) * repeat


def simulate_fleet(
    model: ProtocolModel,
    job: Sp5Job,
    rtt: float,
    workers: int = 1,
    nat_timeout: float | None = None,
    recovery: bool = True,
    client_timeout: float = 30.0,
    seed: int = SEED,
    bandwidth: float = 12.5e6,
) -> Sp5Result:
    """SP5 on ``workers`` nodes sharing one server: :func:`simulate_sp5`'s model, without simpy.

    Args:
        model: the protocol's costs (see :func:`supports`).
        job: the SP5 job.
        rtt: round-trip time to the server, seconds.
        workers: nodes running the job at once.
        nat_timeout: seconds a NAT keeps an idle connection (None: no NAT).
        recovery: reconnect and reopen after a drop; else the worker fails.
        client_timeout: seconds a request waits before the client gives up.
        seed: the seed of the event sizes.
        bandwidth: bytes per second of each worker's link.

    Returns:
        The same summary as :func:`simulate_sp5`.

    Raises:
        ValueError: ``model`` needs the simpy engine.
    """
    if not supports(model):
        raise ValueError(f"{model.name} opens connections per operation: use the simpy engine")
    costs = _Costs(model, job, rtt, bandwidth)
    result = Sp5Result(model.name, rtt, workers, nat_timeout, recovery)
    chunks = job.init_chunks
    base, extra = divmod(job.init_rpcs, chunks)
    chunk_visits = [costs.visit(costs.read, base + (1 if c < extra else 0)) for c in range(chunks)]
    event_read = costs.visit(costs.read, job.event_reads) if job.event_reads else None
    chunk_cpu = job.init_cpu_s / job.cpu_ghz / chunks
    event_cpu = job.event_cpu_s / job.cpu_ghz
    low, high = job.event_bytes
    # A worker's step: 0 .. chunks-1 initialisation batches, then two per event (reads, write).
    last_steps = chunks + 2 * job.events
    step = [0] * workers
    last_active = [-1.0] * workers  # -1: not connected yet
    began = [0.0] * workers
    reconnects = 0
    reopen_left = [0] * workers
    deferred: dict[int, tuple[float, float]] = {}  # worker -> its operation, after the reopens
    init_seconds, event_seconds = result.init_seconds, result.event_seconds
    arrivals: list[tuple[float, int, float]] = []  # (time, worker, service)
    slots = [0.0] * SERVER_WORKERS
    busy = 0.0
    makespan = 0.0

    write_visit = costs.write_visit
    sizes_of: dict[int, list[int]] = {}  # a worker's event sizes, while it runs its events

    def next_visit(worker: int, now: float) -> tuple[float, float] | None:
        """The worker's next (arrival time, service), or None when it is done or failed."""
        nonlocal reconnects, makespan
        while True:
            current = step[worker]
            if current >= last_steps:
                return None
            pending = 0.0
            if current < chunks:
                pending = chunk_cpu
                visit = chunk_visits[current]
            else:
                event, part = divmod(current - chunks, 2)
                if part == 0:
                    began[worker] = now
                    visit = event_read
                else:
                    pending = event_cpu
                    sizes = sizes_of.get(worker)
                    if sizes is None:
                        sizes = sizes_of[worker] = event_sizes(seed, worker, job.events, low, high)
                    if event == job.events - 1:
                        del sizes_of[worker]
                    visit = write_visit(sizes[event])
            if visit is None:  # nothing to send: the step is its delay alone
                now += pending
                _finish_step(worker, now)
                continue
            at = now + pending
            if last_active[worker] < 0:
                pending += costs.connect_s
            elif nat_timeout is not None and at - last_active[worker] > nat_timeout:
                pending += client_timeout
                if not recovery:
                    idle = at - last_active[worker]
                    failed_at = now + pending
                    result.failures.append(
                        f"at {failed_at:.0f} s: connection dropped by the NAT after {idle:.0f} s idle"
                    )
                    makespan = max(makespan, failed_at)
                    step[worker] = last_steps
                    return None
                reconnects += 1
                pending += costs.connect_s
                reopen_left[worker] = OPEN_FILES - 1
                deferred[worker] = (visit[0], visit[1])
                return now + pending + costs.reopen_s, REOPEN_SERVICE_S
            return now + pending + visit[0], visit[1]

    def _finish_step(worker: int, now: float) -> None:
        current = step[worker]
        step[worker] = current + 1
        if current == chunks - 1:
            init_seconds.append(now)
        elif current >= chunks and (current - chunks) % 2 == 1:
            event_seconds.append(now - began[worker])
            result.completed_events += 1

    for worker in range(workers):
        first = next_visit(worker, 0.0)
        if first is not None:
            arrivals.append((first[0], worker, first[1]))
    heapq.heapify(arrivals)
    heappop, heappush, heapreplace = heapq.heappop, heapq.heappush, heapq.heapreplace
    while arrivals:
        arrived, worker, service = heappop(arrivals)
        free = slots[0]
        end = (arrived if arrived > free else free) + service
        heapreplace(slots, end)
        busy += service
        last_active[worker] = end
        if deferred and worker in deferred:  # a reopen after a reconnect: more, then the operation
            if reopen_left[worker]:
                reopen_left[worker] -= 1
                heappush(arrivals, (end + costs.reopen_s, worker, REOPEN_SERVICE_S))
            else:
                link, serve = deferred.pop(worker)
                heappush(arrivals, (end + link, worker, serve))
            continue
        current = step[worker]  # _finish_step, inline: this loop runs once per visit
        step[worker] = current + 1
        if current == chunks - 1:
            init_seconds.append(end)
        elif current >= chunks and (current - chunks) % 2 == 1:
            event_seconds.append(end - began[worker])
            result.completed_events += 1
        following = next_visit(worker, end)
        if following is None:
            makespan = max(makespan, end)
        else:
            heappush(arrivals, (following[0], worker, following[1]))
    result.reconnects = reconnects
    result.makespan = makespan
    result.server_utilisation = busy / (makespan * SERVER_WORKERS) if makespan else 0.0
    return result
