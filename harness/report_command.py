"""``aviary report``: every table and plot, measured and simulated."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

if typing.TYPE_CHECKING:
    pass


def add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def run_report(args: argparse.Namespace) -> int:
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
