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

import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.andrew import agent_prefix, generate_tree, run_stages
from drivers import Driver, driver_for_scheme, parse_url
from simulation.protocols import CALIBRATION_REPEATS, calibrate_repeated
from simulation.run import simulate_andrew, simulate_operations
from simulation.validate_measure import (
    EchoServer,
    andrew_run,
    measure_figure7,
    ping,
    say,
    server_key,
)
from simulation.validate_render import markdown_from_document, summary, write_report
from simulation.validate_results import (
    CALIBRATION_REPEAT,
    FIGURE7_OPERATIONS,
    FIGURE7_RUNS,
    LINK_BANDWIDTH,
    TOLERANCE,
    Row,
    Setting,
    ValidationError,
    ValidationReport,
    parse_rtts,
    rtt_label,
)
from simulation.workloads import STAGES, condense_trace, remote_time

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

    key = server_key(protocol)
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
            base = net.in_client(lambda: ping(echo_address))
            say(
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
            andrew_run(source, dest, work, prefix, trace, "0 (warm-up)")
            calibration: dict[str, list[float]] = {s: [] for s in STAGES}
            for _ in range(max(repeat, CALIBRATION_REPEAT)):
                run = andrew_run(source, dest, work, prefix, trace, "0 (calibration)")
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
                label = rtt_label(rtt)
                net.delay(rtt / 2)  # one way, each direction
                network = net.in_client(lambda: ping(echo_address))
                say(f"validate: RTT {label}: echo {network * 1e3:.2f} ms; Figure 7 operations")
                figure7 = net.in_client(lambda: measure_figure7(driver, figure7_runs))
                runs: dict[str, list[float]] = {s: [] for s in STAGES}
                same = dict.fromkeys(STAGES, True)
                for i in range(repeat):
                    say(f"validate: RTT {label}: Andrew-like run {i + 1} of {repeat}")
                    run = andrew_run(source, dest, work, prefix, trace, label)
                    for result in run.stages:
                        runs[result.stage].append(result.seconds)
                        if run.outputs.get(result.stage) != native.outputs.get(result.stage):
                            same[result.stage] = False
                after = net.in_client(lambda: ping(echo_address))
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
    model, label = report.model, rtt_label(setting.nominal_rtt_s)
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
    print(summary(report))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0 if report.within == len(report.rows) else 1
