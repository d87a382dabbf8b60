"""Whether a suite can be trusted: the same default runs, repeated, on one fixed checkout.

A conformance run that fails on code nobody changed is a false failure, and a suite
with those teaches its users to re-run until green. :func:`repeat_runs` runs
``pytest conformance --driver SPEC`` for each spec in turn, round after round, up to
a number of rounds and a time limit (both bounded), each run with a results
directory of its own, and keeps per run its exit status, time and the properties
that failed with their evidence (the shrunk example). A failed run is either a
defect the suite found (then it must replay) or a false failure of the suite: the
log says which properties, the reader decides.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from conformance.results import load_results

__all__ = ["TrustRun", "repeat_runs", "summarize"]

#: The checkout whose suite runs (the runs start here, whatever the current directory).
CHECKOUT = Path(__file__).resolve().parent.parent
#: The most one run may take: a default run takes minutes; a hang must not stop the rounds.
RUN_TIMEOUT = 1800.0


@dataclass
class TrustRun:
    """One default run: which spec, which round, its status, time and what failed."""

    spec: str
    round: int
    status: int
    seconds: float
    summary: str  # pytest's last line
    failed: dict[str, str] = field(default_factory=dict)  # property -> evidence


def _one_run(spec: str, round_number: int, extra: Sequence[str], scratch: Path) -> TrustRun:
    results = scratch / f"{round_number}-{spec.replace(' ', '_').replace('/', '_')}"
    command = [
        sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider",
        "--driver", *shlex.split(spec), "--results-dir", str(results), *extra,
    ]  # fmt: skip
    began = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=CHECKOUT, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        status, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as exc:
        status = -1
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        output += f"\ntimed out after {RUN_TIMEOUT:.0f} s"
    seconds = time.monotonic() - began
    lines = output.strip().splitlines()
    failed = {
        f"{result.column} {prop}": result.evidence.get(prop, "")
        for result in (load_results(results) if results.exists() else [])
        for prop, outcome in result.outcomes.items()
        if outcome in ("failed", "xpass")
    }
    return TrustRun(spec, round_number, status, seconds, lines[-1] if lines else "", failed)


def repeat_runs(
    specs: Sequence[str],
    rounds: int,
    hours: float,
    extra: Sequence[str] = (),
    log: Path | None = None,
    progress: Callable[[TrustRun], None] | None = None,
) -> list[TrustRun]:
    """Up to ``rounds`` rounds of one run per spec, stopping when ``hours`` have passed.

    Each run is appended to ``log`` (JSON lines) as it ends, so a long job can be read
    while it runs and survives being stopped.
    """
    deadline = time.monotonic() + hours * 3600
    runs: list[TrustRun] = []
    with tempfile.TemporaryDirectory(prefix="aviary-trust-") as scratch:
        for round_number in range(1, rounds + 1):
            for spec in specs:
                if time.monotonic() >= deadline:
                    return runs
                run = _one_run(spec, round_number, extra, Path(scratch))
                runs.append(run)
                if log is not None:
                    with log.open("a") as out:
                        out.write(json.dumps(asdict(run)) + "\n")
                if progress is not None:
                    progress(run)
    return runs


def summarize(runs: Sequence[TrustRun]) -> str:
    """Per spec: runs, failed runs, and each failing property with its first evidence."""
    lines: list[str] = []
    for spec in dict.fromkeys(run.spec for run in runs):
        mine = [run for run in runs if run.spec == spec]
        bad = [run for run in mine if run.status != 0]
        median = sorted(run.seconds for run in mine)[len(mine) // 2]
        lines.append(f"{spec}: {len(mine)} runs, {len(bad)} failed (median {median:.0f} s per run)")
        for run in bad:
            names = ", ".join(run.failed) or run.summary
            lines.append(f"  round {run.round}: {names}")
            for name, evidence in list(run.failed.items())[:3]:
                first = evidence.strip().splitlines()[0] if evidence.strip() else "(no evidence)"
                lines.append(f"    {name}: {first}")
    return "\n".join(lines)
