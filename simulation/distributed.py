"""Sweeps and large SP5 runs on Dask: a LocalCluster by default, any scheduler by address.

Covers: ``run_sp5`` (one run, on whichever engine fits the protocol),
``sweep`` (one run per worker count, the points spread over a Dask cluster, or
in this process) and ``submit_sp5`` (one large run as a task on a cluster).
A run is a pure function of its arguments and seed (the event sizes are
counter-based draws, see :func:`simulation.workloads.event_size`), so a point
computed on a cluster equals the same point computed here.

Scenario: ``aviary simulate sweep --scheduler tcp://host:8786`` sends each
point to that scheduler's workers (started with ``dask scheduler`` and
``dask worker tcp://host:8786`` on any machines that have aviary installed);
without ``--scheduler`` a LocalCluster of ``--cluster-workers`` processes is
started and stopped around the sweep; ``--scheduler local`` runs in this process.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from simulation.protocols import ProtocolModel
from simulation.run import SEED, Sp5Result, simulate_sp5
from simulation.workloads import Sp5Job

__all__ = ["IN_PROCESS", "SweepPoint", "dask_client", "run_sp5", "submit_sp5", "sweep"]

IN_PROCESS = "local"  # the scheduler name that means: no Dask, compute here
LOCAL_CLUSTER_WORKERS = 2  # processes of the default LocalCluster (this machine has 2 cores)


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: worker count, throughput and initialisation time."""

    workers: int
    events_per_hour: float
    init_mean_s: float
    makespan_s: float
    server_utilisation: float


def run_sp5(
    model: ProtocolModel, job: Sp5Job, rtt: float, workers: int, nat_timeout: float | None = None,
    recovery: bool = True, client_timeout: float = 30.0, seed: int = SEED, engine: str = "auto",
) -> Sp5Result:  # fmt: skip
    """One SP5 run on the fleet engine where the protocol allows it (``auto``), else simpy.

    Raises:
        ValueError: ``engine`` is ``fleet`` and the protocol needs simpy, or is unknown.
    """
    from simulation.fleet import simulate_fleet, supports

    if engine not in ("auto", "fleet", "simpy"):
        raise ValueError(f"engine must be auto, fleet or simpy, not {engine!r}")
    if engine == "simpy" or (engine == "auto" and not supports(model)):
        return simulate_sp5(model, job, rtt, workers, nat_timeout, recovery, client_timeout, seed)
    return simulate_fleet(model, job, rtt, workers, nat_timeout, recovery, client_timeout, seed)


def _point(model: ProtocolModel, job: Sp5Job, rtt: float, workers: int, seed: int) -> SweepPoint:
    result = run_sp5(model, job, rtt, workers, seed=seed)
    per_hour = result.completed_events / result.makespan * 3600 if result.makespan else 0.0
    init = statistics.fmean(result.init_seconds) if result.init_seconds else 0.0
    return SweepPoint(workers, per_hour, init, result.makespan, result.server_utilisation)


@contextmanager
def dask_client(
    scheduler: str | None, cluster_workers: int = LOCAL_CLUSTER_WORKERS
) -> Iterator[Any]:
    """A Dask client: to ``scheduler``'s address, or to a LocalCluster started (and stopped) here.

    Raises:
        OSError: the scheduler cannot be reached.
    """
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="20s") as client:  # type: ignore[no-untyped-call]
            yield client
        return
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=cluster_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client


def sweep(
    model: ProtocolModel, job: Sp5Job, rtt: float, points: list[int], scheduler: str | None = None,
    *, seed: int = SEED, cluster_workers: int = LOCAL_CLUSTER_WORKERS,
    client: Any | None = None,
) -> list[SweepPoint]:  # fmt: skip
    """One SP5 run per worker count, on a Dask cluster (or here, with ``scheduler="local"``).

    Args:
        model: the protocol's costs.
        job: the SP5 job each worker runs.
        rtt: round-trip time to the server, seconds.
        points: worker counts.
        scheduler: a Dask scheduler's address; None: a LocalCluster; ``local``: this process.
        seed: the seed of every run.
        cluster_workers: processes of the LocalCluster.
        client: an existing Dask client to use instead.

    Returns:
        The points in the order given; equal to a run in this process for the same seed.
    """
    if client is None and scheduler == IN_PROCESS:
        return [_point(model, job, rtt, n, seed) for n in points]
    if client is not None:
        return _gather(client, model, job, rtt, points, seed)
    with dask_client(scheduler, cluster_workers) as connected:
        return _gather(connected, model, job, rtt, points, seed)


def _gather(client: Any, model: ProtocolModel, job: Sp5Job, rtt: float, points: list[int],
            seed: int) -> list[SweepPoint]:  # fmt: skip
    # The biggest points first, so that the cluster is not left waiting on one at the end.
    order = sorted(range(len(points)), key=lambda i: -points[i])
    futures = {
        i: client.submit(_point, model, job, rtt, points[i], seed, pure=False) for i in order
    }
    done: list[SweepPoint] = [futures[i].result() for i in range(len(points))]
    return done


def submit_sp5(scheduler: str | None, call: Callable[[], Sp5Result]) -> Sp5Result:
    """Run one (large) SP5 run as a task on a Dask cluster and bring its result back."""
    with dask_client(scheduler, 1) as client:
        result: Sp5Result = client.submit(call, pure=False).result()
        return result
