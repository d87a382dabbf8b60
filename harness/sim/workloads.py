"""The workloads the simulation runs: the Andrew-like benchmark replayed from a trace, and SP5.

Covers: turning an ``aviary run --trace`` of the real Andrew-like benchmark
(with its stage stamps) into per-stage operation counts, and the SP5 job of
the seeds: an I/O-heavy initialisation followed by CPU-bound events that each
write 10-100 KB.

Scenario: ``condense_trace`` keeps only the calls that reached a remote driver
and maps each syscall to the driver operations it costs; the result is stored
in ``harness/sim_data/andrew-trace.json`` so that the model replays a real run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ANDREW_TRACE", "AndrewStage", "Sp5Job", "condense_trace", "load_andrew"]

ANDREW_TRACE = Path(__file__).resolve().parent.parent / "sim_data" / "andrew-trace.json"

#: Which driver operations a trapped syscall on a remote object costs (the agent's handlers).
SYSCALL_OPERATIONS: dict[str, tuple[str, ...]] = {
    "open": ("open", "stat"), "openat": ("open", "stat"), "creat": ("open", "stat"), "openat2": ("open", "stat"),
    "close": ("close",),
    "read": ("pread",), "pread64": ("pread",), "readv": ("pread",), "preadv": ("pread",),
    "write": ("pwrite",), "pwrite64": ("pwrite",), "writev": ("pwrite",), "pwritev": ("pwrite",),
    "stat": ("stat",), "lstat": ("stat",), "newfstatat": ("stat",), "statx": ("stat",), "fstat": ("stat",),
    "access": ("stat",), "faccessat": ("stat",), "faccessat2": ("stat",), "readlink": ("stat",),
    "readlinkat": ("stat",), "getdents64": ("readdir",), "mkdir": ("mkdir",), "mkdirat": ("mkdir",),
    "rmdir": ("rmdir",), "unlink": ("unlink",), "unlinkat": ("unlink",), "rename": ("rename",),
    "renameat": ("rename",), "renameat2": ("rename",), "lseek": ("stat",), "execve": ("stat", "pread"),
    "ftruncate": ("pwrite",), "truncate": ("pwrite",), "fsync": ("stat",), "utimensat": ("stat",),
    "chmod": ("stat",), "fchmodat": ("stat",), "fchmod": ("stat",),
}  # fmt: skip
STAGES = ("copy", "list", "scan", "make", "delete")


@dataclass(frozen=True)
class AndrewStage:
    """One stage of the benchmark: how many of each operation, and the bytes moved."""

    name: str
    operations: dict[str, int]
    read_bytes: int
    written_bytes: int


@dataclass(frozen=True)
class Sp5Job:
    """SP5 with the seeds' numbers as defaults (Figure 10, LAN parrot+chirp row)."""

    init_cpu_s: float = 446.0  # seconds of initialisation with local data (same host, os files)
    #: Remote reads in the initialisation, parameterised from Figure 10: the LAN row's extra
    #: 4059 s (4505 s - 446 s) over a LAN request of ~330 us (130 us RTT + a 2004 server's ~200 us).
    init_rpcs: int = 12_000_000
    init_read_bytes: int = 512  # bytes per initialisation read (small pieces of large databases)
    init_chunks: int = 50  # the initialisation simulated in this many batches
    event_cpu_s: float = 64.0  # seconds of CPU per event (1 GHz)
    event_bytes: tuple[int, int] = (10_000, 100_000)  # each event writes this many bytes
    events: int = 100


def condense_trace(trace: Path, stamps: Path) -> list[AndrewStage]:
    """Cut a trace into stages by its stamps; count remote driver operations per stage."""
    marks: dict[str, list[float]] = {}
    for line in stamps.read_text().splitlines():
        stage, ns = line.split()
        marks.setdefault(stage, []).append(int(ns) / 1e9)
    counts = {stage: Counter[str]() for stage in STAGES}
    moved = {stage: [0, 0] for stage in STAGES}
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        if not str(record.get("driver", "")).startswith(
            ("chirp://", "ftp://", "sftp://", "root://", "dav://")
        ):
            continue
        found = next((s for s in STAGES if marks[s][0] <= record["t"] <= marks[s][1]), None)
        result = record["result"]
        # "native" on a remote driver: the call went on in the kernel after the agent did its
        # part (an open became a placeholder, a close released it): it still cost the driver.
        if found is None or (isinstance(result, int) and result < 0):
            continue
        stage = found
        if record["syscall"] == "getdents64" and result == 0:
            continue  # the end of a listing the agent already fetched
        for op in SYSCALL_OPERATIONS.get(record["syscall"], ()):
            counts[stage][op] += 1
        if isinstance(result, int) and record["syscall"] in ("read", "pread64", "readv", "preadv"):
            moved[stage][0] += result
        elif isinstance(result, int) and record["syscall"] in (
            "write",
            "pwrite64",
            "writev",
            "pwritev",
        ):
            moved[stage][1] += result
    return [AndrewStage(s, dict(counts[s]), moved[s][0], moved[s][1]) for s in STAGES]


def save_andrew(stages: list[AndrewStage], source: str, path: Path = ANDREW_TRACE) -> None:
    document = {"source": source, "stages": [s.__dict__ for s in stages]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def load_andrew(path: Path = ANDREW_TRACE) -> tuple[list[AndrewStage], str]:
    """The condensed Andrew-like trace and where it came from."""
    document = json.loads(path.read_text())
    return [AndrewStage(**s) for s in document["stages"]], document["source"]
