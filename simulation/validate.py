"""``aviary simulate validate``: the model's predictions against real runs at added latency.

Covers: the issue's validation. The Andrew-like stages (under the real agent)
and the Figure 7 operation latencies (the driver alone) are measured against a
real server reached through faultnet's kernel back-end (client, NAT router and
server in private network namespaces, latency added by the relay), at two or
more round-trip times, beside the simpy model's prediction for the same file
count and the same network, with the error of each. Results:
``OUT/validation.md``, ``.csv``, ``.json`` and ``.png``.

Scenario (what the model is given, and from where; nothing is fitted to a
setting's measured times):

1. the network: at each setting a TCP echo through the same relay, before and
   after the runs, measures the round-trip time (the namespaces, the relay and
   its timer add to the nominal latency); their mean is the model's link RTT;
2. the protocol: at RTT 0, ``calibrate_repeated`` measures (the median of repeats) each operation's round
   trips (the driver's counters) and, less the echo's RTT, its service time,
   and what a new connection costs, with the driver in the client namespace;
3. the workload: at RTT 0, after a warm-up run, traced runs of the benchmark
   give each stage's driver operations (the agent's trace records them from
   the drivers' counters; ``condense_trace``); the median stage time less the
   model's remote time is the client's own time (the programs, the agent),
   which does not depend on the network;
4. then each setting, RTT 0 included, is measured afresh and predicted from
   1-3 alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from benchmarks.andrew import TargetRun, agent_prefix, generate_tree, run_stages
from drivers import Driver, Handle, driver_for_scheme, parse_url
from simulation.network import parse_network
from simulation.protocols import (
    CALIBRATION_REPEATS,
    ProtocolModel,
    calibrate_repeated,
    load_models,
)
from simulation.run import simulate_andrew, simulate_operations
from simulation.workloads import STAGES, AndrewStage, condense_trace, remote_time

if TYPE_CHECKING:
    from faultnet.kernel import KernelNet
    from servers import RunningServer

__all__ = [
    "FIGURE7_OPERATIONS",
    "TOLERANCE",
    "EchoServer",
    "ValidationError",
    "ValidationReport",
    "markdown_from_document",
    "parse_rtts",
    "run_validation",
    "write_report",
]

TOLERANCE = 0.15  # the goal: within 15% per stage
MAX_RTT = 0.1  # seconds: the slowest setting accepted (a 60-file run at 100 ms takes ~10 min)
#: The link moves bytes at veth/loopback speed; what a byte costs the server is inside the
#: service time, measured with 8 KB payloads.
LINK_BANDWIDTH = 1e12
PING_COUNT = 30  # echoes per setting
FIGURE7_RUNS = 20  # timed calls per operation and setting
WARMUP = 3  # untimed calls before each timed series
#: Runs at RTT 0 whose median per stage gives the client's time: their noise is in every prediction.
CALIBRATION_REPEAT = 3
SMALL = 8192
#: The Figure 7 columns this validation measures, as the model's operations (op, payload bytes).
FIGURE7_OPERATIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "stat": (("stat", 0),),
    "open/close": (("open", 0), ("close", 0)),
    "read 1B": (("pread", 1),),
    "read 8KB": (("pread", SMALL),),
    "write 8KB": (("pwrite", SMALL),),
}
#: Protocols whose whole conversation is one TCP connection: the relay carries them.
#: FTP's data connections go to ports the relay would have to know in advance.
RELAYED_PROTOCOLS = ("chirp", "sftp", "root", "dav")


class ValidationError(RuntimeError):
    """The validation cannot run or a run failed; the message says which and why."""


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


def _ping(address: tuple[str, int], count: int = PING_COUNT) -> float:
    """Median seconds for 16 bytes to go to the echo and back (after a warm-up)."""
    samples: list[float] = []
    with socket.create_connection(address, timeout=10.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(WARMUP + count):
            began = time.perf_counter()
            sock.sendall(b"p" * 16)
            got = 0
            while got < 16:
                chunk = sock.recv(16 - got)
                if not chunk:
                    raise OSError("the echo through the relay hung up")
                got += len(chunk)
            samples.append(time.perf_counter() - began)
    return statistics.median(samples[WARMUP:])


# -- the settings ----------------------------------------------------------------------------


def parse_rtts(text: str) -> list[float]:
    """``0,2ms,10ms`` -> round-trip times in seconds (0 allowed; at least two, all different).

    Raises:
        ValueError: the message says what is wrong.
    """

    values: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if item in ("0", "0ms", "0us", "0s"):
            values.append(0.0)
            continue
        try:
            values.append(parse_network(item))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    if len(values) < 2 or len(set(values)) != len(values):
        raise ValueError(f"need two or more different round-trip times, not {text!r}")
    if max(values) > MAX_RTT:
        raise ValueError(f"round-trip times above {MAX_RTT * 1e3:.0f} ms take too long to run")
    return sorted(values)


def _label(rtt: float) -> str:
    return "0" if rtt == 0 else f"{rtt * 1e3:g} ms"


# -- the results -------------------------------------------------------------------------------


@dataclass
class Row:
    """One stage or operation at one setting: measured beside predicted."""

    setting: str
    nominal_rtt_ms: float
    network_rtt_ms: float  # what the echo measured through the relay
    kind: str  # "andrew" or "figure7"
    name: str
    measured_s: float
    predicted_s: float
    predicted_nominal_s: float  # the model at the nominal RTT plus the RTT-0 path
    error_pct: float = field(init=False)
    within: bool = field(init=False)
    note: str = ""

    def __post_init__(self) -> None:
        self.error_pct = (self.predicted_s - self.measured_s) / self.measured_s * 100
        self.within = abs(self.error_pct) <= TOLERANCE * 100


@dataclass
class Setting:
    """One round-trip time: what was measured there."""

    nominal_rtt_s: float
    network_rtt_s: float  # the mean of the echoes before and after the runs
    andrew_s: dict[str, float]  # median over the repeats
    andrew_runs_s: dict[str, list[float]]
    same_as_native: dict[str, bool]
    remote_calls: dict[str, int]  # from the run's trace: calls that reached the server
    remote_s: dict[str, float]  # the agent's seconds in them
    figure7_s: dict[str, float]
    #: Per stage and system call (``list/newfstatat``): (calls, the agent's mean seconds in one).
    syscalls: dict[str, tuple[int, float]] = field(default_factory=dict)
    echo_rtts_s: tuple[float, float] = (0.0, 0.0)  # before the Figure 7 calls; after the runs


@dataclass
class ValidationReport:
    protocol: str
    server: str
    files: int
    repeat: int
    base_rtt_s: float  # the echo's RTT through the relay with no added latency
    model: ProtocolModel
    stages: list[AndrewStage]
    calibration_run_s: dict[str, float]
    client_s: dict[str, float]  # per stage: the calibration run less the model's remote time
    settings: list[Setting] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    figure7_runs: int = FIGURE7_RUNS

    @property
    def within(self) -> int:
        return sum(1 for r in self.rows if r.within)


# -- measuring -----------------------------------------------------------------------------


def _server_key(protocol: str) -> str:
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


def _figure7(driver: Driver, runs: int) -> dict[str, float]:
    """Median seconds of each Figure 7 operation through ``driver`` (in the client namespace)."""
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
    medians: dict[str, float] = {}
    try:
        for name, call in calls.items():
            samples = []
            for i in range(WARMUP + runs):
                began = time.perf_counter()
                call()
                if i >= WARMUP:
                    samples.append(time.perf_counter() - began)
            medians[name] = statistics.median(samples)
    finally:
        handles: tuple[Handle, ...] = (one, small, written)
        for handle in handles:
            driver.close(handle)
    return medians


def _andrew(
    source: Path, dest: str, work: Path, prefix: Sequence[str], trace: Path, label: str
) -> TargetRun:
    if trace.exists():
        trace.unlink()
    run = run_stages(source, dest, work, trace=trace, prefix=prefix)
    if run.error is not None:
        raise ValidationError(f"the Andrew-like run at RTT {label} failed: {run.error}")
    return run


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_validation(
    protocol: str = "chirp-aviary",
    rtts: Sequence[float] = (0.0, 0.002, 0.01),
    files: int = 60,
    repeat: int = 1,
    figure7_runs: int = FIGURE7_RUNS,
) -> ValidationReport:
    """Measure and predict every setting (see the module's docstring for the method).

    Args:
        protocol: a measured model's name (its server is used) or a server key.
        rtts: round-trip times to add, in seconds (0: the relay alone).
        files: files in the generated C project.
        repeat: benchmark runs per setting (each stage's median is compared).
        figure7_runs: timed calls per Figure 7 operation and setting.

    Returns:
        The measurements, the predictions and their errors.

    Raises:
        ValidationError: the kernel back-end or the server is unavailable, or a run failed.
    """
    from faultnet.kernel import KernelNet, KernelUnavailable
    from servers import ServerError, running_server

    key = _server_key(protocol)
    reason = KernelNet.missing()
    if reason is not None:
        raise ValidationError(f"the kernel back-end cannot run here: {reason}")
    if files < 1 or repeat < 1 or figure7_runs < 1:
        raise ValidationError("--files, --repeat and the Figure 7 runs must be at least 1")
    try:
        with running_server(key) as server, EchoServer() as echo:
            upstream = (server.host, server.port)
            with KernelNet(upstream, extra_ports=(echo.port,)) as net:
                return _validate(
                    net, server, echo, protocol, key, rtts, files, repeat, figure7_runs
                )
    except (ServerError, KernelUnavailable) as exc:
        raise ValidationError(str(exc)) from None
    except OSError as exc:
        raise ValidationError(f"{key} through the relay: {exc}") from None


def _validate(
    net: KernelNet,
    server: RunningServer,
    echo: EchoServer,
    protocol: str,
    key: str,
    rtts: Sequence[float],
    files: int,
    repeat: int,
    figure7_runs: int,
) -> ValidationReport:
    os.environ.update(server.client_env)  # keys and such, for the agent's driver
    relay = net.address
    echo_address = (relay[0], echo.port)
    location = replace(parse_url(server.url()), host=relay[0], port=relay[1])

    def new_driver() -> Driver:  # called in the client namespace: its sockets are made there
        return driver_for_scheme(location.scheme).from_location(location, timeout=60.0)

    driver: Driver = net.in_client(new_driver)
    prefix = net.client_command([])
    net.in_client(lambda: driver.mkdir("/andrew"))  # the benchmark's own directory
    dest = agent_prefix(server, relay) + "/andrew"
    try:
        with tempfile.TemporaryDirectory(prefix="aviary-validate-") as tmp:
            work = Path(tmp)
            source = work / "src"
            generate_tree(source, files)
            work.chmod(0o755)
            native_dir = work / "native"
            native_dir.mkdir()
            native = run_stages(source, str(native_dir), work, agent=False)
            if native.error is not None:
                raise ValidationError(f"the native run failed: {native.error}")

            # 1-3: the network, the protocol and the workload, at RTT 0.
            net.delay(0.0)
            base = net.in_client(lambda: _ping(echo_address))
            _say(
                f"validate: relay RTT {base * 1e6:.0f} us; calibrating {key} in the client namespace"
            )
            name = protocol if "/" not in protocol else key
            model = net.in_client(
                lambda: calibrate_repeated(
                    driver,
                    name,
                    f"measured here: {key}",
                    CALIBRATION_REPEATS,
                    network_rtt=base,
                    fresh=new_driver,
                )[0]
            )
            trace = work / "trace.jsonl"
            # A first run warms what a first run pays for (imports, page cache); it is not used.
            _andrew(source, dest, work, prefix, trace, "0 (warm-up)")
            calibration: dict[str, list[float]] = {s: [] for s in STAGES}
            for _ in range(max(repeat, CALIBRATION_REPEAT)):
                run = _andrew(source, dest, work, prefix, trace, "0 (calibration)")
                for result in run.stages:
                    calibration[result.stage].append(result.seconds)
            stages = condense_trace(trace, trace.with_suffix(".stamps"))
            remote0 = simulate_andrew(model, stages, base, bandwidth=LINK_BANDWIDTH)
            if remote0.failed:
                raise ValidationError(f"the model cannot replay the trace: {remote0.failed}")
            calibration_s = {s: statistics.median(v) for s, v in calibration.items()}
            client_s = {s: calibration_s[s] - remote0.stage_seconds[s][0] for s in STAGES}
            report = ValidationReport(
                protocol, key, files, repeat, base, model, stages, calibration_s, client_s,
                figure7_runs=figure7_runs,
            )  # fmt: skip

            # 4: each setting, measured afresh and predicted.
            for rtt in rtts:
                label = _label(rtt)
                net.delay(rtt / 2)  # one way, each direction
                network = net.in_client(lambda: _ping(echo_address))
                _say(f"validate: RTT {label}: echo {network * 1e3:.2f} ms; Figure 7 operations")
                figure7 = net.in_client(lambda: _figure7(driver, figure7_runs))
                runs: dict[str, list[float]] = {s: [] for s in STAGES}
                same = dict.fromkeys(STAGES, True)
                for i in range(repeat):
                    _say(f"validate: RTT {label}: Andrew-like run {i + 1} of {repeat}")
                    run = _andrew(source, dest, work, prefix, trace, label)
                    for result in run.stages:
                        runs[result.stage].append(result.seconds)
                        if run.outputs.get(result.stage) != native.outputs.get(result.stage):
                            same[result.stage] = False
                after = net.in_client(lambda: _ping(echo_address))
                remote = remote_time(trace, trace.with_suffix(".stamps"))
                per_call = remote_time(trace, trace.with_suffix(".stamps"), by="stage/syscall")
                setting = Setting(
                    rtt,
                    (network + after) / 2,
                    {s: statistics.median(v) for s, v in runs.items()},
                    runs,
                    same,
                    {s: remote[s][0] for s in STAGES},
                    {s: remote[s][1] for s in STAGES},
                    figure7,
                    {name: (n, seconds / n) for name, (n, seconds) in sorted(per_call.items())},
                    (network, after),
                )
                report.settings.append(setting)
                report.rows += _predict(report, setting)
            return report
    finally:
        net.in_client(driver.close_driver)


def _predict(report: ValidationReport, setting: Setting) -> list[Row]:
    """The model's prediction of every stage and operation at ``setting``, beside the measurement."""
    model, label = report.model, _label(setting.nominal_rtt_s)
    nominal = setting.nominal_rtt_s + report.base_rtt_s
    at_network = simulate_andrew(
        model,
        report.stages,
        setting.network_rtt_s,
        bandwidth=LINK_BANDWIDTH,
        client_seconds=report.client_s,
    )
    at_nominal = simulate_andrew(
        model, report.stages, nominal, bandwidth=LINK_BANDWIDTH, client_seconds=report.client_s
    )
    rows: list[Row] = []
    for stage in STAGES:
        note = "" if setting.same_as_native[stage] else "output differs from native"
        rows.append(
            Row(
                label,
                setting.nominal_rtt_s * 1e3,
                setting.network_rtt_s * 1e3,
                "andrew",
                stage,
                setting.andrew_s[stage],
                at_network.stage_seconds[stage][0],
                at_nominal.stage_seconds[stage][0],
                note,
            )
        )
    for name, operations in FIGURE7_OPERATIONS.items():
        predicted = simulate_operations(model, operations, setting.network_rtt_s, LINK_BANDWIDTH)
        predicted_nominal = simulate_operations(model, operations, nominal, LINK_BANDWIDTH)
        rows.append(
            Row(
                label,
                setting.nominal_rtt_s * 1e3,
                setting.network_rtt_s * 1e3,
                "figure7",
                name,
                setting.figure7_s[name],
                predicted,
                predicted_nominal,
            )
        )
    return rows


# -- writing -------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.1 else f"{value * 1e3:.2f} ms"


def _summary(report: ValidationReport) -> str:
    """The verdict and the main table (what the command prints)."""
    worst = max(report.rows, key=lambda r: abs(r.error_pct))
    lines = [
        f"**{report.within} of {len(report.rows)}** stages and operations are within "
        f"{TOLERANCE:.0%}; the largest error is {worst.error_pct:+.1f}% "
        f"({worst.kind} {worst.name} at RTT {worst.setting}).",
        "",
        "| RTT asked | RTT echo | kind | stage / operation | measured | predicted | error | "
        f"within {TOLERANCE:.0%} | predicted (nominal) | error (nominal) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        nominal_error = (r.predicted_nominal_s - r.measured_s) / r.measured_s * 100
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.setting} | {r.network_rtt_ms:.2f} ms | {r.kind} | {r.name}{note} | "
            f"{_seconds(r.measured_s)} | {_seconds(r.predicted_s)} | {r.error_pct:+.1f}% | "
            f"{'yes' if r.within else 'no'} | {_seconds(r.predicted_nominal_s)} | "
            f"{nominal_error:+.1f}% |"
        )
    return "\n".join(lines)


def _markdown(report: ValidationReport) -> str:
    lines = [
        f"# Validation: the simulation against real runs ({report.server})",
        "",
        f"The Andrew-like benchmark ({report.files} files, {report.repeat} run(s) per setting, "
        "median per stage) under `aviary run`, and the Figure 7 operations through the driver "
        f"(median of {report.figure7_runs} calls), with the client in faultnet's kernel back-end "
        "(private network namespaces, a conntrack NAT, latency added by the relay), against "
        "the simpy model's prediction for the same settings.",
        "",
        "What the model is given: each setting's network RTT, measured by a TCP echo through the "
        "same relay before and after the runs (mean; "
        f"{report.base_rtt_s * 1e6:.0f} us with no added latency); the protocol's round trips, "
        "service times and connection cost, measured with the driver at RTT 0; each stage's "
        "driver operations, from the agent's trace of the RTT-0 calibration runs; and each "
        f"stage's client time (programs and agent: the median of {CALIBRATION_REPEAT} RTT-0 "
        "calibration runs less the model's remote time). Each setting, RTT 0 included, is then "
        "a fresh run that the model did not see. `nominal` is the model at the asked RTT plus "
        "the relay's RTT-0 path, without the echo.",
        "",
        "Where the testbed and the model differ by construction: the relay delays data, not the "
        "TCP handshake (the server namespace's kernel answers the SYN), while the model counts "
        "one round trip for it, once per run (in the copy stage); the relay's timer (asyncio on "
        "epoll: 1 ms resolution, rounded up) holds data longer than asked, which the echo sees "
        "and the `nominal` columns do not; the client's time is taken from RTT 0 and assumed "
        "not to depend on the network.",
        "",
        _summary(report),
        "",
        "Per stage, the remote operations the model replays (from the RTT-0 trace), the client "
        "time it adds, and what each run's trace says reached the server (calls; the agent's "
        "seconds in them):",
        "",
        "| stage | operations | client time | "
        + " | ".join(f"RTT {_label(s.nominal_rtt_s)}" for s in report.settings)
        + " |",
        "|---|---|---|" + "---|" * len(report.settings),
    ]
    for stage in report.stages:
        ops = ", ".join(f"{op} {n}" for op, n in sorted(stage.operations.items()))
        cells = [
            f"{s.remote_calls[stage.name]} calls; {_seconds(s.remote_s[stage.name])}"
            for s in report.settings
        ]
        lines.append(
            f"| {stage.name} | {ops} | {_seconds(report.client_s[stage.name])} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Round trips per operation (the driver's counters) and service time, measured at RTT 0 "
        "through the relay:",
        "",
        "| operation | round trips | service |",
        "|---|---|---|",
    ]
    for op, cost in report.model.costs.items():
        lines.append(f"| {op} | {cost.round_trips:.2f} | {cost.service_s * 1e6:.0f} us |")
    return "\n".join(lines) + "\n"


def _document(report: ValidationReport) -> dict[str, Any]:
    from benchmarks.common import machine_description

    return {
        "benchmark": "validation",
        "protocol": report.protocol,
        "server": report.server,
        "files": report.files,
        "repeat": report.repeat,
        "figure7_runs": report.figure7_runs,
        "tolerance": TOLERANCE,
        "machine": machine_description(),
        "base_rtt_s": report.base_rtt_s,
        "model": {
            "origin": report.model.origin,
            "costs": {op: asdict(c) for op, c in report.model.costs.items()},
            "unsupported": sorted(report.model.unsupported),
        },
        "stages": [asdict(s) for s in report.stages],
        "calibration_run_s": report.calibration_run_s,
        "client_s": report.client_s,
        "settings": [asdict(s) for s in report.settings],
        "rows": [asdict(r) for r in report.rows],
        "within": report.within,
    }


def _plot(report: ValidationReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, kind, unit, scale in ((axes[0], "andrew", "s", 1.0), (axes[1], "figure7", "ms", 1e3)):
        names = list(dict.fromkeys(r.name for r in report.rows if r.kind == kind))
        for i, name in enumerate(names):
            rows = [r for r in report.rows if r.kind == kind and r.name == name]
            x = [r.network_rtt_ms for r in rows]
            colour = f"C{i}"
            axis.plot(
                x, [r.measured_s * scale for r in rows], "o", color=colour, label=f"{name} measured"
            )
            axis.plot(
                x,
                [r.predicted_s * scale for r in rows],
                "-",
                color=colour,
                label=f"{name} predicted",
            )
        axis.set_xlabel("network RTT (ms, measured by echo)")
        axis.set_ylabel(unit)
        axis.set_yscale("log")
        axis.set_title("Andrew-like stages" if kind == "andrew" else "Figure 7 operations")
        axis.legend(fontsize=7, ncol=2)
    figure.suptitle(f"{report.server}: measured (points) vs simulated (lines)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def markdown_from_document(document: dict[str, Any]) -> str:
    """The verdict and the table of a written ``validation.json`` (for ``aviary report``)."""
    rows = document["rows"]
    worst = max(rows, key=lambda r: abs(r["error_pct"]))
    lines = [
        f"{document['server']}, {document['files']} files; the model's inputs are measured at RTT 0 "
        "and by an echo through the relay at each setting (see validation.md for the method).",
        "",
        f"**{document['within']} of {len(rows)}** stages and operations are within "
        f"{document['tolerance']:.0%}; the largest error is {worst['error_pct']:+.1f}% "
        f"({worst['kind']} {worst['name']} at RTT {worst['setting']}).",
        "",
        "| RTT asked | RTT echo | kind | stage / operation | measured | predicted | error | within |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['network_rtt_ms']:.2f} ms | {r['kind']} | {r['name']} | "
            f"{_seconds(r['measured_s'])} | {_seconds(r['predicted_s'])} | "
            f"{r['error_pct']:+.1f}% | {'yes' if r['within'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: ValidationReport, out: Path) -> list[Path]:
    """Write ``validation.md``, ``.csv``, ``.json`` and ``.png`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"validation.{ext}" for ext in ("md", "csv", "json", "png")]
    paths[0].write_text(_markdown(report))
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(report.rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in report.rows)
    paths[2].write_text(json.dumps(_document(report), indent=2, default=str) + "\n")
    _plot(report, paths[3])
    return paths


def run_validate_command(protocol: str, rtts_text: str, files: int, repeat: int, out: Path) -> int:
    """``aviary simulate validate``: 0 if every row is within the tolerance, 1 if not, 2 if it cannot run."""
    try:
        rtts = parse_rtts(rtts_text)
    except ValueError as exc:
        print(f"aviary: simulate validate: --rtt: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_validation(protocol, rtts, files, repeat)
    except ValidationError as exc:
        print(f"aviary: simulate validate: {exc}", file=sys.stderr)
        return 2
    paths = write_report(report, out)
    print(_summary(report))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0 if report.within == len(report.rows) else 1
