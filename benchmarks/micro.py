"""``aviary bench micro``: the seeds' Figure 3, measured here.

Covers: the cost of interposition on single system calls and on bandwidth, for
aviary's ptrace agent and its peers, as ratios to the same program run natively.
The seeds' Figure 3 rows are getpid, open/close, read 1 B, read 8 KB and
sequential bandwidth; ``stat`` is added because it is the call a namespace agent
must trap most often. Targets for a local tree: getpid and local read
bandwidth within 1.5x of native; stat and open/close at most 0.7x of
``strace -f``'s time.

Scenario: a small C program is compiled with gcc into a temporary directory. In
that directory, before any timing, sit an 8 KB file and a bandwidth file (64 MiB
at the default iterations). The program times ``iterations`` calls of each
operation with ``clock_gettime(CLOCK_MONOTONIC)`` (getpid through
``syscall(SYS_getpid)`` so that no libc cache answers it) and reads the
bandwidth file in 1 MiB blocks for a few passes; it prints one JSON object of
ns/op and MB/s. The same binary then runs natively, under ``aviary run``
(pinned to one CPU, its default, and ``--no-pin``), under ``strace -f`` (as
users run it, and pinned with ``taskset``), under ``proot`` and, when it is on
the PATH, under cctools' ``parrot_run -Q``. Rounds interleave the agents so
that drift of the machine spreads over all of them; each cell is the median of
``repeat`` runs. Results go to ``OUT/figure3.md`` (table and targets),
``OUT/figure3.json`` (data) and ``OUT/figure3.png`` (plot).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks._micro_program import MICRO_C, BenchError, compile_program, read_result
from benchmarks.common import (
    find_parrot,
    machine_description,
    progress_bar,
    run_bounded,
    summarize,
)

__all__ = ["COLUMNS", "PEERS", "Row", "bandwidth_file_size", "run_micro"]

DEFAULT_ITERATIONS = 20_000  # calls per operation at which the bandwidth file is full size
SMALL_FILE = 8 * 1024  # bytes of the file that stat, open/close and the reads use
BANDWIDTH_FILE = 64 * 1024 * 1024  # bytes read sequentially, at DEFAULT_ITERATIONS or more
MIN_BANDWIDTH_FILE = 8 * 1024 * 1024  # bytes: the smallest bandwidth file, for short runs
BANDWIDTH_BLOCK = 1024 * 1024  # bytes per read() in the bandwidth run
BANDWIDTH_PASSES = 3  # timed passes over the bandwidth file (after one untimed pass)
RUN_TIMEOUT_BASE = 120.0  # seconds any one run may take, plus RUN_TIMEOUT_PER_ITERATION each
RUN_TIMEOUT_PER_ITERATION = 0.02  # seconds per iteration (about 12 ptrace stops at 100+ us)

#: The table's columns, in the seeds' order plus stat; all but the last are ns/op.
COLUMNS = ("getpid", "stat", "open/close", "read 1B", "read 8KB", "bandwidth")
TIME_COLUMNS = COLUMNS[:-1]
#: Rows that every aviary row is also compared with.
PEERS = ("strace -f", "strace -f, pinned", "proot", "parrot_run -Q")
#: The targets for aviary's default row.
GETPID_LIMIT = 1.5  # x native time
BANDWIDTH_LIMIT = 1.5  # native MB/s divided by aviary's at most this
STRACE_LIMIT = 0.7  # x strace -f's time, for stat and open/close


@dataclass(frozen=True)
class Agent:
    """One row of the table: how to run a program under an interposition agent."""

    name: str
    description: str
    prefix: tuple[str, ...]  # the command line before the program
    needs: tuple[str, ...] = ()  # programs that must be on the PATH
    install_hint: str = ""
    unavailable: str = ""  # why it cannot run, when found otherwise than on the PATH


@dataclass
class Row:
    """One agent's results: per-run values, medians, and ratios."""

    agent: str
    description: str
    command: list[str]
    status: str = "measured"  # "measured", "not installed" or "failed"
    note: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)  # medians: ns/op, bandwidth MB/s
    spread: dict[str, dict[str, float]] = field(default_factory=dict)  # column -> min, max, q1, q3
    ratio_to_native: dict[str, float] = field(default_factory=dict)
    vs: dict[str, dict[str, float]] = field(default_factory=dict)  # aviary rows: ratio to peers


def _agents(cpu: int) -> list[Agent]:
    aviary = (sys.executable, "-m", "harness.cli", "run")
    parrot, parrot_missing = find_parrot()
    strace = ("strace", "-f", "-o", "/dev/null")
    return [
        Agent("native", "the program alone", ()),
        Agent(
            "aviary",
            f"`aviary run --`: seccomp-filtered ptrace agent, agent and program on CPU {cpu} (default)",
            (*aviary, "--"),
        ),
        Agent(
            "aviary --no-pin",
            "`aviary run --no-pin --`: the same agent, free to use any CPU",
            (*aviary, "--no-pin", "--"),
        ),
        Agent(
            "aviary --no-fast-path",
            f"`aviary run --no-fast-path --`: every trapped call handled in Python, on CPU {cpu}",
            (*aviary, "--no-fast-path", "--"),
        ),
        Agent(
            "strace -f",
            "`strace -f -o /dev/null`, as users run it",
            strace,
            ("strace",),
            "apt-get install strace",
        ),
        Agent(
            "strace -f, pinned",
            f"`taskset -c {cpu} strace -f -o /dev/null`: strace and program on one CPU",
            ("taskset", "-c", str(cpu), *strace),
            ("taskset", "strace"),
            "apt-get install strace util-linux",
        ),
        Agent("proot", "Debian's `proot`, plain", ("proot",), ("proot",), "apt-get install proot"),
        Agent(
            "parrot_run -Q",
            f"cctools' `parrot_run -Q` ({parrot or 'not found'}), no catalog lookups",
            (parrot or "parrot_run", "-Q"),
            unavailable=parrot_missing,
        ),
    ]


def bandwidth_file_size(iterations: int) -> int:
    """Bytes of the bandwidth file: :data:`BANDWIDTH_FILE` scaled down for short runs.

    Args:
        iterations: calls per operation of the run.

    Returns:
        A whole number of :data:`BANDWIDTH_BLOCK` blocks between
        :data:`MIN_BANDWIDTH_FILE` and :data:`BANDWIDTH_FILE`.
    """
    scaled = BANDWIDTH_FILE * iterations // DEFAULT_ITERATIONS
    size = min(BANDWIDTH_FILE, max(MIN_BANDWIDTH_FILE, scaled))
    return max(BANDWIDTH_BLOCK, size // BANDWIDTH_BLOCK * BANDWIDTH_BLOCK)


def _filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the longest matching mount point)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            for line in mountinfo:
                fields = line.split()
                # Mount point is field 5; the type follows the " - " separator.
                mount_point = fields[4].replace("\\040", " ")
                inside = str(path) == mount_point or str(path).startswith(
                    mount_point.rstrip("/") + "/"
                )
                if inside and len(mount_point) >= len(best):
                    best, kind = mount_point, fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        pass
    return kind


def _run(command: list[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``run_bounded``, its timeout reported as a BenchError (a killed strace or agent would
    leave its tracee running: the whole process group goes)."""
    try:
        return run_bounded(command, timeout, cwd)
    except TimeoutError as exc:
        raise BenchError(str(exc).replace("no exit", "no result")) from None


def _prepare_files(workdir: Path, big_size: int) -> tuple[Path, Path]:
    small = workdir / "small"
    small.write_bytes(os.urandom(SMALL_FILE))
    big = workdir / "big"
    chunk = os.urandom(BANDWIDTH_BLOCK)
    with open(big, "wb") as out:
        for _ in range(big_size // BANDWIDTH_BLOCK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return small, big


def _measure(command: list[str], timeout: float, cwd: Path) -> dict[str, float]:
    """One run of the program; its JSON line, checked."""
    return read_result(_run(command, timeout, cwd), COLUMNS)


def _ratios(values: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {c: values[c] / base[c] for c in COLUMNS if c in values and base.get(c)}


def _finish(rows: list[Row]) -> None:
    """Medians, ratios to native, and the aviary rows against their peers."""
    for row in rows:
        if row.status == "measured":
            row.values = {c: statistics.median(run[c] for run in row.runs) for c in COLUMNS}
            for column in COLUMNS:
                spread = summarize(run[column] for run in row.runs)
                row.spread[column] = {"min": spread.minimum, "max": spread.maximum,
                                      "q1": spread.q1, "q3": spread.q3}  # fmt: skip
    by_name = {row.agent: row for row in rows if row.status == "measured"}
    native = by_name["native"].values
    for row in by_name.values():
        row.ratio_to_native = _ratios(row.values, native)
        if row.agent.startswith("aviary"):
            row.vs = {p: _ratios(row.values, by_name[p].values) for p in PEERS if p in by_name}


@dataclass
class Target:
    """One of the targets, evaluated on aviary's default row."""

    target: str
    column: str
    against: str
    limit: float
    measured: float | None
    met: bool | None

    def line(self) -> str:
        if self.measured is None:
            return f"{self.target}: not measured ({self.against} has no result in this run)"
        verdict = "yes" if self.met else "no"
        unit = "x native MB/s" if self.column == "bandwidth" else f"x {self.against}'s time"
        return f"{self.target}: {verdict} (measured {_number(self.measured)}{unit})"


def _targets(rows: list[Row]) -> list[Target]:
    aviary = next((r for r in rows if r.agent == "aviary" and r.status == "measured"), None)
    to_native = aviary.ratio_to_native if aviary else {}
    to_strace = aviary.vs.get("strace -f", {}) if aviary else {}

    def target(
        text: str,
        column: str,
        against: str,
        limit: float,
        ratios: dict[str, float],
        ok: Callable[[float], bool],
    ) -> Target:
        measured = ratios.get(column)
        return Target(
            text, column, against, limit, measured, None if measured is None else ok(measured)
        )

    return [
        target(
            "getpid within 1.5x of native",
            "getpid",
            "native",
            GETPID_LIMIT,
            to_native,
            lambda r: r <= GETPID_LIMIT,
        ),
        target(
            "local read bandwidth within 1.5x of native",
            "bandwidth",
            "native",
            1 / BANDWIDTH_LIMIT,
            to_native,
            lambda r: r >= 1 / BANDWIDTH_LIMIT,
        ),
        target(
            "stat at most 0.7x strace -f's time",
            "stat",
            "strace -f",
            STRACE_LIMIT,
            to_strace,
            lambda r: r <= STRACE_LIMIT,
        ),
        target(
            "open/close at most 0.7x strace -f's time",
            "open/close",
            "strace -f",
            STRACE_LIMIT,
            to_strace,
            lambda r: r <= STRACE_LIMIT,
        ),
    ]


def _number(value: float) -> str:
    """Two or three significant figures, never a run of zeros: 0.0015, 0.64, 23.4, 139."""
    if value < 0.1:
        return f"{value:.2g}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _cell(row: Row, column: str) -> str:
    value = row.values[column]
    ratio = _number(row.ratio_to_native.get(column, float("nan")))
    low, high = row.spread[column]["min"], row.spread[column]["max"]
    if column == "bandwidth":
        spread = f" [{low:.0f}–{high:.0f}]" if len(row.runs) > 1 else ""
        return f"{value:.0f}{spread} MB/s ({ratio}x)"
    spread = f" [{_number(low / 1000.0)}–{_number(high / 1000.0)}]" if len(row.runs) > 1 else ""
    return f"{_number(value / 1000.0)}{spread} µs ({ratio}x)"


def _markdown(rows: list[Row], targets: list[Target], meta: dict[str, Any]) -> str:
    lines = [
        "# Figure 3, measured: the overhead of interposition",
        "",
        f"{meta['iterations']} calls per operation, median [min–max] of {meta['repeat']} run(s) "
        "per cell; "
        f"files on {meta['filesystem']} ({meta['workdir_parent']}); kernel {meta['kernel']}, "
        f"{meta['cpus']} CPUs. Bandwidth: a {meta['bandwidth_file_bytes'] // 2**20} MiB file read "
        f"in {BANDWIDTH_BLOCK // 2**20} MiB blocks, median of {BANDWIDTH_PASSES} passes. "
        "In parentheses: the ratio to native (for bandwidth, of MB/s: below 1x is slower).",
        "",
        "| agent | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        if row.status != "measured":
            lines.append(f"| {row.agent} | {row.note} |" + " |" * (len(COLUMNS) - 1))
            continue
        lines.append(f"| {row.agent} | " + " | ".join(_cell(row, c) for c in COLUMNS) + " |")
    lines += ["", "Targets for `aviary` (the default, pinned):", ""]
    lines += [f"- {t.line()}" for t in targets]
    compared = [r for r in rows if r.vs]
    if compared:
        lines += [
            "",
            "aviary against its peers measured in the same run (time ratios; bandwidth: MB/s ratio):",
            "",
            "| aviary row | against | " + " | ".join(COLUMNS) + " |",
            "|---|---|" + "---|" * len(COLUMNS),
        ]
        for row in compared:
            for peer, ratios in row.vs.items():
                cells = " | ".join(f"{_number(ratios[c])}x" for c in COLUMNS)
                lines.append(f"| {row.agent} | {peer} | {cells} |")
    lines += ["", "Rows:", ""]
    lines += [f"- `{row.agent}`: {row.description}" for row in rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.status == "measured"]
    fig, (latency, bandwidth) = plt.subplots(
        1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [len(TIME_COLUMNS), 1.6]}
    )
    width = 0.8 / max(len(measured), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(measured):
        color = colors[i % len(colors)]
        xs = [j + i * width for j in range(len(TIME_COLUMNS))]
        latency.bar(
            xs, [row.values[c] / 1000.0 for c in TIME_COLUMNS], width, label=row.agent, color=color
        )
        bandwidth.bar([i * width], [row.values["bandwidth"]], width, color=color)
    latency.set_xticks([j + width * (len(measured) - 1) / 2 for j in range(len(TIME_COLUMNS))])
    latency.set_xticklabels(TIME_COLUMNS)
    latency.set_yscale("log")
    latency.set_ylabel("time per call (µs, log scale)")
    latency.legend(fontsize="small")
    bandwidth.set_xticks([width * (len(measured) - 1) / 2])
    bandwidth.set_xticklabels(["sequential read"])
    bandwidth.set_yscale("log")
    bandwidth.set_ylabel("MB/s (log scale)")
    fig.suptitle("Figure 3 measured here: system call cost natively and under interposition agents")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_micro(out: Path, iterations: int, repeat: int) -> int:
    """Measure Figure 3 natively and under every agent; write the table, data and plot.

    Args:
        out: directory for ``figure3.md``, ``figure3.json`` and ``figure3.png``
            (created if missing).
        iterations: calls per operation in each run of the C program.
        repeat: runs per cell; the median is reported.

    Returns:
        The exit status: 0 when every installed agent was measured, 1 when a step
        or a run failed (one line on stderr says which), 2 for bad arguments.
        An agent that is not installed is a row of the table, not a failure.
    """
    console = Console(stderr=True)
    if iterations < 1 or repeat < 1:
        console.print("aviary: bench micro: --iterations and --repeat must be at least 1")
        return 2
    cpu = min(os.sched_getaffinity(0))
    agents = _agents(cpu)
    rows: list[Row] = []
    for agent in agents:
        row = Row(agent.name, agent.description, list(agent.prefix))
        missing = [p for p in agent.needs if shutil.which(p) is None]
        if missing or agent.unavailable:
            row.status = "not installed"
            row.note = f"not installed: {agent.unavailable or agent.install_hint}"
        rows.append(row)
    runnable = [(a, r) for a, r in zip(agents, rows, strict=True) if r.status == "measured"]
    timeout = RUN_TIMEOUT_BASE + RUN_TIMEOUT_PER_ITERATION * iterations
    big_size = bandwidth_file_size(iterations)
    failed = False
    with tempfile.TemporaryDirectory(prefix="aviary-micro-") as tmp:
        workdir = Path(tmp)
        meta: dict[str, Any] = {
            "iterations": iterations,
            "repeat": repeat,
            "bandwidth_file_bytes": big_size,
            "bandwidth_block_bytes": BANDWIDTH_BLOCK,
            "bandwidth_passes": BANDWIDTH_PASSES,
            "small_file_bytes": SMALL_FILE,
            "filesystem": _filesystem_of(workdir),
            "workdir_parent": str(workdir.parent),
            "kernel": os.uname().release,
            "cpus": os.cpu_count(),
            "pinned_cpu": cpu,
        }
        try:
            binary = compile_program(MICRO_C, workdir, "micro")
            small, big = _prepare_files(workdir, big_size)
        except (BenchError, OSError) as exc:
            console.print(f"aviary: bench micro: {exc}")
            return 1
        program = [
            str(binary),
            str(small),
            str(big),
            str(iterations),
            str(BANDWIDTH_PASSES),
            str(BANDWIDTH_BLOCK),
        ]
        with progress_bar(console) as progress:
            task = progress.add_task("measuring", total=repeat * len(runnable))
            for round_ in range(repeat):
                for agent, row in runnable:
                    progress.update(task, description=f"{agent.name} ({round_ + 1}/{repeat})")
                    if row.status == "measured":
                        try:
                            row.runs.append(_measure([*agent.prefix, *program], timeout, workdir))
                        except (BenchError, OSError) as exc:
                            row.status, row.note = "failed", f"failed: {exc}"
                            progress.console.print(f"aviary: bench micro: {agent.name}: {exc}")
                            failed = True
                    progress.advance(task)
                if rows[0].status != "measured":
                    return 1  # no native baseline, no ratios: the line above says why
    _finish(rows)
    targets = _targets(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figure3.md").write_text(_markdown(rows, targets, meta))
    data = {
        "benchmark": "micro",
        "figure": "3",
        "machine": machine_description(),
        **meta,
        "columns": list(COLUMNS),
        "units": {c: "MB/s" if c == "bandwidth" else "ns/op" for c in COLUMNS},
        "rows": [asdict(row) for row in rows],
        "targets": [asdict(t) for t in targets],
    }
    (out / "figure3.json").write_text(json.dumps(data, indent=2) + "\n")
    _plot(rows, out / "figure3.png")
    console.print(f"wrote {out / 'figure3.md'}, {out / 'figure3.json'}, {out / 'figure3.png'}")
    return 1 if failed else 0
