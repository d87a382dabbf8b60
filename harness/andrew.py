"""``aviary bench andrew``: the seeds' Andrew-like benchmark, natively and under the agent.

Covers: Figure 8 of the seeds (copy, list, scan, make, delete a C source tree)
on a local directory natively, on a local directory under ``aviary run``, and
on each Chirp server through ``/chirp/HOST:PORT/...`` under ``aviary run``;
checks that every stage prints the same as natively; keeps the agent's
``--trace`` of each run, which the simulation replays.

Scenario: a deterministic C project of ``files`` sources and headers with a
Makefile is generated locally; one shell script runs the five stages against
the target directory and stamps each stage's start and end; the outputs that
legitimately differ between filesystems (owners, times, link counts, modes
forced by the server) are normalised before comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from rich.console import Console

from drivers import driver_for_scheme, service_of
from harness.servers import SERVERS, RunningServer, ServerError, start_server

__all__ = ["STAGES", "StageResult", "TargetRun", "generate_tree", "run_andrew"]

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


@dataclass
class StageResult:
    stage: str
    seconds: float
    same_as_native: bool | None = None


@dataclass
class TargetRun:
    target: str
    stages: list[StageResult] = field(default_factory=list)
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict, repr=False)


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
) -> TargetRun:
    outs = work / f"outs-{name.replace('/', '_')}"
    outs.mkdir()
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
        command = [sys.executable, "-m", "harness.cli", "run", *extra, "--", *command]
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


def _agent_prefix(server: RunningServer) -> str:
    """Where the server's files are in the agent's namespace: /SERVICE/[LOGIN@]HOST:PORT."""
    service = service_of(driver_for_scheme(server.spec.protocol))
    login = ""
    if server.spec.user:
        login = quote(server.spec.user, safe="")
        login += f":{quote(server.spec.password, safe='')}@" if server.spec.password else "@"
    return f"/{service}/{login}127.0.0.1:{server.port}"


def run_andrew(out: Path, files: int, targets: list[str], trace_dir: Path | None = None) -> int:
    """Run the benchmark on each target; write andrew.md and andrew.json; 0 if all agree."""
    console = Console(stderr=True)
    known = {"native", "aviary-local", *SERVERS, *(f"mount:{key}" for key in SERVERS)}
    unknown = [t for t in targets if t not in known]
    if unknown:
        console.print(
            f"aviary: bench andrew: unknown target(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
    runs: list[TargetRun] = []
    with tempfile.TemporaryDirectory(prefix="aviary-andrew-") as tmp:
        work = Path(tmp)
        source = work / "src"
        generate_tree(source, files)
        work.chmod(
            0o755
        )  # servers that drop privileges must not need to read it, but cp runs as us
        for target in ["native", *[t for t in targets if t != "native"]]:
            console.print(f"andrew: {target}")
            trace = trace_dir / f"andrew-{target.replace('/', '_')}.jsonl" if trace_dir else None
            if target in ("native", "aviary-local"):
                local_dest = work / f"dest-{target}"
                local_dest.mkdir()
                runs.append(
                    _run_target(target, source, str(local_dest), target != "native", work, trace)
                )
                continue
            server: RunningServer | None = None
            key = target.removeprefix("mount:")
            try:
                server = start_server(key)
                dest = _agent_prefix(server)
                os.environ.update(server.client_env)  # keys and such, for the agent's driver
                mountlist = None
                if target.startswith("mount:"):  # the same server through a mountlist entry
                    mountlist = work / f"mountlist-{key.replace('/', '_')}"
                    mountlist.write_text(f"/andrew-remote {dest}\n")
                    dest = "/andrew-remote"
                runs.append(_run_target(target, source, dest, True, work, trace, mountlist))
            except ServerError as exc:
                runs.append(TargetRun(target, error=str(exc)))
            finally:
                if server is not None:
                    server.stop()
    native = runs[0]
    for run in runs[1:]:
        for stage in run.stages:
            stage.same_as_native = run.outputs.get(stage.stage) == native.outputs.get(stage.stage)
    (out / "andrew.json").write_text(
        json.dumps([{**asdict(r), "outputs": None} for r in runs], indent=2) + "\n"
    )
    (out / "andrew.md").write_text(_markdown(runs, files))
    console.print(f"wrote {out / 'andrew.md'}, {out / 'andrew.json'}")
    failed = any(r.error for r in runs) or any(
        s.same_as_native is False for r in runs for s in r.stages
    )
    return 1 if failed else 0


def _markdown(runs: list[TargetRun], files: int) -> str:
    native = {s.stage: s.seconds for s in runs[0].stages}
    lines = [
        "# The Andrew-like benchmark (the seeds' Figure 8), measured",
        "",
        f"A generated C project of {files} files: copy (cp -r), list (ls -lR), scan (grep -r), "
        "make (gcc), delete (rm -rf). Seconds per stage, the ratio to native in parentheses; "
        "`=` marks a stage whose output matched the native run (owners, times and modes normalised).",
        "",
        "| target | " + " | ".join(STAGES) + " | total |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for run in runs:
        if run.error:
            lines.append(
                f"| {run.target} | " + " | ".join(["n/a"] * len(STAGES)) + f" | {run.error} |"
            )
            continue
        cells = []
        for s in run.stages:
            ratio = s.seconds / native[s.stage] if native.get(s.stage) else float("nan")
            mark = "" if s.same_as_native is None else (" =" if s.same_as_native else " DIFFERS")
            cells.append(f"{s.seconds:.2f} ({ratio:.1f}×){mark}")
        total = sum(s.seconds for s in run.stages)
        lines.append(f"| {run.target} | " + " | ".join(cells) + f" | {total:.2f} |")
    return "\n".join(lines) + "\n"
