"""What each POSIX operation costs in each protocol: round trips, bytes, connections.

Covers: the protocol half of the simulation. For protocols with a driver here
the costs are *measured*: ``calibrate`` runs each driver operation against a
real server and reads the driver's own counters (round trips, bytes each way,
connections opened) and the loopback latency, which bounds the server's
service time. For NeST, RFIO and DCAP, whose servers no longer exist, the
costs are *parameterised from the seeds* (Figures 5 and 7): connection per
file or per operation, multi-RPC stat, no directories for DCAP; every table
that uses them says so.

Scenario: ``aviary simulate calibrate`` writes ``harness/sim_data/calibration.json``,
which is committed, so the models are calibrated, not tuned.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from drivers import Driver, DriverCounters, OpCounters

__all__ = [
    "CALIBRATION_FILE",
    "OPERATIONS",
    "SEEDS_MODELS",
    "OpCost",
    "ProtocolModel",
    "calibrate_driver",
    "load_models",
]

CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "sim_data" / "calibration.json"
#: Driver operations the workloads use, with the sizes a calibration run uses for them.
OPERATIONS = (
    "stat",
    "open",
    "close",
    "pread",
    "pwrite",
    "readdir",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
)
CALIBRATION_IO = 8192  # bytes per pread/pwrite in a calibration run
CALIBRATION_RUNS = 50  # timed repetitions per operation
LOOPBACK_RTT = 30e-6  # seconds: a TCP round trip on loopback here, subtracted to get service time


@dataclass(frozen=True)
class OpCost:
    """One operation's cost on the wire, and the server's time to serve one request of it."""

    round_trips: float
    bytes_sent: float
    bytes_received: float
    connections: float
    service_s: float  # server (and client CPU) seconds per round trip

    def scaled(self, payload: int) -> OpCost:
        """For pread/pwrite: the same cost with ``payload`` bytes instead of the calibration size."""
        extra = payload - CALIBRATION_IO
        if self.bytes_received > self.bytes_sent:
            return OpCost(
                self.round_trips,
                self.bytes_sent,
                max(0.0, self.bytes_received + extra),
                self.connections,
                self.service_s,
            )
        return OpCost(
            self.round_trips,
            max(0.0, self.bytes_sent + extra),
            self.bytes_received,
            self.connections,
            self.service_s,
        )


@dataclass
class ProtocolModel:
    """A protocol's costs per operation, and where they come from."""

    name: str
    origin: str  # "measured: <server>" or "seeds: <figure>"
    costs: dict[str, OpCost] = field(default_factory=dict)
    unsupported: frozenset[str] = frozenset()  # operations the protocol cannot do at all
    max_connections: int | None = None  # a server that refuses more (RFIO exhausts them)

    def cost(self, op: str, payload: int = 0) -> OpCost:
        if op in self.unsupported:
            raise NotImplementedError(f"{self.name} cannot {op} ({self.origin})")
        cost = self.costs[op]
        return cost.scaled(payload) if op in ("pread", "pwrite") and payload else cost


def _seeds_model(
    name: str,
    origin: str,
    rts: dict[str, float],
    conns: dict[str, float],
    service_s: float,
    unsupported: frozenset[str] = frozenset(),
    max_connections: int | None = None,
) -> ProtocolModel:
    costs = {
        op: OpCost(rts.get(op, 1.0), 100.0 + (CALIBRATION_IO if op == "pwrite" else 0),
                   100.0 + (CALIBRATION_IO if op == "pread" else 0), conns.get(op, 0.0), service_s)
        for op in OPERATIONS
    }  # fmt: skip
    return ProtocolModel(name, origin, costs, unsupported, max_connections)


#: Protocols whose servers no longer exist, from the seeds' Figure 5 (model) and Figure 7
#: (latency on a 100 Mb LAN, which fixes the per-request service time).
SEEDS_MODELS: dict[str, ProtocolModel] = {
    # get/put, indirect (multi-RPC) stat, a connection per client; Figure 7: stat 2.51 ms.
    "nest": _seeds_model(
        "nest", "seeds: Figures 5 and 7 (get/put, multi-RPC stat)",
        {"stat": 3, "open": 2, "close": 2, "readdir": 3}, {}, service_s=0.75e-3,
    ),
    # open/close, a connection per file or operation; Figure 7: stat 13.4 ms, open/close 23.1 ms.
    "rfio": _seeds_model(
        "rfio", "seeds: Figures 5 and 7 (connection per file/op)",
        {"stat": 4, "open": 4, "close": 2}, dict.fromkeys(OPERATIONS, 1.0), service_s=3.0e-3, max_connections=1024,
    ),
    # open/close, no directories; Figure 7: stat 152 ms (a door per request).
    "dcap": _seeds_model(
        "dcap", "seeds: Figures 5 and 7 (no directories)",
        {"stat": 4, "open": 4}, {"open": 1.0}, service_s=37e-3,
        unsupported=frozenset({"readdir", "mkdir", "rmdir"}),
    ),
}  # fmt: skip


def _operation_runs(driver: Driver) -> dict[str, Callable[[int], object]]:
    payload = os.urandom(CALIBRATION_IO)
    driver.write_file("/cal-data", os.urandom(CALIBRATION_IO * 4))
    driver.mkdir("/cal-dir")
    for i in range(10):
        driver.write_file(f"/cal-dir/f{i}", b"")
    handle = driver.open("/cal-data", os.O_RDWR)
    opened: list[object] = []

    def open_once(i: int) -> object:
        opened.append(driver.open("/cal-data", os.O_RDONLY))
        return opened[-1]

    def close_once(i: int) -> object:
        return driver.close(opened.pop())  # type: ignore[arg-type]

    def rename_once(i: int) -> object:
        driver.rename(f"/cal-r{i}", f"/cal-r{i}-moved")
        return None

    return {
        "stat": lambda i: driver.stat("/cal-data"),
        "open": open_once,
        "close": close_once,
        "pread": lambda i: driver.pread(handle, CALIBRATION_IO, 0),
        "pwrite": lambda i: driver.pwrite(handle, payload, 0),
        "readdir": lambda i: driver.readdir("/cal-dir"),
        "mkdir": lambda i: driver.mkdir(f"/cal-m{i}"),
        "rmdir": lambda i: driver.rmdir(f"/cal-m{i}"),
        "unlink": lambda i: driver.unlink(f"/cal-u{i}"),
        "rename": rename_once,
    }


def calibrate_driver(driver: Driver, runs: int = CALIBRATION_RUNS) -> dict[str, OpCost]:
    """Measure each operation's counters and latency against a real server."""
    operations = _operation_runs(driver)
    for i in range(runs):  # things that unlink and rename need
        driver.write_file(f"/cal-u{i}", b"")
        driver.write_file(f"/cal-r{i}", b"")
    costs: dict[str, OpCost] = {}
    for op in OPERATIONS:
        before = driver.counters.snapshot()
        samples = []
        for i in range(runs):
            began = time.perf_counter()
            operations[op](i)
            samples.append(time.perf_counter() - began)
        total = OpCounters()
        for counters in DriverCounters.difference(driver.counters.snapshot(), before).values():
            total.add(counters)
        rts = total.round_trips / runs
        per_rt = statistics.median(samples) / max(rts, 1.0)
        costs[op] = OpCost(
            round_trips=rts,
            bytes_sent=total.bytes_sent / runs,
            bytes_received=total.bytes_received / runs,
            connections=total.connections / runs,
            service_s=max(per_rt - LOOPBACK_RTT, 1e-6),
        )
    return costs


def save_calibration(models: dict[str, ProtocolModel], path: Path = CALIBRATION_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        name: {"origin": m.origin, "costs": {op: asdict(c) for op, c in m.costs.items()}}
        for name, m in sorted(models.items())
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def load_models(path: Path = CALIBRATION_FILE) -> dict[str, ProtocolModel]:
    """The measured models from the calibration file, plus the seeds' models."""
    models = dict(SEEDS_MODELS)
    if path.exists():
        for name, entry in json.loads(path.read_text()).items():
            costs = {op: OpCost(**values) for op, values in entry["costs"].items()}
            models[name] = ProtocolModel(name, entry["origin"], costs)
    return models
