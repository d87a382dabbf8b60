"""``aviary bench micro|latency|throughput|andrew|sp5``: the benchmarks' options and dispatch."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

if typing.TYPE_CHECKING:
    pass


def _add_target_options(parser: argparse.ArgumentParser, default_drivers: str | None) -> None:
    default = (
        f"default {default_drivers}"
        if default_drivers
        else "default: local and every installed server"
    )
    parser.add_argument(
        "--driver",
        action="append",
        metavar="D",
        help=f"drivers to measure, comma-separated or repeated: local, chirp, ftp, ... ({default})",
    )
    parser.add_argument(
        "--server",
        action="append",
        metavar="S",
        help="servers to measure, comma-separated or repeated: chirp/cctools, ftp/vsftpd, ... "
        "(default: every installed server of the drivers)",
    )


def _add_common_bench_options(parser: argparse.ArgumentParser, repeat: int) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("reports"), help="output directory (default reports/)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=repeat,
        help=f"runs per cell; median and spread are reported (default {repeat})",
    )


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmarks: interposition overhead, latency, throughput, Andrew-like, SP5",
        description="Real measurements with the real agent and real servers on 127.0.0.1. Each "
        "writes a Markdown table and raw JSON (with the machine's description) to --out.",
    )
    kinds = bench.add_subparsers(dest="bench_kind", required=True, metavar="KIND")
    micro = kinds.add_parser("micro", help="the seeds' Figure 3: syscall costs native vs agents")
    _add_common_bench_options(micro, 3)
    micro.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="calls per measurement (default 20000; with --remote 200)",
    )
    micro.add_argument(
        "--remote",
        metavar="SERVERS",
        help="measure remote files instead: server keys (chirp/aviary,ftp/pyftpdlib,...) or "
        "'default' (chirp, ftp, sftp and webdav), each natively, through the agent and through "
        "the FUSE clients that mount it",
    )
    micro.add_argument(
        "--cache",
        default="off,cto",
        help="with --remote: the agent's cache modes, one row each (default off,cto)",
    )
    micro.add_argument(
        "--no-peers", action="store_true", help="with --remote: no rclone mount or sshfs rows"
    )
    micro.add_argument(
        "--bandwidth-size", default="16M", help="with --remote: bytes of the bandwidth file"
    )
    latency = kinds.add_parser(
        "latency", help="the seeds' Figure 7: latency of POSIX operations per driver and server"
    )
    _add_common_bench_options(latency, 3)
    _add_target_options(latency, None)
    latency.add_argument(
        "--iterations", type=int, default=200, help="timed calls per operation (default 200)"
    )
    throughput = kinds.add_parser(
        "throughput",
        help="the seeds' Figure 6: cp of a file into each store under the agent, per block size",
    )
    _add_common_bench_options(throughput, 3)
    _add_target_options(throughput, None)
    throughput.add_argument(
        "--size", default="128M", help="bytes of the copied file (default 128M)"
    )
    throughput.add_argument(
        "--block-sizes",
        default="4K,16K,64K,256K,1M",
        help="st_blksize hints to copy at (default 4K,16K,64K,256K,1M)",
    )
    andrew = kinds.add_parser(
        "andrew",
        help="the seeds' Figure 8: the Andrew-like benchmark, natively and under the agent",
    )
    _add_common_bench_options(andrew, 3)
    andrew.add_argument(
        "--files", type=int, default=300, help="C source files in the generated tree (default 300)"
    )
    andrew.add_argument(
        "--targets",
        default="native,aviary-local,chirp/cctools,chirp/aviary,parrot:chirp/aviary",
        help="where to run it (default native,aviary-local,chirp/cctools,chirp/aviary,"
        "parrot:chirp/aviary; mount:SERVER reaches SERVER through a mountlist entry instead "
        "of /chirp/...; parrot:SERVER runs cctools' parrot_run on it)",
    )
    andrew.add_argument(
        "--cache",
        default="off,whole",
        help="the agent's cache modes for remote targets: off, cto, whole (default off,whole)",
    )
    andrew.add_argument("--trace-dir", type=Path, help="keep each agent run's --trace file here")
    sp5 = kinds.add_parser(
        "sp5", help="a synthetic SP5 (I/O-heavy start, then events) under the agent, vs Figure 10"
    )
    _add_common_bench_options(sp5, 3)
    _add_target_options(sp5, "local,chirp")
    sp5.add_argument("--events", type=int, default=20, help="events per run (default 20)")
    sp5.add_argument(
        "--event-bytes",
        default="10K-100K",
        help="output bytes per event, LOW-HIGH (default 10K-100K, as the seeds)",
    )
    sp5.add_argument(
        "--event-cpu-ms", type=float, default=100.0, help="CPU work per event in ms (default 100)"
    )
    sp5.add_argument(
        "--small-files", type=int, default=400, help="small files read at start (default 400)"
    )
    sp5.add_argument("--small-size", default="16K", help="bytes per small file (default 16K)")
    sp5.add_argument("--big-files", type=int, default=2, help="large files (default 2)")
    sp5.add_argument("--big-size", default="32M", help="bytes per large file (default 32M)")
    sp5.add_argument(
        "--big-reads", type=int, default=4000, help="512-byte reads per large file (default 4000)"
    )


def run_bench(args: argparse.Namespace) -> int:
    from benchmarks.common import UsageError, choose_targets, parse_size, parse_sizes

    kind = args.bench_kind
    try:
        if kind == "micro":
            if args.remote is not None:
                from benchmarks.remote_micro import DEFAULT_SERVERS, run_remote_micro

                servers = tuple(k.strip() for k in args.remote.split(",") if k.strip())
                return run_remote_micro(
                    args.out,
                    DEFAULT_SERVERS if servers == ("default",) else servers,
                    tuple(c.strip() for c in args.cache.split(",") if c.strip()),
                    args.iterations or 200,
                    args.repeat,
                    peers=not args.no_peers,
                    bandwidth_bytes=parse_size(args.bandwidth_size),
                )
            from benchmarks.micro import run_micro

            return run_micro(args.out, args.iterations or 20000, args.repeat)
        if kind == "andrew":
            from benchmarks.andrew import run_andrew

            targets = [t.strip() for t in args.targets.split(",") if t.strip()]
            caches = tuple(c.strip() for c in args.cache.split(",") if c.strip())
            return run_andrew(args.out, args.files, targets, args.trace_dir, args.repeat, caches)
        if kind == "latency":
            from benchmarks.latency import run_latency

            choice = choose_targets(args.driver, args.server)
            return run_latency(args.out, args.iterations, args.repeat, choice)
        if kind == "throughput":
            from benchmarks.throughput import run_throughput

            choice = choose_targets(args.driver, args.server)
            size, blocks = parse_size(args.size), parse_sizes(args.block_sizes)
            return run_throughput(args.out, choice, size, blocks, args.repeat)
        from benchmarks.sp5 import Sp5Params, run_sp5

        default = None if args.driver or args.server else ["local,chirp"]
        choice = choose_targets(args.driver or default, args.server)
        low, _, high = args.event_bytes.partition("-")
        params = Sp5Params(
            events=args.events,
            event_bytes=(parse_size(low), parse_size(high or low)),
            event_cpu_ms=args.event_cpu_ms,
            small_files=args.small_files,
            small_size=parse_size(args.small_size),
            big_files=args.big_files,
            big_size=parse_size(args.big_size),
            big_reads=args.big_reads,
        )
        return run_sp5(args.out, choice, params, args.repeat)
    except UsageError as exc:
        print(f"aviary: bench {kind}: {exc}", file=sys.stderr)
        return 2
