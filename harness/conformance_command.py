"""``aviary conformance table`` (Figure 5), ``aviary conformance trust`` (the same default
runs repeated) and ``aviary gate`` (results against the baseline)."""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

if typing.TYPE_CHECKING:
    pass


def add_conformance_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conformance = sub.add_parser("conformance", help="conformance results: the Figure 5 table")
    actions = conformance.add_subparsers(dest="conformance_action", required=True, metavar="ACTION")
    table = actions.add_parser("table", help="render Figure 5 as Markdown and CSV from the results")
    table.add_argument(
        "--results", type=Path, default=Path("results/conformance"), help="results directory"
    )
    table.add_argument(
        "--out", type=Path, default=Path("reports"), help="where figure5.md and .csv go"
    )

    trust = actions.add_parser(
        "trust",
        help="repeat default runs on this checkout and name every failure (false failures)",
    )
    trust.add_argument(
        "--driver",
        dest="specs",
        action="append",
        required=True,
        metavar="SPEC",
        help="what follows pytest's --driver, e.g. local or 'chirp --server cctools' (repeatable)",
    )
    trust.add_argument("--rounds", type=int, default=100, help="rounds of one run per driver")
    trust.add_argument("--hours", type=float, default=8.0, help="stop starting runs after this")
    trust.add_argument(
        "--log", type=Path, default=None, help="append each run as a JSON line to this file"
    )
    trust.add_argument(
        "pytest_args", nargs=argparse.REMAINDER, help="after --: more arguments for every run"
    )


def add_gate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def run_conformance(args: argparse.Namespace) -> int:
    if args.conformance_action == "trust":
        return _run_trust(args)
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


def run_gate(args: argparse.Namespace) -> int:
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


def _run_trust(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conformance.trust import TrustRun, repeat_runs, summarize

    if args.rounds < 1 or args.hours <= 0:
        print("aviary: conformance trust: --rounds and --hours must be positive", file=sys.stderr)
        return 2
    extra = [a for a in args.pytest_args if a != "--"]
    console = Console(stderr=True)
    total = args.rounds * len(args.specs)
    done: list[TrustRun] = []

    def show(run: TrustRun) -> None:
        done.append(run)
        failures = sum(1 for r in done if r.status != 0)
        mark = "[green]ok[/green]" if run.status == 0 else "[red]FAILED[/red]"
        console.print(f"[{len(done)}/{total}] round {run.round} {run.spec}: {mark} "
                      f"{run.seconds:.0f} s ({failures} failed so far) {run.summary}")  # fmt: skip

    runs = repeat_runs(args.specs, args.rounds, args.hours, extra, args.log, show)
    print(summarize(runs))
    return 1 if any(run.status != 0 for run in runs) else 0
