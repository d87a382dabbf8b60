"""``aviary bench latency``: the seeds' Figure 7, measured here on real servers.

Covers: the latency of POSIX-equivalent operations through each driver
(stat, open/close, read 1 B, read 8 KB, write 8 KB, readdir, mkdir+rmdir) and
sequential read bandwidth, against every real server of each protocol, with
the local driver as the native baseline. Next to each latency stands what the
driver's counters say the operation cost on the wire (round trips, bytes,
connections), which is what the simulation is later calibrated from.

Scenario: each server is started on loopback over a fresh directory holding a
1-byte file, an 8 KB file, a 16 MiB file and a directory of 10 entries; each
operation runs ``iterations`` times after a warm-up, ``repeat`` times over;
each cell is the median of all timed calls with its quartiles and the range of
the per-repeat medians. Results are written to ``OUT/figure7.md`` (table),
``OUT/figure7.json`` (raw data and the machine's description) and
``OUT/figure7.png`` (plot).
"""

from __future__ import annotations

import errno
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from benchmarks.common import (
    TargetChoice,
    error_line,
    machine_description,
    progress_bar,
    summarize,
    write_json,
)
from drivers import Driver, DriverCounters, OpCounters
from drivers.local import LocalDriver
from servers import SERVERS, ServerError, give_to, running_server

__all__ = ["OPERATIONS", "Measurement", "TargetResult", "measure_driver", "run_latency"]

WARMUP = 10  # untimed repetitions before each operation
BANDWIDTH_FILE = 16 * 1024 * 1024  # bytes read sequentially for the bandwidth column
BANDWIDTH_BLOCK = 1024 * 1024  # bytes per read in the bandwidth run
SMALL = 8 * 1024  # bytes of the "8 KB" operations
LISTED_ENTRIES = 10  # names in the directory that readdir lists

#: The operations of the table, in column order.
OPERATIONS = ("stat", "open/close", "read 1B", "read 8KB", "write 8KB", "readdir", "mkdir+rmdir")


@dataclass
class Measurement:
    """One operation on one target: latency statistics over all timed calls, wire costs per call.

    ``repeat_medians_us`` holds the median of each repeat; NaN everywhere marks an
    operation the protocol cannot do (read-only).
    """

    target: str
    operation: str
    iterations: int
    mean_us: float
    stdev_us: float
    median_us: float
    round_trips: float
    bytes_sent: float
    bytes_received: float
    connections: float
    q1_us: float = math.nan
    q3_us: float = math.nan
    min_us: float = math.nan
    max_us: float = math.nan
    repeat_medians_us: list[float] = field(default_factory=list)


@dataclass
class TargetResult:
    target: str
    description: str
    measurements: list[Measurement] = field(default_factory=list)
    bandwidth_mb_s: float | None = None  # median over the repeats
    bandwidth_runs_mb_s: list[float] = field(default_factory=list)
    error: str | None = None


def _prepare_tree(driver: Driver, backing: Path | None = None, owner: str | None = None) -> bool:
    """Make the files the operations use; False when the protocol is read-only.

    A read-only protocol (http) gets its files behind the server's back, in ``backing``.
    """
    files = {"one_byte": b"x", "small": os.urandom(SMALL), "big": os.urandom(BANDWIDTH_FILE)}
    try:
        for name, data in files.items():
            driver.write_file(f"/{name}", data)
        driver.mkdir("/listing")
        for i in range(LISTED_ENTRIES):
            driver.write_file(f"/listing/entry{i}", b"")
        return True
    except OSError as exc:
        if exc.errno != errno.EROFS or backing is None:
            raise
    for name, data in files.items():
        (backing / name).write_bytes(data)
    (backing / "listing").mkdir(exist_ok=True)
    for i in range(LISTED_ENTRIES):
        (backing / "listing" / f"entry{i}").write_bytes(b"")
    give_to(owner, *backing.rglob("*"))
    return False


def _operations(driver: Driver, writable: bool) -> dict[str, Callable[[], object] | None]:
    handle_1 = driver.open("/one_byte", os.O_RDONLY)
    handle_8k = driver.open("/small", os.O_RDONLY)
    handle_w = (
        driver.open("/written", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if writable else None
    )
    payload = os.urandom(SMALL)

    def open_close() -> None:
        driver.close(driver.open("/small", os.O_RDONLY))

    def mkdir_rmdir() -> None:
        driver.mkdir("/made")
        driver.rmdir("/made")

    return {
        "stat": lambda: driver.stat("/small"),
        "open/close": open_close,
        "read 1B": lambda: driver.pread(handle_1, 1, 0),
        "read 8KB": lambda: driver.pread(handle_8k, SMALL, 0),
        "write 8KB": (lambda: driver.pwrite(handle_w, payload, 0))
        if handle_w is not None
        else None,
        "readdir": lambda: driver.readdir("/listing"),
        "mkdir+rmdir": mkdir_rmdir if writable else None,
    }


def _per_call(delta: dict[str, OpCounters], iterations: int) -> tuple[float, float, float, float]:
    total = OpCounters()
    for counters in delta.values():
        total.add(counters)
    return (
        total.round_trips / iterations,
        total.bytes_sent / iterations,
        total.bytes_received / iterations,
        total.connections / iterations,
    )


def _time_calls(run: Callable[[], object], iterations: int) -> list[float]:
    samples: list[float] = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


def _bandwidth(driver: Driver) -> float:
    handle = driver.open("/big", os.O_RDONLY)
    began = time.perf_counter()
    offset = 0
    while chunk := driver.pread(handle, BANDWIDTH_BLOCK, offset):
        offset += len(chunk)
    elapsed = time.perf_counter() - began
    driver.close(handle)
    return offset / elapsed / 1e6


def measure_driver(
    target: str,
    driver: Driver,
    iterations: int,
    advance: Callable[[], None] = lambda: None,
    backing: Path | None = None,
    owner: str | None = None,
    repeat: int = 1,
) -> tuple[list[Measurement], list[float]]:
    """Time every operation of :data:`OPERATIONS` and the read bandwidth, ``repeat`` times.

    Args:
        target: the name the results carry.
        driver: a connected driver; its root gets the files the operations use.
        iterations: timed calls per operation per repeat (after :data:`WARMUP` untimed).
        advance: called after each operation of each repeat and after each bandwidth run.
        backing: the server's directory, for a read-only protocol's files.
        owner: the account the server runs as, to give those files to.
        repeat: how many times every operation is measured.

    Returns:
        One measurement per operation (NaN for what a read-only protocol cannot
        do) and the read bandwidth of each repeat in MB/s.

    Raises:
        OSError: the driver failed.
    """
    writable = _prepare_tree(driver, backing, owner)
    operations = _operations(driver, writable)
    samples: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    medians: dict[str, list[float]] = {name: [] for name in OPERATIONS}
    wire: dict[str, tuple[float, float, float, float]] = {}
    bandwidths: list[float] = []
    for _ in range(repeat):
        for name in OPERATIONS:
            run = operations[name]
            if run is not None:
                for _ in range(WARMUP):
                    run()
                before = driver.counters.snapshot()
                timed = _time_calls(run, iterations)
                delta = DriverCounters.difference(driver.counters.snapshot(), before)
                wire[name] = _per_call(delta, iterations)
                samples[name] += timed
                medians[name].append(statistics.median(timed))
            advance()
        bandwidths.append(_bandwidth(driver))
        advance()
    results: list[Measurement] = []
    for name in OPERATIONS:
        if not samples[name]:
            nan = math.nan
            results.append(Measurement(target, name, 0, nan, nan, nan, nan, nan, nan, nan))
            continue
        spread = summarize(samples[name])
        rts, sent, received, conns = wire[name]
        results.append(
            Measurement(
                target=target,
                operation=name,
                iterations=iterations,
                mean_us=statistics.fmean(samples[name]),
                stdev_us=statistics.stdev(samples[name]) if len(samples[name]) > 1 else 0.0,
                median_us=spread.median,
                round_trips=rts,
                bytes_sent=sent,
                bytes_received=received,
                connections=conns,
                q1_us=spread.q1,
                q3_us=spread.q3,
                min_us=spread.minimum,
                max_us=spread.maximum,
                repeat_medians_us=medians[name],
            )
        )
    return results, bandwidths


def _number(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _markdown(results: list[TargetResult], iterations: int, repeat: int) -> str:
    baseline = {
        m.operation: m.median_us for r in results if r.target == "local" for m in r.measurements
    }
    lines = [
        "# Figure 7, measured: latency of POSIX operations through each driver",
        "",
        f"Loopback (127.0.0.1), {iterations} timed calls per cell after {WARMUP} warm-up calls, "
        f"{repeat} repeat(s); median [interquartile range] in microseconds over all timed calls "
        "(the seeds' Figure 7 used milliseconds over 100 Mb Ethernet). `rt` is round trips per "
        "call from the driver's counters; `×` is the median against the local driver. Read "
        f"bandwidth: a {BANDWIDTH_FILE // 2**20} MiB file in {BANDWIDTH_BLOCK // 2**20} MiB "
        "reads, median [min–max] over the repeats.",
        "",
        "| target | " + " | ".join(OPERATIONS) + " | read bandwidth (MB/s) |",
        "|---|" + "---|" * len(OPERATIONS) + "---|",
    ]
    for result in results:
        if result.error:
            lines.append(
                f"| {result.target} | "
                + " | ".join(["n/a"] * len(OPERATIONS))
                + f" | {result.error} |"
            )
            continue
        cells = []
        for m in result.measurements:
            if math.isnan(m.median_us):
                cells.append("n/a (read-only)")
                continue
            ratio = m.median_us / baseline[m.operation] if baseline.get(m.operation) else math.nan
            cells.append(
                f"{_number(m.median_us)} [{_number(m.q1_us)}–{_number(m.q3_us)}] "
                f"({m.round_trips:g} rt, {ratio:.0f}×)"
            )
        bw = (
            summarize(result.bandwidth_runs_mb_s).as_text(0)
            if result.bandwidth_runs_mb_s
            else "n/a"
        )
        lines.append(f"| {result.target} | " + " | ".join(cells) + f" | {bw} |")
    lines += ["", "Targets:", ""]
    lines += [f"- `{r.target}`: {r.description}" for r in results]
    lines += [
        "",
        "Wire cost per call (from the driver counters):",
        "",
        "| target | operation | round trips | bytes sent | bytes received | connections |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for m in result.measurements:
            lines.append(
                f"| {m.target} | {m.operation} | {m.round_trips:g} | {m.bytes_sent:.0f} | "
                f"{m.bytes_received:.0f} | {m.connections:g} |"
            )
    return "\n".join(lines) + "\n"


def _plot(results: list[TargetResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if not r.error]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(len(measured), 1)
    for i, result in enumerate(measured):
        xs = [j + i * width for j in range(len(OPERATIONS))]
        medians = [m.median_us for m in result.measurements]
        # Error bars: the interquartile range around the median.
        low = [m.median_us - m.q1_us for m in result.measurements]
        high = [m.q3_us - m.median_us for m in result.measurements]
        ax.bar(xs, medians, width, yerr=[low, high], label=result.target, capsize=2)
    ax.set_xticks([j + width * (len(measured) - 1) / 2 for j in range(len(OPERATIONS))])
    ax.set_xticklabels(OPERATIONS)
    ax.set_yscale("log")
    ax.set_ylabel("median latency per call (µs, log scale; bars: IQR)")
    ax.set_title("Figure 7 measured on loopback: POSIX operations through aviary's drivers")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_latency(out: Path, iterations: int, repeat: int, choice: TargetChoice) -> int:
    """Measure Figure 7 on the chosen targets; write the table, raw data and plot.

    Args:
        out: directory for ``figure7.md``, ``figure7.json`` and ``figure7.png``.
        iterations: timed calls per operation per repeat (at least 2).
        repeat: measurements of every cell (at least 1).
        choice: the targets; the local driver is always measured, as the baseline.

    Returns:
        0 when every target was measured, 1 when a server failed (its row says
        why), 2 for bad arguments.
    """
    console = Console(stderr=True)
    unknown = [s for s in choice.servers if s not in SERVERS]
    if unknown:
        error_line(
            f"aviary: bench latency: unknown server(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(SERVERS))}"
        )
        return 2
    if iterations < 2 or repeat < 1:
        error_line("aviary: bench latency: --iterations must be at least 2, --repeat at least 1")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    results: list[TargetResult] = []
    steps_per_target = (len(OPERATIONS) + 1) * repeat
    with progress_bar(console) as progress:
        task = progress.add_task("latency", total=steps_per_target * (len(choice.servers) + 1))

        def advance() -> None:
            progress.advance(task)

        progress.update(task, description="latency: local (native baseline)")
        with (
            tempfile.TemporaryDirectory(prefix="aviary-latency-") as tmp,
            LocalDriver(tmp) as local,
        ):
            measurements, bandwidths = measure_driver(
                "local", local, iterations, advance, repeat=repeat
            )
            results.append(
                TargetResult(
                    "local",
                    "local driver on a temporary directory",
                    measurements,
                    statistics.median(bandwidths),
                    bandwidths,
                )
            )
        for key in choice.servers:
            spec = SERVERS[key]
            progress.update(task, description=f"latency: {key}")
            done_before = progress.tasks[0].completed
            try:
                with running_server(key) as server, server.driver() as driver:
                    measurements, bandwidths = measure_driver(
                        key,
                        driver,
                        iterations,
                        advance,
                        server.data_dir,
                        server.as_user,
                        repeat=repeat,
                    )
                results.append(
                    TargetResult(
                        key,
                        spec.description,
                        measurements,
                        statistics.median(bandwidths),
                        bandwidths,
                    )
                )
            except (ServerError, OSError) as exc:
                progress.console.print(f"[yellow]{key}: not measured: {exc}[/yellow]")
                results.append(TargetResult(key, spec.description, error=str(exc)))
                left = steps_per_target - (progress.tasks[0].completed - done_before)
                progress.advance(task, left)
    (out / "figure7.md").write_text(_markdown(results, iterations, repeat))
    write_json(
        out / "figure7.json",
        {
            "benchmark": "latency",
            "figure": "7",
            "machine": machine_description(),
            "iterations": iterations,
            "repeat": repeat,
            "warmup": WARMUP,
            "units": {"latency": "µs per call", "bandwidth": "MB/s"},
            "targets": [asdict(r) for r in results],
        },
    )
    _plot(results, out / "figure7.png")
    console.print(f"wrote {out / 'figure7.md'}, {out / 'figure7.json'}, {out / 'figure7.png'}")
    return 1 if any(r.error for r in results) else 0
