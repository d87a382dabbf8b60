"""``aviary simulate andrew|sp5|sweep|calibrate|validate``: the models from the command line.

Every run prints a table and writes CSV and JSON under ``--out`` (default
``reports/sim``); protocols whose numbers come from the seeds rather than
from a measured driver say so in every row.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from simulation.distributed import IN_PROCESS, LOCAL_CLUSTER_WORKERS
from simulation.model import LAN_RTT
from simulation.network import parse_network
from simulation.protocols import ProtocolModel, load_models
from simulation.run import simulate_andrew
from simulation.workloads import STAGES, Sp5Job, load_andrew

__all__ = ["add_simulate_parser", "parse_network", "run_simulate"]

MAX_WORKERS = 1_000_000  # the fleet engine runs a million workers in minutes


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"workers must be 1 to {MAX_WORKERS}, not {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = sub.add_parser(
        "simulate", help="calibrated simpy models of the Andrew-like and SP5 workloads"
    )
    kinds = simulate.add_subparsers(dest="sim_kind", required=True, metavar="WORKLOAD")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--network", type=parse_network, default=LAN_RTT, help="lan, wan or an RTT like 50ms"
    )
    common.add_argument(
        "--workers", type=_workers, default=1, help=f"clients sharing one server (1-{MAX_WORKERS})"
    )
    common.add_argument(
        "--out", type=Path, default=Path("reports/sim"), help="where CSV and JSON go"
    )
    andrew = kinds.add_parser(
        "andrew", parents=[common], help="replay the recorded Andrew-like trace"
    )
    andrew.add_argument("--protocol", default="all", help="a protocol model, or all (default)")
    sp5 = kinds.add_parser(
        "sp5", parents=[common], help="SP5: initialisation, then CPU-bound events"
    )
    sp5.add_argument("--protocol", default="chirp", help="a protocol model (default chirp)")
    sp5.add_argument("--events", type=_positive, default=Sp5Job.events, help="events per worker")
    sp5.add_argument(
        "--nat-timeout", type=float, help="seconds a NAT keeps an idle connection (default: no NAT)"
    )
    sp5.add_argument(
        "--client-timeout", type=float, default=30.0, help="seconds before a client gives up"
    )
    sp5.add_argument(
        "--no-recovery", action="store_true", help="a dropped connection ends the worker"
    )
    sp5.add_argument(
        "--ghz", type=float, default=1.0, help="the nodes' clock (the seeds: 1 or 2.5)"
    )
    sp5.add_argument(
        "--engine",
        choices=("auto", "fleet", "simpy"),
        default="auto",
        help="fleet (fast, default where the protocol allows) or simpy (one process per worker)",
    )
    sp5.add_argument(
        "--scheduler",
        default=IN_PROCESS,
        help="run as a task on this Dask scheduler's address (default: here; 'cluster': a "
        "LocalCluster)",
    )
    calibrate = kinds.add_parser(
        "calibrate", help="measure the real drivers and record the Andrew-like trace"
    )
    calibrate.add_argument(
        "--files", type=_positive, default=60, help="files in the recorded Andrew-like tree"
    )
    calibrate.add_argument(
        "--repeat",
        type=_positive,
        default=5,
        help="calibrations per server; each cost is the median of the repeats",
    )
    validate = kinds.add_parser(
        "validate",
        help="measure the Andrew-like stages and Figure 7 at added latency; compare with the model",
    )
    validate.add_argument(
        "--protocol",
        default="chirp-aviary",
        help="a measured model (its server) or a server key (default chirp-aviary; through the "
        "relay, cctools' chirp_server, model chirp, waits ~40 ms for a delayed ACK on most requests)",
    )
    validate.add_argument(
        "--rtt",
        default="2ms,10ms",
        help="round-trip times to add, e.g. 2ms,10ms (0: none; at 0 a row compares RTT 0 with "
        "its own calibration at RTT 0)",
    )
    validate.add_argument(
        "--files", type=_positive, default=60, help="files in the generated C project"
    )
    validate.add_argument(
        "--repeat",
        type=_positive,
        default=5,
        help="measured runs per setting, each between two calibrations at RTT 0 (median)",
    )
    validate.add_argument(
        "--out", type=Path, default=Path("reports"), help="where validation.{md,csv,json,png} go"
    )
    sweep_parser = kinds.add_parser(
        "sweep", parents=[common], help="SP5 throughput against worker count (on Dask)"
    )
    sweep_parser.add_argument(
        "--protocol", default="chirp", help="a protocol model (default chirp)"
    )
    sweep_parser.add_argument("--points", default="1,10,100,1000,10000", help="worker counts")
    sweep_parser.add_argument("--events", type=_positive, default=20, help="events per worker")
    sweep_parser.add_argument(
        "--scheduler",
        default=None,
        help="a Dask scheduler's address (tcp://host:8786); default: a LocalCluster; "
        "'local': no Dask, in this process",
    )
    sweep_parser.add_argument(
        "--cluster-workers",
        type=_positive,
        default=LOCAL_CLUSTER_WORKERS,
        help="processes of the default LocalCluster",
    )
    sweep_parser.add_argument("--seed", type=int, default=1, help="seed of the event sizes")
    kinds.add_parser("figure10", help="Figure 10 from first principles beside the seeds' numbers")


def _model(name: str) -> ProtocolModel:
    models = load_models()
    if name not in models:
        raise SystemExit(
            f"aviary: simulate: unknown protocol {name!r}; known: {', '.join(sorted(models))}"
        )
    return models[name]


def _write(out: Path, stem: str, rows: list[dict[str, object]], document: object) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    if rows:
        with (out / f"{stem}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _run_andrew(args: argparse.Namespace) -> int:
    stages, source = load_andrew()
    models = load_models()
    names = sorted(models) if args.protocol == "all" else [args.protocol]
    rows: list[dict[str, object]] = []
    print(
        f"Andrew-like replay of {source}; RTT {args.network * 1e6:.0f} us, {args.workers} worker(s); median s"
    )
    print(f"{'protocol':<14}" + "".join(f"{s:>10}" for s in STAGES) + "  origin")
    for name in names:
        model = _model(name)
        result = simulate_andrew(model, stages, args.network, args.workers)
        summary = result.stage_summary()
        row: dict[str, object] = {"protocol": name, "origin": result.origin}
        cells = []
        for stage in STAGES:
            if stage in result.failed:
                cells.append(f"{'n/a':>10}")
                row[stage] = f"failed: {result.failed[stage]}"
            else:
                cells.append(f"{summary[stage]['p50']:>10.3f}")
                row[stage] = summary[stage]["p50"]
        rows.append(row)
        print(f"{name:<14}" + "".join(cells) + f"  {result.origin}")
        for stage, why in result.failed.items():
            print(f"{'':<14}{stage}: {why}")
    _write(args.out, "andrew", rows, rows)
    return 0


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _run_sp5(args: argparse.Namespace) -> int:
    from functools import partial

    from simulation.distributed import run_sp5, submit_sp5

    model = _model(args.protocol)
    job = Sp5Job(events=args.events, cpu_ghz=args.ghz)
    call = partial(run_sp5, model, job, args.network, args.workers, args.nat_timeout,
                   not args.no_recovery, args.client_timeout, engine=args.engine)  # fmt: skip
    try:
        if args.scheduler == IN_PROCESS:
            result = call()
        else:
            result = submit_sp5(None if args.scheduler == "cluster" else args.scheduler, call)
    except ValueError as exc:
        raise SystemExit(f"aviary: simulate sp5: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"aviary: simulate sp5: Dask scheduler {args.scheduler}: {exc}") from None
    init, event = _mean(result.init_seconds), _mean(result.event_seconds)
    print(
        f"SP5 on {args.protocol} ({model.origin}), RTT {args.network * 1e6:.0f} us, "
        f"{args.workers} worker(s) at {args.ghz} GHz"
    )
    print(
        f"  initialisation mean {_cell(init, 0)} s; per event mean {_cell(event, 1)} s; "
        f"events done {result.completed_events}"
    )
    print(
        f"  reconnects {result.reconnects}; failures {len(result.failures)}; "
        f"server busy {result.server_utilisation:.0%}"
    )
    for failure in result.failures[:5]:
        print(f"  failed {failure}")
    row = {"protocol": args.protocol, "rtt_s": args.network, "workers": args.workers, "init_mean_s": init,
           "event_mean_s": event, "events_done": result.completed_events, "failures": len(result.failures),
           "reconnects": result.reconnects, "server_utilisation": result.server_utilisation}  # fmt: skip
    _write(args.out, "sp5", [row], {**row, "failures_detail": result.failures[:100]})
    return 0 if not result.failures else 1


def _run_sweep(args: argparse.Namespace) -> int:
    from simulation.distributed import sweep
    from simulation.run import saturation_point

    model = _model(args.protocol)
    try:
        points = [_workers(p) for p in args.points.split(",") if p.strip()]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise SystemExit(f"aviary: simulate sweep: --points: {exc}") from None
    try:
        curve = sweep(model, Sp5Job(events=args.events), args.network, points, args.scheduler,
                      cluster_workers=args.cluster_workers, seed=args.seed)  # fmt: skip
    except (OSError, RuntimeError) as exc:
        where = args.scheduler or "a LocalCluster"
        raise SystemExit(f"aviary: simulate sweep: Dask on {where}: {exc}") from None
    print(f"{'workers':>8} {'events/hour':>12} {'init mean s':>12}")
    rows: list[dict[str, object]] = []
    for point in curve:
        print(f"{point.workers:>8} {point.events_per_hour:>12.0f} {point.init_mean_s:>12.0f}")
        rows.append({"workers": point.workers, "events_per_hour": point.events_per_hour,
                     "init_mean_s": point.init_mean_s})  # fmt: skip
    saturated = saturation_point([(p.workers, p.events_per_hour, p.init_mean_s) for p in curve])
    print(
        f"server saturates at {saturated} workers" if saturated else "no saturation in this range"
    )
    _write(args.out, "sweep", rows, {"curve": rows, "saturates_at": saturated})
    return 0


def _run_figure10(args: argparse.Namespace) -> int:
    from simulation.figure10 import figure10_markdown

    print(figure10_markdown(), end="")
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    """Every server that starts here: per-operation costs from its driver; then the Andrew trace."""
    import tempfile

    from benchmarks.andrew import run_andrew
    from servers import SERVERS, ServerError, running_server
    from simulation.agent_path import AgentPath
    from simulation.calibration_record import Spread
    from simulation.protocols import (
        SEEDS_MODELS,
        calibrate_repeated,
        calibration_metadata,
        model_name,
        save_calibration,
    )
    from simulation.validate import measure_agent_path
    from simulation.workloads import condense_trace, save_andrew

    load_start = os.getloadavg()
    load, cores = load_start[0], os.cpu_count() or 1
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < cores:  # pinned: the others' load is on the other cores
        print(f"aviary: simulate calibrate: pinned to CPU {','.join(map(str, mine))} (machine "
              f"load {load:.1f} on {cores} cores): client and server share "
              f"{len(mine)} core(s); the file records it", file=sys.stderr)  # fmt: skip
    elif load > cores:
        print(f"aviary: simulate calibrate: the machine is busy (load {load:.1f} on {cores} "
              "cores): service times will come out slow; the file records the load",
              file=sys.stderr)  # fmt: skip
    measured: dict[str, ProtocolModel] = {}
    spreads: dict[str, dict[str, Spread]] = {}
    # The catalogue's first server of a protocol gives the protocol's model its plain name
    # ("chirp" is cctools', the seeds' server); the others are "chirp-aviary" and so on.
    for key, spec in SERVERS.items():
        name = model_name(spec.protocol)
        if name in measured:
            name = f"{name}-{spec.implementation}"
        try:
            with running_server(key) as server, server.driver() as driver:
                measured[name], spreads[name] = calibrate_repeated(
                    driver, name, f"measured: {key}", args.repeat, backing=server.data_dir,
                    owner=server.as_user, fresh=server.driver,
                )  # fmt: skip
            unsupported = ", ".join(sorted(measured[name].unsupported)) or "none"
            print(f"calibrated {name} from {key} (unsupported: {unsupported})")
        except (ServerError, OSError, LookupError) as exc:
            print(f"not calibrated from {key}: {exc}", file=sys.stderr)
    # The agent's path beyond the echo, per round trip, at the delays it is probed at.
    agent_path: dict[str, Any] | None = None
    try:
        agent_path = measure_agent_path()
    except RuntimeError as exc:
        print(f"aviary: simulate calibrate: the agent's path term not measured: {exc}",
              file=sys.stderr)  # fmt: skip
    if agent_path is not None:
        fit = AgentPath.from_json(agent_path["fit"])
        print(f"calibrated the agent's path: {fit.intercept_s * 1e6:.0f} us + "
              f"{fit.slope:.3f} x RTT per round trip beyond the echo")  # fmt: skip
    metadata = calibration_metadata(args.repeat, spreads, load_start, agent_path)
    for outlier in metadata["outliers"]:
        print(f"outlier (not in the median's way): {outlier}")
    save_calibration({k: v for k, v in measured.items() if k not in SEEDS_MODELS},
                     metadata=metadata)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="aviary-calibrate-") as tmp:
        traces = Path(tmp)
        run_andrew(traces / "out", args.files, ["native", "chirp/aviary"], traces)
        trace = traces / "andrew-chirp_aviary.jsonl"
        stages = condense_trace(trace, trace.with_suffix(".stamps"))
    save_andrew(
        stages, f"aviary bench andrew --files {args.files}, chirp/aviary under aviary run --trace"
    )
    print("recorded the Andrew-like trace")
    return 0


def _say_calibration_problems() -> None:
    """A stale, undated or foreign calibration is said before the models use it."""
    from simulation.calibration_record import calibration_status
    from simulation.protocols import CALIBRATION_FILE

    for problem in calibration_status(CALIBRATION_FILE):
        print(f"aviary: simulate: calibration: {problem}", file=sys.stderr)


def run_simulate(args: argparse.Namespace) -> int:
    """Run one ``aviary simulate`` subcommand; returns the exit status."""
    try:
        if args.sim_kind == "calibrate":
            return _run_calibrate(args)
        if args.sim_kind == "validate":
            from simulation.validate import run_validate_command

            return run_validate_command(args.protocol, args.rtt, args.files, args.repeat, args.out)
        _say_calibration_problems()
        if args.sim_kind == "andrew":
            return _run_andrew(args)
        if args.sim_kind == "sp5":
            return _run_sp5(args)
        if args.sim_kind == "figure10":
            return _run_figure10(args)
        return _run_sweep(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(
            f"aviary: simulate: missing data {exc.filename} (run aviary simulate calibrate)",
            file=sys.stderr,
        )
        return 1
