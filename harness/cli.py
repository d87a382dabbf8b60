"""The ``aviary`` command line.

    aviary fs ls|stat|cat|put|get|mkdir|rm|rmdir|mv URL ...
    aviary run [-m MOUNTLIST] -- PROGRAM ARGS...
    aviary package create|run      portable packages from a run's --name-list and --env-list
    aviary serve chirp --root DIR [--port P] [--auth address,unix,hostname] ...
    aviary servers                 which real servers this machine can start
    aviary bench micro|latency|throughput|andrew|sp5   the seeds' Figures 3, 7, 6, 8, 10
    aviary conformance table|trust Figure 5 from the results; default runs repeated
    aviary simulate andrew|sp5|sweep|calibrate|validate   simpy models, checked against real runs
    aviary faultnet matrix|proxy|kernel    faults between client and server
    aviary gate [--update-baseline] compare the results with the committed baseline
    aviary report [--quick|--full] regenerate the seeds' tables, measured and simulated

Errors are one line on stderr and a non-zero exit status, never a traceback:
1 for a failed operation, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COMMANDS", "build_parser", "main"]

Subparsers: typing.TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True, slots=True)
class Command:
    """One ``aviary`` command: the module that defines its options and runs it.

    Modules are imported when the command is used (or when the parser is built), so
    ``aviary fs`` does not load the simulation or the agent.
    """

    name: str
    module: str
    add_parser: str
    run: str

    def function(self, which: str) -> Callable[..., typing.Any]:
        return typing.cast(
            "Callable[..., typing.Any]", getattr(importlib.import_module(self.module), which)
        )


#: Every command, in the order ``aviary --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("fs", "harness.fs_command", "add_fs_parser", "run_fs"),
    Command("run", "harness.run_command", "add_run_parser", "run_run"),
    Command("package", "harness.package", "add_package_parser", "run_package"),
    Command("serve", "harness.serve_command", "add_serve_parser", "run_serve"),
    Command("servers", "harness.serve_command", "add_servers_parser", "run_servers"),
    Command("bench", "harness.bench_command", "add_bench_parser", "run_bench"),
    Command(
        "conformance", "harness.conformance_command", "add_conformance_parser", "run_conformance"
    ),
    Command("gate", "harness.conformance_command", "add_gate_parser", "run_gate"),
    Command("simulate", "simulation.cli", "add_simulate_parser", "run_simulate"),
    Command("faultnet", "faultnet.cli", "add_faultnet_parser", "run_faultnet"),
    Command("report", "harness.report_command", "add_report_parser", "run_report"),
)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit 2), as every other error of aviary."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command named ``only`` alone.

    Building one command's parser imports that command's module only: ``aviary run``
    starts without loading the simulation, the benchmarks or every driver.
    """
    parser = _Parser(
        prog="aviary",
        description="Conformance and simulation harness for interposition agents and remote I/O protocols.",
    )
    # Every subparser is a _Parser too (argparse makes them of the parent's class).
    sub = typing.cast(
        "Subparsers", parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    )
    for command in COMMANDS:
        if only is None or command.name == only:
            command.function(command.add_parser)(sub)
    return parser


def _named_command(argv: list[str]) -> str | None:
    """The command ``argv`` starts with, if any (``aviary -h`` and mistakes get every parser,
    so that help and errors list every command)."""
    if argv and argv[0] in {command.name for command in COMMANDS}:
        return argv[0]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_named_command(argv))
    args = parser.parse_args(argv)
    by_name = {command.name: command for command in COMMANDS}
    if args.command not in by_name:
        parser.error(f"unknown command {args.command!r}")  # exits with status 2
    command = by_name[args.command]
    try:
        return int(command.function(command.run)(args))
    except KeyboardInterrupt:
        print("aviary: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
