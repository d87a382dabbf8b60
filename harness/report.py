"""``aviary report``: the seeds' Figure 7, measured here on real servers.

Covers: the latency of POSIX-equivalent operations through each driver
(stat, open/close, read 1 B, read 8 KB, write 8 KB, readdir, mkdir+rmdir) and
sequential read bandwidth, against every real server of each protocol, with
the local driver as the native baseline. Next to each latency stands what the
driver's counters say the operation cost on the wire (round trips, bytes,
connections), which is what the simulation is later calibrated from.

Scenario: each server is started on loopback over a fresh directory holding a
1-byte file, an 8 KB file, a 16 MiB file and a directory of 10 entries; each
operation runs ``iterations`` times after a warm-up; results are written to
``OUT/figure7.md`` (table), ``OUT/figure7.json`` (data) and
``OUT/figure7.png`` (plot).
"""

from __future__ import annotations

import errno
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drivers import Driver, DriverCounters, OpCounters
from drivers.local import LocalDriver
from harness.servers import SERVERS, ServerError, give_to, running_server

__all__ = ["OPERATIONS", "Measurement", "measure_driver", "run_report"]

WARMUP = 10  # untimed repetitions before each operation
BANDWIDTH_FILE = 16 * 1024 * 1024  # bytes read sequentially for the bandwidth column
BANDWIDTH_BLOCK = 1024 * 1024  # bytes per read in the bandwidth run
SMALL = 8 * 1024  # bytes of the "8 KB" operations
LISTED_ENTRIES = 10  # names in the directory that readdir lists


@dataclass
class Measurement:
    """One operation on one target: latency statistics and wire costs per call."""

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


@dataclass
class TargetResult:
    target: str
    description: str
    measurements: list[Measurement] = field(default_factory=list)
    bandwidth_mb_s: float | None = None
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


#: The operations of the table, in column order.
OPERATIONS = ("stat", "open/close", "read 1B", "read 8KB", "write 8KB", "readdir", "mkdir+rmdir")


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


def measure_driver(
    target: str,
    driver: Driver,
    iterations: int,
    advance: Callable[[], None] = lambda: None,
    backing: Path | None = None,
    owner: str | None = None,
) -> tuple[list[Measurement], float]:
    """Time every operation of :data:`OPERATIONS` and the read bandwidth.

    Operations a read-only protocol cannot do are recorded as NaN ("n/a" in the table).
    """
    writable = _prepare_tree(driver, backing, owner)
    results: list[Measurement] = []
    operations = _operations(driver, writable)
    for name in OPERATIONS:
        run = operations[name]
        if run is None:
            nan = math.nan
            results.append(Measurement(target, name, 0, nan, nan, nan, nan, nan, nan, nan))
            advance()
            continue
        for _ in range(WARMUP):
            run()
        before = driver.counters.snapshot()
        samples: list[float] = []
        for _ in range(iterations):
            start = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - start) / 1000.0)
        delta = DriverCounters.difference(driver.counters.snapshot(), before)
        rts, sent, received, conns = _per_call(delta, iterations)
        results.append(
            Measurement(
                target=target,
                operation=name,
                iterations=iterations,
                mean_us=statistics.fmean(samples),
                stdev_us=statistics.stdev(samples) if len(samples) > 1 else 0.0,
                median_us=statistics.median(samples),
                round_trips=rts,
                bytes_sent=sent,
                bytes_received=received,
                connections=conns,
            )
        )
        advance()
    handle = driver.open("/big", os.O_RDONLY)
    began = time.perf_counter()
    offset = 0
    while chunk := driver.pread(handle, BANDWIDTH_BLOCK, offset):
        offset += len(chunk)
    elapsed = time.perf_counter() - began
    driver.close(handle)
    advance()
    return results, offset / elapsed / 1e6


def _markdown(results: list[TargetResult], iterations: int) -> str:
    baseline = {
        m.operation: m.median_us for r in results if r.target == "local" for m in r.measurements
    }
    lines = [
        "# Figure 7, measured: latency of POSIX operations through each driver",
        "",
        f"Loopback (127.0.0.1), {iterations} timed iterations per cell after {WARMUP} warm-up calls; "
        "mean ± standard deviation in microseconds (the seeds' Figure 7 used milliseconds over 100 Mb Ethernet). "
        "`rt` is round trips per call from the driver's counters; `×` is the median against the local driver.",
        "",
        "| target | " + " | ".join(OPERATIONS) + " | read bandwidth |",
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
            if math.isnan(m.mean_us):
                cells.append("n/a (read-only)")
                continue
            ratio = m.median_us / baseline[m.operation] if baseline.get(m.operation) else math.nan
            cells.append(f"{m.mean_us:.1f} ± {m.stdev_us:.1f} ({m.round_trips:g} rt, {ratio:.0f}×)")
        bw = f"{result.bandwidth_mb_s:.0f} MB/s" if result.bandwidth_mb_s else "n/a"
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
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / max(len(measured), 1)
    for i, result in enumerate(measured):
        xs = [j + i * width for j in range(len(OPERATIONS))]
        means = [m.mean_us for m in result.measurements]
        errs = [m.stdev_us for m in result.measurements]
        ax.bar(xs, means, width, yerr=errs, label=result.target, capsize=2)
    ax.set_xticks([j + width * (len(measured) - 1) / 2 for j in range(len(OPERATIONS))])
    ax.set_xticklabels(OPERATIONS)
    ax.set_yscale("log")
    ax.set_ylabel("latency per call (µs, log scale)")
    ax.set_title("Figure 7 measured on loopback: POSIX operations through aviary's drivers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_report(out: Path, iterations: int, servers: list[str]) -> int:
    """Measure, then write the table, data and plot; returns the exit status."""
    console = Console(stderr=True)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        console.print(
            f"aviary: report: unknown server(s) {', '.join(unknown)}; known: {', '.join(sorted(SERVERS))}"
        )
        return 2
    if iterations < 2:
        console.print("aviary: report: --iterations must be at least 2")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    results: list[TargetResult] = []
    steps_per_target = len(OPERATIONS) + 1
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("measuring", total=steps_per_target * (len(servers) + 1))

        def advance() -> None:
            progress.advance(task)

        progress.update(task, description="local (native baseline)")
        with tempfile.TemporaryDirectory(prefix="aviary-report-") as tmp, LocalDriver(tmp) as local:
            measurements, bandwidth = measure_driver("local", local, iterations, advance)
            results.append(
                TargetResult(
                    "local", "local driver on a temporary directory", measurements, bandwidth
                )
            )
        for key in servers:
            spec = SERVERS[key]
            progress.update(task, description=key)
            try:
                with running_server(key) as server, server.driver() as driver:
                    measurements, bandwidth = measure_driver(
                        key, driver, iterations, advance, server.data_dir, server.as_user
                    )
                results.append(TargetResult(key, spec.description, measurements, bandwidth))
            except (ServerError, OSError) as exc:
                console.print(f"[yellow]{key}: not measured: {exc}[/yellow]")
                results.append(TargetResult(key, spec.description, error=str(exc)))
                progress.advance(task, steps_per_target)
    (out / "figure7.md").write_text(_markdown(results, iterations))
    (out / "figure7.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    _plot(results, out / "figure7.png")
    console.print(f"wrote {out / 'figure7.md'}, {out / 'figure7.json'}, {out / 'figure7.png'}")
    return 1 if any(r.error for r in results) else 0
