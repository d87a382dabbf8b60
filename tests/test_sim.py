"""The simulation reproduces the seeds' qualitative findings from calibrated inputs."""

from __future__ import annotations

import argparse
import random
from collections.abc import Generator
from typing import Any

import pytest
import simpy

from simulation.cli import figure10_break_even, parse_network
from simulation.model import LAN_RTT, WAN_RTT, Connection, Link, Server
from simulation.protocols import OpCost, load_models
from simulation.run import saturation_point, simulate_andrew, simulate_sp5, sweep
from simulation.workloads import STAGES, Sp5Job, load_andrew


@pytest.fixture
def env() -> simpy.Environment:
    return simpy.Environment()


def test_Connection_timeline(env: simpy.Environment) -> None:
    """Connect (SYN + 3 auth round trips), then two requests; the NAT forgets; recovery reconnects."""
    log: list[tuple[str, float]] = []
    link = Link(rtt=1.0, bandwidth=1e12, rng=random.Random(0))
    connection = Connection(env, link, Server(env, 1), nat_timeout=10.0, client_timeout=5.0)
    cost = OpCost(round_trips=1, bytes_sent=0, bytes_received=0, connections=0, service_s=0.5)

    def client() -> Generator[Any, Any, None]:
        yield from connection.operation(cost)
        log.append(("first", env.now))
        yield from connection.operation(cost)
        log.append(("second", env.now))
        yield env.timeout(20)  # idle longer than the NAT keeps the flow
        yield from connection.operation(cost)
        log.append(("after the NAT", env.now))

    env.process(client())
    env.run()
    assert log == [("first", 5.5), ("second", 7.0), ("after the NAT", 27.0 + 5.0 + 4.0 + 1.5)]
    assert connection.reconnects == 1


def test_ftp_like_and_nest_pay_for_multi_round_trip_stat() -> None:
    stages, _ = load_andrew()
    models = load_models()
    chirp = simulate_andrew(models["chirp"], stages, LAN_RTT).stage_summary()
    nest = simulate_andrew(models["nest"], stages, LAN_RTT).stage_summary()
    for stage in ("list", "scan"):
        assert nest[stage]["p50"] > 3 * chirp[stage]["p50"]


def test_rfio_exhausts_connections_and_dcap_has_no_directories() -> None:
    stages, _ = load_andrew()
    models = load_models()
    rfio = simulate_andrew(models["rfio"], stages, LAN_RTT)
    assert "no free ports" in rfio.failed["make"]
    dcap = simulate_andrew(models["dcap"], stages, LAN_RTT)
    assert set(dcap.failed) == set(STAGES) and "readdir" in dcap.failed["list"]


def test_sp5_initialisation_grows_with_distance_events_stay_flat() -> None:
    model = load_models()["chirp"]
    job = Sp5Job(events=5)
    lan, wan = simulate_sp5(model, job, LAN_RTT), simulate_sp5(model, job, WAN_RTT)
    far = simulate_sp5(model, job, 0.05)
    assert lan.init_seconds[0] < wan.init_seconds[0] < far.init_seconds[0]
    events = [sum(r.event_seconds) / len(r.event_seconds) for r in (lan, wan, far)]
    assert max(events) - min(events) < 0.01 * min(events)


def test_nat_without_recovery_fails_with_recovery_completes() -> None:
    model = load_models()["chirp"]
    job = Sp5Job(events=3, init_rpcs=1000)
    broken = simulate_sp5(model, job, LAN_RTT, nat_timeout=30.0, recovery=False)
    assert broken.completed_events == 0 and "NAT" in broken.failures[0]
    healed = simulate_sp5(model, job, LAN_RTT, nat_timeout=30.0, recovery=True)
    assert healed.completed_events == 3 and healed.reconnects == 3 and not healed.failures


def test_figure10_break_even() -> None:
    # 6275 + 88 n = 4505 + 113 n: the far node's faster CPU wins after about 71 events.
    assert figure10_break_even() == pytest.approx(70.8, abs=0.1)


def test_thousand_workers_saturate_one_server() -> None:
    model = load_models()["chirp"]
    curve = sweep(model, Sp5Job(events=5, init_rpcs=1_000_000), LAN_RTT, [1, 10, 1000], processes=1)
    assert curve[1][1] == pytest.approx(
        10 * curve[0][1], rel=0.05
    )  # ten workers: ten times the work
    assert saturation_point(curve) == 1000


def test_network_presets_and_validation() -> None:
    assert parse_network("lan") == LAN_RTT and parse_network("WAN") == WAN_RTT
    assert parse_network("50ms") == pytest.approx(0.05) and parse_network("650us") == pytest.approx(
        650e-6
    )
    for bad in ("fast", "0ms", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_network(bad)
