"""What each POSIX operation costs in each protocol: round trips, bytes, connections.

Covers: the protocol half of the simulation. For protocols with a driver here
the costs are *measured*: ``calibrate`` runs each driver operation against a
real server and reads the driver's own counters (round trips, bytes each way,
connections opened) and the latency less the path's round-trip time, which
is the server's service time. A read or write is measured with the close that
follows it, less a plain close (a get/put driver moves the bytes at close, a
lazy one opens at the first read); a new connection's cost (handshake and
login) is measured as ``connect``; what a read-only server refuses is listed
as unsupported. For NeST, RFIO and DCAP, whose servers no longer exist, the
costs are *parameterised from the seeds* (Figures 5 and 7): connection per
file or per operation, multi-RPC stat, no directories for DCAP; every table
that uses them says so.

Scenario: ``aviary simulate calibrate`` writes ``simulation/data/calibration.json``,
which is committed, so the models are calibrated, not tuned.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from drivers import Driver, DriverCounters, Handle, OpCounters
from simulation.calibration_record import Spread, summarise

__all__ = [
    "CALIBRATION_FILE",
    "OPERATIONS",
    "SEEDS_MODELS",
    "OpCost",
    "ProtocolModel",
    "calibrate_driver",
    "calibrate_repeated",
    "calibration_metadata",
    "load_models",
    "median_cost",
    "model_name",
    "save_calibration",
]

CALIBRATION_FILE = Path(__file__).resolve().parent / "data" / "calibration.json"
#: Driver operations the workloads use, with the sizes a calibration run uses for them.
OPERATIONS = (
    "stat",
    "lstat",
    "fstat",
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
CALIBRATION_REPEATS = 5  # whole calibrations per server, summarised by their median
CONNECT_RUNS = 5  # new connections timed
CALIBRATION_WARMUP = 5  # untimed repetitions first, where an operation can be repeated
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


#: Model names of URL schemes that name a protocol less plainly than its servers do.
_MODEL_NAMES = {"root": "xrootd", "dav": "webdav"}


def model_name(scheme: str) -> str:
    """The model name of a protocol's URL scheme: ``root`` is ``xrootd``, ``dav`` is ``webdav``."""
    return _MODEL_NAMES.get(scheme, scheme)


def _seeds_model(
    name: str,
    origin: str,
    rts: dict[str, float],
    conns: dict[str, float],
    service_s: float,
    unsupported: frozenset[str] = frozenset(),
    max_connections: int | None = None,
) -> ProtocolModel:
    for like_stat in ("lstat", "fstat"):  # the seeds give one stat; its siblings cost the same
        if "stat" in rts:
            rts.setdefault(like_stat, rts["stat"])
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


@dataclass(frozen=True)
class _Step:
    """One calibrated operation: ``setup`` (untimed) then ``timed``, for sample ``i``.

    ``baseline`` names a step whose cost is subtracted: a read or write is
    measured together with the close that follows it, since a get/put driver
    (FTP) moves bytes only at close, or opens lazily at the first read (xrootd);
    the close of an untouched handle is then taken away again.
    """

    setup: Callable[[int], object]
    timed: Callable[[int, object], object]
    baseline: str | None = None
    #: Untimed, given what ``setup`` and ``timed`` returned (to close what they opened).
    after: Callable[[object, object], object] | None = None
    repeatable: bool = True  # False: each sample uses up its own file (unlink, rename, ...)


#: Errors that say the protocol cannot do an operation at all (a read-only server).
UNSUPPORTED_ERRNOS = frozenset({errno.EROFS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def _prepare(driver: Driver, runs: int, backing: Path | None, owner: str | None) -> None:
    """The files the steps use: through the driver, or behind a read-only server's back."""
    files = {"/cal-data": os.urandom(CALIBRATION_IO * 4), "/cal-w": b""}
    files.update({f"/cal-dir/f{i}": b"" for i in range(10)})
    files.update({f"/cal-u{i}": b"" for i in range(runs)})
    files.update({f"/cal-r{i}": b"" for i in range(runs)})
    try:
        with contextlib.suppress(FileExistsError):  # a repeated calibration finds it there
            driver.mkdir("/cal-dir")
        for path, data in files.items():
            driver.write_file(path, data)
        return
    except OSError as exc:
        if exc.errno != errno.EROFS or backing is None:
            raise
    from servers import give_to  # only a read-only server needs it

    (backing / "cal-dir").mkdir(exist_ok=True)
    for path, data in files.items():
        (backing / path.lstrip("/")).write_bytes(data)
    give_to(owner, backing / "cal-dir", *(backing / p.lstrip("/") for p in files))


def _steps(driver: Driver) -> dict[str, _Step]:
    payload = os.urandom(CALIBRATION_IO)

    def nothing(i: int) -> None:
        return None

    def reader(i: int) -> Handle:
        return driver.open("/cal-data", os.O_RDONLY)

    def writer(i: int) -> Handle:
        return driver.open("/cal-w", os.O_WRONLY)

    def reader_asked_since(i: int) -> Handle:
        # Something asked between the open and the fstat: a driver may answer an fstat
        # right after its open from the open's reply (Chirp, FTP), which a trace shows as
        # no operation at all; the fstat a trace counts is this one.
        handle = reader(i)
        driver.stat("/cal-data")
        return handle

    def read_then_close(i: int, handle: object) -> None:
        driver.pread(cast(Handle, handle), CALIBRATION_IO, 0)
        driver.close(cast(Handle, handle))

    def write_then_close(i: int, handle: object) -> None:
        driver.pwrite(cast(Handle, handle), payload, 0)
        driver.close(cast(Handle, handle))

    return {
        "stat": _Step(nothing, lambda i, _: driver.stat("/cal-data")),
        "lstat": _Step(nothing, lambda i, _: driver.lstat("/cal-data")),
        "fstat": _Step(
            reader_asked_since,
            lambda i, h: driver.fstat(cast(Handle, h)),
            after=lambda h, _: driver.close(cast(Handle, h)),
        ),
        "open": _Step(
            nothing, lambda i, _: reader(i), after=lambda _, h: driver.close(cast(Handle, h))
        ),
        "close": _Step(reader, lambda i, h: driver.close(cast(Handle, h))),
        "close-written": _Step(writer, lambda i, h: driver.close(cast(Handle, h))),
        "pread": _Step(reader, read_then_close, baseline="close"),
        "pwrite": _Step(writer, write_then_close, baseline="close-written"),
        "readdir": _Step(nothing, lambda i, _: driver.readdir("/cal-dir")),
        "mkdir": _Step(nothing, lambda i, _: driver.mkdir(f"/cal-m{i}"), repeatable=False),
        "rmdir": _Step(nothing, lambda i, _: driver.rmdir(f"/cal-m{i}"), repeatable=False),
        "unlink": _Step(nothing, lambda i, _: driver.unlink(f"/cal-u{i}"), repeatable=False),
        "rename": _Step(
            nothing, lambda i, _: driver.rename(f"/cal-r{i}", f"/cal-r{i}-moved"), repeatable=False
        ),
    }


@dataclass
class _Measured:
    counters: OpCounters  # summed over the runs
    seconds: float  # median of the runs


def _measure(driver: Driver, step: _Step, runs: int) -> _Measured:
    for i in range(CALIBRATION_WARMUP if step.repeatable else 0):  # untimed, uncounted
        state = step.setup(i)
        result = step.timed(i, state)
        if step.after is not None:
            step.after(state, result)
    total = OpCounters()
    samples = []
    for i in range(runs):
        state = step.setup(i)
        before = driver.counters.snapshot()
        began = time.perf_counter()
        result = step.timed(i, state)
        samples.append(time.perf_counter() - began)
        for counters in DriverCounters.difference(driver.counters.snapshot(), before).values():
            total.add(counters)
        if step.after is not None:
            step.after(state, result)
    return _Measured(total, statistics.median(samples))


def _connect_cost(
    fresh: Callable[[], Driver], stat: OpCost, stat_seconds: float, network_rtt: float, runs: int
) -> OpCost:
    """A new connection: its first stat, less a stat on an open connection."""
    total = OpCounters()
    samples = []
    for _ in range(runs):
        driver = fresh()
        try:
            began = time.perf_counter()
            driver.stat("/cal-data")
            samples.append(time.perf_counter() - began)
            for counters in driver.counters.snapshot().values():
                total.add(counters)
        finally:
            driver.close_driver()
    # The TCP handshake is one more round trip, which no driver counts.
    rts = max(0.0, total.round_trips / runs - stat.round_trips) + 1.0
    seconds = max(0.0, statistics.median(samples) - stat_seconds)
    return OpCost(
        round_trips=rts,
        bytes_sent=max(0.0, total.bytes_sent / runs - stat.bytes_sent),
        bytes_received=max(0.0, total.bytes_received / runs - stat.bytes_received),
        connections=total.connections / runs,
        service_s=max(seconds / rts - network_rtt, 1e-6),
    )


def calibrate_driver(
    driver: Driver,
    name: str,
    origin: str,
    runs: int = CALIBRATION_RUNS,
    *,
    backing: Path | None = None,
    owner: str | None = None,
    network_rtt: float = LOOPBACK_RTT,
    fresh: Callable[[], Driver] | None = None,
) -> ProtocolModel:
    """Measure each operation's counters and latency against a real server.

    Args:
        driver: a connected driver; its root gets the calibration files.
        name: the model's name.
        origin: where the numbers come from ("measured: chirp/cctools").
        runs: timed repetitions of each operation.
        backing: the server's directory, where a read-only protocol's files are put.
        owner: the account the server runs as, to give those files to.
        network_rtt: the round-trip time of the path to the server, taken off
            each round trip's time to leave the server's (and client's) service time.
        fresh: makes a new, unconnected driver for the same server: a new
            connection's cost (TCP handshake, login) is measured as ``connect``.

    Returns:
        The protocol's model; operations the server refuses as unsupported
        (read-only, not implemented) are listed as such.

    Raises:
        OSError: the driver failed other than by refusing an operation.
    """
    _prepare(driver, runs, backing, owner)
    measured: dict[str, _Measured] = {}
    unsupported: set[str] = set()
    steps = _steps(driver)
    for op, step in steps.items():
        try:
            measured[op] = _measure(driver, step, runs)
        except OSError as exc:
            if exc.errno not in UNSUPPORTED_ERRNOS:
                raise
            unsupported.add(op)
    costs: dict[str, OpCost] = {}
    for op in OPERATIONS:
        if op not in measured:
            continue
        mine = measured[op]
        base = measured.get(steps[op].baseline or "", _Measured(OpCounters(), 0.0))
        rts = max(0.0, (mine.counters.round_trips - base.counters.round_trips) / runs)
        seconds = max(0.0, mine.seconds - base.seconds)
        per_rt = seconds / max(rts, 1.0)
        costs[op] = OpCost(
            round_trips=rts,
            bytes_sent=max(0.0, (mine.counters.bytes_sent - base.counters.bytes_sent) / runs),
            bytes_received=max(
                0.0, (mine.counters.bytes_received - base.counters.bytes_received) / runs
            ),
            connections=max(0.0, (mine.counters.connections - base.counters.connections) / runs),
            service_s=max(per_rt - (network_rtt if rts else 0.0), 1e-6),
        )
    if fresh is not None and "stat" in costs:
        costs["connect"] = _connect_cost(
            fresh, costs["stat"], measured["stat"].seconds, network_rtt, CONNECT_RUNS
        )
    return ProtocolModel(name, origin, costs, frozenset(unsupported & set(OPERATIONS)))


def median_cost(costs: list[OpCost]) -> OpCost:
    """Each field the median over ``costs``: up to half of them can be off without moving it."""
    return OpCost(**{
        f: statistics.median(getattr(c, f) for c in costs) for f in OpCost.__dataclass_fields__
    })  # fmt: skip


def calibrate_repeated(
    driver: Driver, name: str, origin: str, repeat: int = CALIBRATION_REPEATS,
    **options: Any,
) -> tuple[ProtocolModel, dict[str, Spread]]:  # fmt: skip
    """:func:`calibrate_driver` ``repeat`` times; every field of every cost is the median.

    One calibration can catch a transient (a page-cache miss, another process's burst:
    one run measured pwrite at 2489 us where the others saw 169 us); the median of the
    repeats ignores up to half of them being off. An operation is unsupported when most
    repeats found it so.

    Returns:
        The model, and per operation the spread of its service time across the repeats
        (median, quartiles, range, and the repeats that lie outside the fences, named).
    """
    runs = [calibrate_driver(driver, name, origin, **options) for _ in range(repeat)]
    costs: dict[str, OpCost] = {}
    spread: dict[str, Spread] = {}
    for op in sorted({op for run in runs for op in run.costs}):
        seen = [run.costs[op] for run in runs if op in run.costs]
        if 2 * len(seen) <= len(runs) - sum(op in run.unsupported for run in runs):
            continue
        costs[op] = median_cost(seen)
        spread[op] = summarise([c.service_s for c in seen])
    unsupported = frozenset(
        op for op in OPERATIONS if 2 * sum(op in run.unsupported for run in runs) > len(runs)
    )
    return ProtocolModel(name, origin, costs, unsupported), spread


def calibration_metadata(
    repeat: int,
    spreads: dict[str, dict[str, Spread]],
    load_start: Sequence[float] = (),
    agent_path: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """When, where and how the calibration was made: the file's ``_calibration`` entry.

    Args:
        repeat: whole calibrations per server.
        spreads: per server and operation, the service time's spread across the repeats.
        load_start: the load averages (1, 5, 15 minutes) when the calibration began.
        agent_path: the agent's path term (``AgentPath.to_json``), if measured.
    """
    from benchmarks.common import machine_description

    outliers = [
        f"{name} {op}: repeat {i + 1} at {value * 1e6:.0f} us (median {s.median * 1e6:.0f} us)"
        for name, ops in sorted(spreads.items())
        for op, s in sorted(ops.items())
        for i, value in s.outliers
    ]
    document: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_description(),
        "method": (
            f"each operation timed {CALIBRATION_RUNS} times after {CALIBRATION_WARMUP} untimed "
            f"(median); the whole calibration repeated {repeat} times per server and each field "
            "the median of the repeats; spread: quartiles, range, and outliers (beyond 1.5 "
            "interquartile ranges) named by repeat"
        ),
        "repeats": repeat,
        # A busy machine slows every service time: the load says how far to trust them.
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "service_s_spread": {
            name: {op: asdict(r) for op, r in ops.items()} for name, ops in spreads.items()
        },
        "outliers": outliers,
    }
    if agent_path is not None:
        document["agent_path"] = agent_path
    return document


def save_calibration(
    models: dict[str, ProtocolModel], path: Path = CALIBRATION_FILE,
    metadata: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write the measured models (what ``load_models`` reads back), with how they were made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"_calibration": metadata} if metadata else {}
    document |= {
        name: {
            "origin": m.origin,
            "costs": {op: asdict(c) for op, c in m.costs.items()},
            "unsupported": sorted(m.unsupported),
        }
        for name, m in sorted(models.items())
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def load_models(path: Path = CALIBRATION_FILE) -> dict[str, ProtocolModel]:
    """The measured models from the calibration file, plus the seeds' models."""
    models = dict(SEEDS_MODELS)
    if path.exists():
        for name, entry in json.loads(path.read_text()).items():
            if name.startswith("_"):  # the calibration's date, machine and method
                continue
            costs = {op: OpCost(**values) for op, values in entry["costs"].items()}
            unsupported = frozenset(entry.get("unsupported", ()))
            models[name] = ProtocolModel(name, entry["origin"], costs, unsupported)
    return models
