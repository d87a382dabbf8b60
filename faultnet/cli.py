"""``aviary faultnet ...``: run a fault scenario by hand, or the fault matrix.

Covers three commands, wired into ``harness/cli.py`` with
:func:`add_faultnet_parser` and :func:`run_faultnet`:

* ``aviary faultnet matrix [--quick] [--fault F] [--out reports/faults]``:
  the fault matrix, as JSON and Markdown (``--quick``: a few cells, one
  server per network driver);
* ``aviary faultnet proxy --target HOST:PORT [--idle S] [--delay S] ...``:
  a fault proxy on 127.0.0.1 until Ctrl-C, reading fault commands on stdin;
* ``aviary faultnet kernel --target HOST:PORT [--idle S] [-- PROGRAM ...]``:
  the namespaces and NAT up; PROGRAM runs as the client, or fault commands
  are read from stdin; everything is removed at the end.

Scenario (by hand, the commands read from stdin, one per line)::

    $ aviary faultnet kernel --target 127.0.0.1:9094 --idle 60
    faultnet: client connects to 10.200.2.2:9094; run as client: nsenter -t 4242 -n -- ...
    > rst            # reset every connection
    > silent         # the NAT forgets every flow
    > partition      # drop everything (loud-partition: RST)
    > delay 0.05     # 50 ms each way
    > host-crash     # the server's whole host dies (kernel back-end only)
    > host-back      # ... and comes back with the same address
    > heal
    > quit           # (or end of input): topology down
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from faultnet.backends import BACKENDS, ProxyNet, open_faultnet
from faultnet.faults import NewConnections
from faultnet.kernel import KernelNet, KernelUnavailable

__all__ = ["add_faultnet_parser", "apply_command", "run_faultnet"]

COMMANDS = (
    "idle SECONDS | silent | rst | partition | loud-partition | refuse | hang | accept | "
    "delay SECONDS [JITTER] | bandwidth BYTES_PER_S | heal | quit; kernel back-end also: "
    "host-crash (the server's namespace ends) | host-back (a new one, same address)"
)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


def add_faultnet_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``faultnet`` and its commands to the ``aviary`` command line."""
    parser = subparsers.add_parser(
        "faultnet", help="inject network and server faults between a client and a server"
    )
    commands = parser.add_subparsers(dest="faultnet_command", required=True)
    matrix = commands.add_parser("matrix", help="fault kind x driver -> outcome, time to recover")
    matrix.add_argument("--out", type=Path, default=Path("reports/faults"),
                        help="write OUT.json and OUT.md (default reports/faults)")  # fmt: skip
    matrix.add_argument("--fault", action="append", help="only this fault (repeatable)")
    matrix.add_argument("--quick", action="store_true",
                        help="two faults, one server per network driver (the full matrix "
                             "is the nightly one)")  # fmt: skip
    for backend in BACKENDS:
        sub = commands.add_parser(backend, help=f"bring the {backend} back-end up by hand")
        sub.add_argument("--target", type=_endpoint, required=True, help="the server, HOST:PORT")
        sub.add_argument("--idle", type=float, help="forget flows idle this many seconds")
        sub.add_argument("--delay", type=float, default=0.0, help="seconds added each way")
        sub.add_argument("--jitter", type=float, default=0.0, help="plus up to this much")
        sub.add_argument("--bandwidth", type=float, help="bytes per second")
        sub.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS (as client)")


def apply_command(net: ProxyNet | KernelNet, line: str) -> str:
    """Apply one fault command (see :data:`COMMANDS`); return what was done.

    Raises:
        ValueError: an unknown command or a bad argument.
    """
    words = shlex.split(line)
    if not words:
        return ""
    verb, args = words[0], [float(a) for a in words[1:]]
    simple = {
        "silent": net.silent_kill,
        "rst": net.rst_kill,
        "partition": lambda: net.partition(silent=True),
        "loud-partition": lambda: net.partition(silent=False),
        "refuse": lambda: net.new_connections(NewConnections.REFUSE),
        "hang": lambda: net.new_connections(NewConnections.HANG),
        "accept": lambda: net.new_connections(NewConnections.ACCEPT),
        "heal": net.heal,
    }
    if isinstance(net, KernelNet):
        simple["host-crash"] = net.crash_server_host
        simple["host-back"] = net.restart_server_host
    if verb in simple and not args:
        simple[verb]()
    elif verb == "idle" and len(args) == 1:
        net.set_idle_timeout(args[0])
    elif verb == "delay" and len(args) in (1, 2):
        net.delay(*args)
    elif verb == "bandwidth" and len(args) == 1:
        net.bandwidth(args[0] or None)
    else:
        raise ValueError(f"unknown fault command {line!r}; commands: {COMMANDS}")
    return verb


def _read_commands(net: ProxyNet | KernelNet, stream: TextIO) -> None:
    for line in stream:
        if line.strip() in ("quit", "exit"):
            return
        try:
            done = apply_command(net, line)
        except (ValueError, RuntimeError) as exc:
            print(f"faultnet: {exc}", file=sys.stderr)
            continue
        if done:
            print(f"faultnet: {done} applied", file=sys.stderr)


def _run_by_hand(args: argparse.Namespace) -> int:
    net = open_faultnet(args.faultnet_command, args.target)
    try:
        net.up()
        if args.idle is not None:
            net.set_idle_timeout(args.idle)
        if args.delay or args.jitter:
            net.delay(args.delay, args.jitter)
        if args.bandwidth:
            net.bandwidth(args.bandwidth)
        host, port = net.address
        print(f"faultnet: client connects to {host}:{port}", file=sys.stderr)
        print(f"faultnet: cannot reproduce: {net.limits}", file=sys.stderr)
        program = [a for a in args.program if a != "--"] if args.program else []
        if program:
            return subprocess.run(net.client_command(program), check=False).returncode
        if isinstance(net, KernelNet):
            print(f"faultnet: run as client: {shlex.join(net.client_command(['...']))}",
                  file=sys.stderr)  # fmt: skip
        print(f"faultnet: commands on stdin: {COMMANDS}", file=sys.stderr)
        _read_commands(net, sys.stdin)
        return 0
    except KernelUnavailable as exc:
        print(f"faultnet: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        net.down()


def run_faultnet(args: argparse.Namespace) -> int:
    """Run the ``faultnet`` command parsed by :func:`add_faultnet_parser`; exit status."""
    if args.faultnet_command == "matrix":
        from faultnet.matrix import (
            DEFAULT_TARGETS,
            QUICK_FAULTS,
            QUICK_TARGETS,
            render_markdown,
            run_matrix,
            write_reports,
        )

        def show(cell: object) -> None:
            print(f"faultnet: {cell}", file=sys.stderr)

        faults = tuple(args.fault) if args.fault else (QUICK_FAULTS if args.quick else None)
        targets = QUICK_TARGETS if args.quick else DEFAULT_TARGETS
        results = run_matrix(targets, faults=faults, progress=show)
        json_path, md_path = write_reports(results, args.out)
        print(render_markdown(results))
        print(f"faultnet: wrote {json_path} and {md_path}", file=sys.stderr)
        claims = [r for r in results if "recovery off" not in r.target]
        bad = [
            r
            for r in claims
            if r.outcome in ("hung", "error") or r.acknowledged_bytes_kept is False
        ]
        return 1 if bad else 0
    return _run_by_hand(args)
