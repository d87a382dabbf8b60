"""``aviary simulate validate``: the model's predictions against real runs at added latency.

Covers: the Andrew-like stages (under the real agent) and the Figure 7
operation latencies (the driver alone), measured against a real server reached
through faultnet's kernel back-end (client, NAT router and server in private
network namespaces, latency added by the relay), at two or more round-trip
times, beside the simpy model's prediction for the same file count and the
same network, with the error of each. Results: ``OUT/validation.md``,
``.csv``, ``.json`` and ``.png``.

Scenario (what the model is given, and from where; nothing is fitted to a
measured run's times). The machine may be shared and loaded, so calibration
and measurement are interleaved: a calibration at RTT 0 comes first and after
every measured run, and each run is predicted from the two either side of it.

1. a calibration, at RTT 0: a TCP echo through the relay (median); the
   driver's operations, each timed in a loop (``calibrate_driver``): round
   trips from its counters and, less the echo, service time, and what a new
   connection costs; then a traced Andrew-like run, with echoes just before
   and after it: the trace gives each stage's driver operations
   (``condense_trace``), and the stage time less the model's remote time at
   the echoes' mean is the client's own time (the programs, the agent);
2. a measured run at one RTT: the Figure 7 calls, alternating in blocks with
   the same calls at RTT 0 (their calibration, within a second of them), with
   echoes before and after; then the Andrew-like run, with echoes just before
   and after it;
3. the prediction of that run: the model given the two calibrations either
   side (their mean), at the RTT the echoes measured: for a stage, a sum of
   many round trips, their mean (late round trips included); for a Figure 7
   operation, the median of a sum of as many echoes as it has round trips
   (``link_time``);
4. 2-3 repeated ``repeat`` times per setting; each row compares the median of
   the measured runs with the median of their predictions, with the spread.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.andrew import agent_prefix, generate_tree, run_stages
from drivers import Driver, driver_for_scheme, parse_url
from simulation.agent_path import (
    CALIBRATION_PAIRS,
    CALIBRATION_RTTS,
    PROBE_CALLS,
    fit_path,
    measure_pairs,
    probe_once,
    recorded_path,
)
from simulation.calibration_record import calibration_status
from simulation.protocols import CALIBRATION_FILE, ProtocolModel, calibrate_driver, median_cost
from simulation.validate_measure import (
    EchoServer,
    andrew_run,
    measure_figure7,
    ping_samples,
    say,
    server_key,
)
from simulation.validate_predict import client_seconds, combine, predict
from simulation.validate_render import markdown_from_document, summary, write_report
from simulation.validate_results import (
    FIGURE7_OPERATIONS,
    FIGURE7_RUNS,
    REPEAT,
    TOLERANCE,
    Calibration,
    Row,
    Setting,
    ValidationError,
    ValidationReport,
    parse_rtts,
    rtt_label,
)
from simulation.workloads import STAGES, condense_trace, remote_time, traced_round_trips

PATH_SERVER = "chirp/aviary"  # the server ``aviary simulate calibrate`` probes the agent's path on

if TYPE_CHECKING:
    from faultnet.kernel import KernelNet
    from servers import RunningServer

__all__ = [
    "FIGURE7_OPERATIONS",
    "PATH_SERVER",
    "TOLERANCE",
    "EchoServer",
    "ValidationError",
    "ValidationReport",
    "markdown_from_document",
    "measure_agent_path",
    "parse_rtts",
    "run_validation",
    "write_report",
]


def run_validation(
    protocol: str = "chirp-aviary",
    rtts: Sequence[float] = (0.002, 0.01),
    files: int = 60,
    repeat: int = REPEAT,
    figure7_runs: int = FIGURE7_RUNS,
) -> ValidationReport:
    """Measure and predict every setting (see the module's docstring for the method).

    Args:
        protocol: a measured model's name (its server is used) or a server key.
        rtts: round-trip times to add, in seconds (0: the relay alone).
        files: files in the generated C project.
        repeat: measured runs per setting, each between two calibrations.
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
    except ValidationError:
        raise
    except (ServerError, KernelUnavailable, RuntimeError) as exc:  # a probe that failed, too
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
    name = protocol if "/" not in protocol else key
    load_start = os.getloadavg()[0]

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
            trace = work / "trace.jsonl"
            stamps = trace.with_suffix(".stamps")

            def calibrate(index: int) -> Calibration:
                net.delay(0.0)
                base_samples = net.in_client(lambda: ping_samples(echo_address))
                base = statistics.median(base_samples)
                say(f"validate: calibration {index + 1}: relay RTT {base * 1e6:.0f} us")
                model = net.in_client(
                    lambda: calibrate_driver(
                        driver, name, f"measured here: {key}", network_rtt=base, fresh=new_driver
                    )
                )
                run = andrew_run(source, dest, work, prefix, trace, "0 (calibration)")
                # A stage is a sum of many round trips: it pays their mean, late ones included.
                run_rtt = statistics.fmean(
                    net.in_client(lambda: ping_samples(echo_address)) + base_samples
                )
                stages = condense_trace(trace, stamps)
                run_s = {result.stage: result.seconds for result in run.stages}
                try:
                    client = client_seconds(model, stages, run_s, run_rtt)
                except ValueError as exc:
                    raise ValidationError(str(exc)) from None
                return Calibration(
                    index, base, run_rtt, os.getloadavg()[0], model, stages, run_s, client,
                    traced_round_trips(trace, stamps),
                )  # fmt: skip

            # A first run warms what a first run pays for (imports, page cache); it is not used.
            andrew_run(source, dest, work, prefix, trace, "0 (warm-up)")
            calibrations = [calibrate(0)]
            settings: list[Setting] = []
            predictions: list[list[Row]] = []
            for repetition in range(repeat):
                for rtt in rtts:
                    label = rtt_label(rtt)
                    load = os.getloadavg()[0]
                    net.delay(rtt / 2)  # one way, each direction
                    say(
                        f"validate: RTT {label} ({repetition + 1} of {repeat}): Figure 7 operations"
                    )

                    def latency(on: bool, rtt: float = rtt) -> None:
                        net.delay(rtt / 2 if on else 0.0)

                    figure7, figure7_base, echoes = net.in_client(
                        lambda: measure_figure7(driver, figure7_runs, latency, echo_address)
                    )
                    path = None
                    if rtt > 0:
                        say(f"validate: RTT {label} ({repetition + 1} of {repeat}): agent's path")
                        path = measure_pairs(
                            rtt,
                            lambda r: net.delay(r / 2),
                            lambda: net.in_client(lambda: ping_samples(echo_address)),
                            lambda: probe_once(prefix, dest, work / "probe.jsonl"),
                        )
                    after = net.in_client(lambda: ping_samples(echo_address))
                    say(f"validate: RTT {label} ({repetition + 1} of {repeat}): Andrew-like run")
                    run = andrew_run(source, dest, work, prefix, trace, label)
                    run_rtt = statistics.fmean(
                        net.in_client(lambda: ping_samples(echo_address)) + after
                    )
                    remote = remote_time(trace, stamps)
                    per_call = remote_time(trace, stamps, by="stage/syscall")
                    setting = Setting(
                        rtt,
                        repetition,
                        statistics.median(echoes[True]),
                        run_rtt,
                        {result.stage: result.seconds for result in run.stages},
                        {
                            r.stage: run.outputs.get(r.stage) == native.outputs.get(r.stage)
                            for r in run.stages
                        },
                        {s: remote[s][0] for s in STAGES},
                        {s: remote[s][1] for s in STAGES},
                        traced_round_trips(trace, stamps),
                        figure7,
                        figure7_base,
                        statistics.median(echoes[False]),
                        (len(calibrations) - 1, len(calibrations)),
                        (load, os.getloadavg()[0]),
                        {name: (n, seconds / n) for name, (n, seconds) in sorted(per_call.items())},
                        echoes[True],
                        echoes[False],
                        path,
                    )
                    calibrations.append(calibrate(len(calibrations)))
                    settings.append(setting)
                    predictions.append(predict(calibrations[-2], calibrations[-1], setting))
            return _report(
                protocol, key, files, repeat, figure7_runs, calibrations, settings, predictions,
                load_start,
            )  # fmt: skip
    finally:
        net.in_client(driver.close_driver)


def _median_model(calibrations: Sequence[Calibration]) -> ProtocolModel:
    """Each cost the median over the calibrations (what the report shows)."""
    first = calibrations[0].model
    costs = {
        op: median_cost([c.model.costs[op] for c in calibrations if op in c.model.costs])
        for op in first.costs
    }
    return ProtocolModel(first.name, first.origin, costs, first.unsupported)


def _report(
    protocol: str,
    key: str,
    files: int,
    repeat: int,
    figure7_runs: int,
    calibrations: list[Calibration],
    settings: list[Setting],
    predictions: list[list[Row]],
    load_start: float,
) -> ValidationReport:
    def median_of(field: str) -> dict[str, float]:
        return {s: statistics.median(getattr(c, field)[s] for c in calibrations) for s in STAGES}

    report = ValidationReport(
        protocol, key, files, repeat,
        statistics.median(c.echo_rtt_s for c in calibrations),
        _median_model(calibrations),
        calibrations[0].stages,
        median_of("run_s"),
        median_of("client_s"),
        calibrations, settings,
        combine(predictions),
        figure7_runs, load_start, os.getloadavg()[0],
    )  # fmt: skip
    points = [s.agent_path for s in settings if s.agent_path is not None]
    report.agent_path = fit_path(points) if points else None
    report.recorded_agent_path = recorded_path()
    report.calibration_problems = calibration_status(CALIBRATION_FILE)
    return report


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


def measure_agent_path(
    rtts: Sequence[float] = CALIBRATION_RTTS, pairs: int = CALIBRATION_PAIRS
) -> dict[str, Any]:
    """The path term, measured through faultnet's relay against ``PATH_SERVER``.

    Returns:
        The calibration file's ``agent_path`` entry: the server, the method and the fit
        (``AgentPath.to_json``), with every point's spread.

    Raises:
        RuntimeError: the kernel back-end or the server is unavailable, or a probe failed.
    """
    from faultnet.kernel import KernelNet, KernelUnavailable
    from servers import ServerError, running_server

    reason = KernelNet.missing()
    if reason is not None:
        raise RuntimeError(f"the kernel back-end cannot run here: {reason}")
    try:
        with (
            running_server(PATH_SERVER) as server,
            EchoServer() as echo,
            KernelNet((server.host, server.port), extra_ports=(echo.port,)) as net,
        ):
            os.environ.update(server.client_env)
            relay = net.address
            location = replace(parse_url(server.url()), host=relay[0], port=relay[1])
            driver = net.in_client(
                lambda: driver_for_scheme(location.scheme).from_location(location, timeout=60.0)
            )
            try:
                net.in_client(lambda: driver.mkdir("/probe"))
            finally:
                net.in_client(driver.close_driver)
            target = agent_prefix(server, relay) + "/probe"
            prefix = net.client_command([])
            echo_at = (relay[0], echo.port)
            with tempfile.TemporaryDirectory(prefix="aviary-path-") as tmp:
                trace = Path(tmp) / "probe.jsonl"
                points = [
                    measure_pairs(
                        rtt,
                        lambda r: net.delay(r / 2),
                        lambda: net.in_client(lambda: ping_samples(echo_at)),
                        lambda: probe_once(prefix, target, trace),
                        pairs,
                    )
                    for rtt in rtts
                ]
    except (ServerError, KernelUnavailable, OSError) as exc:
        raise RuntimeError(f"{PATH_SERVER} through the relay: {exc}") from None
    return {
        "server": PATH_SERVER,
        "method": (
            f"a program stats a remote path {PROBE_CALLS} times under aviary run, at RTT 0 and "
            f"at each delay in {pairs} alternating pairs, each run between two echoes through "
            "the relay; per pair, the mean per round trip at the delay less at 0, less the "
            "echo's mean at the delay less at 0; the median per delay, and a least-squares "
            "line through the medians"
        ),
        "fit": fit_path(points).to_json(),
    }
