"""The workloads the simulation runs: the Andrew-like benchmark replayed from a trace, and SP5.

Covers: turning an ``aviary run --trace`` of the real Andrew-like benchmark
(with its stage stamps) into per-stage operation counts, and the SP5 job of
the seeds: an I/O-heavy initialisation followed by CPU-bound events that each
write 10-100 KB.

Scenario: ``condense_trace`` keeps only the calls that reached a remote driver
and maps each syscall to the driver operations it costs; the result is stored
in ``simulation/data/andrew-trace.json`` so that the model replays a real run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulation.seeds_sp5 import seeds_job_fields

__all__ = [
    "ANDREW_TRACE", "AndrewStage", "Sp5Job", "condense_trace", "event_size", "event_sizes", "load_andrew",
    "remote_time", "traced_round_trips",
]  # fmt: skip

ANDREW_TRACE = Path(__file__).resolve().parent / "data" / "andrew-trace.json"

#: Which driver operations a trapped syscall on a remote object costs (the agent's handlers), for
#: a trace made before the agent recorded them (lseek: SEEK_END's fstat is the rare case).
SYSCALL_OPERATIONS: dict[str, tuple[str, ...]] = {
    "open": ("open", "stat"), "openat": ("open", "stat"), "creat": ("open", "stat"), "openat2": ("open", "stat"),
    "close": ("close",),
    "read": ("pread",), "pread64": ("pread",), "readv": ("pread",), "preadv": ("pread",),
    "write": ("pwrite",), "pwrite64": ("pwrite",), "writev": ("pwrite",), "pwritev": ("pwrite",),
    "stat": ("stat",), "lstat": ("stat",), "newfstatat": ("stat",), "statx": ("stat",), "fstat": ("stat",),
    "access": ("stat",), "faccessat": ("stat",), "faccessat2": ("stat",), "readlink": ("stat",),
    "readlinkat": ("stat",), "getdents64": ("readdir",), "mkdir": ("mkdir",), "mkdirat": ("mkdir",),
    "rmdir": ("rmdir",), "unlink": ("unlink",), "unlinkat": ("unlink",), "rename": ("rename",),
    "renameat": ("rename",), "renameat2": ("rename",), "lseek": (), "execve": ("stat", "pread"),
    "chdir": ("stat",), "statfs": ("stat",), "fstatfs": ("stat",),
    "ftruncate": ("pwrite",), "truncate": ("pwrite",), "fsync": ("stat",), "utimensat": ("stat",),
    "chmod": ("stat",), "fchmodat": ("stat",), "fchmod": ("stat",),
}  # fmt: skip
_SEEDS = seeds_job_fields()
_MASK = 2**64 - 1
STAGES = ("copy", "list", "scan", "make", "delete")
WRITES = ("write", "pwrite64", "writev", "pwritev")
#: The model operation a driver operation (a counter of the drivers) is costed as; None: not
#: an operation (a connection's set-up, which the model costs once per connection).
DRIVER_OPERATIONS: dict[str, str | None] = {
    "stat": "stat", "lstat": "lstat", "fstat": "fstat", "open": "open", "close": "close",
    "pread": "pread", "pwrite": "pwrite", "readdir": "readdir", "mkdir": "mkdir",
    "rmdir": "rmdir", "unlink": "unlink", "rename": "rename",
    "access": "stat", "statfs": "stat", "chmod": "stat", "utimens": "stat",
    "readlink": "lstat", "fsync": "fstat", "ftruncate": "pwrite", "truncate": "pwrite",
    "link": "rename", "symlink": "mkdir", "getfile": "pread", "putfile": "pwrite",
    "read_file": "pread", "write_file": "pwrite", "(connect)": None,
}  # fmt: skip


@dataclass(frozen=True)
class AndrewStage:
    """One stage of the benchmark: how many of each operation, and the bytes moved."""

    name: str
    operations: dict[str, int]
    read_bytes: int
    written_bytes: int


@dataclass(frozen=True)
class Sp5Job:
    """SP5 under the agent, with the seeds' numbers as defaults (see :mod:`simulation.figure10`).

    CPU seconds are at 1 GHz and divided by ``cpu_ghz``; the page counts are what
    Figure 10's LAN row implies for reads of one 8 KB Objectivity page each.
    """

    init_cpu_s: float = float(_SEEDS["init_cpu_s"])  # seconds: SP5 and the agent, 1 GHz
    init_rpcs: int = int(_SEEDS["init_rpcs"])  # remote page reads during initialisation
    init_read_bytes: int = int(_SEEDS["init_read_bytes"])  # bytes per initialisation read
    init_chunks: int = 50  # the initialisation simulated in this many batches
    event_cpu_s: float = float(_SEEDS["event_cpu_s"])  # seconds of CPU per event, 1 GHz
    event_reads: int = int(_SEEDS["event_reads"])  # remote page reads at the start of each event
    event_bytes: tuple[int, int] = (10_000, 100_000)  # each event writes this many bytes
    events: int = 100
    cpu_ghz: float = 1.0  # the node's clock: CPU seconds are divided by it


def event_size(seed: int, worker: int, event: int, low: int, high: int) -> int:
    """Bytes event ``event`` of worker ``worker`` writes: a counter-based draw (splitmix64).

    The same on any engine, process or machine, in any order: no generator state to carry.
    """
    z = (
        seed * 0x9E3779B97F4A7C15 + worker * 0xBF58476D1CE4E5B9 + event * 0x94D049BB133111EB
    ) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return low + z % (high - low + 1)


def event_sizes(seed: int, worker: int, events: int, low: int, high: int) -> list[int]:
    """:func:`event_size` of events 0 .. ``events``-1 of one worker, computed together
    (numpy's uint64 arithmetic wraps as the mask does): the same numbers, at a fraction of
    the cost per event."""
    import numpy as np

    with np.errstate(over="ignore"):
        index = np.arange(events, dtype=np.uint64)
        z = np.uint64(
            (seed * 0x9E3779B97F4A7C15 + worker * 0xBF58476D1CE4E5B9) & _MASK
        ) + index * np.uint64(0x94D049BB133111EB)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        sizes: list[int] = (np.uint64(low) + z % np.uint64(high - low + 1)).tolist()
    return sizes


REMOTE_SCHEMES = ("chirp://", "ftp://", "sftp://", "root://", "dav://", "http://")


def _stage_marks(stamps: Path) -> dict[str, list[float]]:
    marks: dict[str, list[float]] = {}
    for line in stamps.read_text().splitlines():
        stage, ns = line.split()
        marks.setdefault(stage, []).append(int(ns) / 1e9)
    return marks


def _records(trace: Path, stamps: Path) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(stage, record) of every traced call; the stage is None between stages."""
    marks = _stage_marks(stamps)
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        found = next((s for s in STAGES if marks[s][0] <= record["t"] <= marks[s][1]), None)
        yield found, record


def _is_remote(record: dict[str, Any]) -> bool:
    return str(record.get("driver", "")).startswith(REMOTE_SCHEMES)


def _succeeded(record: dict[str, Any]) -> bool:
    # "native" on a remote driver: the call went on in the kernel after the agent did its
    # part (an open became a placeholder, a close released it): it still cost the driver.
    result = record["result"]
    if isinstance(result, int) and result < 0:
        return False
    return not (record["syscall"] == "getdents64" and result == 0)  # a listing's end


def condense_trace(trace: Path, stamps: Path) -> list[AndrewStage]:
    """Cut a trace into stages by its stamps; count remote driver operations per stage.

    A trace that records the driver operations behind each line (``ops``, from
    the drivers' counters) is counted exactly: failed lookups and the closes
    made after a close returned are in it. An older trace's successful remote
    calls are mapped through :data:`SYSCALL_OPERATIONS` instead.
    """
    records = list(_records(trace, stamps))
    exact = any("ops" in record for _, record in records)
    counts = {stage: Counter[str]() for stage in STAGES}
    moved = {stage: [0, 0] for stage in STAGES}
    for stage, record in records:
        if stage is None:
            continue
        if exact:
            for name, calls in record.get("ops", {}).items():
                op = DRIVER_OPERATIONS.get(name, "stat")
                if op is not None:
                    counts[stage][op] += calls
        if not (_is_remote(record) and _succeeded(record)):
            continue
        if not exact:
            for op in SYSCALL_OPERATIONS.get(record["syscall"], ()):
                counts[stage][op] += 1
        result = record["result"]
        if isinstance(result, int) and record["syscall"] in ("read", "pread64", "readv", "preadv"):
            moved[stage][0] += result
        elif isinstance(result, int) and record["syscall"] in WRITES:
            moved[stage][1] += result
    return [AndrewStage(s, dict(counts[s]), moved[s][0], moved[s][1]) for s in STAGES]


def remote_time(trace: Path, stamps: Path, by: str = "stage") -> dict[str, tuple[int, float]]:
    """How many traced calls reached a remote driver, and the agent's seconds in them.

    Args:
        trace: the agent's ``--trace``.
        stamps: the stage stamps beside it.
        by: ``stage`` (per stage), ``syscall`` (per system call, all stages) or
            ``stage/syscall`` (keys like ``list/newfstatat``).
    """
    totals: dict[str, tuple[int, float]] = (
        {stage: (0, 0.0) for stage in STAGES} if by == "stage" else {}
    )
    for stage, record in _records(trace, stamps):
        if stage is None or not _is_remote(record):
            continue
        key = {"stage": stage, "syscall": str(record["syscall"])}.get(
            by, f"{stage}/{record['syscall']}"
        )
        calls, seconds = totals.get(key, (0, 0.0))
        totals[key] = (calls + 1, seconds + float(record.get("us", 0.0)) / 1e6)
    return totals


def traced_round_trips(trace: Path, stamps: Path) -> dict[str, int]:
    """Per stage, the round trips the drivers made (each trace line's ``rt``, from their counters)."""
    trips = dict.fromkeys(STAGES, 0)
    for stage, record in _records(trace, stamps):
        if stage is not None:
            trips[stage] += int(record.get("rt", 0))
    return trips


def save_andrew(stages: list[AndrewStage], source: str, path: Path = ANDREW_TRACE) -> None:
    document = {"source": source, "stages": [s.__dict__ for s in stages]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def load_andrew(path: Path = ANDREW_TRACE) -> tuple[list[AndrewStage], str]:
    """The condensed Andrew-like trace and where it came from."""
    document = json.loads(path.read_text())
    return [AndrewStage(**s) for s in document["stages"]], document["source"]
