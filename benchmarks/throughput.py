"""``aviary bench throughput``: the seeds' Figure 6, measured here.

Covers: the throughput of copying one file into each store with the standard
``cp`` under the real agent (``aviary run``), at each block size, the block size
set as the seeds set it: through the stat block-size hint (``st_blksize``) the
agent reports for remote files (``aviary run --block-size``). Baselines: ``cp``
natively to a local directory, and ``cp`` under the agent to a local directory
(where the kernel answers stat, so the hint does not apply).

Scenario: a file of ``size`` random bytes is made on local disk; for each server
(started on loopback by the fixtures of :mod:`servers`), each repeat
and each block size, one shell under the agent stamps the time, runs
``cp SRC /SERVICE/HOST:PORT/copy`` and stamps again; the destination's size is
checked through the driver. Each agent run keeps its ``--trace``, from which the
sizes of cp's writes to the remote file are counted: that is the proof that cp
followed the hint. GNU cp 9 never uses a buffer below 128 KiB
(``IO_BUFSIZE``), whatever ``st_blksize`` says, so below that the observed write
size, not the hint, is the block size that moved the data; the table says
which. Results: ``OUT/figure6.md``, ``OUT/figure6.json`` (raw runs, medians,
spreads, the machine), ``OUT/figure6.png`` (MB/s against block size, one line
per server, the baselines as horizontal lines). MB/s are 10^6 bytes per second.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from benchmarks.andrew import agent_prefix
from benchmarks.common import (
    TargetChoice,
    error_line,
    format_size,
    last_line,
    machine_description,
    progress_bar,
    run_bounded,
    summarize,
    write_json,
)
from servers import SERVERS, RunningServer, ServerError, start_server

__all__ = ["BLOCK_SIZES", "DEFAULT_SIZE", "Cell", "ThroughputRow", "run_throughput"]

#: The seeds' file (128 MB) and block sizes (4 KB .. 1 MB).
DEFAULT_SIZE = 128 * 1024 * 1024
BLOCK_SIZES = (4096, 16384, 65536, 262144, 1048576)
READ_ONLY_PROTOCOLS = frozenset({"http"})  # a copy into them cannot be measured
CHUNK = 1024 * 1024  # bytes per write when making the source file
TIMEOUT_BASE = 120.0  # seconds any one copy may take, plus TIMEOUT_PER_MIB per MiB
TIMEOUT_PER_MIB = 2.0  # seconds: 0.5 MB/s, far below the slowest store here
CP_MIN_BUFFER = 128 * 1024  # GNU cp 9's IO_BUFSIZE: its buffer is never smaller
DISK_COPIES = 3  # the source, a local copy and a server's copy exist at once (x size)

# One copy between two stamps (ns since the epoch) written to $STAMPS.
COPY_SCRIPT = 'date +%s%N > "$STAMPS"; cp "$SRC" "$DEST"; date +%s%N >> "$STAMPS"'


class CopyError(Exception):
    """One copy failed; the message is the one line the table shows."""


@dataclass
class Cell:
    """One target at one block size: the runs' MB/s and what cp did."""

    block_size: int | None  # None: the hint does not apply (native, local)
    mb_s: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    write_sizes: dict[int, int] = field(default_factory=dict)  # bytes per write -> count
    error: str | None = None

    @property
    def observed_write(self) -> int | None:
        """The size of most of cp's writes to the remote file, from the agent's traces."""
        return (
            max(self.write_sizes, key=lambda s: self.write_sizes[s]) if self.write_sizes else None
        )


@dataclass
class ThroughputRow:
    target: str
    description: str
    cells: list[Cell] = field(default_factory=list)
    error: str | None = None


def _make_source(path: Path, size: int) -> None:
    chunk = os.urandom(CHUNK)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            left -= out.write(chunk[: min(CHUNK, left)])


def _write_sizes(trace: Path, dest: str) -> Counter[int]:
    """Sizes of the successful writes the agent passed to a driver for ``dest``."""
    sizes: Counter[int] = Counter()
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        if (
            record.get("syscall") in ("write", "pwrite64")
            and record.get("driver") != "local"
            and dest in str(record.get("path", ""))
            and isinstance(record.get("result"), int)
            and record["result"] > 0
        ):
            sizes[record["result"]] += 1
    return sizes


def _copy(
    work: Path,
    source: Path,
    dest: str,
    size: int,
    agent: bool,
    block_size: int | None,
    env: dict[str, str],
) -> tuple[float, Counter[int]]:
    """One timed ``cp``; returns its seconds and, under the agent, its remote write sizes.

    Raises:
        CopyError: cp or the agent failed, or the copy took too long.
    """
    stamps = work / "stamps"
    trace = work / "trace.jsonl"
    command = ["sh", "-c", COPY_SCRIPT]
    if agent:
        hint = ["--block-size", str(block_size)] if block_size else []
        command = [sys.executable, "-m", "harness.cli", "run", *hint, "--trace", str(trace),
                   "--", *command]  # fmt: skip
    environment = {**os.environ, **env, "SRC": str(source), "DEST": dest, "STAMPS": str(stamps),
                   "LC_ALL": "C"}  # fmt: skip
    timeout = TIMEOUT_BASE + TIMEOUT_PER_MIB * size / 2**20
    try:
        done = run_bounded(command, timeout, work, environment)
    except TimeoutError as exc:
        raise CopyError(str(exc)) from None
    if done.returncode != 0:
        why = last_line(done.stderr) or f"exit status {done.returncode}"
        raise CopyError(why)
    marks = stamps.read_text().split()
    if len(marks) != 2:
        raise CopyError(f"expected two time stamps, got {marks!r}")
    seconds = (int(marks[1]) - int(marks[0])) / 1e9
    return seconds, _write_sizes(trace, dest) if agent else Counter()


def _record(cell: Cell, seconds: float, sizes: Counter[int], size: int) -> None:
    cell.seconds.append(seconds)
    cell.mb_s.append(size / seconds / 1e6)
    for write_size, count in sizes.items():
        cell.write_sizes[write_size] = cell.write_sizes.get(write_size, 0) + count


def _check_remote_size(server: RunningServer, size: int) -> None:
    with server.driver() as driver:
        got = driver.stat("/copy").st_size
    if got != size:
        raise CopyError(f"the copy has {got} bytes, not {size}")


def _measure_local(
    work: Path,
    source: Path,
    size: int,
    repeat: int,
    with_agent: bool,
    advance: Callable[[], None],
) -> list[ThroughputRow]:
    rows = [
        ThroughputRow("native", "cp natively into a local directory (the baseline)", [Cell(None)])
    ]
    if with_agent:
        rows.append(
            ThroughputRow(
                "aviary-local",
                "cp under aviary run into a local directory (the kernel answers stat: no hint)",
                [Cell(None)],
            )
        )
    for _ in range(repeat):
        for row in rows:
            dest = work / f"copy-{row.target}"
            cell = row.cells[0]
            if cell.error is None:
                try:
                    seconds, sizes = _copy(work, source, str(dest), size, row.target != "native",
                                           None, {})  # fmt: skip
                    if dest.stat().st_size != size:
                        raise CopyError(f"the copy has {dest.stat().st_size} bytes, not {size}")
                    _record(cell, seconds, sizes, size)
                except (CopyError, OSError) as exc:
                    cell.error = str(exc)
            advance()
    for row in rows:
        (work / f"copy-{row.target}").unlink(missing_ok=True)
        row.error = row.cells[0].error
    return rows


def _measure_server(
    key: str,
    work: Path,
    source: Path,
    size: int,
    block_sizes: list[int],
    repeat: int,
    advance: Callable[[], None],
) -> ThroughputRow:
    spec = SERVERS[key]
    row = ThroughputRow(key, spec.description, [Cell(b) for b in block_sizes])
    if spec.protocol in READ_ONLY_PROTOCOLS:
        row.error = "n/a: read-only protocol"
        advance_by(advance, len(block_sizes) * repeat)
        return row
    try:
        server = start_server(key)
    except ServerError as exc:
        row.error = f"not measured: {exc}"
        advance_by(advance, len(block_sizes) * repeat)
        return row
    try:
        dest = f"{agent_prefix(server)}/copy"
        for _ in range(repeat):
            for cell in row.cells:
                if cell.error is None:
                    try:
                        seconds, sizes = _copy(work, source, dest, size, True, cell.block_size,
                                               server.client_env)  # fmt: skip
                        _check_remote_size(server, size)
                        _record(cell, seconds, sizes, size)
                    except (CopyError, OSError) as exc:
                        cell.error = str(exc)
                advance()
    finally:
        server.stop()
    errors = {c.error for c in row.cells if c.error}
    if errors and all(c.error for c in row.cells):
        row.error = "; ".join(sorted(errors))
    return row


def advance_by(advance: Callable[[], None], steps: int) -> None:
    """Call ``advance`` ``steps`` times (the progress of skipped work)."""
    for _ in range(steps):
        advance()


def _cell_text(cell: Cell) -> str:
    if cell.error:
        return f"failed: {cell.error}"
    text = summarize(cell.mb_s).as_text(1)
    if cell.block_size is not None:
        observed = cell.observed_write
        wrote = format_size(observed) if observed else "?"
        mark = "" if observed == cell.block_size else " ≠ hint"
        text += f" (cp wrote {wrote}{mark})"
    return text


def _markdown(rows: list[ThroughputRow], size: int, block_sizes: list[int], repeat: int) -> str:
    hints = [format_size(b) for b in block_sizes]
    lines = [
        "# Figure 6, measured: throughput of a file copy into each store",
        "",
        f"`cp` of a {format_size(size)} file from local disk into each store under `aviary run` "
        "(cache off, agent pinned to one CPU), the block size set through the stat block-size "
        f"hint (`aviary run --block-size`); {repeat} run(s) per cell, MB/s (10^6 bytes/s) as "
        "median [min–max]. In parentheses: the size of most of cp's writes to the remote file, "
        "counted in the agent's trace. GNU cp 9 never uses a buffer below 128 KiB, whatever "
        "st_blksize says, so the smaller hints move data in 128 KiB writes (`≠ hint`); the "
        "seeds' cp of 2003 followed every hint. Baselines: cp natively and under the agent into "
        "a local directory (the kernel answers their stat, so the hint does not apply; cp uses "
        "copy_file_range there). Writes go to the page cache (no fsync), locally and on the "
        "servers.",
        "",
        "| target | " + " | ".join(hints) + " |",
        "|---|" + "---|" * len(hints),
    ]
    for row in rows:
        if row.cells and row.cells[0].block_size is None:
            cell = row.cells[0]
            text = f"{_cell_text(cell)} (any block size)"
            lines.append(f"| {row.target} | {text} |" + " |" * (len(hints) - 1))
        elif row.error:
            lines.append(f"| {row.target} | {row.error} |" + " |" * (len(hints) - 1))
        else:
            lines.append(f"| {row.target} | " + " | ".join(_cell_text(c) for c in row.cells) + " |")
    lines += ["", "Targets:", ""]
    lines += [f"- `{row.target}`: {row.description}" for row in rows]
    return "\n".join(lines) + "\n"


def _plot(rows: list[ThroughputRow], block_sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    for row in rows:
        measured = [c for c in row.cells if c.mb_s and not c.error]
        if not measured:
            continue
        if measured[0].block_size is None:
            median = summarize(measured[0].mb_s).median
            ax.axhline(median, linestyle="--", linewidth=1, color="grey" if row.target == "native"
                       else "black", label=f"{row.target} ({median:.0f} MB/s)")  # fmt: skip
            continue
        xs = [c.block_size or 0 for c in measured]
        spreads = [summarize(c.mb_s) for c in measured]
        medians = [s.median for s in spreads]
        low = [s.median - s.minimum for s in spreads]
        high = [s.maximum - s.median for s in spreads]
        ax.errorbar(xs, medians, yerr=[low, high], marker="o", capsize=3, label=row.target)
    floor = CP_MIN_BUFFER
    if min(block_sizes) < floor:  # where the hint is below cp's own buffer, cp ignores it
        ax.axvspan(min(block_sizes) / 1.3, floor, color="grey", alpha=0.12, linewidth=0)
        ax.text(min(block_sizes), 0.02, "hint < 128K: GNU cp 9 writes 128K", fontsize="small",
                transform=ax.get_xaxis_transform())  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(block_sizes)
    ax.set_xticklabels([format_size(b) for b in block_sizes])
    ax.set_yscale("log")
    ax.set_xlabel("block size hint (st_blksize)")
    ax.set_ylabel("MB/s (log scale; bars: min–max)")
    ax.set_title("Figure 6 measured here: cp of one file into each store under aviary run")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_throughput(
    out: Path, choice: TargetChoice, size: int, block_sizes: list[int], repeat: int
) -> int:
    """Measure Figure 6 on the chosen targets; write the table, raw data and plot.

    Args:
        out: directory for ``figure6.md``, ``figure6.json`` and ``figure6.png``.
        choice: the stores: ``local`` adds the native and aviary-local baselines
            (native is always measured), ``servers`` the servers to copy into.
        size: bytes of the copied file.
        block_sizes: the st_blksize hints, in bytes.
        repeat: copies per cell.

    Returns:
        0 when every cell was measured, 1 when a copy or a server failed (its
        cell says why), 2 for bad arguments.
    """
    console = Console(stderr=True)
    if repeat < 1 or size < 1 or not block_sizes or min(block_sizes) < 1:
        error_line("aviary: bench throughput: --repeat, --size and --block-sizes must be positive")
        return 2
    unknown = [s for s in choice.servers if s not in SERVERS]
    if unknown:
        error_line(f"aviary: bench throughput: unknown server(s) {', '.join(unknown)}")
        return 2
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if size * DISK_COPIES > free:
        error_line(
            f"aviary: bench throughput: --size {format_size(size)} needs "
            f"{format_size(size * DISK_COPIES)} free in {tempfile.gettempdir()}; "
            f"{free // 2**20}M free"
        )
        return 2
    rows: list[ThroughputRow] = []
    with tempfile.TemporaryDirectory(prefix="aviary-throughput-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # servers that dropped privileges need nothing here, but be plain
        source = work / "source"
        _make_source(source, size)
        with progress_bar(console) as progress:
            local_targets = 2 if choice.local else 1
            total = (local_targets + len(choice.servers) * len(block_sizes)) * repeat
            task = progress.add_task("throughput", total=total)

            def advance() -> None:
                progress.advance(task)

            progress.update(task, description="throughput: local baselines")
            rows += _measure_local(work, source, size, repeat, choice.local, advance)
            for key in choice.servers:
                progress.update(task, description=f"throughput: {key}")
                rows.append(_measure_server(key, work, source, size, block_sizes, repeat, advance))
    out.mkdir(parents=True, exist_ok=True)
    (out / "figure6.md").write_text(_markdown(rows, size, block_sizes, repeat))
    write_json(
        out / "figure6.json",
        {
            "benchmark": "throughput",
            "figure": "6",
            "machine": machine_description(),
            "file_bytes": size,
            "block_sizes": block_sizes,
            "repeat": repeat,
            "units": {"throughput": "MB/s (10^6 bytes/s)", "seconds": "s per copy"},
            "rows": [
                {
                    **asdict(row),
                    "cells": [
                        {
                            **asdict(cell),
                            "write_sizes": {str(k): v for k, v in sorted(cell.write_sizes.items())},
                            "observed_write": cell.observed_write,
                            "mb_s_spread": summarize(cell.mb_s) if cell.mb_s else None,
                        }
                        for cell in row.cells
                    ],
                }
                for row in rows
            ],
        },
    )
    _plot(rows, block_sizes, out / "figure6.png")
    console.print(f"wrote {out / 'figure6.md'}, {out / 'figure6.json'}, {out / 'figure6.png'}")
    failed = any(row.error and not row.error.startswith("n/a") for row in rows) or any(
        cell.error for row in rows for cell in row.cells
    )
    return 1 if failed else 0
