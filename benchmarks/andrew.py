"""``aviary bench andrew``: the seeds' Andrew-like benchmark, natively and under the agent.

Covers: Figure 8 of the seeds (copy, list, scan, make, delete a C source tree)
on a local directory natively, on a local directory under ``aviary run``, and
on each Chirp server through ``/chirp/HOST:PORT/...`` under ``aviary run`` and,
as target ``parrot:KEY``, under cctools' ``parrot_run`` on the same kind of
server; checks that every stage prints the same as natively; keeps the agent's
``--trace`` of each run, which the simulation replays.

Scenario: a deterministic C project of ``files`` sources and headers with a
Makefile is generated locally; one shell script runs the five stages against
the target directory and stamps each stage's start and end; the outputs that
legitimately differ between filesystems (owners, times, link counts, modes
forced by the server) are normalised before comparison. Each remote target runs
with the agent's cache off (every read and write to the server) and, when asked,
with close-to-open read-ahead (``--cache cto``) or on (``--cache whole``: a file
is copied on open, written back on close), the seeds' "$$ off" and "$$ on"; every
row runs ``repeat`` times and reports the median of each stage with its range. Results: ``OUT/andrew.md`` and
``OUT/andrew.json`` (raw runs, the machine's description).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from rich.console import Console

from benchmarks.common import (
    error_line,
    find_parrot,
    machine_description,
    progress_bar,
    summarize,
    write_json,
)
from drivers import driver_for_scheme, service_of
from servers import SERVERS, RunningServer, ServerError, running_server

__all__ = [
    "CACHE_MODES",
    "STAGES",
    "StageResult",
    "TargetRun",
    "agent_prefix",
    "generate_tree",
    "run_andrew",
    "run_stages",
]

STAGES = ("copy", "list", "scan", "make", "delete")
HEADERS_PER_SOURCE = 4  # one header for every this many sources
STAGE_TIMEOUT = 1800  # seconds for the whole script on one target

# The five stages; stage outputs go to numbered files, stamps to $STAMPS.
SCRIPT = r"""
set -e
stamp() { echo "$1 $(date +%s%N)" >> "$STAMPS"; }
stamp copy; cp -r "$SRC" "$DEST/tree"; stamp copy
(cd "$DEST/tree" && find . -type f | sort | xargs cat | cksum) > "$OUTS/copy"  # untimed check
stamp list; ls -lR "$DEST/tree" > "$OUTS/list"; stamp list
stamp scan; (cd "$DEST/tree" && grep -rn "value_" . | sort) > "$OUTS/scan"; stamp scan
stamp make; make -s -C "$DEST/tree" > "$OUTS/make" 2>&1; "$DEST/tree/program" >> "$OUTS/make"; stamp make
stamp delete; rm -rf "$DEST/tree"; ls -A "$DEST" > "$OUTS/delete"; stamp delete
"""


#: The agent's cache modes: the seeds' "$$ off" and "$$ on", and close-to-open read-ahead.
CACHE_MODES = ("off", "cto", "whole")
#: Parrot's options: no catalog lookups, the test servers' address login, and a failing
#: call reported after a minute rather than retried for Parrot's default hour.
PARROT_OPTIONS = ("-Q", "-a", "address", "-T", "60")


@dataclass
class StageResult:
    """One stage of one row: the median seconds over the runs, and each run's seconds."""

    stage: str
    seconds: float
    same_as_native: bool | None = None
    runs: list[float] = field(default_factory=list)
    minimum: float = 0.0
    maximum: float = 0.0


@dataclass
class TargetRun:
    """One row: a target with one cache mode (None where the agent is not involved)."""

    target: str
    stages: list[StageResult] = field(default_factory=list)
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict, repr=False)
    cache: str | None = None
    repeat: int = 1

    @property
    def label(self) -> str:
        return self.target if self.cache in (None, "off") else f"{self.target}, cache {self.cache}"


def generate_tree(root: Path, files: int) -> None:
    """A C project of ``files`` files (sources, headers, a Makefile) that builds ``program``."""
    root.mkdir(parents=True)
    headers = max(1, files // (HEADERS_PER_SOURCE + 1))
    sources = max(1, files - headers - 2)
    for h in range(headers):
        (root / f"h{h:03d}.h").write_text(
            f"#pragma once\n#define SCALE_{h} {h + 1}\nint value_{h}(int);\n"
        )
    calls = []
    for s in range(sources):
        h = s % headers
        (root / f"s{s:03d}.c").write_text(
            f'#include "h{h:03d}.h"\n'
            f"int value_{s if s < headers else headers + s}(int x) {{ return x * SCALE_{h} + {s}; }}\n"
        )
        calls.append(f"value_{s if s < headers else headers + s}")
    declarations = "".join(f"int {c}(int);\n" for c in calls)
    body = "".join(f"    total += {c}({i});\n" for i, c in enumerate(calls))
    (root / "main.c").write_text(
        f"#include <stdio.h>\n{declarations}int main(void) {{\n    long total = 0;\n{body}"
        '    printf("total %ld\\n", total);\n    return 0;\n}\n'
    )
    objects = " ".join([f"s{s:03d}.o" for s in range(sources)] + ["main.o"])
    (root / "Makefile").write_text(
        f"program: {objects}\n\tgcc -o program {objects}\n%.o: %.c\n\tgcc -O0 -c $< -o $@\n"
    )


def _normalise(stage: str, text: str, dest: str) -> str:
    text = text.replace(dest, "DEST")
    if stage != "list":
        return text
    # ls -lR: keep type, size and name; owners, times, modes and link counts are the server's.
    lines = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[0][0] in "-dl":
            lines.append(
                f"{parts[0][0]} {parts[4] if parts[0][0] != 'd' else '-'} {' '.join(parts[8:])}"
            )
        elif not line.startswith("total"):
            lines.append(line)
    return "\n".join(lines)


def _run_target(
    name: str,
    source: Path,
    dest: str,
    agent: bool,
    work: Path,
    trace: Path | None,
    mountlist: Path | None = None,
    cache: str = "off",
    prefix: Sequence[str] = (),
) -> TargetRun:
    outs = Path(tempfile.mkdtemp(prefix=f"outs-{name.replace('/', '_')}-", dir=work))
    stamps = outs / "stamps"
    env = {
        **os.environ,
        "SRC": str(source),
        "DEST": dest,
        "OUTS": str(outs),
        "STAMPS": str(stamps),
        "LC_ALL": "C",
    }
    command = ["sh", "-c", SCRIPT]
    if agent:
        extra = ["--trace", str(trace)] if trace else []
        extra += ["-m", str(mountlist)] if mountlist else []
        extra += ["--cache", cache] if cache != "off" else []
        command = [sys.executable, "-m", "harness.cli", "run", *extra, "--", *command]
    command = [*prefix, *command]  # e.g. nsenter into a network namespace (faultnet)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=STAGE_TIMEOUT)
    run = TargetRun(name)
    if result.returncode != 0:
        run.error = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return run
    if trace is not None:  # the stage stamps, so that a replay can cut the trace into stages
        trace.with_suffix(".stamps").write_text(stamps.read_text())
    marks: dict[str, list[int]] = {}
    for line in stamps.read_text().splitlines():
        stage, ns = line.split()
        marks.setdefault(stage, []).append(int(ns))
    for stage in STAGES:
        start, end = marks[stage]
        run.stages.append(StageResult(stage, (end - start) / 1e9))
        run.outputs[stage] = _normalise(stage, (outs / stage).read_text(errors="replace"), dest)
    return run


def agent_prefix(server: RunningServer, address: tuple[str, int] | None = None) -> str:
    """Where the server's files are in the agent's namespace: /SERVICE/[LOGIN@]HOST:PORT.

    ``address`` replaces the server's own (a relay in front of it).
    """
    service = service_of(driver_for_scheme(server.spec.protocol))
    login = ""
    if server.spec.user:
        login = quote(server.spec.user, safe="")
        login += f":{quote(server.spec.password, safe='')}@" if server.spec.password else "@"
    host, port = address or ("127.0.0.1", server.port)
    return f"/{service}/{login}{host}:{port}"


def run_stages(
    source: Path,
    dest: str,
    work: Path,
    *,
    agent: bool = True,
    trace: Path | None = None,
    prefix: Sequence[str] = (),
) -> TargetRun:
    """One run of the five stages on ``dest``, under the agent unless ``agent`` is false.

    Args:
        source: the generated tree (:func:`generate_tree`).
        dest: where the stages copy it to (a local directory or an agent path).
        work: a scratch directory for the stage outputs.
        trace: where the agent writes its ``--trace`` (stamps beside it).
        prefix: argv put before the command (``nsenter`` into a network namespace).

    Returns:
        Each stage's seconds and normalised output, or the error that stopped the run.
    """
    return _run_target("stages", source, dest, agent, work, trace, prefix=prefix)


def _merge(runs: list[TargetRun]) -> TargetRun:
    """One row from the repeats of a target: each stage's median and range; the first error."""
    first = runs[0]
    merged = TargetRun(first.target, cache=first.cache, repeat=len(runs), outputs=first.outputs)
    failed = next((r for r in runs if r.error), None)
    if failed is not None:
        merged.error = failed.error
        return merged
    for i, stage in enumerate(first.stages):
        seconds = [r.stages[i].seconds for r in runs]
        spread = summarize(seconds)
        merged.stages.append(
            StageResult(stage.stage, spread.median, None, seconds, spread.minimum, spread.maximum)
        )
    # A stage matches native only if its output matched in every run.
    merged.outputs = {
        stage: first.outputs[stage]
        if all(r.outputs.get(stage) == first.outputs.get(stage) for r in runs)
        else "(differs between runs)"
        for stage in first.outputs
    }
    return merged


def _run_remote(
    target: str,
    source: Path,
    work: Path,
    trace: Path | None,
    cache: str,
    server: RunningServer,
) -> TargetRun:
    key = target.removeprefix("mount:")
    dest = agent_prefix(server)
    os.environ.update(server.client_env)  # keys and such, for the agent's driver
    mountlist = None
    if target.startswith("mount:"):  # the same server through a mountlist entry
        mountlist = work / f"mountlist-{key.replace('/', '_')}"
        mountlist.write_text(f"/andrew-remote {dest}\n")
        dest = "/andrew-remote"
    run = _run_target(target, source, dest, True, work, trace, mountlist, cache)
    run.cache = cache
    return run


def _parrot_once(
    target: str, parrot: str, server: RunningServer, source: Path, work: Path
) -> TargetRun:
    """One run of the stages under ``parrot_run`` on ``server`` (the row ``target``)."""
    dest = f"/chirp/127.0.0.1:{server.port}"
    prefix = [parrot, *PARROT_OPTIONS, "--"]
    return _run_target(target, source, dest, False, work, None, prefix=prefix)


def _round_totals(run: TargetRun) -> list[float]:
    """The row's total seconds in each round, in round order (empty: not kept)."""
    rounds = {len(stage.runs) for stage in run.stages}
    if len(rounds) != 1 or not run.stages[0].runs:
        return []
    return [sum(stage.runs[i] for stage in run.stages) for i in range(rounds.pop())]


def against_parrot(runs: list[TargetRun]) -> list[tuple[str, str, float]]:
    """Each agent row on a Chirp server against Parrot on the same server: (row, Parrot's
    row, the agent's total / Parrot's total).

    Rows run in rounds (every row once, then again), so the ratio is taken round by round,
    between runs minutes apart at most, and its median given: the machine's speed may drift
    over a whole benchmark. Without per-round times, the ratio of the median totals.
    """
    by_label = {r.label: r for r in runs if r.stages}
    found = []
    for run in runs:
        peer = f"parrot:{run.target.removeprefix('mount:')}"  # Parrot's label is its target
        other = by_label.get(peer)
        if not run.stages or run.target.startswith("parrot:") or other is None:
            continue
        mine, theirs = _round_totals(run), _round_totals(other)
        if mine and len(mine) == len(theirs) and all(theirs):
            ratio = summarize([a / b for a, b in zip(mine, theirs, strict=True)]).median
        else:
            total = sum(s.seconds for s in other.stages)
            if not total:
                continue
            ratio = sum(s.seconds for s in run.stages) / total
        found.append((run.label, peer, ratio))
    return found


def run_andrew(
    out: Path,
    files: int,
    targets: list[str],
    trace_dir: Path | None = None,
    repeat: int = 1,
    caches: tuple[str, ...] = ("off",),
) -> int:
    """Run the benchmark on each target; write andrew.md and andrew.json.

    Args:
        out: output directory.
        files: files in the generated C project.
        targets: "native", "aviary-local", server keys, "mount:KEY", "parrot:KEY" (a Chirp
            server under ``parrot_run``); native always runs first.
        trace_dir: keep each agent run's ``--trace`` here (the last repeat's),
            as ``andrew-TARGET.jsonl`` (``andrew-TARGET-whole.jsonl`` with the cache on).
        repeat: runs of every row.
        caches: the agent's cache modes to run each remote target with.

    Returns:
        0 if every row ran and printed what native printed, 1 if not, 2 for bad arguments.
    """
    console = Console(stderr=True)
    chirp = [key for key in SERVERS if SERVERS[key].protocol == "chirp"]
    known = {
        "native", "aviary-local", *SERVERS, *(f"mount:{key}" for key in SERVERS),
        *(f"parrot:{key}" for key in chirp),
    }  # fmt: skip
    unknown = [t for t in targets if t not in known]
    if unknown:
        error_line(
            f"aviary: bench andrew: unknown target(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
        return 2
    bad = [c for c in caches if c not in CACHE_MODES]
    if bad or not caches or repeat < 1 or files < 1:
        error_line(
            f"aviary: bench andrew: --cache takes {', '.join(CACHE_MODES)}; "
            "--repeat and --files must be at least 1"
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
    ordered = ["native", *[t for t in dict.fromkeys(targets) if t != "native"]]
    with (
        tempfile.TemporaryDirectory(prefix="aviary-andrew-") as tmp,
        contextlib.ExitStack() as servers,
        progress_bar(console) as bar,
    ):
        work = Path(tmp)
        source = work / "src"
        generate_tree(source, files)
        work.chmod(
            0o755
        )  # servers that drop privileges must not need to read it, but cp runs as us
        rows = _rows(ordered, caches, source, work, trace_dir, servers, repeat)
        runnable = [(label, row) for label, row in rows if not isinstance(row, TargetRun)]
        task = bar.add_task("andrew", total=len(runnable) * repeat)
        # Round by round (every row once, then again): a drift of the machine's speed
        # meets every row alike, and each round's ratios compare runs minutes apart.
        repeats: dict[str, list[TargetRun]] = {label: [] for label, _ in runnable}
        for round_number in range(repeat):
            for label, run_once in runnable:
                bar.update(task, description=f"andrew: {label} ({round_number + 1}/{repeat})")
                repeats[label].append(run_once())
                bar.advance(task)
        runs = [
            row if isinstance(row, TargetRun) else _merge(repeats[label]) for label, row in rows
        ]
    native = runs[0]
    for run in runs[1:]:
        for stage in run.stages:
            stage.same_as_native = run.outputs.get(stage.stage) == native.outputs.get(stage.stage)
    write_json(
        out / "andrew.json",
        {
            "benchmark": "andrew",
            "figure": "8",
            "machine": machine_description(),
            "files": files,
            "repeat": repeat,
            "caches": list(caches),
            "units": {"seconds": "s per stage"},
            "runs": [{**asdict(r), "outputs": None, "label": r.label} for r in runs],
            "against_parrot": [
                {"row": row, "parrot": peer, "total_ratio": ratio}
                for row, peer, ratio in against_parrot(runs)
            ],
        },
    )
    (out / "andrew.md").write_text(_markdown(runs, files))
    console.print(f"wrote {out / 'andrew.md'}, {out / 'andrew.json'}")
    # A peer that is not installed is a row that says so, not a failure.
    failed = any(r.error and not r.error.startswith("not installed") for r in runs) or any(
        s.same_as_native is False for r in runs for s in r.stages
    )
    return 1 if failed else 0


#: One row's way to run the stages once.
_RunOnce = Callable[[], TargetRun]


def _rows(
    ordered: list[str],
    caches: tuple[str, ...],
    source: Path,
    work: Path,
    trace_dir: Path | None,
    servers: contextlib.ExitStack,
    repeat: int,
) -> list[tuple[str, _RunOnce | TargetRun]]:
    """Every row in the report's order, by label: how to run it once (its server started
    on ``servers``), or the error row it is when it cannot run (a server that did not
    start, Parrot not installed)."""
    rows: list[tuple[str, _RunOnce | TargetRun]] = []
    for target in ordered:
        name = target.replace("/", "_")
        if target in ("native", "aviary-local"):
            trace = trace_dir / f"andrew-{name}.jsonl" if trace_dir else None

            def local_once(target: str = target, trace: Path | None = trace) -> TargetRun:
                dest = Path(tempfile.mkdtemp(prefix=f"dest-{target}-", dir=work))
                return _run_target(target, source, str(dest), target != "native", work, trace)

            rows.append((target, local_once))
            continue
        if target.startswith("parrot:"):
            parrot, missing = find_parrot()
            if parrot is None:
                rows.append(
                    (target, TargetRun(target, error=f"not installed: {missing}", repeat=repeat))
                )
                continue
            try:  # a server of its own: the agent's rows leave theirs as they found it
                server = servers.enter_context(running_server(target.removeprefix("parrot:")))
            except ServerError as exc:
                rows.append((target, TargetRun(target, error=str(exc), repeat=repeat)))
                continue
            rows.append(
                (target, functools.partial(_parrot_once, target, parrot, server, source, work))
            )
            continue
        try:
            server = servers.enter_context(running_server(target.removeprefix("mount:")))
        except ServerError as exc:
            for cache in caches:
                row = TargetRun(target, error=str(exc), cache=cache, repeat=repeat)
                rows.append((row.label, row))
            continue
        for cache in caches:
            suffix = "" if cache == "off" else f"-{cache}"
            trace = trace_dir / f"andrew-{name}{suffix}.jsonl" if trace_dir else None
            label = TargetRun(target, cache=cache).label
            once = functools.partial(_run_remote, target, source, work, trace, cache, server)
            rows.append((label, once))
    return rows


def _markdown(runs: list[TargetRun], files: int) -> str:
    native = {s.stage: s.seconds for s in runs[0].stages}
    repeat = max(r.repeat for r in runs)
    lines = [
        "# The Andrew-like benchmark (the seeds' Figure 8), measured",
        "",
        f"A generated C project of {files} files: copy (cp -r), list (ls -lR), scan (grep -r), "
        f"make (gcc), delete (rm -rf). Seconds per stage, median [min–max] of {repeat} run(s), "
        "the ratio of medians to native in parentheses; "
        "`=` marks a stage whose output matched the native run (owners, times and modes normalised). "
        "`cache whole` is `aviary run --cache whole` (the seeds' $$ on): a file is copied on open "
        "and written back on close; `cache cto` reads ahead into a buffer per open, dropped at "
        "close; other agent rows have the cache off. `parrot:` rows run cctools' `parrot_run`.",
        "",
        "| target | " + " | ".join(STAGES) + " | total |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for run in runs:
        if run.error:
            lines.append(
                f"| {run.label} | " + " | ".join(["n/a"] * len(STAGES)) + f" | {run.error} |"
            )
            continue
        cells = []
        for s in run.stages:
            ratio = s.seconds / native[s.stage] if native.get(s.stage) else float("nan")
            mark = "" if s.same_as_native is None else (" =" if s.same_as_native else " DIFFERS")
            spread = f" [{s.minimum:.2f}–{s.maximum:.2f}]" if len(s.runs) > 1 else ""
            cells.append(f"{s.seconds:.2f}{spread} ({ratio:.1f}×){mark}")
        total = sum(s.seconds for s in run.stages)
        lines.append(f"| {run.label} | " + " | ".join(cells) + f" | {total:.2f} |")
    compared = against_parrot(runs)
    if compared:
        lines += [
            "",
            "The agent's total against Parrot's on the same server, in the same run "
            f"(`parrot_run {' '.join(PARROT_OPTIONS)}`; below 1x: the agent is faster): the rows "
            "ran in rounds, every row once per round, and this is the median of the rounds' "
            "ratios:",
            "",
            "| row | against | total ratio |",
            "|---|---|---|",
        ]
        lines += [f"| {row} | {peer} | {ratio:.2f}x |" for row, peer, ratio in compared]
    return "\n".join(lines) + "\n"
