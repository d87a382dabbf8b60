"""Experiments on the models: the Andrew-like replay, SP5 at scale, sweeps, break-even.

Covers: ``simulate_andrew`` (N workers replaying the benchmark's stages against
one server), ``simulate_sp5`` (N workers: initialisation, then events that
idle longer than a NAT may allow), ``sweep`` (workers 1..10,000: where the
server saturates; points run in parallel processes) and ``break_even`` (the
event count from which a far, fast CPU beats a near, slow one: Figure 10).

Scenario: every worker is one simpy process, read top to bottom; results are
per stage or phase, per worker, with percentiles.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import simpy

from simulation.model import Connection, Link, NatFailure, Server
from simulation.protocols import ProtocolModel
from simulation.workloads import AndrewStage, Sp5Job, event_size

__all__ = [
    "AndrewResult",
    "Sp5Result",
    "break_even",
    "percentiles",
    "simulate_andrew",
    "simulate_operations",
    "simulate_sp5",
    "sweep",
]

SERVER_WORKERS = 16  # concurrent requests the server serves (its worker pool)
SEED = 1


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


@dataclass
class AndrewResult:
    protocol: str
    origin: str
    rtt: float
    workers: int
    stage_seconds: dict[str, list[float]] = field(
        default_factory=dict
    )  # stage -> one time per worker
    failed: dict[str, str] = field(default_factory=dict)  # stage -> why it could not run

    def stage_summary(self) -> dict[str, dict[str, float]]:
        return {stage: percentiles(times) for stage, times in self.stage_seconds.items()}


def _andrew_worker(
    env: simpy.Environment, connection: Connection, model: ProtocolModel, stages: list[AndrewStage],
    result: AndrewResult, client_seconds: Mapping[str, float],
) -> Generator[simpy.Event, object, None]:  # fmt: skip
    stopped: str | None = None  # a failure that ends the run (no connection can be made)
    for stage in stages:
        if stopped is not None:
            result.failed.setdefault(stage.name, f"not reached: {stopped}")
            continue
        began = env.now
        try:
            for op, count in sorted(stage.operations.items()):
                payload = 0
                if op == "pread" and count:
                    payload = stage.read_bytes // count
                elif op == "pwrite" and count:
                    payload = stage.written_bytes // count
                yield from connection.operation(model.cost(op, payload), repeat=count)
            # The programs' own work and the agent's handling, which do not wait on the server.
            yield env.timeout(max(0.0, client_seconds.get(stage.name, 0.0)))
        except NotImplementedError as exc:
            result.failed[stage.name] = str(exc)
            continue
        except NatFailure as exc:
            result.failed[stage.name] = str(exc)
            stopped = str(exc)
            continue
        result.stage_seconds.setdefault(stage.name, []).append(env.now - began)


def simulate_andrew(
    model: ProtocolModel,
    stages: list[AndrewStage],
    rtt: float,
    workers: int = 1,
    jitter: float = 0.0,
    *,
    bandwidth: float | None = None,
    client_seconds: Mapping[str, float] | None = None,
    path_s: float = 0.0,
) -> AndrewResult:
    """Replay the Andrew-like stages for ``workers`` clients sharing one server.

    Args:
        model: the protocol's costs.
        stages: the condensed trace.
        rtt: the link's round-trip time in seconds.
        workers: clients replaying the stages at once.
        jitter: standard deviation of the round-trip time.
        bandwidth: bytes per second of the link (default: the seeds' 100 Mb/s LAN).
        client_seconds: per stage, the seconds the client spends not waiting on the
            server (the programs' CPU, the agent's handling); none by default, so a
            stage is its remote operations alone.
        path_s: seconds each round trip costs the client's path beyond ``rtt``
            (:attr:`Link.path_s`: an agent's wake-ups, measured by ``agent_path``).

    Returns:
        Each stage's time per worker, and the stages the protocol cannot run.
    """
    env = simpy.Environment()
    server = Server(env, SERVER_WORKERS, model.max_connections)
    result = AndrewResult(model.name, model.origin, rtt, workers)
    rng = random.Random(SEED)
    for _ in range(workers):
        link = Link(rtt, jitter, rng=random.Random(rng.random()), path_s=path_s)
        if bandwidth is not None:
            link.bandwidth = bandwidth
        connection = Connection(env, link, server, connect_cost=model.costs.get("connect"))
        env.process(_andrew_worker(env, connection, model, stages, result, client_seconds or {}))
    env.run()
    return result


def simulate_operations(
    model: ProtocolModel,
    operations: Sequence[tuple[str, int]],
    rtt: float,
    bandwidth: float | None = None,
) -> float:
    """Seconds one client spends on ``operations`` ((op, payload bytes) in turn) once connected.

    Raises:
        NotImplementedError: the protocol cannot do one of them.
    """
    env = simpy.Environment()
    link = Link(rtt)
    if bandwidth is not None:
        link.bandwidth = bandwidth
    server = Server(env, SERVER_WORKERS, model.max_connections)
    connection = Connection(env, link, server, connect_cost=model.costs.get("connect"))
    costs = [model.cost(op, payload) for op, payload in operations]
    spent: list[float] = []

    def client() -> Generator[simpy.Event, object, None]:
        yield from connection.connect()
        began = env.now
        for cost in costs:
            yield from connection.operation(cost)
        spent.append(env.now - began)

    env.process(client())
    env.run()
    return spent[0]


@dataclass
class Sp5Result:
    protocol: str
    rtt: float
    workers: int
    nat_timeout: float | None
    recovery: bool
    init_seconds: list[float] = field(default_factory=list)
    event_seconds: list[float] = field(default_factory=list)
    completed_events: int = 0
    failures: list[str] = field(default_factory=list)
    reconnects: int = 0
    makespan: float = 0.0
    server_utilisation: float = 0.0


def _chunk_reads(job: Sp5Job, chunk: int) -> int:
    """Reads in initialisation batch ``chunk``: the total split evenly, the remainder first."""
    base, extra = divmod(job.init_rpcs, job.init_chunks)
    return base + (1 if chunk < extra else 0)


def _sp5_worker(
    env: simpy.Environment, connection: Connection, model: ProtocolModel, job: Sp5Job, result: Sp5Result,
    worker: int, seed: int,
) -> Generator[simpy.Event, object, None]:  # fmt: skip
    try:
        began = env.now
        connection.open_files = 4  # the database files SP5 keeps open
        for chunk in range(job.init_chunks):
            yield env.timeout(job.init_cpu_s / job.cpu_ghz / job.init_chunks)
            yield from connection.operation(
                model.cost("pread", job.init_read_bytes), repeat=_chunk_reads(job, chunk)
            )
        result.init_seconds.append(env.now - began)
        for event in range(job.events):
            began = env.now
            if job.event_reads:  # the event's inputs, read first
                yield from connection.operation(
                    model.cost("pread", job.init_read_bytes), repeat=job.event_reads
                )
            yield env.timeout(job.event_cpu_s / job.cpu_ghz)  # CPU-bound: the connection idles
            size = event_size(seed, worker, event, *job.event_bytes)
            yield from connection.operation(model.cost("pwrite", size))
            result.event_seconds.append(env.now - began)
            result.completed_events += 1
    except NatFailure as exc:
        result.failures.append(f"at {env.now:.0f} s: {exc}")
    finally:
        result.reconnects += connection.reconnects


def simulate_sp5(
    model: ProtocolModel,
    job: Sp5Job,
    rtt: float,
    workers: int = 1,
    nat_timeout: float | None = None,
    recovery: bool = True,
    client_timeout: float = 30.0,
    seed: int = SEED,
) -> Sp5Result:
    """SP5 on ``workers`` nodes sharing one server, behind a NAT that forgets idle flows.

    One simpy process per worker: the reference engine. :func:`simulation.fleet.simulate_fleet`
    gives the same results without simpy, fast enough for a million workers.
    """
    env = simpy.Environment()
    server = Server(env, SERVER_WORKERS, model.max_connections)
    result = Sp5Result(model.name, rtt, workers, nat_timeout, recovery)
    for worker in range(workers):
        link = Link(rtt, rng=random.Random(worker))  # no jitter: the generator is never drawn
        connection = Connection(
            env, link, server, nat_timeout, client_timeout, recovery, model.costs.get("connect")
        )
        env.process(_sp5_worker(env, connection, model, job, result, worker, seed))
    env.run()
    result.makespan = env.now
    result.server_utilisation = server.busy_seconds / (env.now * SERVER_WORKERS) if env.now else 0.0
    return result


def _sweep_point(arguments: tuple[ProtocolModel, Sp5Job, float, int]) -> tuple[int, float, float]:
    model, job, rtt, workers = arguments
    result = simulate_sp5(model, job, rtt, workers)
    events_per_hour = result.completed_events / result.makespan * 3600 if result.makespan else 0.0
    return (
        workers,
        events_per_hour,
        statistics.fmean(result.init_seconds) if result.init_seconds else 0.0,
    )


def sweep(
    model: ProtocolModel, job: Sp5Job, rtt: float, points: list[int], processes: int = 2
) -> list[tuple[int, float, float]]:
    """(workers, events per hour, mean initialisation) per point, computed in parallel processes."""
    arguments = [(model, job, rtt, n) for n in points]
    if processes <= 1:
        return [_sweep_point(a) for a in arguments]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_sweep_point, arguments))


def saturation_point(curve: list[tuple[int, float, float]], efficiency: float = 0.5) -> int | None:
    """The first worker count whose throughput per worker fell below ``efficiency`` of one worker's."""
    if not curve or curve[0][1] == 0:
        return None
    base = curve[0][1] / curve[0][0]
    for workers, throughput, _ in curve:
        if throughput / workers < efficiency * base:
            return workers
    return None


def break_even(init_a: float, event_a: float, init_b: float, event_b: float) -> float | None:
    """Events after which B (slower start, faster events) beats A; None if it never does."""
    if event_b >= event_a:
        return None
    return (init_b - init_a) / (event_a - event_b)
