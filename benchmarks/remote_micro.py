"""``aviary bench micro --remote``: small remote operations, the agent beside FUSE peers.

Covers: what one program pays per call on a remote file (stat, open/close, an
open+read+close of an 8 KB file, read 1 B, read 8 KB) and its sequential read
bandwidth, through ``aviary run`` in each ``--cache`` mode asked for, and
through the FUSE clients users mount instead (``rclone mount`` over FTP, SFTP and
WebDAV, ``sshfs`` over SFTP) and, on Chirp, through cctools' ``parrot_run``, each
as a ratio to the same program run natively on the server's own directory and
each agent row as a ratio to every peer on the same server.

Scenario: each server is started on loopback over a fresh directory holding an
8 KB file and a bandwidth file. A small C program, compiled with gcc, times
``iterations`` calls of each operation (read 1 B walks the 8 KB file with pread,
one byte further each call; read 8 KB preads the whole small file) and reads the
bandwidth file once in 1 MiB blocks; it prints one JSON object of ns/op and
MB/s. The same binary runs natively on the server's directory, under the agent
on ``/SERVICE/LOGIN@127.0.0.1:PORT`` (pinned, its default) and on every FUSE
mount of that server. Rounds interleave the rows, so the machine's drift spreads
over all of them; each cell is the median of ``repeat`` runs. Results go to
``OUT/remote-micro.md`` (table of ratios), ``OUT/remote-micro.json`` (data) and
``OUT/remote-micro.png`` (plot).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console

from benchmarks._micro_program import REMOTE_C, BenchError, compile_program, read_result
from benchmarks.common import (
    find_parrot,
    machine_description,
    progress_bar,
    run_bounded,
    write_json,
)
from drivers import driver_for_scheme, service_of
from servers import SERVERS, ServerHandle, ServerUnavailable, give_to, start_server
from servers.mounts import MOUNTERS, start_mount

__all__ = ["COLUMNS", "DEFAULT_SERVERS", "RemoteRow", "run_remote_micro"]

SMALL_FILE = 8 * 1024  # bytes of the file the small operations use
BANDWIDTH_FILE = 16 * 1024 * 1024  # bytes read sequentially, once per run
BANDWIDTH_BLOCK = 1024 * 1024  # bytes per read() in the bandwidth run
RUN_TIMEOUT_BASE = 120.0  # seconds any one run may take, plus RUN_TIMEOUT_PER_ITERATION each
RUN_TIMEOUT_PER_ITERATION = 0.5  # seconds per iteration (an FTP transfer costs ms, loaded more)
DEFAULT_SERVERS = ("chirp/aviary", "chirp/cctools", "ftp/pyftpdlib", "sftp/openssh", "dav/wsgidav")
#: All but the last column are ns per call; the last is MB/s.
COLUMNS = ("stat", "open/close", "open+read+close", "read 1B", "read 8KB", "bandwidth")


@dataclass
class RemoteRow:
    """One way to reach one server's files, and what it measured."""

    server: str
    way: str  # "native", "aviary --cache MODE", "rclone mount", "sshfs", "parrot_run -Q"
    kind: str  # "native", "agent" or "peer"
    status: str = "measured"  # "measured", "not installed" or "failed"
    note: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)  # medians: ns/op, bandwidth MB/s
    ratio_to_native: dict[str, float] = field(default_factory=dict)
    #: Agent rows: round trips to the server per call (bandwidth: per MiB), from one traced run.
    round_trips: dict[str, float] = field(default_factory=dict)
    #: Agent rows: against each peer on the same server, the time ratio (row / peer) of
    #: each time column and, for bandwidth, row MB/s / peer MB/s.
    vs: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class _Target:
    row: RemoteRow
    command: list[str]  # what runs the program (empty: natively)
    prefix: str  # where the files are, as the program sees them


def agent_prefix(server: ServerHandle) -> str:
    """Where the agent shows ``server``'s files: ``/SERVICE/LOGIN@127.0.0.1:PORT``."""
    service = service_of(driver_for_scheme(server.spec.protocol))
    login = ""
    if server.spec.user and server.spec.password:
        login = f"{quote(server.spec.user, safe='')}:{quote(server.spec.password, safe='')}@"
    elif server.spec.user:
        login = f"{server.spec.user}@"
    return f"/{service}/{login}127.0.0.1:{server.port}"


PARROT_WAY = "parrot_run -Q"
#: Parrot's options on Chirp: no catalog lookups, the test servers' address login, and
#: failures reported after a minute rather than retried for Parrot's default hour.
PARROT_OPTIONS = ("-Q", "-a", "address", "-T", "60")


def peers_of(protocol: str) -> list[str]:
    """The FUSE clients that mount a server of ``protocol`` (``rclone``, ``sshfs``)."""
    return [name for name, protocols in MOUNTERS.items() if protocol in protocols]


def _place_files(server: ServerHandle, bandwidth_bytes: int) -> None:
    small, big = server.data_dir / "small", server.data_dir / "big"
    small.write_bytes(os.urandom(SMALL_FILE))
    chunk = os.urandom(BANDWIDTH_BLOCK)
    with big.open("wb") as out:
        for _ in range(max(1, bandwidth_bytes // BANDWIDTH_BLOCK)):
            out.write(chunk)
    give_to(server.as_user, small, big)


def _measure(command: list[str], timeout: float, env: dict[str, str]) -> dict[str, float]:
    try:
        done = run_bounded(command, timeout, env=env)
    except TimeoutError as exc:
        raise BenchError(str(exc)) from None
    return read_result(done, COLUMNS)


@contextmanager
def _targets(
    key: str, caches: tuple[str, ...], peers: bool, tmp: Path, bandwidth_bytes: int
) -> Iterator[tuple[list[_Target], dict[str, str]]]:
    """Start ``key``'s server with its files, mount its peers; yield every way to it."""
    with ExitStack() as stack:
        server = start_server(key)
        stack.callback(server.stop)
        _place_files(server, bandwidth_bytes)
        env = {**os.environ, **server.client_env}
        agent = [sys.executable, "-m", "harness.cli", "run"]
        targets = [_Target(RemoteRow(key, "native", "native"), [], str(server.data_dir))]
        for cache in caches:
            row = RemoteRow(key, f"aviary --cache {cache}", "agent")
            targets.append(_Target(row, [*agent, "--cache", cache, "--"], agent_prefix(server)))
        for mounter in peers_of(server.spec.protocol) if peers else []:
            row = RemoteRow(key, f"{mounter} mount" if mounter == "rclone" else mounter, "peer")
            (tmp / mounter).mkdir()
            try:
                mounted = start_mount(mounter, server.spec.protocol, server, tmp / mounter)
            except ServerUnavailable as exc:
                row.status, row.note = "not installed", f"{exc} {exc.hint}".strip()
                targets.append(_Target(row, [], ""))
                continue
            stack.callback(mounted.close)
            targets.append(_Target(row, [], mounted.path))
        if peers and server.spec.protocol == "chirp":
            row = RemoteRow(key, PARROT_WAY, "peer")
            parrot, missing = find_parrot()
            if parrot is None:
                row.status, row.note = "not installed", f"not installed: {missing}"
                targets.append(_Target(row, [], ""))
            else:
                prefix = f"/chirp/127.0.0.1:{server.port}"
                targets.append(_Target(row, [parrot, *PARROT_OPTIONS, "--"], prefix))
        yield targets, env


TRACE_ITERATIONS = 20  # calls per operation in the traced run that counts round trips


def round_trips_per_call(records: list[dict[str, Any]], iterations: int) -> dict[str, float]:
    """Round trips per call of each column, from an agent trace of the program's run.

    The program's phases run in order, so the n-th group of ``iterations`` calls of one
    kind belongs to the n-th phase of that kind: opens of the small file are open/close,
    then open+read+close (with its reads and closes); preads are 1 B, then 8 KB.
    """

    def on(record: dict[str, Any], name: str) -> bool:
        return str(record.get("path", "")).rstrip(")").endswith("/" + name)

    small = [r for r in records if on(r, "small")]
    opens = [i for i, r in enumerate(small) if r["syscall"] in ("open", "openat")]
    stats = [r for r in small if r["syscall"] in ("stat", "newfstatat", "statx", "lstat")]
    preads = [r for r in small if r["syscall"] == "pread64"]
    big_reads = [r for r in records if on(r, "big") and r["syscall"] == "read"]
    whole_start = opens[iterations] if len(opens) > iterations else len(small)
    whole_end = opens[2 * iterations] if len(opens) > 2 * iterations else len(small)

    def per(chosen: list[dict[str, Any]], calls: float) -> float:
        return sum(int(r.get("rt", 0)) for r in chosen) / calls if calls else float("nan")

    moved = sum(int(r["result"]) for r in big_reads if isinstance(r.get("result"), int))
    return {
        "stat": per(stats[1:], len(stats) - 1),  # the first, untimed, made the connection
        "open/close": per(small[opens[0] : whole_start], iterations) if opens else float("nan"),
        "open+read+close": per(small[whole_start:whole_end], iterations),
        "read 1B": per(preads[:iterations], iterations),
        "read 8KB": per(preads[iterations : 2 * iterations], iterations),
        "bandwidth": per(big_reads, moved / BANDWIDTH_BLOCK),
    }


def _count_round_trips(binary: Path, target: _Target, env: dict[str, str], work: Path) -> None:
    """One untimed run under ``--trace``: the agent row's round trips per call."""
    import json

    trace = work / f"trace-{target.row.way.replace(' ', '_')}.jsonl"
    command = [*target.command[:-1], "--trace", str(trace), "--"]
    program = [
        str(binary), f"{target.prefix}/small", f"{target.prefix}/big",
        str(TRACE_ITERATIONS), str(BANDWIDTH_BLOCK),
    ]  # fmt: skip
    _measure([*command, *program], RUN_TIMEOUT_BASE, env)
    records = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    target.row.round_trips = round_trips_per_call(records, TRACE_ITERATIONS)


def _finish(rows: list[RemoteRow]) -> None:
    native = {row.server: row for row in rows if row.kind == "native"}
    for row in rows:
        if row.status != "measured" or not row.runs:
            continue
        row.values = {c: statistics.median(run[c] for run in row.runs) for c in COLUMNS}
        base = native[row.server].values
        if not base:
            continue
        for column in COLUMNS:
            if column == "bandwidth":  # slower is a larger ratio in every column
                row.ratio_to_native[column] = base[column] / row.values[column]
            else:
                row.ratio_to_native[column] = row.values[column] / base[column]
    peers = [row for row in rows if row.kind == "peer" and row.values]
    for row in rows:
        if row.kind != "agent" or not row.values:
            continue
        for peer in (p for p in peers if p.server == row.server):
            row.vs[peer.way] = {
                column: row.values[column] / peer.values[column] for column in COLUMNS
            }


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _markdown(rows: list[RemoteRow], meta: dict[str, Any]) -> str:
    lines = [
        "# Small remote operations: aviary and FUSE peers against native",
        "",
        "Each cell: the time per call as a multiple of the same program run natively on the "
        "server's own directory (bandwidth: native MB/s divided by the row's, so larger is "
        "slower everywhere), then the median itself (us per call; MB/s). "
        f"{meta['iterations']} calls per operation, median of {meta['repeat']} interleaved "
        "runs. Ratios come from one run on a shared machine; compare rows, not runs.",
        "",
        "| server | way | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        if row.status != "measured":
            lines.append(f"| {row.server} | {row.way} | {row.note} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = []
        for column in COLUMNS:
            value = row.values.get(column)
            if value is None:
                cells.append("-")
                continue
            shown = _number(value) if column == "bandwidth" else _number(value / 1000)
            ratio = row.ratio_to_native.get(column)
            cells.append(f"{ratio:.3g}x ({shown})" if ratio is not None else shown)
        lines.append(f"| {row.server} | {row.way} | " + " | ".join(cells) + " |")
    compared = [row for row in rows if row.vs]
    if compared:
        lines += [
            "",
            "Each agent row against the peers on the same server, measured in the same run: "
            "time per call as row / peer (below 1x: the agent is faster); bandwidth as the "
            "row's MB/s / the peer's (above 1x: the agent is faster).",
            "",
            "| server | way | against | " + " | ".join(COLUMNS) + " |",
            "|---|---|---|" + "---|" * len(COLUMNS),
        ]
        for row in compared:
            for peer, ratios in row.vs.items():
                cells = [f"{ratios[c]:.3g}x" for c in COLUMNS]
                lines.append(f"| {row.server} | {row.way} | {peer} | " + " | ".join(cells) + " |")
    traced = [row for row in rows if row.round_trips]
    if traced:
        lines += [
            "",
            "Round trips to the server per call (bandwidth: per MiB read), counted by the "
            f"drivers in one traced run of {TRACE_ITERATIONS} calls per operation: what the "
            "cache modes change, whatever the load of the machine.",
            "",
            "| server | way | " + " | ".join(COLUMNS) + " |",
            "|---|---|" + "---|" * len(COLUMNS),
        ]
        for row in traced:
            cells = [f"{row.round_trips.get(c, float('nan')):.3g}" for c in COLUMNS]
            lines.append(f"| {row.server} | {row.way} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[RemoteRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [row for row in rows if row.kind != "native" and row.ratio_to_native]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(max(8.0, 0.5 * len(shown) * len(COLUMNS) / 3), 5))
    width = 0.8 / len(shown)
    for index, row in enumerate(shown):
        positions = [c + index * width for c in range(len(COLUMNS))]
        heights = [row.ratio_to_native.get(column, float("nan")) for column in COLUMNS]
        ax.bar(positions, heights, width, label=f"{row.server}: {row.way}")
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(COLUMNS))], list(COLUMNS))
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("time / native (log; bandwidth: native / row)")
    ax.set_title("Remote operations: aviary's cache modes and FUSE peers")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_remote_micro(
    out: Path,
    servers: tuple[str, ...],
    caches: tuple[str, ...],
    iterations: int,
    repeat: int,
    peers: bool = True,
    bandwidth_bytes: int = BANDWIDTH_FILE,
) -> int:
    """Measure every way to each server; write the table, data and plot.

    Args:
        out: directory for ``remote-micro.md``, ``.json`` and ``.png`` (created if missing).
        servers: server keys ("chirp/aviary", "ftp/pyftpdlib", ...).
        caches: the agent's ``--cache`` modes, one row each.
        iterations: calls per operation in each run.
        repeat: runs per cell; the median is reported.
        peers: also mount each server with the FUSE clients that speak its protocol.
        bandwidth_bytes: size of the file read for the bandwidth column.

    Returns:
        0 when every row was measured (a peer that is not installed is a row that says
        so), 1 when a server or a run failed (one line on stderr says which), 2 for bad
        arguments.
    """
    console = Console(stderr=True)
    unknown = [key for key in servers if key not in SERVERS]
    bad_cache = [c for c in caches if c not in ("off", "cto", "whole")]
    if iterations < 1 or repeat < 1 or unknown or bad_cache or not servers:
        console.print(
            "aviary: bench micro --remote: "
            + (f"unknown server {unknown[0]} (known: {', '.join(SERVERS)})" if unknown else "")
            + (f"unknown cache mode {bad_cache[0]} (off, cto, whole)" if bad_cache else "")
            + ("--iterations and --repeat must be at least 1" if iterations < 1 or repeat < 1
               else "")
            + ("no server given" if not servers else "")
        )  # fmt: skip
        return 2
    timeout = RUN_TIMEOUT_BASE + RUN_TIMEOUT_PER_ITERATION * iterations
    rows: list[RemoteRow] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="aviary-remote-micro-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            binary = compile_program(REMOTE_C, tmp, "remote-micro")
        except BenchError as exc:
            console.print(f"aviary: bench micro --remote: {exc}")
            return 1
        for key in servers:
            work = tmp / key.replace("/", "-")
            work.mkdir()
            try:
                with _targets(key, caches, peers, work, bandwidth_bytes) as (targets, env):
                    rows += [t.row for t in targets]
                    runnable = [t for t in targets if t.row.status == "measured"]
                    for target in runnable:
                        if target.row.kind == "agent":
                            try:
                                _count_round_trips(binary, target, env, work)
                            except (BenchError, OSError, ValueError) as exc:
                                console.print(f"aviary: bench micro --remote: {key}: trace: {exc}")
                    failed |= _run_rounds(
                        console, binary, runnable, iterations, repeat, timeout, env
                    )
            except (ServerUnavailable, OSError) as exc:
                console.print(f"aviary: bench micro --remote: {key}: {exc}")
                rows.append(RemoteRow(key, "native", "native", "failed", f"failed: {exc}"))
                failed = True
    _finish(rows)
    meta = {"iterations": iterations, "repeat": repeat, "small_file_bytes": SMALL_FILE,
            "bandwidth_file_bytes": bandwidth_bytes, "bandwidth_block_bytes": BANDWIDTH_BLOCK,
            "kernel": os.uname().release}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "remote-micro.md").write_text(_markdown(rows, meta))
    write_json(
        out / "remote-micro.json",
        {"benchmark": "micro --remote", "machine": machine_description(), **meta,
         "columns": list(COLUMNS), "rows": [vars(row) for row in rows]},
    )  # fmt: skip
    _plot(rows, out / "remote-micro.png")
    console.print(f"aviary: bench micro --remote: wrote {out / 'remote-micro.md'}")
    return 1 if failed else 0


def _run_rounds(
    console: Console,
    binary: Path,
    targets: list[_Target],
    iterations: int,
    repeat: int,
    timeout: float,
    env: dict[str, str],
) -> bool:
    """``repeat`` interleaved rounds over ``targets``; True if a run failed."""
    failed = False
    with progress_bar(console) as progress:
        task = progress.add_task("measuring", total=repeat * len(targets))
        for round_ in range(repeat):
            for target in targets:
                row = target.row
                progress.update(task, description=f"{row.server} {row.way} ({round_ + 1}/{repeat})")
                if row.status == "measured":
                    program = [
                        str(binary), f"{target.prefix}/small", f"{target.prefix}/big",
                        str(iterations), str(BANDWIDTH_BLOCK),
                    ]  # fmt: skip
                    try:
                        row.runs.append(_measure([*target.command, *program], timeout, env))
                    except BenchError as exc:
                        row.status, row.note = "failed", f"failed: {exc}"
                        progress.console.print(
                            f"aviary: bench micro --remote: {row.server} {row.way}: {exc}"
                        )
                        failed = True
                progress.advance(task)
    return failed
