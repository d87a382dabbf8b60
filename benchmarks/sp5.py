"""``aviary bench sp5``: a synthetic SP5 under the agent, the seeds' Figure 10 measured here.

Covers: the shape of the seeds' SP5 run: an I/O-heavy initialisation (reading
many small files whole and small pieces of a few large ones, all from the
store), then ``events`` CPU-bound events that each write 10-100 KB of output to
the store. Targets: natively on a local directory (the seeds' "same, os,
files"), under ``aviary run`` on a local directory ("same, parrot, files"),
and under ``aviary run`` on each Chirp server through ``/chirp/HOST:PORT/...``
("same, parrot, chirp"). Reported: initialisation time and time per event, as
medians with their spread, and each as a ratio to native beside the seeds'
ratios from Figure 10.

Scenario: a small C program is compiled with gcc. It is calibrated once,
natively, to find how many iterations of its CPU loop take ``event_cpu_ms``;
every target then runs the same count, so an event's time is that CPU work plus
the cost of writing its output through the target. The store gets
``small_files`` files of ``small_size`` bytes and ``big_files`` files of
``big_size`` bytes (written through the driver for a server); the program
times its initialisation (whole small files; ``big_reads`` reads of
``read_bytes`` at pseudo-random offsets of the large files) and each event
(CPU loop, then one append of a pseudo-random size in ``event_bytes`` to
``events.out``), and prints one JSON object. The output's size is checked
against what the program says it wrote. Results: ``OUT/sp5.md``,
``OUT/sp5.json`` (raw runs, medians, spreads, the machine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import seeds_data
from benchmarks.andrew import agent_prefix
from benchmarks.common import (
    Spread,
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
from drivers import Driver
from servers import SERVERS, RunningServer, ServerError, start_server

__all__ = ["Sp5Params", "Sp5Row", "run_sp5"]

COMPILE_TIMEOUT = 120.0  # seconds for gcc
RUN_TIMEOUT = 1800.0  # seconds for one whole run of the program
SEEDS_ROWS = {  # our target -> the seeds' Figure 10 row it stands for
    "native": "same, os, files",
    "aviary-local": "same, parrot, files",
    "chirp": "same, parrot, chirp",
}
SUPPORTED_DRIVERS = ("local", "chirp")

SP5_C = r"""
/* A synthetic SP5: I/O-heavy initialisation, then CPU-bound events writing output. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void die(const char *what, const char *path) {
    fprintf(stderr, "sp5: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static uint64_t work(long iterations) {  /* the CPU-bound part of an event */
    uint64_t x = rng;
    for (long i = 0; i < iterations; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x += (uint64_t)i; }
    return x;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--calibrate") == 0) {
        /* Grow n until one loop takes a quarter of the event, then keep the fastest of
           five timings: another process on the CPU only ever slows a timing down. */
        double ms = atof(argv[2]), t0, took = 0;
        long n = 1000000;
        volatile uint64_t sink = 0;
        for (;;) {
            t0 = now_s();
            sink += work(n);
            took = now_s() - t0;
            if (took * 1000 >= ms / 4 || n > (1L << 40)) break;
            n *= 2;
        }
        for (int trial = 0; trial < 5; trial++) {
            t0 = now_s();
            sink += work(n);
            double again = now_s() - t0;
            if (again < took) took = again;
        }
        printf("{\"iterations_per_ms\": %.1f}\n", n / (took * 1000));
        return 0;
    }
    if (argc != 12) {
        fprintf(stderr, "usage: sp5 DATA OUT SMALL BIG BIG_READS READ_BYTES EVENTS EV_MIN EV_MAX CPU_ITERS SEED\n");
        return 2;
    }
    const char *data = argv[1], *out = argv[2];
    long small = atol(argv[3]), big = atol(argv[4]), big_reads = atol(argv[5]);
    long read_bytes = atol(argv[6]), events = atol(argv[7]), ev_min = atol(argv[8]);
    long ev_max = atol(argv[9]), cpu = atol(argv[10]);
    rng ^= (uint64_t)atol(argv[11]) * 2654435761ULL;
    if (small < 0 || big < 0 || big_reads < 0 || read_bytes < 1 || read_bytes > 65536 ||
        events < 0 || ev_min < 1 || ev_max < ev_min || ev_max > (1L << 26) || cpu < 0) {
        fprintf(stderr, "sp5: bad arguments\n");
        return 2;
    }
    char path[4096], buf[65536];
    long long bytes_read = 0, bytes_written = 0;
    double t0 = now_s();
    for (long i = 0; i < small; i++) {
        snprintf(path, sizeof path, "%s/small/f%05ld", data, i);
        int fd = open(path, O_RDONLY);
        if (fd < 0) die("open", path);
        ssize_t got;
        while ((got = read(fd, buf, sizeof buf)) > 0) bytes_read += got;
        if (got < 0) die("read", path);
        close(fd);
    }
    for (long b = 0; b < big; b++) {
        snprintf(path, sizeof path, "%s/big/b%02ld", data, b);
        int fd = open(path, O_RDONLY);
        struct stat st;
        if (fd < 0) die("open", path);
        if (fstat(fd, &st) != 0) die("fstat", path);
        long span = (long)st.st_size - read_bytes;
        for (long r = 0; r < big_reads; r++) {
            off_t at = span > 0 ? (off_t)(next() % (uint64_t)span) : 0;
            ssize_t got = pread(fd, buf, (size_t)read_bytes, at);
            if (got < 0) die("pread", path);
            bytes_read += got;
        }
        close(fd);
    }
    double init = now_s() - t0;
    snprintf(path, sizeof path, "%s/events.out", out);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) die("open", path);
    char *event = malloc((size_t)ev_max);
    if (event == NULL) die("malloc for", path);
    printf("{\"init_s\": %.6f, \"event_s\": [", init);
    uint64_t check = 0;
    for (long e = 0; e < events; e++) {
        double e0 = now_s();
        check ^= work(cpu);
        long size = ev_min + (long)(next() % (uint64_t)(ev_max - ev_min + 1));
        memset(event, (int)(check & 0xff), (size_t)size);
        for (long done = 0; done < size;) {
            ssize_t put = write(fd, event + done, (size_t)(size - done));
            if (put < 0) die("write", path);
            done += put;
        }
        bytes_written += size;
        printf("%s%.6f", e ? ", " : "", now_s() - e0);
    }
    if (close(fd) != 0) die("close", path);
    free(event);
    printf("], \"bytes_read\": %lld, \"bytes_written\": %lld, \"check\": %llu}\n",
           bytes_read, bytes_written, (unsigned long long)check);
    return 0;
}
"""


class Sp5Error(Exception):
    """A step failed; the message is the one line the user sees."""


@dataclass(frozen=True)
class Sp5Params:
    """The synthetic job; defaults are a few seconds natively on this kind of machine."""

    events: int = 20
    event_bytes: tuple[int, int] = (10_000, 100_000)  # the seeds' 10-100 KB per event
    event_cpu_ms: float = 100.0  # CPU work per event, calibrated natively
    small_files: int = 400
    small_size: int = 16 * 1024
    big_files: int = 2
    big_size: int = 32 * 1024 * 1024
    big_reads: int = 4000  # reads per large file
    read_bytes: int = 512  # bytes per read of a large file


@dataclass
class Sp5Row:
    target: str
    description: str
    seeds_row: str
    init_s: list[float] = field(default_factory=list)
    event_s: list[list[float]] = field(default_factory=list)  # per run, per event
    bytes_read: int = 0
    bytes_written: list[int] = field(default_factory=list)
    error: str | None = None

    def init_spread(self) -> Spread | None:
        return summarize(self.init_s) if self.init_s else None

    def event_spread(self) -> Spread | None:
        """Over every event of every run."""
        pooled = [t for run in self.event_s for t in run]
        return summarize(pooled) if pooled else None


def _compile(work: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Sp5Error("gcc not installed: apt-get install gcc")
    source, binary = work / "sp5.c", work / "sp5"
    source.write_text(SP5_C)
    done = run_bounded([gcc, "-O2", "-Wall", "-o", str(binary), str(source)], COMPILE_TIMEOUT, work)
    if done.returncode != 0:
        raise Sp5Error(f"gcc failed: {last_line(done.stderr)}")
    return binary


def _calibrate(binary: Path, event_cpu_ms: float, work: Path) -> int:
    if event_cpu_ms <= 0:
        return 0
    done = run_bounded([str(binary), "--calibrate", str(event_cpu_ms)], RUN_TIMEOUT, work)
    try:
        per_ms = float(json.loads(last_line(done.stdout))["iterations_per_ms"])
    except (ValueError, KeyError, TypeError):
        raise Sp5Error(f"calibration failed: {last_line(done.stderr) or done.stdout!r}") from None
    return max(1, int(per_ms * event_cpu_ms))


def _data_files(params: Sp5Params) -> dict[str, bytes]:
    """The store's input: name -> content (deterministic, so every target reads the same)."""
    small = bytes(range(256)) * (params.small_size // 256 + 1)
    files = {f"small/f{i:05d}": small[: params.small_size] for i in range(params.small_files)}
    block = os.urandom(1024 * 1024)
    for b in range(params.big_files):
        files[f"big/b{b:02d}"] = (block * (params.big_size // len(block) + 1))[: params.big_size]
    return files


def _fill_local(root: Path, files: dict[str, bytes]) -> None:
    for sub in ("small", "big", "out"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)


def _fill_remote(driver: Driver, files: dict[str, bytes]) -> None:
    for sub in ("/sp5", "/sp5/small", "/sp5/big", "/sp5/out"):
        driver.mkdir(sub)
    for name, data in files.items():
        driver.write_file(f"/sp5/{name}", data)


def _program(
    binary: Path, data: str, out: str, params: Sp5Params, cpu: int, seed: int
) -> list[str]:
    low, high = params.event_bytes
    return [str(binary), data, out, str(params.small_files), str(params.big_files),
            str(params.big_reads), str(params.read_bytes), str(params.events), str(low),
            str(high), str(cpu), str(seed)]  # fmt: skip


def _run_once(command: list[str], agent: bool, work: Path, env: dict[str, str]) -> dict[str, Any]:
    if agent:
        command = [sys.executable, "-m", "harness.cli", "run", "--", *command]
    try:
        done = run_bounded(command, RUN_TIMEOUT, work, {**os.environ, **env})
    except TimeoutError as exc:
        raise Sp5Error(str(exc)) from None
    if done.returncode != 0:
        raise Sp5Error(last_line(done.stderr) or f"exit status {done.returncode}")
    try:
        result: dict[str, Any] = json.loads(last_line(done.stdout))
    except ValueError:
        raise Sp5Error(f"no JSON result (got {last_line(done.stdout)[:80]!r})") from None
    return result


def _record(row: Sp5Row, result: dict[str, Any], events: int, written_size: int) -> None:
    if len(result["event_s"]) != events:
        raise Sp5Error(f"{len(result['event_s'])} events timed, not {events}")
    if written_size != result["bytes_written"]:
        raise Sp5Error(
            f"events.out has {written_size} bytes; the program wrote {result['bytes_written']}"
        )
    row.init_s.append(float(result["init_s"]))
    row.event_s.append([float(t) for t in result["event_s"]])
    row.bytes_read = int(result["bytes_read"])
    row.bytes_written.append(int(result["bytes_written"]))


def _local_rows(
    binary: Path,
    work: Path,
    files: dict[str, bytes],
    params: Sp5Params,
    cpu: int,
    repeat: int,
    with_agent: bool,
    advance: Callable[[], None],
) -> list[Sp5Row]:
    rows = [Sp5Row("native", "the program alone on a local directory", SEEDS_ROWS["native"])]
    if with_agent:
        rows.append(Sp5Row("aviary-local", "under aviary run, on a local directory",
                           SEEDS_ROWS["aviary-local"]))  # fmt: skip
    store = work / "store"
    _fill_local(store, files)
    for run in range(repeat):
        for row in rows:
            if row.error is None:
                out = store / "out" / f"{row.target}-{run}"
                out.mkdir()
                command = _program(binary, str(store), str(out), params, cpu, run)
                try:
                    result = _run_once(command, row.target != "native", work, {})
                    _record(row, result, params.events, (out / "events.out").stat().st_size)
                except (Sp5Error, OSError) as exc:
                    row.error = str(exc)
            advance()
    return rows


def _server_row(
    key: str,
    binary: Path,
    work: Path,
    files: dict[str, bytes],
    params: Sp5Params,
    cpu: int,
    repeat: int,
    advance: Callable[[], None],
) -> Sp5Row:
    row = Sp5Row(key, f"under aviary run, on {SERVERS[key].description}", SEEDS_ROWS["chirp"])
    server: RunningServer | None = None
    try:
        server = start_server(key)
        with server.driver() as driver:
            _fill_remote(driver, files)
            prefix = f"{agent_prefix(server)}/sp5"
            for run in range(repeat):
                if row.error is None:
                    out = f"/sp5/out/{run}"
                    driver.mkdir(out)
                    command = _program(
                        binary, prefix, f"{agent_prefix(server)}{out}", params, cpu, run
                    )
                    try:
                        result = _run_once(command, True, work, server.client_env)
                        _record(
                            row, result, params.events, driver.stat(f"{out}/events.out").st_size
                        )
                    except (Sp5Error, OSError) as exc:
                        row.error = str(exc)
                advance()
    except (ServerError, OSError) as exc:
        row.error = f"not measured: {exc}"
    finally:
        if server is not None:
            server.stop()
    return row


def _seconds(text: str) -> float | None:
    match = re.match(r"\s*([\d.]+)", text)
    return float(match.group(1)) if match else None


def _seeds_ratios() -> dict[str, tuple[float, float]]:
    """The seeds' Figure 10 'same' rows as (init, per event) ratios to "same, os, files"."""
    rows = seeds_data.FIGURE10["rows"]
    assert isinstance(rows, dict)
    columns = seeds_data.FIGURE10["columns"]
    assert isinstance(columns, list)
    init_at, event_at = columns.index("init"), columns.index("per event")
    values = {name: (_seconds(v[init_at]), _seconds(v[event_at])) for name, v in rows.items()}
    base_init, base_event = values[SEEDS_ROWS["native"]]
    ratios = {}
    for name, (init, event) in values.items():
        if init and event and base_init and base_event and name.startswith("same"):
            ratios[name] = (init / base_init, event / base_event)
    return ratios


def _seconds_text(spread: Spread) -> str:
    """Three significant figures: 0.000123, 0.0457, 1.23, 446."""

    def figure(value: float) -> str:
        return f"{value:.3g}" if value < 1000 else f"{value:.0f}"

    if spread.n < 2:
        return figure(spread.median)
    return f"{figure(spread.median)} [{figure(spread.minimum)}–{figure(spread.maximum)}]"


def _ratio(value: Spread | None, base: Spread | None) -> str:
    if value is None or base is None or not base.median:
        return "n/a"
    return f"{value.median / base.median:.2f}×"


def _markdown(rows: list[Sp5Row], params: Sp5Params, repeat: int, cpu_iterations: int) -> str:
    seeds = _seeds_ratios()
    native = next((r for r in rows if r.target == "native"), None)
    base_init = native.init_spread() if native else None
    base_event = native.event_spread() if native else None
    low, high = params.event_bytes
    lines = [
        "# SP5, measured: a synthetic SP5 under the agent (the seeds' Figure 10, same host)",
        "",
        f"Initialisation: {params.small_files} files of {format_size(params.small_size)} read "
        f"whole, then {params.big_reads} reads of {params.read_bytes} B at pseudo-random offsets "
        f"of each of {params.big_files} files of {format_size(params.big_size)}. Then "
        f"{params.events} events, each {params.event_cpu_ms:g} ms of CPU work (calibrated "
        f"natively: {cpu_iterations} loop iterations) and one append of {low // 1000}-"
        f"{high // 1000} KB. {repeat} run(s) per target; seconds as median [min–max] (init: "
        "over runs; per event: over every event of every run). The seeds' ratios are their "
        "Figure 10 rows on the same host (446 s init and 64 s per event natively, on a 1 GHz CPU "
        "and 2004's disks): the I/O share of our initialisation is larger, so its ratio is too.",
        "",
        "| target | init (s) | per event (s) | init × native | event × native | seeds' row | "
        "seeds' init × | seeds' event × |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        seed = seeds.get(row.seeds_row)
        seed_cells = f"{seed[0]:.2f}× | {seed[1]:.2f}×" if seed else "n/a | n/a"
        if row.error:
            lines.append(f"| {row.target} | {row.error} | | | | {row.seeds_row} | {seed_cells} |")
            continue
        init, event = row.init_spread(), row.event_spread()
        assert init is not None and event is not None
        lines.append(
            f"| {row.target} | {_seconds_text(init)} | {_seconds_text(event)} | "
            f"{_ratio(init, base_init)} | "
            f"{_ratio(event, base_event)} | {row.seeds_row} | {seed_cells} |"
        )
    lines += ["", "Targets:", ""]
    lines += [f"- `{row.target}`: {row.description}" for row in rows]
    return "\n".join(lines) + "\n"


def run_sp5(out: Path, choice: TargetChoice, params: Sp5Params, repeat: int) -> int:
    """Run the synthetic SP5 on the chosen targets; write ``sp5.md`` and ``sp5.json``.

    Args:
        out: output directory.
        choice: ``local`` adds the aviary-local row (native is always run);
            ``servers``: Chirp servers to run on.
        params: the job.
        repeat: runs per target.

    Returns:
        0 when every target ran, 1 when one failed (its row says why), 2 for
        bad arguments (a server that is not Chirp, a negative size...).
    """
    console = Console(stderr=True)
    low, high = params.event_bytes
    counts = (params.small_files, params.big_files, params.big_reads, params.event_cpu_ms)
    if repeat < 1 or params.events < 1 or low < 1 or high < low or min(counts) < 0:
        error_line("aviary: bench sp5: --repeat and --events must be at least 1, "
                      "--event-bytes LOW-HIGH with 1 <= LOW <= HIGH, counts not negative")  # fmt: skip
        return 2
    if params.read_bytes > 65536 or high > 1 << 26:
        error_line("aviary: bench sp5: reads of at most 64K, events of at most 64M")
        return 2
    others = [s for s in choice.servers if SERVERS[s].protocol not in SUPPORTED_DRIVERS]
    if others:
        error_line(f"aviary: bench sp5: runs on {', '.join(SUPPORTED_DRIVERS)} only, "
                      f"not {', '.join(others)}")  # fmt: skip
        return 2
    rows: list[Sp5Row] = []
    with tempfile.TemporaryDirectory(prefix="aviary-sp5-") as tmp:
        work = Path(tmp)
        try:
            binary = _compile(work)
            cpu = _calibrate(binary, params.event_cpu_ms, work)
        except (Sp5Error, TimeoutError) as exc:
            error_line(f"aviary: bench sp5: {exc}")
            return 1
        files = _data_files(params)
        with progress_bar(console) as progress:
            local_targets = 2 if choice.local else 1
            task = progress.add_task("sp5", total=(local_targets + len(choice.servers)) * repeat)

            def advance() -> None:
                progress.advance(task)

            progress.update(task, description="sp5: local")
            rows += _local_rows(binary, work, files, params, cpu, repeat, choice.local, advance)
            for key in choice.servers:
                progress.update(task, description=f"sp5: {key}")
                rows.append(_server_row(key, binary, work, files, params, cpu, repeat, advance))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sp5.md").write_text(_markdown(rows, params, repeat, cpu))
    write_json(
        out / "sp5.json",
        {
            "benchmark": "sp5",
            "figure": "10",
            "machine": machine_description(),
            "params": asdict(params),
            "cpu_iterations_per_event": cpu,
            "repeat": repeat,
            "units": {"init": "s", "event": "s"},
            "seeds_ratios_to_native": {k: list(v) for k, v in _seeds_ratios().items()},
            "rows": [
                {
                    **asdict(row),
                    "init_spread": row.init_spread(),
                    "event_spread": row.event_spread(),
                    "event_mean_s": statistics.fmean(t for run in row.event_s for t in run)
                    if row.event_s
                    else None,
                }
                for row in rows
            ],
        },
    )
    console.print(f"wrote {out / 'sp5.md'}, {out / 'sp5.json'}")
    return 1 if any(row.error for row in rows) else 0
