"""What every ``aviary bench`` shares: sizes, spreads, the machine's description, targets.

Covers: parsing sizes such as ``128M`` or ``4K,1M``; summarising repeated
samples as a median with its spread (minimum, maximum, quartiles); describing
the machine a result was measured on (CPU, cores, kernel, Python, versions of
the servers and tools that are cheap to ask); choosing the drivers and servers
a benchmark measures from ``--driver``/``--server``; one style of rich progress
bar; and writing raw results as JSON beside the tables.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from servers import SERVERS

__all__ = [
    "Spread",
    "TargetChoice",
    "UsageError",
    "choose_targets",
    "error_line",
    "find_parrot",
    "format_size",
    "last_line",
    "loadable_servers",
    "machine_description",
    "parse_size",
    "parse_sizes",
    "progress_bar",
    "run_bounded",
    "summarize",
    "write_json",
]

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
#: Driver names accepted by --driver, beside the protocols of SERVERS ("dav", "root").
DRIVER_ALIASES = {"webdav": "dav", "xrootd": "root"}
VERSION_TIMEOUT = 5.0  # seconds for one version query
#: Debian packages of the programs the benchmarks run (agents' peers, servers, cp, gcc);
#: their versions come from one dpkg-query, which starts none of them.
DEBIAN_PACKAGES = (
    "coreutils",
    "gcc",
    "strace",
    "proot",
    "coop-computing-tools",
    "nginx",
    "vsftpd",
    "openssh-server",
    "xrootd-server",
)  # fmt: skip  (proftpd and pure-ftpd are unpacked by setup/ftp.sh, outside dpkg's database)
#: Where ``setup/parrot/build.sh`` installs cctools' Parrot unless told otherwise.
PARROT_PREFIX_ENV = "AVIARY_PARROT_PREFIX"
#: A parrot_run to use instead of the one the prefix or the PATH holds.
PARROT_ENV = "AVIARY_PARROT"
PARROT_HINT = "build it with setup/parrot/build.sh CCTOOLS_SRC (Debian's coop-computing-tools has no parrot_run)"
#: Python packages behind servers and plots.
PYTHON_PACKAGES = ("wsgidav", "pyftpdlib", "paramiko", "matplotlib", "rich")


class UsageError(ValueError):
    """A bad argument; the message is the one line the user sees after ``aviary: ...:``."""


def find_parrot() -> tuple[str | None, str]:
    """cctools' ``parrot_run``: ``$AVIARY_PARROT``, else ``PREFIX/bin/parrot_run`` (the prefix
    ``setup/parrot/build.sh`` installs to: ``$AVIARY_PARROT_PREFIX`` or
    ``~/.cache/aviary/cctools``), else the PATH.

    Returns:
        The program's path and "", or None and why it is not there (a line for the table).
    """
    chosen = os.environ.get(PARROT_ENV)
    if chosen:
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return chosen, ""
        return None, f"{PARROT_ENV}={chosen} is not an executable file"
    prefix = Path(
        os.environ.get(PARROT_PREFIX_ENV) or Path.home() / ".cache" / "aviary" / "cctools"
    )
    built = prefix / "bin" / "parrot_run"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built), ""
    on_path = shutil.which("parrot_run")
    if on_path is not None:
        return on_path, ""
    return None, PARROT_HINT


def parse_size(text: str) -> int:
    """Bytes from ``128M``, ``4K``, ``1G``, ``512`` (binary units, as the seeds' axes).

    Raises:
        UsageError: not a positive size.
    """
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text.upper())
    if not match or int(match.group(1)) <= 0:
        raise UsageError(f"bad size {text!r} (say 4K, 128M or 1G)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_sizes(text: str) -> list[int]:
    """Sizes from ``4K,16K,64K``, in the given order without duplicates.

    Raises:
        UsageError: empty, or a size is bad.
    """
    sizes: list[int] = []
    for part in text.split(","):
        if part.strip():
            size = parse_size(part)
            if size not in sizes:
                sizes.append(size)
    if not sizes:
        raise UsageError(f"no sizes in {text!r}")
    return sizes


def format_size(size: int) -> str:
    """``4K``, ``1M``, ``128M``, or bytes when no unit divides it."""
    for unit in ("G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


@dataclass(frozen=True)
class Spread:
    """A median with its spread over ``n`` samples."""

    n: int
    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float

    def as_text(self, digits: int = 1) -> str:
        """``12.3 [11.9–13.0]``: the median and the min–max range (just the median for n=1)."""
        if self.n < 2:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.minimum:.{digits}f}–{self.maximum:.{digits}f}]"


def summarize(samples: Iterable[float]) -> Spread:
    """Median, minimum, maximum and quartiles of ``samples``.

    Raises:
        ValueError: no samples.
    """
    values = sorted(samples)
    if not values:
        raise ValueError("no samples to summarise")
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(len(values), statistics.median(values), values[0], values[-1], q1, q3)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_versions() -> dict[str, str]:
    """Versions of :data:`DEBIAN_PACKAGES` and :data:`PYTHON_PACKAGES`; "not installed" if absent."""
    from importlib import metadata

    versions = dict.fromkeys((*DEBIAN_PACKAGES, *PYTHON_PACKAGES), "not installed")
    try:
        done = subprocess.run(
            [
                "dpkg-query",
                "-W",
                "-f",
                "${Package} ${Version} ${db:Status-Status}\\n",
                *DEBIAN_PACKAGES,
            ],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
        )
        for line in done.stdout.splitlines():
            name, version, status = [*line.split(), "", "", ""][:3]
            if name in versions and status == "installed":
                versions[name] = version
    except (OSError, subprocess.TimeoutExpired):
        pass  # not Debian: the packages stay "not installed", the Python ones are still asked
    for name in PYTHON_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine_description() -> dict[str, Any]:
    """Where and when a result was measured.

    Returns:
        CPU model, logical cores, usable cores, memory, kernel, OS, Python,
        aviary's commit, the local date and time (ISO 8601), and the versions
        of the packages the benchmarks run ("not installed" for absent ones).
    """
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "aviary_commit": _git_commit(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "packages": _package_versions(),
    }


def loadable_servers() -> list[str]:
    """Keys of the servers whose programs are installed and whose driver loads, sorted."""
    from drivers import driver_for_scheme

    keys = []
    for key, spec in sorted(SERVERS.items()):
        try:
            driver_for_scheme(spec.protocol)
        except LookupError:
            continue
        if not spec.missing_programs():
            keys.append(key)
    return keys


@dataclass(frozen=True)
class TargetChoice:
    """What a benchmark measures: the local baseline and/or these server keys."""

    local: bool
    servers: list[str]


def _split(values: Sequence[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def choose_targets(
    drivers: Sequence[str] | None,
    servers: Sequence[str] | None,
    available: Sequence[str] | None = None,
) -> TargetChoice:
    """The targets ``--driver`` and ``--server`` select (each repeatable, comma-separated).

    No option: local and every available server. ``--driver``: local if named,
    and the available servers of the named protocols. ``--server``: those
    servers (within the named drivers, if any), and local unless drivers leave it out.

    Raises:
        UsageError: an unknown driver or server name.
    """
    available = list(available) if available is not None else loadable_servers()
    wanted_drivers = [DRIVER_ALIASES.get(d, d) for d in _split(drivers)]
    wanted_servers = _split(servers)
    protocols = {SERVERS[k].protocol for k in SERVERS} | {"local"}
    unknown = [d for d in wanted_drivers if d not in protocols]
    if unknown:
        known = ", ".join(sorted(protocols | set(DRIVER_ALIASES)))
        raise UsageError(f"unknown driver(s) {', '.join(unknown)}; known: {known}")
    unknown = [s for s in wanted_servers if s not in SERVERS]
    if unknown:
        raise UsageError(
            f"unknown server(s) {', '.join(unknown)}; known: {', '.join(sorted(SERVERS))}"
        )
    if wanted_servers:
        keys = [
            s for s in wanted_servers if not wanted_drivers or SERVERS[s].protocol in wanted_drivers
        ]
    else:
        keys = [k for k in available if not wanted_drivers or SERVERS[k].protocol in wanted_drivers]
    local = not wanted_drivers or "local" in wanted_drivers
    return TargetChoice(local, list(dict.fromkeys(keys)))


def progress_bar(console: Console) -> Progress:
    """The benchmarks' progress bar: what is running, bar, done/total, elapsed, remaining."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _plain(value: object) -> object:
    """``value`` with Spreads as objects and NaN as null: JSON that any reader accepts."""
    if isinstance(value, Spread):
        value = asdict(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as indented JSON (Spreads as objects, NaN as null), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(document), indent=2, allow_nan=False) + "\n")


def run_bounded(
    command: Sequence[str],
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in its own process group; on timeout or interrupt, kill the whole group.

    Why a group: a killed agent would leave its tracee (cp, a shell) running.

    Raises:
        TimeoutError: no exit within ``timeout`` seconds (the group was killed).
    """
    proc = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"no exit after {timeout:.0f} s (killed)") from None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(command), proc.returncode, out, err)


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` (an error message, usually), or ""."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def error_line(message: str) -> None:
    """Print one error line on stderr as it is: no wrapping, no markup (unlike rich)."""
    print(message, file=sys.stderr, flush=True)
