"""The ``aviary`` command line.

    aviary fs ls|stat|cat|put|get|mkdir|rm|rmdir|mv URL ...
    aviary run [-m MOUNTLIST] -- PROGRAM ARGS...
    aviary package create|run      portable packages from a run's --name-list and --env-list
    aviary serve chirp --root DIR [--port P] [--auth address,unix,hostname] ...
    aviary servers                 which real servers this machine can start
    aviary bench micro|latency|throughput|andrew|sp5   the seeds' Figures 3, 7, 6, 8, 10
    aviary conformance table       Figure 5 from the conformance results
    aviary simulate andrew|sp5|sweep|calibrate|validate   simpy models, checked against real runs
    aviary faultnet matrix|proxy|kernel    faults between client and server
    aviary gate [--update-baseline] compare the results with the committed baseline
    aviary report [--quick|--full] regenerate the seeds' tables, measured and simulated

Errors are one line on stderr and a non-zero exit status, never a traceback:
1 for a failed operation, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import sys
import typing
from pathlib import Path
from types import FrameType

from harness.fs_command import add_fs_parser, add_wait_options, apply_recovery_budget, run_fs

if typing.TYPE_CHECKING:
    from reference_agent.namespace import Mount

__all__ = ["MAX_MOUNTLIST_BYTES", "build_parser", "main"]

#: A mountlist larger than this is refused: a real one is a few lines (``-m /dev/zero``).
MAX_MOUNTLIST_BYTES = 1024 * 1024
#: The --block-size range the help promises.
BLOCK_SIZE_RANGE = (4 * 1024, 1024 * 1024)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit 2), as every other error of aviary."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aviary",
        description="Conformance and simulation harness for interposition agents and remote I/O protocols.",
    )
    # Every subparser is a _Parser too (argparse makes them of the parent's class).
    sub = typing.cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    add_fs_parser(sub)
    _add_run_parser(sub)
    from harness.package import add_package_parser

    add_package_parser(sub)
    _add_serve_parser(sub)
    sub.add_parser("servers", help="list the real servers aviary can start here")
    _add_bench_parser(sub)
    _add_conformance_parsers(sub)
    from faultnet.cli import add_faultnet_parser
    from simulation.cli import add_simulate_parser

    add_simulate_parser(sub)
    add_faultnet_parser(sub)
    _add_report_parser(sub)
    return parser


# -- run ---------------------------------------------------------------------------------


def _add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="run a program with remote storage in its namespace (like parrot_run)",
        description="Run PROGRAM under aviary's ptrace agent. /chirp/HOST:PORT/path reaches a Chirp "
        "server; a mountlist maps any logical path onto a local or remote one.",
    )
    run.add_argument(
        "-m", "--mountlist", type=Path, help="mountlist file: LOGICAL PHYSICAL [ACCESS] per line"
    )
    run.add_argument(
        "-M",
        "--mount",
        action="append",
        default=[],
        metavar="LOGICAL=PHYSICAL",
        help="one more mount entry",
    )
    run.add_argument(
        "--cache",
        choices=("off", "whole"),
        default="off",
        help="off (default): every read and write goes to the server; whole: copy a file on open, "
        "write it back on close",
    )
    run.add_argument(
        "--chown",
        choices=("fail", "ignore"),
        default="fail",
        help="changing the owner of a remote file (servers keep their own owners): fail with "
        "EPERM (default), or ignore: report success and drop the change (tar, cp -a as root)",
    )
    run.add_argument(
        "--block-size",
        metavar="SIZE",
        help="st_blksize reported for remote files (4K .. 1M), the hint cp and others size their "
        "buffers by (default: what the server says)",
    )
    run.add_argument(
        "--trace", type=Path, help="write one JSON line per trapped syscall to this file"
    )
    run.add_argument(
        "--summary", action="store_true", help="print a table per syscall and mount at exit"
    )
    run.add_argument(
        "--no-pin",
        action="store_true",
        help="let the agent and the program run on any CPU (default: one CPU, which makes each stop 4x cheaper)",
    )
    add_wait_options(run, "a server")
    from harness.run_environment import add_environment_options

    add_environment_options(run)
    from harness.run_sandbox import add_sandbox_options

    add_sandbox_options(run)
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")


def _run_run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from harness.run_environment import RunOptionError, merge_mounts, prepare_environment
    from reference_agent.agent import AgentOptions
    from reference_agent.namespace import MountlistError, Namespace, parse_mountlist
    from reference_agent.program import run_program

    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        print(
            "aviary: run: no program given (aviary run [-m MOUNTLIST] -- PROGRAM ARGS...)",
            file=sys.stderr,
        )
        return 2
    start_cwd = os.getcwd()  # relative mountlist names and --private paths start here
    from harness.run_sandbox import SandboxOptionError, sandbox_rules, shared_cache_dir

    try:
        rules = sandbox_rules(args)
        shared_cache = shared_cache_dir(args)
    except SandboxOptionError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        return 2
    try:
        mounts = (
            parse_mountlist(_read_mountlist_text(args.mountlist), str(args.mountlist), start_cwd)
            if args.mountlist
            else []
        )
        mounts += parse_mountlist(_mount_options(args.mount), "-M", start_cwd)
        _check_hosts(mounts)
        Namespace(mounts)  # unknown protocols and bad addresses fail before anything is made
    except MountlistError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        return 2
    block_size = None
    if args.block_size is not None:
        from benchmarks.common import UsageError, parse_size

        try:
            block_size = parse_size(args.block_size)
            low, high = BLOCK_SIZE_RANGE
            if not low <= block_size <= high:
                raise UsageError(f"{args.block_size!r} is outside 4K .. 1M")
        except UsageError as exc:
            print(f"aviary: run: --block-size: {exc}", file=sys.stderr)
            return 2
    try:
        trace = open(args.trace, "w") if args.trace else None  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"aviary: run: --trace {args.trace}: {exc.strerror}", file=sys.stderr)
        return 2
    cache_dir = Path(tempfile.mkdtemp(prefix="aviary-run-"))
    try:
        environment = prepare_environment(args, cache_dir, start_cwd, os.environ)
    except RunOptionError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        shutil.rmtree(cache_dir, ignore_errors=True)
        if trace is not None:
            trace.close()
        return 2
    try:
        namespace = Namespace(merge_mounts(mounts, environment.mounts))
    except MountlistError as exc:
        print(f"aviary: run: {exc}", file=sys.stderr)
        environment.finish()
        shutil.rmtree(cache_dir, ignore_errors=True)
        if trace is not None:
            trace.close()
        return 2
    apply_recovery_budget(args.recovery_budget)
    try:
        cpu = None if args.no_pin else min(os.sched_getaffinity(0))
        options = AgentOptions(
            cache=args.cache,
            trace=trace,
            summary=args.summary,
            cpu=cpu,
            timeout=args.timeout,
            cache_dir=cache_dir,
            block_size=block_size,
            identity=environment.identity,
            name_list=environment.name_list,
            sandbox=rules,
            shared_cache=shared_cache,
            chown=args.chown,
        )
        try:
            return run_program(namespace, options, program, env=environment.env, cwd=start_cwd)
        except OSError as exc:
            print(f"aviary: run: {program[0]}: {exc.strerror or exc}", file=sys.stderr)
            return 127 if exc.errno == 2 else 126
    finally:
        if trace is not None:
            trace.close()
        where = environment.finish()
        if where:
            print(where, file=sys.stderr)
        shutil.rmtree(cache_dir, ignore_errors=True)


def _read_mountlist_text(path: Path) -> str:
    """A mountlist file's text, read no further than :data:`MAX_MOUNTLIST_BYTES`.

    Raises:
        MountlistError: unreadable, too large, not text, or holding a NUL byte.
    """
    from reference_agent.namespace import MountlistError

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MOUNTLIST_BYTES + 1)
    except OSError as exc:
        raise MountlistError(f"{path}: cannot read mountlist: {exc.strerror}") from None
    if len(data) > MAX_MOUNTLIST_BYTES:
        raise MountlistError(f"{path}: mountlist larger than {MAX_MOUNTLIST_BYTES} bytes")
    if b"\0" in data:
        raise MountlistError(f"{path}: mountlist holds a NUL byte (not text)")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise MountlistError(f"{path}: mountlist is not text") from None


def _check_hosts(mounts: list[Mount]) -> None:
    """Refuse a mount whose URL names no server (``chirp:///x``, ``ftp://:21/x``).

    Raises:
        MountlistError: naming the entry.
    """
    from drivers import parse_url
    from reference_agent.namespace import MountlistError

    for mount in mounts:
        if mount.physical is None or "://" not in mount.physical:
            continue
        try:
            location = parse_url(mount.physical)
        except ValueError as exc:
            raise MountlistError(f"{mount.source or mount.logical}: {exc}") from None
        if location.scheme != "file" and not location.host:
            raise MountlistError(
                f"{mount.source or mount.logical}: {mount.physical!r} names no server"
            )


def _mount_options(entries: list[str]) -> str:
    """The ``-M LOGICAL=PHYSICAL`` options as mountlist text.

    Raises:
        MountlistError: an entry without ``=``, with an empty side, or spanning lines.
    """
    from reference_agent.namespace import MountlistError

    lines = []
    for entry in entries:
        logical, equals, physical = entry.partition("=")
        if not equals or not logical.strip() or not physical.strip():
            raise MountlistError(f"-M {entry!r}: expected LOGICAL=PHYSICAL, both non-empty")
        if any(c in entry for c in "\n\r\0"):
            raise MountlistError(f"-M {entry!r}: a line break or NUL has no place in a path")
        lines.append(f"{logical} {physical}")
    return "\n".join(lines)


# -- serve -------------------------------------------------------------------------------


def _add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve a directory over a protocol")
    protocols = serve.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    chirp = protocols.add_parser(
        "chirp", help="aviary's Chirp server (wire-compatible with cctools)"
    )
    chirp.add_argument("--root", required=True, type=Path, help="directory to export")
    chirp.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    chirp.add_argument(
        "--port", type=int, default=9094, help="port (default 9094; 0 picks a free one)"
    )
    chirp.add_argument(
        "--auth",
        default="unix,hostname,address",
        help="comma-separated auth methods to accept (default unix,hostname,address)",
    )
    chirp.add_argument(
        "--default-acl", type=Path, help="ACL file for directories without one (like -A)"
    )
    chirp.add_argument(
        "--inherit-default-acl",
        action="store_true",
        help="directories without an ACL inherit their parent's",
    )
    chirp.add_argument(
        "--idle-timeout", type=float, default=60.0, help="seconds before an idle client is dropped"
    )
    chirp.add_argument(
        "--umask",
        type=lambda s: int(s, 8),
        default=0o077,
        help="umask for new files, octal (default 077, as cctools)",
    )
    chirp.add_argument("--read-only", action="store_true", help="refuse every change")
    chirp.add_argument(
        "--user", help="when started as root, serve as this user after binding the port"
    )
    chirp.add_argument(
        "--port-file", type=Path, help="write the bound port to this file once listening"
    )
    chirp.add_argument("--debug", action="store_true", help="log every request to stderr")


def _drop_privileges(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def _run_serve(args: argparse.Namespace) -> int:
    from chirp_server import ChirpServer, ChirpServerConfig

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.root.is_dir():
        print(f"aviary: serve chirp: --root {args.root}: not a directory", file=sys.stderr)
        return 2
    if args.user and os.geteuid() != 0:
        print("aviary: serve chirp: --user needs root", file=sys.stderr)
        return 2
    if args.user:
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            print(f"aviary: serve chirp: no such user {args.user!r}", file=sys.stderr)
            return 2
    methods = tuple(m.strip() for m in args.auth.split(",") if m.strip())
    try:
        config = ChirpServerConfig(
            root=args.root.resolve(),
            host=args.host,
            port=args.port,
            auth_methods=methods,
            default_acl=args.default_acl.resolve() if args.default_acl else None,
            inherit_default_acl=args.inherit_default_acl,
            idle_timeout=args.idle_timeout,
            umask=args.umask,
            read_only=args.read_only,
        )
        server = ChirpServer(config)
        port = server.start()
    except (OSError, ValueError) as exc:
        print(f"aviary: serve chirp: {exc}", file=sys.stderr)
        return 1
    if args.user:
        _drop_privileges(args.user)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        args.port_file.write_text(f"{port}\n")
    print(
        f"aviary chirp server on {args.host}:{port}, root {config.root}",
        file=sys.stderr,
        flush=True,
    )
    server.serve_forever()
    return 0


# -- servers and report --------------------------------------------------------------------


def _run_servers(args: argparse.Namespace) -> int:
    from servers import SERVERS

    for key, spec in sorted(SERVERS.items()):
        missing = spec.missing_programs()
        status = (
            "available" if not missing else f"missing {', '.join(missing)}: {spec.install_hint}"
        )
        print(f"{key:20} {status}")
    return 0


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


def _add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--iterations", type=int, default=20000, help="calls per measurement (default 20000)"
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
        default="native,aviary-local,chirp/cctools,chirp/aviary",
        help="where to run it (default native,aviary-local,chirp/cctools,chirp/aviary; "
        "mount:SERVER reaches SERVER through a mountlist entry instead of /chirp/...)",
    )
    andrew.add_argument(
        "--cache",
        default="off,whole",
        help="the agent's cache modes for remote targets: off, whole, or both (default off,whole)",
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


def _run_bench(args: argparse.Namespace) -> int:
    from benchmarks.common import UsageError, choose_targets, parse_size, parse_sizes

    kind = args.bench_kind
    try:
        if kind == "micro":
            from benchmarks.micro import run_micro

            return run_micro(args.out, args.iterations, args.repeat)
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


def _add_conformance_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conformance = sub.add_parser("conformance", help="conformance results: the Figure 5 table")
    actions = conformance.add_subparsers(dest="conformance_action", required=True, metavar="ACTION")
    table = actions.add_parser("table", help="render Figure 5 as Markdown and CSV from the results")
    table.add_argument(
        "--results", type=Path, default=Path("results/conformance"), help="results directory"
    )
    table.add_argument(
        "--out", type=Path, default=Path("reports"), help="where figure5.md and .csv go"
    )
    gate = sub.add_parser(
        "gate", help="fail, naming each regression, when a property that passed now fails"
    )
    gate.add_argument(
        "--results", type=Path, default=Path("results/conformance"), help="latest results"
    )
    gate.add_argument(
        "--baseline", type=Path, default=Path("reports/baseline"), help="committed baseline"
    )
    gate.add_argument(
        "--update-baseline",
        "--update",
        dest="update",
        action="store_true",
        help="make the latest results the new baseline (the only way the baseline changes)",
    )


def _run_conformance(args: argparse.Namespace) -> int:
    from conformance.results import load_results, render_table

    sets = load_results(args.results)
    if not sets:
        print(
            f"aviary: conformance table: no results in {args.results} (run pytest conformance first)",
            file=sys.stderr,
        )
        return 1
    markdown, table_csv = render_table(sets)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figure5.md").write_text(markdown)
    (args.out / "figure5.csv").write_text(table_csv)
    print(markdown, end="")
    return 0


def _run_gate(args: argparse.Namespace) -> int:
    import shutil

    from conformance.results import compare_to_baseline, load_results

    latest = load_results(args.results)
    if not latest:
        print(f"aviary: gate: no results in {args.results}", file=sys.stderr)
        return 1
    if args.update:
        args.baseline.mkdir(parents=True, exist_ok=True)
        for path in args.results.glob("*.json"):
            shutil.copy(path, args.baseline / path.name)
        print(f"baseline updated from {len(latest)} result files")
        return 0
    regressions, new_columns = compare_to_baseline(latest, load_results(args.baseline))
    for column in new_columns:
        print(f"gate: {column} has no baseline yet (aviary gate --update-baseline to record one)")
    for regression in regressions:
        print(f"REGRESSION {regression}")
    print(f"gate: {len(regressions)} regression(s) across {len(latest)} result file(s)")
    return 1 if regressions else 0


def _add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report", help="regenerate the seeds' tables and plots, measured and simulated"
    )
    budget = report.add_mutually_exclusive_group()
    budget.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="small budgets (default)"
    )
    budget.add_argument(
        "--full", dest="mode", action="store_const", const="full", help="the benchmarks' defaults"
    )
    report.set_defaults(mode="quick")
    report.add_argument(
        "--out", type=Path, default=Path("reports"), help="output directory (default reports/)"
    )
    report.add_argument(
        "--only",
        help="comma-separated steps: figure7, figure3, figure8, figure6, sp5, figure5, simulated, "
        "figure10, validation (default all)",
    )


def _run_report(args: argparse.Namespace) -> int:
    from report.site import STEPS, run_site

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    unknown = [s for s in only or [] if s not in STEPS]
    if unknown:
        print(
            f"aviary: report: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}",
            file=sys.stderr,
        )
        return 2
    return run_site(args.out, args.mode, only)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "fs":
            return run_fs(args)
        if args.command == "run":
            return _run_run(args)
        if args.command == "package":
            from harness.package import run_package

            return run_package(args)
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "servers":
            return _run_servers(args)
        if args.command == "bench":
            return _run_bench(args)
        if args.command == "faultnet":
            from faultnet.cli import run_faultnet

            return run_faultnet(args)
        if args.command == "simulate":
            from simulation.cli import run_simulate

            return run_simulate(args)
        if args.command == "conformance":
            return _run_conformance(args)
        if args.command == "gate":
            return _run_gate(args)
        if args.command == "report":
            return _run_report(args)
    except KeyboardInterrupt:
        print("aviary: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")  # exits with status 2


if __name__ == "__main__":
    sys.exit(main())
